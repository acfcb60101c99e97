//! The egress policy on real connections: redirects keep credentials to the first origin and
//! are checked hop by hop; this node's own ports, loopback on a node that listens beyond it,
//! and an admin's deny list are refused before anything is sent, for every kind of server;
//! S3 requests are checked one by one, follow no redirect to another origin, and sign with
//! the node's ambient credentials only when an admin allows it.
//! (Each test runs in a process of its own under nextest, so installing a policy is local
//! to it.)

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dagg_connectors::egress::{self, Policy, Rule};
use dagg_connectors::{open_source, test_connection};
use dagg_model::spec::connector::Role;
use serde_json::{Value as Json, json};
use support::*;

/// A server that records every request's headers (and the path asked).
async fn listener() -> (SocketAddr, Arc<Mutex<Vec<(String, HeaderMap)>>>) {
    let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    async fn record(State(seen): State<Arc<Mutex<Vec<(String, HeaderMap)>>>>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
        seen.lock().unwrap().push((uri.to_string(), headers));
        axum::Json(json!([{"id": 1}])).into_response()
    }
    let addr = serve(axum::Router::new().fallback(get(record)).with_state(seen.clone())).await;
    (addr, seen)
}

/// A server whose every answer is `status` to `to`.
async fn redirector(status: StatusCode, to: String) -> SocketAddr {
    serve(axum::Router::new().fallback(get(move || {
        let to = to.clone();
        async move { (status, [(header::LOCATION, to)]).into_response() }
    })))
    .await
}

fn rest(config: Json) -> dagg_model::spec::connector::ConnectorSpec {
    spec(json!({"connector_type": "rest_api", "config": config}), Role::Source)
}

const SECRET_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-tenant-secret"];

