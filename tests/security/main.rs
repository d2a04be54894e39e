//! The attack and fault matrix (issue 23): one module per class of cache attack or production
//! fault, each test named after its class and, where there is one, the public advisory it
//! guards against. Rows already covered by a topic test elsewhere in `tests/` are named in the
//! class module's documentation rather than repeated.
//!
//! One test binary (`cargo test --test security`), so the matrix costs one link, not fifteen.

#[path = "../common/mod.rs"]
pub mod common;

mod cache_poisoned_dos;
mod host_confusion;
mod http2_floods;
mod normalisation;
mod origin_faults;
mod range_abuse;
mod redis_faults;
mod request_smuggling;
mod slow_clients;
mod storage_rules;
mod unkeyed_inputs;
mod vary_abuse;
mod web_cache_deception;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a new connection and reads until the proxy closes it (bounded by
/// [`common::WAIT`]): every response the proxy wrote, as text. For pipelined requests whose
/// last one asks `Connection: close`.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    common::within("raw exchange", async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(bytes).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
}

/// The status codes of every response in `text` (a connection's whole output).
pub fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok()).collect()
}

/// Reads from `s` until the peer closes or resets it; `false` when it stayed open `for_at_most`.
pub async fn closed_within(s: &mut TcpStream, for_at_most: Duration) -> bool {
    let mut buf = [0u8; 16 * 1024];
    tokio::time::timeout(for_at_most, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Raw HTTP/2 frames, for the flood tests (RFC 9113 §4.1).
pub mod h2 {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK for `GET http://{authority}{path}`: static-table entries and literals without
    /// indexing, no Huffman coding (RFC 7541).
    pub fn get(authority: &str, path: &str) -> Vec<u8> {
        let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
        b.push(0x04); // :path, literal without indexing, name index 4
        literal(&mut b, path.as_bytes());
        b.push(0x01); // :authority, name index 1
        literal(&mut b, authority.as_bytes());
        b
    }

    /// A literal header field without indexing, new name (for padding header blocks).
    pub fn field(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut b = vec![0x00];
        literal(&mut b, name);
        literal(&mut b, value);
        b
    }

    fn literal(b: &mut Vec<u8>, s: &[u8]) {
        // 7-bit prefix integer (RFC 7541 §5.1), no Huffman.
        let mut n = s.len();
        if n < 127 {
            b.push(n as u8);
        } else {
            b.push(127);
            n -= 127;
            while n >= 128 {
                b.push((n % 128 + 128) as u8);
                n /= 128;
            }
            b.push(n as u8);
        }
        b.extend_from_slice(s);
    }

    /// Reads frames until a GOAWAY arrives or the peer closes; the GOAWAY's error code, if any.
    pub async fn goaway(s: &mut tokio::net::TcpStream, bound: std::time::Duration) -> Option<u32> {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(bound, async {
            let mut head = [0u8; 9];
            loop {
                s.read_exact(&mut head).await.ok()?;
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                s.read_exact(&mut payload).await.ok()?;
                if head[3] == GOAWAY && payload.len() >= 8 {
                    return Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}
