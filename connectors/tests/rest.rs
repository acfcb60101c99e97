//! The `rest_api` connector against HTTP servers the tests start on loopback: retries on
//! 429 and 5xx, OAuth 2 token refresh, every pagination style and auth method, the rate
//! limit, incremental reads, and the sink's refusals.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json as AxJson;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dagg_connectors::{open_sink, open_source};
use dagg_model::spec::connector::Role;
use serde_json::{Value as Json, json};
use support::*;

type Params = Query<HashMap<String, String>>;

fn base() -> &'static Path {
    Path::new(".")
}

fn ids(records: &[dagg_model::Record]) -> Vec<i64> {
    records.iter().map(|r| r.get("id").and_then(|v| v.as_i64()).expect("an id")).collect()
}

fn rest(config: Json, role: Role) -> dagg_model::spec::connector::ConnectorSpec {
    spec(json!({"connector_type": "rest_api", "config": config}), role)
}

fn param(q: &HashMap<String, String>, k: &str, default: usize) -> usize {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test]
async fn ten_pages_with_a_429_and_a_503_deliver_every_record_once() {
    // 95 records in pages of 10: page 10 is short and the last. The first request for page 3
    // gets 429 (with Retry-After), the first for page 7 gets 503.
    let hits: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    async fn page(State(hits): State<Arc<Mutex<HashMap<usize, usize>>>>, Query(q): Params) -> Response {
        let p = param(&q, "page", 1);
        let size = param(&q, "per_page", 10);
        let n = {
            let mut h = hits.lock().unwrap();
            let n = h.entry(p).or_default();
            *n += 1;
            *n
        };
        match (p, n) {
            (3, 1) => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")], "slow down").into_response(),
            (7, 1) => (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response(),
            _ => {
                let from = (p - 1) * size + 1;
                let to = (p * size).min(95);
                let data: Vec<Json> = (from..=to).map(|i| json!({"id": i, "page": p})).collect();
                AxJson(json!({"data": data, "page": p})).into_response()
            }
        }
    }
    let addr = serve(axum::Router::new().route("/orders", get(page)).with_state(hits.clone())).await;
    let s = rest(
        json!({"url": format!("http://{addr}/orders"), "pagination": {"type": "page", "page_size": 10, "limit_param": "per_page"},
               "retry_attempts": 3, "retry_initial_delay_seconds": 0.05}),
        Role::Source,
    );
    let mut src = open_source(&s, base()).unwrap();
    let got = read_all(&mut src, 7).await;
    assert_eq!(ids(&got), (1..=95).collect::<Vec<_>>());
    let h = hits.lock().unwrap();
    assert_eq!((h[&3], h[&7], h[&5], h.len()), (2, 2, 1, 10), "requests per page: {h:?}");
}

#[tokio::test]
async fn retries_give_up_with_a_clear_error() {
    async fn down() -> Response {
        (StatusCode::BAD_GATEWAY, "upstream is down").into_response()
    }
    let addr = serve(axum::Router::new().route("/x", get(down))).await;
    let s = rest(json!({"url": format!("http://{addr}/x?key=k1"), "retry_attempts": 2, "retry_initial_delay_seconds": 0.01}), Role::Source);
    let e = open_source(&s, base()).unwrap().next_batch(10).await.unwrap_err().to_string();
    assert!(e.contains("gave up after 2 retries") && e.contains("502") && e.contains("upstream is down") && e.contains(&addr.to_string()), "{e}");
}

#[derive(Default)]
struct OAuth {
    issued: AtomicUsize,
    valid: Mutex<Option<(String, usize)>>,
    pages: AtomicUsize,
}

#[tokio::test]
async fn oauth2_token_is_refreshed_after_a_401() {
    // Tokens are good for 3 requests; then the API answers 401 until a new one is used.
    let st: Arc<OAuth> = Arc::default();
    async fn token(State(st): State<Arc<OAuth>>, body: String) -> Response {
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials")
            || form.get("client_id").map(String::as_str) != Some("dagg")
            || form.get("client_secret").map(String::as_str) != Some("s3cret")
        {
            return (StatusCode::UNAUTHORIZED, "bad client").into_response();
        }
        let n = st.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let t = format!("tok-{n}");
        *st.valid.lock().unwrap() = Some((t.clone(), 0));
        AxJson(json!({"access_token": t, "token_type": "Bearer", "expires_in": 3600})).into_response()
    }
    async fn data(State(st): State<Arc<OAuth>>, headers: HeaderMap, Query(q): Params) -> Response {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        {
            let mut valid = st.valid.lock().unwrap();
            match valid.as_mut() {
                Some((t, uses)) if auth == format!("Bearer {t}") && *uses < 3 => *uses += 1,
                _ => return (StatusCode::UNAUTHORIZED, "token expired").into_response(),
            }
        }
        st.pages.fetch_add(1, Ordering::SeqCst);
        let at: usize = param(&q, "after", 0);
        let data: Vec<Json> = (at + 1..=(at + 5).min(40)).map(|i| json!({"id": i})).collect();
        let next = if at + 5 < 40 { json!((at + 5).to_string()) } else { Json::Null };
        AxJson(json!({"items": data, "meta": {"next": next}})).into_response()
    }
    let addr = serve(axum::Router::new().route("/token", post(token)).route("/data", get(data)).with_state(st.clone())).await;
    let s = rest(
        json!({"url": format!("http://{addr}/data"), "auth_method": "oauth2",
               "auth_params": {"token_url": format!("http://{addr}/token"), "client_id": "dagg", "client_secret": "s3cret", "scope": "read"},
               "pagination": {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"}}),
        Role::Source,
    );
    let mut src = open_source(&s, base()).unwrap();
    let got = read_all(&mut src, 100).await;
    assert_eq!(ids(&got), (1..=40).collect::<Vec<_>>());
    assert_eq!(st.pages.load(Ordering::SeqCst), 8);
    assert_eq!(st.issued.load(Ordering::SeqCst), 3, "8 pages at 3 per token need 3 tokens");
}

#[tokio::test]
async fn oauth2_token_is_fetched_again_before_it_expires() {
    let issued: Arc<AtomicUsize> = Arc::default();
    async fn token(State(n): State<Arc<AtomicUsize>>) -> AxJson<Json> {
        let i = n.fetch_add(1, Ordering::SeqCst);
        // Inside the refresh margin at once: every use needs a new one.
        AxJson(json!({"access_token": format!("t{i}"), "expires_in": 30}))
    }
    async fn data(Query(q): Params) -> AxJson<Json> {
        let o = param(&q, "offset", 0);
        AxJson(json!((o..(o + 2).min(6)).map(|i| json!({"id": i})).collect::<Vec<_>>()))
    }
    let addr = serve(axum::Router::new().route("/token", post(token)).route("/data", get(data)).with_state(issued.clone())).await;
    let s = rest(
        json!({"url": format!("http://{addr}/data"), "auth_method": "OAUTH2",
               "auth_params": {"token_url": format!("http://{addr}/token"), "client_id": "c", "client_secret": "s"},
               "pagination": {"type": "offset", "page_size": 2}}),
        Role::Source,
    );
    let got = read_all(&mut open_source(&s, base()).unwrap(), 10).await;
    assert_eq!(ids(&got), [0, 1, 2, 3, 4, 5]);
    assert_eq!(issued.load(Ordering::SeqCst), 4, "one token per request (3 full pages and the empty one)");
}

/// Serves 23 records under every pagination style at once.
async fn paged_server() -> std::net::SocketAddr {
    const N: usize = 23;
    fn slice(from: usize, n: usize) -> Vec<Json> {
        (from..(from + n).min(N)).map(|i| json!({"id": i + 1})).collect()
    }
    async fn offset(Query(q): Params) -> AxJson<Json> {
        AxJson(json!({"results": slice(param(&q, "skip", 0), param(&q, "take", 100))}))
    }
    async fn page(Query(q): Params) -> AxJson<Json> {
        let size = param(&q, "limit", 100);
        AxJson(Json::Array(slice((param(&q, "p", 0)) * size, size)))
    }
    async fn cursor(Query(q): Params) -> AxJson<Json> {
        let at = q.get("cursor").map(|c| c.trim_start_matches("c-").parse().unwrap()).unwrap_or(0);
        let next = if at + 4 < N { json!(format!("c-{}", at + 4)) } else { json!("") };
        AxJson(json!({"payload": {"rows": slice(at, 4)}, "meta": {"next": next}}))
    }
    async fn link(Query(q): Params) -> Response {
        let at = param(&q, "at", 0);
        let mut resp = AxJson(json!({"data": slice(at, 5)})).into_response();
        if at + 5 < N {
            let v = format!("</link?at={}>; rel=\"next\", </link?at=0>; rel=\"first\"", at + 5);
            resp.headers_mut().insert(header::LINK, v.parse().unwrap());
        }
        resp
    }
    let app = axum::Router::new().route("/offset", get(offset)).route("/page", get(page)).route("/cursor", get(cursor)).route("/link", get(link));
    serve(app).await
}

#[tokio::test]
async fn each_pagination_style_reads_every_record_and_resumes() {
    let addr = paged_server().await;
    let configs = [
        json!({"url": format!("http://{addr}/offset"), "pagination": {"type": "offset", "page_size": 5, "offset_param": "skip", "limit_param": "take"}}),
        json!({"url": format!("http://{addr}/page"), "pagination": {"type": "page_number", "page_size": 6, "page_param": "p", "start_page": 0}}),
        json!({"url": format!("http://{addr}/cursor"), "records_path": "payload.rows", "pagination": {"type": "cursor", "cursor_path": "meta.next"}}),
        json!({"url": format!("http://{addr}/link"), "pagination": {"type": "link_header"}}),
    ];
    for c in configs {
        let s = rest(c.clone(), Role::Source);
        let got = read_all(&mut open_source(&s, base()).unwrap(), 3).await;
        assert_eq!(ids(&got), (1..=23).collect::<Vec<_>>(), "{c}");
        for k in [2, 5, 12] {
            resume_gives_exactly_the_rest(&s, base(), k, 3).await;
        }
    }
}

#[tokio::test]
async fn each_auth_method_is_sent() {
    async fn check(headers: HeaderMap, Query(q): Params) -> Response {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let ok = h("x-api-key") == "k-123"
            || q.get("api_key").map(String::as_str) == Some("k-456")
            || h("authorization") == "Bearer eyJ.tok"
            // "user:pa ss" in base64
            || h("authorization") == "Basic dXNlcjpwYSBzcw==";
        if ok { AxJson(json!([{"id": 1}])).into_response() } else { (StatusCode::UNAUTHORIZED, "who are you").into_response() }
    }
    let addr = serve(axum::Router::new().route("/me", get(check))).await;
    let url = format!("http://{addr}/me");
    let methods = [
        // The guide's section 5.1.2 shape.
        json!({"auth_method": "API_KEY", "auth_params": {"api_key_header": "X-API-Key", "api_key_value": "k-123"}}),
        json!({"auth_method": "api_key", "auth_params": {"api_key_param": "api_key", "api_key_value": "k-456"}}),
        json!({"auth_method": "bearer_token", "auth_params": {"token": "eyJ.tok"}}),
        json!({"auth_method": "basic", "auth_params": {"username": "user", "password": "pa ss"}}),
    ];
    for m in methods {
        let mut c = m.clone();
        c["url"] = json!(url);
        let got = read_all(&mut open_source(&rest(c, Role::Source), base()).unwrap(), 10).await;
        assert_eq!(ids(&got), [1], "{m}");
    }
    // Wrong credentials: a clear error that shows neither the key nor its value.
    let c = json!({"url": url, "auth_method": "api_key", "auth_params": {"api_key_param": "api_key", "api_key_value": "wrong-key"}});
    let e = open_source(&rest(c.clone(), Role::Source), base()).unwrap().next_batch(10).await.unwrap_err().to_string();
    assert!(e.contains("401") && e.contains("who are you") && !e.contains("wrong-key"), "{e}");
    let e = dagg_connectors::test_connection_as(&rest(c, Role::Source), base(), Role::Source).await.unwrap_err().to_string();
    assert!(e.contains("401") && !e.contains("wrong-key"), "{e}");
}

#[tokio::test]
async fn the_rate_limit_spaces_requests() {
    async fn data(Query(q): Params) -> AxJson<Json> {
        let o = param(&q, "offset", 0);
        AxJson(json!((o..(o + 1).min(6)).map(|i| json!({"id": i})).collect::<Vec<_>>()))
    }
    let addr = serve(axum::Router::new().route("/d", get(data))).await;
    let s = rest(json!({"url": format!("http://{addr}/d"), "pagination": {"type": "offset", "page_size": 1}, "rate_limit": 20, "rate_limit_period": "second"}), Role::Source);
    let started = Instant::now();
    let got = read_all(&mut open_source(&s, base()).unwrap(), 10).await;
    assert_eq!(got.len(), 6);
    // 7 requests, 50 ms apart: at least 300 ms.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
}

#[tokio::test]
async fn incremental_keeps_only_records_past_the_last_runs_mark() {
    let since_seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let records: Arc<Mutex<Vec<Json>>> = Arc::new(Mutex::new((1..=5).map(|i| json!({"id": i, "updated_at": format!("2025-01-0{i}T00:00:00Z")})).collect()));
    #[derive(Clone)]
    struct St(Arc<Mutex<Vec<Option<String>>>>, Arc<Mutex<Vec<Json>>>);
    async fn data(State(St(seen, recs)): State<St>, Query(q): Params) -> AxJson<Json> {
        seen.lock().unwrap().push(q.get("updated_since").cloned());
        // This API ignores the filter: the connector filters too.
        AxJson(Json::Array(recs.lock().unwrap().clone()))
    }
    let addr = serve(axum::Router::new().route("/d", get(data)).with_state(St(since_seen.clone(), records.clone()))).await;
    let s = rest(json!({"url": format!("http://{addr}/d"), "incremental": {"cursor_field": "updated_at", "param": "updated_since"}}), Role::Source);
    let mut src = open_source(&s, base()).unwrap();
    assert_eq!(ids(&read_all(&mut src, 10).await), [1, 2, 3, 4, 5]);
    let cp = src.checkpoint();
    records.lock().unwrap().push(json!({"id": 6, "updated_at": "2025-01-06T00:00:00Z"}));
    records.lock().unwrap()[1] = json!({"id": 2, "updated_at": "2025-01-07T00:00:00Z"});
    let mut src = open_source(&s, base()).unwrap();
    src.seek(&cp).await.unwrap();
    assert_eq!(ids(&read_all(&mut src, 10).await), [2, 6]);
    assert_eq!(*since_seen.lock().unwrap(), [None, Some("2025-01-05T00:00:00Z".to_string())]);
}

#[tokio::test]
async fn the_sink_posts_batches_retries_and_refuses_rejected_batches() {
    #[derive(Default)]
    struct Sink {
        got: Mutex<Vec<Vec<Json>>>,
        calls: AtomicUsize,
    }
    async fn accept(State(st): State<Arc<Sink>>, AxJson(batch): AxJson<Vec<Json>>) -> Response {
        let n = st.calls.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            return (StatusCode::SERVICE_UNAVAILABLE, "warming up").into_response();
        }
        if batch.iter().any(|r| r["id"] == json!(5)) {
            return (StatusCode::UNPROCESSABLE_ENTITY, "record 5 is invalid").into_response();
        }
        st.got.lock().unwrap().push(batch);
        StatusCode::CREATED.into_response()
    }
    async fn locked() -> Response {
        (StatusCode::FORBIDDEN, "no").into_response()
    }
    let st: Arc<Sink> = Arc::default();
    let addr = serve(axum::Router::new().route("/in", post(accept)).route("/locked", post(locked)).with_state(st.clone())).await;
    let s = rest(json!({"url": format!("http://{addr}/in"), "batch_size": 3, "retry_initial_delay_seconds": 0.01}), Role::Sink);
    let mut sink = open_sink(&s, base()).unwrap();
    let records: Vec<_> = (1..=8).map(|i| rec(json!({"id": i}))).collect();
    let refused = sink.write(&records).await.unwrap();
    assert_eq!(refused.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4, 5], "the batch holding record 5 is refused");
    assert!(refused[0].1.contains("422") && refused[0].1.contains("record 5 is invalid"), "{}", refused[0].1);
    sink.commit().await.unwrap();
    let got = st.got.lock().unwrap().clone();
    assert_eq!(got, vec![vec![json!({"id": 1}), json!({"id": 2}), json!({"id": 3})], vec![json!({"id": 7}), json!({"id": 8})]]);
    // A 403 is about the endpoint: the write fails.
    let s = rest(json!({"url": format!("http://{addr}/locked")}), Role::Sink);
    let e = open_sink(&s, base()).unwrap().write(&records).await.unwrap_err().to_string();
    assert!(e.contains("403"), "{e}");
}

#[tokio::test]
async fn unusable_answers_are_clear_errors() {
    async fn html() -> Response {
        ([(header::CONTENT_TYPE, "text/html")], "<html>maintenance</html>").into_response()
    }
    let addr = serve(axum::Router::new().route("/html", get(html))).await;
    let e = open_source(&rest(json!({"url": format!("http://{addr}/html")}), Role::Source), base()).unwrap().next_batch(5).await.unwrap_err().to_string();
    assert!(e.contains("not JSON") && e.contains("maintenance"), "{e}");
    let e = open_source(&rest(json!({"url": format!("http://{addr}/missing")}), Role::Source), base()).unwrap().next_batch(5).await.unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("/missing"), "{e}");
    let ok = dagg_connectors::test_connection_as(&rest(json!({"url": format!("http://{addr}/html")}), Role::Source), base(), Role::Source).await.unwrap();
    assert!(ok.contains("200"), "{ok}");
}

#[tokio::test]
async fn a_response_body_over_the_cap_is_refused_without_being_read_whole() {
    use std::sync::atomic::AtomicU64;
    // 1 MiB chunks without end, and no Content-Length: only the client's cap stops it.
    async fn endless(State(sent): State<Arc<AtomicU64>>) -> Response {
        let chunks = futures_util::stream::unfold(sent, |sent| async move {
            sent.fetch_add(1 << 20, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(vec![b' '; 1 << 20]), sent))
        });
        axum::body::Body::from_stream(chunks).into_response()
    }
    let sent = Arc::new(AtomicU64::new(0));
    let addr = serve(axum::Router::new().route("/big", get(endless)).with_state(sent.clone())).await;
    let s = rest(json!({"url": format!("http://{addr}/big"), "retry_attempts": 0}), Role::Source);
    let e = tokio::time::timeout(Duration::from_secs(60), open_source(&s, base()).unwrap().next_batch(10)).await.expect("the read ends").unwrap_err().to_string();
    assert!(e.contains("the response body is larger than 64 MiB"), "{e}");
    assert!(sent.load(Ordering::SeqCst) < 128 << 20, "the server sent {} bytes", sent.load(Ordering::SeqCst));

    // A body nested past the depth limit is refused by the JSON parser, not a crash.
    async fn deep() -> Response {
        let n = 100_000;
        ([(header::CONTENT_TYPE, "application/json")], format!("{}{}", "[".repeat(n), "]".repeat(n))).into_response()
    }
    let addr = serve(axum::Router::new().route("/deep", get(deep))).await;
    let s = rest(json!({"url": format!("http://{addr}/deep"), "retry_attempts": 0}), Role::Source);
    let e = open_source(&s, base()).unwrap().next_batch(10).await.unwrap_err().to_string();
    assert!(e.contains("recursion limit exceeded"), "{e}");
}