#[tokio::test]
async fn a_redirect_to_another_origin_carries_no_credentials_or_configured_headers() {
    let (theirs, seen) = listener().await;
    let ours = redirector(StatusCode::FOUND, format!("http://{theirs}/collected")).await;
    for auth in [
        json!({"auth_method": "bearer_token", "auth_params": {"token": "admins-bearer-token"}}),
        json!({"auth_method": "api_key", "auth_params": {"api_key_value": "admins-api-key"}}),
        json!({"auth_method": "basic", "auth_params": {"username": "admin", "password": "admins-password"}}),
    ] {
        let mut config = json!({"url": format!("http://{ours}/items"), "headers": {"X-Tenant-Secret": "tenant-secret"}});
        config.as_object_mut().unwrap().extend(auth.as_object().unwrap().clone());
        let mut src = open_source(&rest(config), Path::new(".")).unwrap();
        let got = read_all(&mut src, 10).await;
        assert_eq!(got.len(), 1, "the redirect was followed");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (path, headers) in seen.iter() {
        assert_eq!(path, "/collected");
        for h in SECRET_HEADERS {
            assert!(headers.get(h).is_none(), "`{h}` reached another origin: {headers:?}");
        }
    }
}

#[tokio::test]
async fn a_redirect_within_the_origin_keeps_the_credentials() {
    // One server: /items redirects to /collected on the same origin.
    let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    let seen2 = seen.clone();
    let app = axum::Router::new()
        .route("/items", get(|| async { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/collected")]).into_response() }))
        .fallback(get(move |uri: axum::http::Uri, headers: HeaderMap| {
            let seen = seen2.clone();
            async move {
                seen.lock().unwrap().push((uri.to_string(), headers));
                axum::Json(json!([{"id": 1}])).into_response()
            }
        }));
    let same = serve(app).await;
    let config = json!({"url": format!("http://{same}/items"), "auth_method": "bearer_token", "auth_params": {"token": "t0k"}});
    let mut src = open_source(&rest(config), Path::new(".")).unwrap();
    assert_eq!(read_all(&mut src, 10).await.len(), 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.last().unwrap().1.get("authorization").unwrap(), "Bearer t0k");
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_not_followed() {
    let (own, seen) = listener().await;
    egress::install(Policy { own: vec![own], ..Policy::default() });
    let ours = redirector(StatusCode::MOVED_PERMANENTLY, format!("http://{own}/raft/members")).await;
    let config = json!({"url": format!("http://{ours}/items")});
    let e = test_connection(&rest(config), Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("egress policy") && e.contains("own listener"), "{e}");
    assert!(seen.lock().unwrap().is_empty(), "the node's own port was contacted");
}

#[tokio::test]
async fn the_nodes_own_ports_are_refused_for_every_kind_of_server() {
    let (own, seen) = listener().await;
    let port = own.port();
    // The node listens on every address: its port is refused on loopback too.
    egress::install(Policy { own: vec![SocketAddr::from(([0, 0, 0, 0], port))], ..Policy::default() });
    let cases = [
        json!({"connector_type": "rest_api", "config": {"url": format!("http://localhost:{port}/raft/members")}}),
        json!({"connector_type": "postgresql", "config": {"host": "127.0.0.1", "port": port, "database": "d", "username": "u", "table": "t"}}),
        json!({"connector_type": "mysql", "config": {"host": "localhost", "port": port, "database": "d", "username": "u", "table": "t"}}),
        json!({"connector_type": "kafka", "config": {"bootstrap_servers": format!("127.0.0.1:{port}"), "topic": "t"}}),
        json!({"connector_type": "nats", "config": {"url": format!("nats://127.0.0.1:{port}"), "subject": "s"}}),
        json!({"connector_type": "rabbitmq", "config": {"url": format!("amqp://127.0.0.1:{port}/%2f"), "queue": "q"}}),
        json!({"connector_type": "redis", "config": {"url": format!("redis://localhost:{port}"), "stream": "s"}}),
    ];
    for case in cases {
        let s = spec(case.clone(), Role::Source);
        let e = test_connection(&s, Path::new(".")).await.unwrap_err().to_string();
        assert!(e.contains("refused by the egress policy") && e.contains("own listener"), "{case}: {e}");
    }
    assert!(seen.lock().unwrap().is_empty(), "the node's own port was contacted");
}

#[tokio::test]
async fn loopback_is_refused_on_a_node_that_listens_beyond_it_unless_allowed() {
    let (addr, seen) = listener().await;
    let config = json!({"url": format!("http://{addr}/items")});
    egress::install(Policy { allow_loopback: false, ..Policy::default() });
    let e = test_connection(&rest(config.clone()), Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("loopback"), "{e}");
    assert!(seen.lock().unwrap().is_empty());
    // By name too: `localhost` resolves to loopback.
    let by_name = json!({"url": format!("http://localhost:{}/items", addr.port())});
    assert!(test_connection(&rest(by_name), Path::new(".")).await.is_err());
    // An admin's allow list opens it.
    egress::install(Policy { allow_loopback: false, allow: vec![Rule::parse("127.0.0.0/8").unwrap()], ..Policy::default() });
    test_connection(&rest(config), Path::new(".")).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_deny_list_refuses_databases_by_name() {
    egress::install(Policy { deny: vec![Rule::parse("localhost").unwrap()], ..Policy::default() });
    let s = spec(json!({"connector_type": "postgresql", "config": {"host": "localhost", "database": "test", "username": "postgres", "table": "t"}}), Role::Source);
    let e = test_connection(&s, Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("deny list"), "{e}");
    // The same server by address is still reached.
    let s = spec(json!({"connector_type": "postgresql", "config": {"host": "127.0.0.1", "database": "test", "username": "postgres", "query": "SELECT 1 AS one"}}), Role::Source);
    test_connection(&s, Path::new(".")).await.unwrap();
}

// ---- S3 -------------------------------------------------------------------------------

/// The requests an S3 listener got: the path and the `Authorization` header (empty when the
/// request was unsigned).
type Asked = Arc<Mutex<Vec<(String, String)>>>;

/// An S3-compatible listing with no object, and what was asked.
async fn s3_listener() -> (SocketAddr, Asked) {
    let seen: Asked = Arc::default();
    async fn list(State(seen): State<Asked>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
        let auth = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        seen.lock().unwrap().push((uri.to_string(), auth));
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"#;
        ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
    }
    let addr = serve(axum::Router::new().fallback(get(list)).with_state(seen.clone())).await;
    (addr, seen)
}

/// The error of a read that had to fail.
fn refused<T>(r: Result<T, dagg_connectors::ConnectorError>) -> String {
    match r {
        Ok(_) => panic!("the read was not refused"),
        Err(e) => e.to_string(),
    }
}

fn s3(endpoint: &str, extra: Json) -> dagg_model::spec::connector::ConnectorSpec {
    let mut c = json!({"bucket_name": "b", "aws_region": "us-east-1", "endpoint": endpoint, "format": "jsonl", "connection_timeout": 3});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    spec(json!({"connector_type": "aws_s3", "config": c}), Role::Source)
}

#[tokio::test]
async fn s3_without_keys_never_signs_with_the_nodes_credentials_unless_an_admin_allows() {
    // SAFETY: nextest runs each test in a process of its own; nothing else reads the
    // environment concurrently at this point.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDTHENODESOWN");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "the-nodes-own-secret");
    }
    let (addr, seen) = s3_listener().await;
    let keyless = s3(&format!("http://{addr}"), json!({}));
    test_connection(&keyless, Path::new(".")).await.unwrap();
    {
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty(), "the store was asked");
        for (path, auth) in seen.iter() {
            assert!(auth.is_empty(), "{path} was signed with the node's credentials: {auth}");
        }
    }
    // The connector's own keys sign, as before.
    seen.lock().unwrap().clear();
    let keyed = s3(&format!("http://{addr}"), json!({"access_key_id": "AKIDOFTHECONNECTOR", "secret_access_key": "its-secret"}));
    test_connection(&keyed, Path::new(".")).await.unwrap();
    assert!(seen.lock().unwrap().iter().all(|(_, auth)| auth.contains("Credential=AKIDOFTHECONNECTOR/")), "{:?}", seen.lock().unwrap());
    // An admin turns ambient credentials on: the node's environment signs.
    seen.lock().unwrap().clear();
    egress::set_admin(egress::Admin { s3_ambient_credentials: true, ..egress::Admin::default() });
    test_connection(&keyless, Path::new(".")).await.unwrap();
    assert!(seen.lock().unwrap().iter().all(|(_, auth)| auth.contains("Credential=AKIDTHENODESOWN/")), "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn s3_endpoints_at_the_nodes_own_port_or_link_local_are_refused_uncontacted() {
    let (own, seen) = s3_listener().await;
    egress::install(Policy { own: vec![own], ..Policy::default() });
    let at_own = s3(&format!("http://{own}"), json!({}));
    // The connection test checks the endpoint first…
    let e = test_connection(&at_own, Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("refused by the egress policy") && e.contains("own listener"), "{e}");
    // …and a run's every request is checked by the store's client.
    let mut src = open_source(&at_own, Path::new(".")).unwrap();
    let e = refused(src.next_batch(10).await);
    assert!(e.contains("egress policy") && e.contains("own listener"), "{e}");
    assert!(seen.lock().unwrap().is_empty(), "the node's own port was contacted");

    let metadata = s3("http://169.254.169.254", json!({"allow_http": true}));
    let e = test_connection(&metadata, Path::new(".")).await.unwrap_err().to_string();
    assert!(e.contains("link-local"), "{e}");
    let mut src = open_source(&metadata, Path::new(".")).unwrap();
    let e = refused(src.next_batch(10).await);
    assert!(e.contains("link-local"), "{e}");
}

#[tokio::test]
async fn s3_ambient_credentials_do_not_open_the_metadata_endpoint_as_a_bucket() {
    egress::set_admin(egress::Admin { s3_ambient_credentials: true, ..egress::Admin::default() });
    let metadata = s3("http://169.254.169.254", json!({"allow_http": true}));
    let mut src = open_source(&metadata, Path::new(".")).unwrap();
    let e = refused(src.next_batch(10).await);
    assert!(e.contains("link-local"), "{e}");
}

#[tokio::test]
async fn s3_a_redirect_to_another_origin_is_not_followed() {
    let (theirs, seen) = s3_listener().await;
    let ours = redirector(StatusCode::TEMPORARY_REDIRECT, format!("http://{theirs}/b")).await;
    let keyed = s3(&format!("http://{ours}"), json!({"access_key_id": "AKIDOFTHECONNECTOR", "secret_access_key": "its-secret"}));
    assert!(test_connection(&keyed, Path::new(".")).await.is_err());
    assert!(seen.lock().unwrap().is_empty(), "the redirect was followed: {:?}", seen.lock().unwrap());
}
