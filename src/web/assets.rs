//! The built browser client (`web/dist`, committed), embedded in the binary
//! so a server built with only the Rust toolchain serves it. Names under
//! `assets/` carry a hash of their content and are cached for good; the
//! page itself is revalidated every time, so a new server never has a
//! browser run a stale bundle.

use std::borrow::Cow;

use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/dist"]
struct Bundle;

/// The page's Content-Security-Policy: nothing by default; its own
/// scripts, styles, images and WebSocket; nothing inline, nothing from
/// elsewhere, never framed; and no string ever reaches a DOM sink that
/// parses it as HTML or script (the client builds every element itself,
/// so it needs no Trusted Types policy at all).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// One file of the bundle, ready to answer with.
pub struct Asset {
    pub body: Cow<'static, [u8]>,
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// The file served at `path` (`/` is the page), if the bundle has one.
pub fn get(path: &str) -> Option<Asset> {
    let name = match path.strip_prefix('/')? {
        "" => "index.html",
        other => other,
    };
    // rust-embed refuses `..` itself; this keeps the rule visible here.
    if name.split('/').any(|part| part == ".." || part.is_empty()) {
        return None;
    }
    let file = Bundle::get(name)?;
    let cache_control = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Some(Asset {
        body: file.data,
        content_type: content_type(name),
        cache_control,
    })
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "webmanifest") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_hashed_assets() {
        let page = get("/").expect("the bundle has index.html");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert_eq!(page.cache_control, "no-cache");
        let html = std::str::from_utf8(&page.body).unwrap();
        let script = html
            .split("src=\"./")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("the page names its script");
        let js = get(&format!("/{script}")).expect("the script is embedded");
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        assert!(js.cache_control.contains("immutable"));
        for missing in [
            "/nothing.html",
            "/../Cargo.toml",
            "/assets/../index.html",
            "//index.html",
        ] {
            assert!(get(missing).is_none(), "{missing}");
        }
    }
}