/// Issue 16: a header under any name and a secret query parameter, stored sealed, reach the
/// API revealed — on every page, a server-given next link included — and a refusal's
/// message masks the parameter.
#[tokio::test]
async fn sealed_headers_and_secret_query_params_are_sent_revealed_on_every_page() {
    type Seen = Arc<Mutex<Vec<(HashMap<String, String>, HeaderMap)>>>;
    async fn data(State(seen): State<Seen>, headers: HeaderMap, Query(q): Params) -> Response {
        seen.lock().unwrap().push((q.clone(), headers));
        match q.get("page").map(String::as_str) {
            None => ([(header::LINK, "</d?page=2&sort=id>; rel=\"next\"")], AxJson(json!([{"id": 1}]))).into_response(),
            Some("2") => AxJson(json!([{"id": 2}])).into_response(),
            _ => (StatusCode::NOT_FOUND, "no such page").into_response(),
        }
    }
    let seen: Seen = Arc::default();
    let addr = serve(axum::Router::new().route("/d", get(data)).with_state(seen.clone())).await;
    let (key, _) = dagg_connectors::secrets::MasterKey::generate();
    dagg_connectors::secrets::install_process_key(key.clone());
    let config = json!({
        "url": format!("http://{addr}/d"),
        "headers": {"X-Renamed-Credential": key.encrypt("hdr-s3cret"), "X-Clear-Old": "stored-in-clear"},
        "secret_query_params": {"access_token": key.encrypt("qp-s3cret")},
        "query_params": {"sort": "id"},
        "pagination": {"type": "link_header"}
    });
    let got = read_all(&mut open_source(&rest(config.clone(), Role::Source), base()).unwrap(), 10).await;
    assert_eq!(ids(&got), [1, 2]);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        for (q, h) in seen.iter() {
            assert_eq!(q.get("access_token").map(String::as_str), Some("qp-s3cret"), "{q:?}");
            assert_eq!(q.get("sort").map(String::as_str), Some("id"), "{q:?}");
            assert_eq!(h.get("x-renamed-credential").unwrap(), "hdr-s3cret");
            // A value stored in the clear by an earlier version still works.
            assert_eq!(h.get("x-clear-old").unwrap(), "stored-in-clear");
        }
    }
    // A refusal names the URL with the parameter masked.
    let mut bad = config;
    bad["url"] = json!(format!("http://{addr}/d?page=9"));
    bad["pagination"] = json!({"type": "none"});
    let e = open_source(&rest(bad, Role::Source), base()).unwrap().next_batch(10).await.unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("access_token=********") && !e.contains("qp-s3cret"), "{e}");
}
