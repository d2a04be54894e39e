//! edgecache: an HTTP caching reverse proxy — an RFC 9111 shared cache in front of one origin.
//!
//! The binary (`src/main.rs`) reads `proxy.toml`; tests and benches start a proxy in-process
//! with [`server::start`], passing a [`clock::Clock`] they control.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod site;
pub mod status;
pub mod store;
pub mod tls;
pub mod upstream;

#[cfg(test)]
mod testing;

pub use config::Config;
pub use server::{start, Running};
