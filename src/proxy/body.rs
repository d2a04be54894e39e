//! The body of every response sent to a client: a whole body from the store, a stream from the
//! origin, or a reader of a fill shared with other clients.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::fetch::FillBody;
use crate::store::fill::Settled;
use crate::upstream::body::{BoxError, OriginBody};

/// The body of every response the proxy sends.
pub enum ProxyBody {
    /// A complete body held in memory (stored hits, local errors), sent in one frame.
    Full(Option<Bytes>),
    /// Streamed from the origin.
    Origin(Box<OriginBody>),
    /// Read from a fill shared with other clients.
    Fill(Box<FillBody>),
    /// Panics when polled: the body the server's panic-containment tests inject.
    #[cfg(test)]
    Panics,
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ProxyBody::Full((!b.is_empty()).then_some(b))
    }

    /// For a body read from a fill, how the fill ended, once it has.
    pub fn settled(&self) -> Option<Settled> {
        match self {
            ProxyBody::Fill(b) => b.settled(),
            _ => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Origin(b) => Pin::new(&mut **b).poll_frame(cx),
            ProxyBody::Fill(b) => Pin::new(&mut **b).poll_frame(cx),
            #[cfg(test)]
            ProxyBody::Panics => panic!("injected panic in a response body"),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Origin(b) => b.is_end_stream(),
            ProxyBody::Fill(b) => b.is_end_stream(),
            #[cfg(test)]
            ProxyBody::Panics => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Origin(b) => b.size_hint(),
            ProxyBody::Fill(b) => b.size_hint(),
            #[cfg(test)]
            ProxyBody::Panics => SizeHint::with_exact(10),
        }
    }
}
