//! # btfs-client
//!
//! The browser tenant, built into the `btfs-client` npm package with wasm-pack. This first
//! version exposes the shared core's link parsing so pages can validate links; the full client
//! (upload/download over WebSocket and WebRTC-direct) is the browser-tenant issue's work and
//! uses the very same `btfs-core` encoder, decoder and wire formats as the native CLI.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen::prelude::wasm_bindgen;

/// The client version.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").into()
}

/// Whether `link` is a well-formed `btfs://<manifest-id>#<key>` capability link.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen(js_name = isValidLink))]
pub fn is_valid_link(link: &str) -> bool {
    btfs_core::Link::parse(link).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn validates_links_with_the_core_parser() {
        assert!(!super::is_valid_link("http://example.com"));
        let link = format!("btfs://{}#{}", "ab".repeat(32), "A".repeat(43));
        assert!(super::is_valid_link(&link));
    }
}
