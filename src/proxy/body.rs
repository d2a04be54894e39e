//! The body of every response sent to a client: a whole body from the store, a stream from the
//! origin, or a reader of a fill shared with other clients.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
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
    /// Stored pieces of a representation, one frame each.
    Pieces(VecDeque<Bytes>),
    /// Slices of a range read from the store or fetched from the origin one after the other,
    /// and the bytes still to come.
    Slices(Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>, u64),
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
            ProxyBody::Pieces(p) => Poll::Ready(p.pop_front().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Slices(s, left) => match s.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    *left = left.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            #[cfg(test)]
            ProxyBody::Panics => panic!("injected panic in a response body"),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Origin(b) => b.is_end_stream(),
            ProxyBody::Fill(b) => b.is_end_stream(),
            ProxyBody::Pieces(p) => p.is_empty(),
            ProxyBody::Slices(_, left) => *left == 0,
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
            ProxyBody::Pieces(p) => SizeHint::with_exact(p.iter().map(|b| b.len() as u64).sum()),
            ProxyBody::Slices(_, left) => SizeHint::with_exact(*left),
            #[cfg(test)]
            ProxyBody::Panics => SizeHint::with_exact(10),
        }
    }
}
