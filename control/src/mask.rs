//! Secrets never leave the API: every value under a secret-looking key (password, token,
//! api_key_value, secret_access_key, client_secret, …) is replaced by [`MASK`] in responses.
//! When a client sends a masked value back (it edited a connector it read), the stored value
//! is kept.

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

/// Replaces every secret value (at any depth) by [`MASK`].
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

pub fn masked(v: &Json) -> Json {
    let mut v = v.clone();
    mask(&mut v);
    v
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

/// Where `new` holds [`MASK`] under a secret key, puts back the value `old` has there —
/// unless an endpoint key ([`ENDPOINT_KEYS`]) differs between `old` and `new` at that
/// secret's level or above it (or `changed` already names one, for a config whose
/// connector type is kept beside it): then the first such secret is refused. `at` is the
/// path of `new` in the request, for the message.
pub fn keep_masked(new: &mut Json, old: &Json, at: &str, changed: Option<&str>) -> Result<(), KeptSecret> {
    keep_at(new, old, at, changed.map(str::to_string))
}


fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn keep_at(new: &mut Json, old: &Json, path: &str, mut changed: Option<String>) -> Result<(), KeptSecret> {
    match (new, old) {
        (Json::Object(n), Json::Object(o)) => {
            if changed.is_none() {
                changed = ENDPOINT_KEYS.iter().find(|k| n.get(**k) != o.get(**k)).map(|k| join(path, k));
            }
            for (k, val) in n.iter_mut() {
                let here = join(path, k);
                if is_secret_key(k) && val.as_str() == Some(MASK) {
                    let Some(prev) = o.get(k) else { continue };
                    if let Some(changed) = &changed {
                        return Err(KeptSecret { path: here, changed: changed.clone() });
                    }
                    *val = prev.clone();
                } else if let Some(prev) = o.get(k) {
                    keep_at(val, prev, &here, changed.clone())?;
                }
            }
            Ok(())
        }
        (Json::Array(n), Json::Array(o)) => {
            for (i, (a, b)) in n.iter_mut().zip(o).enumerate() {
                keep_at(a, b, &format!("{path}[{i}]"), changed.clone())?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
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
}
