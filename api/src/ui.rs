//! The admin web UI (`ui/`, built into `ui/dist`), served under `/ui/`.
//!
//! Release builds embed `ui/dist` in the binary (rust-embed); debug builds read it from the
//! disk, so a rebuilt UI shows without recompiling. `api/build.rs` builds the UI when
//! `ui/dist` is missing or older than its sources (`DAGG_SKIP_UI_BUILD=1` skips that).
//! Paths that are not files are the UI's own routes: they get `index.html`. Hashed assets
//! are cached for a year, `index.html` never.

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "../ui/dist/"]
#[allow_missing = true]
struct Assets;

/// `/` and `/ui` redirect to `/ui/`; `/ui/*` serves the UI.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve_path("") }))
        .route("/ui/{*path}", get(|Path(path): Path<String>| async move { serve_path(&path) }))
}

fn serve_path(path: &str) -> Response {
    let path = path.trim_start_matches('/');
    if !path.is_empty()
        && let Some(file) = Assets::get(path)
    {
        let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
        return file_response(file, cache);
    }
    // A missing asset (a file name with an extension under assets/) is a 404, not the app.
    if path.starts_with("assets/") {
        return ApiError::NotFound(format!("no UI asset `{path}`")).into_response();
    }
    match Assets::get("index.html") {
        Some(index) => file_response(index, "no-cache"),
        None => ApiError::NotFound(
            "the web UI was not built into this binary: run `npm ci && npm run build` in ui/ (or build dagg with npm on the PATH)".into(),
        )
        .into_response(),
    }
}

fn file_response(file: rust_embed::EmbeddedFile, cache: &'static str) -> Response {
    let mime = file.metadata.mimetype();
    let mut resp = Response::new(Body::from(file.data.into_owned()));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_routes_fall_back_to_the_index_and_missing_assets_are_404() {
        let has_ui = Assets::get("index.html").is_some();
        let r = serve_path("pipelines/123");
        if has_ui {
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        } else {
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(serve_path("assets/nope-123.js").status(), StatusCode::NOT_FOUND);
        if let Some(asset) = Assets::iter().find(|p| p.starts_with("assets/") && p.ends_with(".js")) {
            let r = serve_path(&asset);
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().contains("javascript"));
            assert!(r.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        }
    }
}
