//! The dashboard: the single-page app built from `web/` into `web/dist`, embedded in the binary and served at `/`.
//! Unknown paths outside `/api` get `index.html`, so the app's own routes work on reload.

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

#[derive(rust_embed::RustEmbed)]
#[folder = "../../web/dist"]
#[allow_missing = true]
struct Assets;

const NOT_BUILT: &str = "<!doctype html><title>basalt</title><p>The dashboard is not built into this binary: run \
<code>npm ci &amp;&amp; npm run build</code> in <code>web/</code>, then rebuild basalt. The REST API is at \
<a href=\"/api/docs\">/api/docs</a>.</p>";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Serves an embedded file, `index.html` for app routes, and the API's JSON 404 under `/api`.
pub(crate) async fn fallback(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        return ApiError::not_found("no such API route: see /api/docs").into_response();
    }
    let (name, file) = match Assets::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path.to_owned(), file),
        None => match Assets::get("index.html") {
            Some(file) => ("index.html".to_owned(), file),
            None => {
                return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], NOT_BUILT)
                    .into_response();
            }
        },
    };
    // Hashed assets never change; the page itself must be revalidated so new builds are picked up.
    let cache = if name == "index.html" { "no-cache" } else { "public, max-age=31536000, immutable" };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type(&name)), (header::CACHE_CONTROL, cache)],
        file.data.into_owned(),
    )
        .into_response()
}
