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

/// Where `new` holds [`MASK`] under a secret key, puts back the value `old` has there.
pub fn keep_masked(new: &mut Json, old: &Json) {
    match (new, old) {
        (Json::Object(n), Json::Object(o)) => {
            for (k, val) in n.iter_mut() {
                let Some(prev) = o.get(k) else { continue };
                if is_secret_key(k) && val.as_str() == Some(MASK) {
                    *val = prev.clone();
                } else {
                    keep_masked(val, prev);
                }
            }
        }
        (Json::Array(n), Json::Array(o)) => {
            for (a, b) in n.iter_mut().zip(o) {
                keep_masked(a, b);
            }
        }
        _ => {}
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
        let old = json!({"password": "p", "host": "a"});
        let mut new = json!({"password": MASK, "host": "b"});
        keep_masked(&mut new, &old);
        assert_eq!(new, json!({"password": "p", "host": "b"}));
        let mut changed = json!({"password": "new"});
        keep_masked(&mut changed, &old);
        assert_eq!(changed["password"], "new");
    }
}
