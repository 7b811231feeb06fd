//! keyward: an edge API-key gateway.
//!
//! [`core`] is the pure decision logic. Two faces sit on it: the Cloudflare Worker (`edge`,
//! feature `edge`, built by worker-build) and the browser bindings (`browser`, feature
//! `browser`, built with wasm-bindgen `--target web` for the console's playground).

pub mod core;

#[cfg(all(target_arch = "wasm32", feature = "edge"))]
mod edge;

#[cfg(all(target_arch = "wasm32", feature = "browser", not(feature = "edge")))]
mod browser;
