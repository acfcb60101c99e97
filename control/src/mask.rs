//! Secrets never leave the API. A connector's secrets are the fields its types mark secret
//! (the one list, [`secret_paths`]): [`masked_config`] and [`masked_document`] replace each
//! by [`MASK`], in a saved connector or in every connector of a pipeline document.
//!
//! On top of that, as an extra net for free-form JSON (records in previews and dead letters,
//! settings, transformations, whatever a connector list cannot know), every value under a
//! secret-looking key ([`is_secret_key`]: password, token, api_key, …) is masked too. That
//! heuristic is not the list of secret fields — a renamed key would slip through it — and
//! nothing is sealed at rest by it.
//!
//! When a client sends a masked value back (it edited a connector it read), the stored value
//! is kept, while the connection's endpoint is unchanged ([`keep_masked_config`],
//! [`keep_masked_document`]).

use dagg_model::spec::connector::secret_paths::{self, At, Location, location_text};
use serde_json::Value as Json;
pub const MASK: &str = "********";

/// Whether a config key holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    const EXACT: &[&str] = &[
        "password", "passwd", "pwd", "pass", "token", "secret", "api_key", "apikey", "api_key_value", "api_secret", "access_key_secret", "secret_access_key",
        "secret_key", "client_secret", "private_key", "credentials", "auth_token", "access_token", "refresh_token", "bearer_token", "session_token", "connection_string",
        "dsn", "sasl_password", "ssl_key_password", "key_password", "webhook_secret", "signing_key",
    ];
    EXACT.contains(&k.as_str()) || k.ends_with("_password") || k.ends_with("_secret") || k.ends_with("_token") || k.ends_with("password")
}

/// Replaces every value under a secret-looking key (at any depth) by [`MASK`]: the net for
/// free-form JSON.
pub fn mask(v: &mut Json) {
    match v {
        Json::Object(m) => {
            for (k, val) in m.iter_mut() {
                if is_secret_key(k) && !val.is_null() {
                    *val = Json::String(MASK.into());
                } else {
                    mask(val);
                }
            }
        }
        Json::Array(a) => a.iter_mut().for_each(mask),
        _ => {}
    }
}

/// A copy of free-form JSON with [`mask`] applied.
pub fn masked(v: &Json) -> Json {
    let mut v = v.clone();
    mask(&mut v);
    v
}

/// A copy of a `connector_type` config as answers show it: its typed secrets masked, and the
/// key-name net over the rest.
pub fn masked_config(connector_type: &str, config: &Json) -> Json {
    let mut v = config.clone();
    secret_paths::mask_config(connector_type, &mut v);
    mask(&mut v);
    v
}

/// A copy of a pipeline document as answers show it: the typed secrets of every connector
/// in it masked, and the key-name net over the rest.
pub fn masked_document(doc: &Json) -> Json {
    let mut v = doc.clone();
    secret_paths::mask_document(&mut v);
    mask(&mut v);
    v
}

/// Locations under a secret-looking key, at any depth (what [`mask`] masks).
fn key_locations(v: &Json, at: &mut Location, out: &mut Vec<Location>) {
    match v {
        Json::Object(m) => {
            for (k, val) in m {
                at.push(At::Key(k.clone()));
                if is_secret_key(k) {
                    out.push(at.clone());
                }
                key_locations(val, at, out);
                at.pop();
            }
        }
        Json::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                at.push(At::Index(i));
                key_locations(val, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// The keys that say where a connection goes: a secret sent back masked is kept only while
/// none of these (nor the connector's type) changed at its level or above it, so a stored
/// secret cannot be sent to a new endpoint by someone who never saw it.
pub const ENDPOINT_KEYS: &[&str] = &[
    "connector_type", "url", "host", "port", "bootstrap_servers", "brokers", "servers", "bucket", "endpoint", "endpoint_url", "database", "token_url", "webhook_url", "smtp_host",
];

/// A masked secret that cannot be kept: `path` is the secret's, `changed` the endpoint key
/// whose change refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSecret {
    pub path: String,
    pub changed: String,
}

impl std::fmt::Display for KeptSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is a stored secret, kept only while the connection's type and endpoint are unchanged; `{}` changed: enter the secret again",
            self.path, self.changed
        )
    }
}

