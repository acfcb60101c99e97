//! `GET /ws`: live run events for the UI. Authenticate with `Authorization: Bearer`,
//! `X-API-Key`, or (browsers cannot set headers on a WebSocket) `?access_token=`. Each
//! message is one JSON [`crate::runner::LiveEvent`]: `run_status` on every status change,
//! `run_progress` with counters and records per second while a run runs. The socket closes
//! (code 1008, "session ended") within [`RECHECK`] of its session ending: a logout, a
//! password change, a revoked API key, a deleted or disabled user.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::auth::{Principal, authenticate_token};
use crate::error::{ApiError, ApiQuery};
use crate::telemetry::WS_CLIENTS;

/// How often an open socket checks that its session still stands.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the session (or API key) a socket was opened with still stands, and its user.
fn still_valid(state: &AppState, p: &Principal) -> bool {
    let user_ok = matches!(state.meta.user(&p.user.id), Ok(Some(u)) if !u.disabled);
    let session_ok = match (&p.session_id, &p.api_key_id) {
        (Some(sid), _) => matches!(state.meta.session(sid), Ok(Some(s)) if s.revoked_at.is_none() && s.expires_at > chrono::Utc::now()),
        (None, Some(kid)) => matches!(state.meta.api_key(kid), Ok(Some(_))),
        (None, None) => false,
    };
    user_ok && session_ok
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws", axum::routing::get(ws))
}

#[derive(Deserialize)]
struct WsQuery {
    access_token: Option<String>,
}

async fn ws(State(state): State<AppState>, headers: HeaderMap, ApiQuery(q): ApiQuery<WsQuery>, upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::to_string)
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_string));
    let Some(token) = from_header.or(q.access_token) else {
        return ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <token>` or `?access_token=`".into()).into_response();
    };
    let principal = match authenticate_token(&state, &token) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return ApiError::bad_request(format!("not a WebSocket request: {}", e.body_text())).into_response(),
    };
    upgrade.on_upgrade(move |socket| feed(state, socket, principal))
}

async fn feed(state: AppState, mut socket: WebSocket, principal: Principal) {
    WS_CLIENTS.inc();
    let mut rx = state.runs.subscribe();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let hello = serde_json::json!({"type": "hello", "user": principal.user.username, "active_runs": state.runs.active_count()});
    if socket.send(Message::Text(hello.to_string().into())).await.is_ok() {
        loop {
            tokio::select! {
                _ = recheck.tick() => {
                    if !still_valid(&state, &principal) {
                        let close = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: "session ended".into() };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        break;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        let text = serde_json::to_string(&ev).unwrap_or_default();
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        let note = serde_json::json!({"type": "lagged", "missed": n});
                        if socket.send(Message::Text(note.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    WS_CLIENTS.dec();
}
