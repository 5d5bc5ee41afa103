//! The page's files, embedded at build time (no build step, no CDN): the HTML, its
//! script and style, and uPlot (vendored, `ui/vendor/README.md` says which release).
//! They are public (they hold no data); the API behind them needs the key.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, Response, StatusCode, header};
use axum::response::IntoResponse;

/// The vendored uPlot's release.
pub const UPLOT_VERSION: &str = "1.6.32";

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file the page loads; `index.html` is the page itself.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../ui/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../ui/app.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../ui/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../ui/vendor/uPlot.min.css"),
    },
];

/// `GET /` and `/ui`: the page.
pub async fn page(headers: HeaderMap) -> Response<Body> {
    serve(&ASSETS[0], &headers)
}

/// `GET /ui/assets/{name}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response<Body> {
    match ASSETS.iter().skip(1).find(|a| a.name == name) {
        Some(a) => serve(a, &headers),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// The file with a validator: a second visit revalidates and gets `304`. The tag is the
/// build's version and a hash of the bytes, so a new binary's files are never stale.
fn serve(a: &Asset, headers: &HeaderMap) -> Response<Body> {
    let tag = format!("\"{}-{:016x}\"", env!("CARGO_PKG_VERSION"), fnv1a(a.bytes));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let builder = Response::builder()
        .header(header::ETAG, &tag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-content-type-options", "nosniff")
        // The page runs only its own files: no inline script, no other origin.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        );
    let r = if fresh {
        builder.status(StatusCode::NOT_MODIFIED).body(Body::empty())
    } else {
        builder
            .header(header::CONTENT_TYPE, a.content_type)
            .body(Body::from(a.bytes))
    };
    r.unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// FNV-1a, 64 bits: a content tag, not a security measure.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}