/// Where `new` holds [`MASK`] under a secret-looking key (free-form JSON: settings,
/// transformations), puts back the value `old` has there — unless an endpoint key
/// ([`ENDPOINT_KEYS`]) differs between `old` and `new` at that secret's level or above it
/// (or `changed` already names one, for a config whose connector type is kept beside it):
/// then the first such secret is refused. `at` is the path of `new` in the request, for
/// the message.
pub fn keep_masked(new: &mut Json, old: &Json, at: &str, changed: Option<&str>) -> Result<(), KeptSecret> {
    let mut locs = Vec::new();
    key_locations(new, &mut Vec::new(), &mut locs);
    keep_at(new, old, &locs, at, changed)
}

/// [`keep_masked`] for a saved connector's config: its typed secrets (and what the
/// key-name net masked in it).
pub fn keep_masked_config(connector_type: &str, new: &mut Json, old: &Json, at: &str, changed: Option<&str>) -> Result<(), KeptSecret> {
    let mut locs = secret_paths::config_locations(connector_type, new);
    key_locations(new, &mut Vec::new(), &mut locs);
    keep_at(new, old, &locs, at, changed)
}

/// [`keep_masked`] for a pipeline document: the typed secrets of every connector in it (and
/// what the key-name net masked in it).
pub fn keep_masked_document(new: &mut Json, old: &Json, at: &str, changed: Option<&str>) -> Result<(), KeptSecret> {
    let mut locs = secret_paths::document_locations(new);
    key_locations(new, &mut Vec::new(), &mut locs);
    keep_at(new, old, &locs, at, changed)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Puts back the stored value of each location in `locs` where `new` holds [`MASK`] and
/// `old` has a value, checking the endpoint keys of every level above it.
fn keep_at(new: &mut Json, old: &Json, locs: &[Location], at: &str, changed: Option<&str>) -> Result<(), KeptSecret> {
    for loc in locs {
        if secret_paths::get(new, loc).and_then(Json::as_str) != Some(MASK) {
            continue;
        }
        let Some(prev) = secret_paths::get(old, loc) else { continue };
        let refused = match changed {
            Some(c) => Some(c.to_string()),
            None => (0..loc.len()).find_map(|depth| {
                let (n, o) = (secret_paths::get(new, &loc[..depth])?, secret_paths::get(old, &loc[..depth])?);
                let (Json::Object(n), Json::Object(o)) = (n, o) else { return None };
                ENDPOINT_KEYS.iter().find(|k| n.get(**k) != o.get(**k)).map(|k| join(&location_text(at, &loc[..depth]), k))
            }),
        };
        if let Some(changed) = refused {
            return Err(KeptSecret { path: location_text(at, loc), changed });
        }
        let prev = prev.clone();
        if let Some(v) = secret_paths::get_mut(new, loc) {
            *v = prev;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth_and_headers_are_not() {
        let mut v = json!({"config": {"auth_params": {"api_key_header": "X-API-Key", "api_key_value": "k"}, "password": "p", "list": [{"client_secret": "s"}], "port": 5432}});
        mask(&mut v);
        assert_eq!(v, json!({"config": {"auth_params": {"api_key_header": "X-API-Key", "api_key_value": MASK}, "password": MASK, "list": [{"client_secret": MASK}], "port": 5432}}));
    }

    #[test]
    fn masked_values_sent_back_keep_the_stored_secret() {
        let old = json!({"password": "p", "host": "a", "username": "u"});
        let mut new = json!({"password": MASK, "host": "a", "username": "v"});
        keep_masked(&mut new, &old, "", None).unwrap();
        assert_eq!(new, json!({"password": "p", "host": "a", "username": "v"}));
        let mut changed = json!({"password": "new", "host": "b"});
        keep_masked(&mut changed, &old, "", None).unwrap();
        assert_eq!(changed["password"], "new");
    }

    #[test]
    fn a_masked_secret_is_refused_when_its_endpoint_changed() {
        let old = json!({"name": "p", "source": {"connector_type": "rest_api", "config": {"url": "https://api.example.com/x", "auth_params": {"token": "sealed"}}}});
        let mut new = json!({"name": "p", "source": {"connector_type": "rest_api", "config": {"url": "https://attacker.example/x", "auth_params": {"token": MASK}}}});
        let e = keep_masked(&mut new, &old, "", None).unwrap_err();
        assert_eq!(e, KeptSecret { path: "source.config.auth_params.token".into(), changed: "source.config.url".into() });
        assert!(e.to_string().contains("enter the secret again"));
        // The type changing refuses it too; so does a port, and the caller's own reason.
        let mut new = json!({"name": "p", "source": {"connector_type": "other", "config": {"url": "https://api.example.com/x", "auth_params": {"token": MASK}}}});
        assert_eq!(keep_masked(&mut new, &old, "", None).unwrap_err().changed, "source.connector_type");
        let db = json!({"host": "db", "password": "sealed"});
        let mut moved = json!({"host": "db", "port": 6000, "password": MASK});
        assert_eq!(keep_masked(&mut moved, &db, "", None).unwrap_err().path, "password");
        let mut same = json!({"host": "db", "password": MASK});
        assert_eq!(keep_masked(&mut same, &db, "config", Some("connector_type")).unwrap_err(), KeptSecret { path: "config.password".into(), changed: "connector_type".into() });
        // A change elsewhere (another connector, a name) keeps it.
        let mut renamed = json!({"name": "q", "source": {"connector_type": "rest_api", "config": {"url": "https://api.example.com/x", "auth_params": {"token": MASK}}}});
        keep_masked(&mut renamed, &old, "", None).unwrap();
        assert_eq!(renamed["source"]["config"]["auth_params"]["token"], "sealed");
    }

    /// A header's value is a secret because `headers` is typed, whatever the header is
    /// called; the key-name net alone would show it.
    #[test]
    fn a_secret_under_any_header_name_is_masked_because_headers_are_typed() {
        let config = json!({"url": "https://api.example.com", "headers": {"X-Renamed-Credential": "h3ader"}, "secret_query_params": {"sig": "qp"}});
        assert_eq!(masked(&config)["headers"]["X-Renamed-Credential"], "h3ader", "the net does not know this name");
        let shown = masked_config("rest_api", &config);
        assert_eq!(shown["headers"]["X-Renamed-Credential"], MASK);
        assert_eq!(shown["secret_query_params"]["sig"], MASK);
        assert_eq!(shown["url"], "https://api.example.com");
        let doc = json!({"name": "p", "source": {"connector_type": "REST API", "config": config}, "destination": {"connector_type": "kafka", "config": {"topic": "t", "properties": {"ssl.key.pem": "-----BEGIN"}}}});
        let shown = masked_document(&doc).to_string();
        assert!(!shown.contains("h3ader") && !shown.contains("\"qp\"") && !shown.contains("BEGIN"), "{shown}");
    }

    #[test]
    fn typed_secrets_sent_back_masked_are_kept_while_the_endpoint_is_unchanged() {
        let old = json!({"url": "https://api.example.com/x", "headers": {"X-Key": "sealed-h"}});
        let mut new = json!({"url": "https://api.example.com/x", "headers": {"X-Key": MASK}, "rate_limit": 5});
        keep_masked_config("rest_api", &mut new, &old, "config", None).unwrap();
        assert_eq!(new["headers"]["X-Key"], "sealed-h");
        let mut moved = json!({"url": "https://attacker.example/x", "headers": {"X-Key": MASK}});
        let e = keep_masked_config("rest_api", &mut moved, &old, "config", None).unwrap_err();
        assert_eq!(e, KeptSecret { path: "config.headers.X-Key".into(), changed: "config.url".into() });
        let old_doc = json!({"source": {"connector_type": "rabbitmq", "config": {"url": "amqp://h/%2f", "queue": "q", "username": "u", "password": "sealed-r"}}});
        let mut doc = json!({"source": {"connector_type": "rabbitmq", "config": {"url": "amqp://h/%2f", "queue": "q2", "username": "u", "password": MASK}}});
        keep_masked_document(&mut doc, &old_doc, "", None).unwrap();
        assert_eq!(doc["source"]["config"]["password"], "sealed-r");
        let mut doc = json!({"source": {"connector_type": "rabbitmq", "config": {"url": "amqp://evil/%2f", "queue": "q", "username": "u", "password": MASK}}});
        assert_eq!(keep_masked_document(&mut doc, &old_doc, "", None).unwrap_err().changed, "source.config.url");
    }
}
