//! Credentials at rest: AES-256-GCM encryption of the secret values in connector configs,
//! and masking wherever a config is shown.
//!
//! An encrypted value is the text `enc:v1:` followed by base64 (standard, padded) of a
//! random 12-byte nonce and the ciphertext with its 16-byte tag. It stands wherever the
//! clear value would (`"password": "enc:v1:…"`), so a stored pipeline document keeps its
//! shape; connectors call [`reveal`] when they open, which decrypts such a value and passes
//! a clear one through.
//!
//! The master key is 32 bytes, from the environment variable `DAGG_MASTER_KEY` (base64 or
//! hex), else from the file named by `DAGG_MASTER_KEY_FILE` (the same text, or the 32 raw
//! bytes). A store that persists connector configs runs [`MasterKey::seal_config`] (a saved
//! connector) or [`MasterKey::seal_document`] (a pipeline document) before writing. Which
//! values are secrets is not decided here: it is the one list the model derives from the
//! config types ([`secret_paths`](dagg_model::spec::connector::secret_paths)), the same
//! list answers are masked by.
//!
//! Masking never shows any part of a secret, not even its length: `Debug`/`Display` of
//! [`Secret`] and [`mask`] print [`MASK`].

use std::path::Path;

use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce};
use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use dagg_model::spec::connector::{MASK, Secret, secret_paths};
use serde_json::Value as Json;

/// The prefix of an encrypted value (the `v1` is the format: AES-256-GCM, 12-byte nonce).
pub const PREFIX: &str = "enc:v1:";
/// The environment variable holding the master key.
pub const KEY_ENV: &str = "DAGG_MASTER_KEY";
/// The environment variable naming a file that holds the master key.
pub const KEY_FILE_ENV: &str = "DAGG_MASTER_KEY_FILE";

const NONCE_LEN: usize = 12;

/// Why a secret could not be encrypted or decrypted. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("no master key: set {KEY_ENV} (32 bytes, base64 or hex) or {KEY_FILE_ENV} (a file holding it) to use encrypted credentials")]
    NoKey,
    #[error("the master key {0}")]
    BadKey(String),
    #[error("cannot read the master key file `{path}`: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("an encrypted credential is malformed: {0}")]
    Malformed(&'static str),
    #[error("an encrypted credential does not decrypt with this master key (another key, or altered text)")]
    Decrypt,
}

/// What a secret shows instead of its value.
pub fn mask(_secret: &str) -> &'static str {
    MASK
}

/// Whether a value is in the encrypted form.
pub fn is_encrypted(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The master key.
#[derive(Clone)]
pub struct MasterKey(Aes256Gcm);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({MASK})")
    }
}

impl MasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::BadKey(format!("has {} bytes; AES-256 needs 32", bytes.len())));
        }
        Aes256Gcm::new_from_slice(bytes).map(MasterKey).map_err(|_| SecretError::BadKey("is not a valid AES-256 key".into()))
    }

    /// A key from text: 64 hex digits, or base64 of 32 bytes.
    pub fn from_text(text: &str) -> Result<MasterKey, SecretError> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = hex::decode(t).map_err(|_| SecretError::BadKey("is not valid hex".into()))?;
            return MasterKey::from_bytes(&bytes);
        }
        let bytes = B64
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
            .map_err(|_| SecretError::BadKey("is neither 64 hex digits nor base64 of 32 bytes".into()))?;
        MasterKey::from_bytes(&bytes)
    }

    /// A key from a file holding its text, or exactly its 32 raw bytes.
    pub fn from_file(path: &Path) -> Result<MasterKey, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::KeyFile { path: path.display().to_string(), source })?;
        if bytes.len() == 32 && std::str::from_utf8(&bytes).map_or(true, |s| MasterKey::from_text(s).is_err()) {
            return MasterKey::from_bytes(&bytes);
        }
        let text = String::from_utf8(bytes).map_err(|_| SecretError::BadKey(format!("in `{}` is neither text nor 32 raw bytes", path.display())))?;
        MasterKey::from_text(&text)
    }

    /// The key from `DAGG_MASTER_KEY`, else the file `DAGG_MASTER_KEY_FILE` names.
    pub fn from_env() -> Result<MasterKey, SecretError> {
        if let Ok(text) = std::env::var(KEY_ENV)
            && !text.trim().is_empty()
        {
            return MasterKey::from_text(&text);
        }
        match std::env::var_os(KEY_FILE_ENV) {
            Some(path) if !path.is_empty() => MasterKey::from_file(Path::new(&path)),
            _ => Err(SecretError::NoKey),
        }
    }

    /// A new random key, and its base64 text (to put in `DAGG_MASTER_KEY` or a key file).
    pub fn generate() -> (MasterKey, String) {
        let key = aes_gcm::Key::<Aes256Gcm>::generate();
        let text = B64.encode(key.as_slice());
        (MasterKey(Aes256Gcm::new(&key)), text)
    }

    /// Encrypts a value (a fresh random nonce each time, so equal values differ).
    pub fn encrypt(&self, plain: &str) -> String {
        let nonce = Nonce::<Aes256Gcm>::generate();
        let sealed = self.0.encrypt(&nonce, plain.as_bytes()).expect("AES-GCM encrypts any value below 64 GiB");
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(nonce.as_slice());
        raw.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(raw))
    }

    /// Decrypts a value [`MasterKey::encrypt`] made.
    pub fn decrypt(&self, value: &str) -> Result<String, SecretError> {
        let body = value.strip_prefix(PREFIX).ok_or(SecretError::Malformed("it does not start with `enc:v1:`"))?;
        let raw = B64.decode(body.trim()).map_err(|_| SecretError::Malformed("it is not base64"))?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(SecretError::Malformed("it is too short"));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| SecretError::Malformed("its nonce is not 12 bytes"))?;
        let plain = self.0.decrypt(&nonce, sealed).map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Malformed("it does not decrypt to text"))
    }

    /// The key in `path` when the file exists; else a new key written there (created with
    /// mode 0600, never replacing a file another process wrote meanwhile). Whether it was
    /// generated now, and the key. For a node started without a configured key.
    pub fn load_or_generate(path: &Path) -> Result<(MasterKey, bool), SecretError> {
        if path.exists() {
            return MasterKey::from_file(path).map(|k| (k, false));
        }
        let (key, text) = MasterKey::generate();
        let io = |source| SecretError::KeyFile { path: path.display().to_string(), source };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(path) {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(format!("{text}\n").as_bytes()).and_then(|()| f.sync_all()).map_err(io)?;
                Ok((key, true))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => MasterKey::from_file(path).map(|k| (k, false)),
            Err(e) => Err(io(e)),
        }
    }

    /// Seals, in place, every clear string under a key `is_secret` names (at any depth);
    /// values already sealed stay as they are. For stores whose secret keys are not the
    /// connector configs' typed secret fields (settings, say).
    pub fn encrypt_where(&self, v: &mut Json, is_secret: &dyn Fn(&str) -> bool) {
        walk_where(v, is_secret, &mut |s| {
            if !is_encrypted(s) {
                *s = self.encrypt(s);
            }
            Ok(())
        })
        .expect("encrypting cannot fail");
    }

    /// Opens, in place, every sealed string under a key `is_secret` names.
    pub fn decrypt_where(&self, v: &mut Json, is_secret: &dyn Fn(&str) -> bool) -> Result<(), SecretError> {
        walk_where(v, is_secret, &mut |s| {
            if is_encrypted(s) {
                *s = self.decrypt(s)?;
            }
            Ok(())
        })
    }

    /// Seals, in place, every clear secret of a `connector_type` config (the fields its
    /// types mark secret); values already sealed stay as they are.
    pub fn seal_config(&self, connector_type: &str, config: &mut Json) {
        secret_paths::visit_config(connector_type, config, &mut |_, v| self.seal_value(v));
    }

    /// Seals, in place, every clear secret of every connector in a pipeline document.
    pub fn seal_document(&self, doc: &mut Json) {
        secret_paths::visit_document(doc, &mut |_, v| self.seal_value(v));
    }

    fn seal_value(&self, v: &mut Json) {
        if let Json::String(s) = v
            && !is_encrypted(s)
        {
            *s = self.encrypt(s);
        }
    }

    /// Opens, in place, every sealed secret of a `connector_type` config.
    pub fn open_config(&self, connector_type: &str, config: &mut Json) -> Result<(), SecretError> {
        let mut res = Ok(());
        secret_paths::visit_config(connector_type, config, &mut |_, v| {
            if let Json::String(s) = v
                && is_encrypted(s)
                && res.is_ok()
            {
                match self.decrypt(s) {
                    Ok(clear) => *s = clear,
                    Err(e) => res = Err(e),
                }
            }
        });
        res
    }
}

/// Whether a `connector_type` config holds a secret in the clear (stored by an earlier
/// build, or before a master key was configured).
pub fn has_clear_config_secret(connector_type: &str, config: &Json) -> bool {
    let mut clear = false;
    secret_paths::visit_config(connector_type, &mut config.clone(), &mut |_, v| clear |= v.as_str().is_some_and(|s| !is_encrypted(s)));
    clear
}

/// Whether any string under a key `is_secret` names (at any depth) is in the clear.
pub fn has_clear_secret(v: &Json, is_secret: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Json::Object(map) => map.iter().any(|(k, v)| match v {
            Json::String(s) if is_secret(k) => !is_encrypted(s),
            other => has_clear_secret(other, is_secret),
        }),
        Json::Array(items) => items.iter().any(|i| has_clear_secret(i, is_secret)),
        _ => false,
    }
}

fn walk_where(v: &mut Json, is_secret: &dyn Fn(&str) -> bool, f: &mut dyn FnMut(&mut String) -> Result<(), SecretError>) -> Result<(), SecretError> {
    match v {
        Json::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Json::String(s) if is_secret(k) => f(s)?,
                    other => walk_where(other, is_secret, f)?,
                }
            }
        }
        Json::Array(items) => {
            for item in items {
                walk_where(item, is_secret, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The key this process seals with, when it chose one itself (a node that generated its
/// key into its data directory installs it here): connectors reveal with it.
static PROCESS_KEY: std::sync::RwLock<Option<MasterKey>> = std::sync::RwLock::new(None);

/// Makes `key` the one [`reveal`] uses in this process (before the environment's).
pub fn install_process_key(key: MasterKey) {
    *PROCESS_KEY.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
}

/// The clear value of a secret from a config: an encrypted one is decrypted with the
/// process's key ([`install_process_key`]), else the master key from the environment
/// ([`MasterKey::from_env`]); a clear one is returned as is.
pub fn reveal(secret: &Secret) -> Result<String, SecretError> {
    let v = secret.expose();
    if !is_encrypted(v) {
        return Ok(v.to_string());
    }
    let installed = PROCESS_KEY.read().unwrap_or_else(|e| e.into_inner()).clone();
    match installed {
        Some(k) => k.decrypt(v),
        None => MasterKey::from_env()?.decrypt(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_fresh_nonces() {
        let (key, text) = MasterKey::generate();
        let a = key.encrypt("secure_password");
        let b = key.encrypt("secure_password");
        assert!(a.starts_with(PREFIX) && a != b);
        assert!(!a.contains("secure_password"));
        assert_eq!(key.decrypt(&a).unwrap(), "secure_password");
        // The same key from its text decrypts too.
        assert_eq!(MasterKey::from_text(&text).unwrap().decrypt(&b).unwrap(), "secure_password");
    }

    #[test]
    fn wrong_key_or_altered_text_fails_cleanly() {
        let (k1, _) = MasterKey::generate();
        let (k2, _) = MasterKey::generate();
        let sealed = k1.encrypt("x");
        assert!(matches!(k2.decrypt(&sealed), Err(SecretError::Decrypt)));
        let mut raw = B64.decode(&sealed[PREFIX.len()..]).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        assert!(matches!(k1.decrypt(&format!("{PREFIX}{}", B64.encode(raw))), Err(SecretError::Decrypt)));
        assert!(matches!(k1.decrypt("enc:v1:!!"), Err(SecretError::Malformed(_))));
    }

    #[test]
    fn keys_from_hex_base64_and_files() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let k = MasterKey::from_text(hex_key).unwrap();
        let b64 = B64.encode(hex::decode(hex_key).unwrap());
        assert_eq!(MasterKey::from_text(&b64).unwrap().decrypt(&k.encrypt("v")).unwrap(), "v");
        assert!(matches!(MasterKey::from_text("c2hvcnQ="), Err(SecretError::BadKey(_))));
        let dir = tempfile::tempdir().unwrap();
        let text_file = dir.path().join("key.txt");
        std::fs::write(&text_file, format!("{hex_key}\n")).unwrap();
        let raw_file = dir.path().join("key.bin");
        std::fs::write(&raw_file, hex::decode(hex_key).unwrap()).unwrap();
        for f in [&text_file, &raw_file] {
            assert_eq!(MasterKey::from_file(f).unwrap().decrypt(&k.encrypt("v")).unwrap(), "v");
        }
    }

    #[test]
    fn a_generated_key_file_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (k, generated) = MasterKey::load_or_generate(&path).unwrap();
        assert!(generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, generated) = MasterKey::load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(again.decrypt(&k.encrypt("v")).unwrap(), "v");
    }

    #[test]
    fn values_under_chosen_keys_seal_and_open() {
        let (key, _) = MasterKey::generate();
        let is = |k: &str| k == "webhook_secret" || k == "password";
        let clear = json!({"webhook_secret": "ws", "smtp": {"host": "h", "password": "pw"}});
        assert!(has_clear_secret(&clear, &is));
        let mut v = clear.clone();
        key.encrypt_where(&mut v, &is);
        assert!(!has_clear_secret(&v, &is));
        assert!(!v.to_string().contains("\"ws\"") && !v.to_string().contains("\"pw\""), "{v}");
        assert_eq!(v["smtp"]["host"], "h");
        key.decrypt_where(&mut v, &is).unwrap();
        assert_eq!(v, clear);
    }

    #[test]
    fn configs_and_documents_seal_exactly_their_typed_secrets() {
        let (key, _) = MasterKey::generate();
        let clear = json!({
            "url": "https://x", "headers": {"X-Renamed-Credential": "h3ad"}, "query_params": {"sort": "id"},
            "secret_query_params": {"access_token": "qp7"}, "auth_method": "basic", "auth_params": {"username": "u", "password": "pw9"}
        });
        assert!(has_clear_config_secret("rest_api", &clear));
        let mut stored = clear.clone();
        key.seal_config("rest_api", &mut stored);
        assert!(!has_clear_config_secret("rest_api", &stored));
        let text = stored.to_string();
        for s in ["h3ad", "qp7", "pw9"] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert_eq!(stored["auth_params"]["username"], "u");
        assert_eq!(stored["query_params"]["sort"], "id");
        // Sealing twice changes nothing already sealed.
        let again = {
            let mut s = stored.clone();
            key.seal_config("rest_api", &mut s);
            s
        };
        assert_eq!(again, stored);
        let mut back = stored.clone();
        key.open_config("rest_api", &mut back).unwrap();
        assert_eq!(back, clear);
        // In a document: every connector, wherever it is.
        let mut doc = json!({"source": {"connector_type": "kafka", "config": {"topic": "t", "properties": {"sasl.password": "kp1", "sasl.username": "ku"}}},
            "destinations": [{"connector_type": "rabbitmq", "config": {"queue": "q", "username": "ru", "password": "rp1"}}]});
        key.seal_document(&mut doc);
        let text = doc.to_string();
        assert!(!text.contains("kp1") && !text.contains("rp1") && text.contains("\"ku\"") && text.contains("\"ru\""), "{text}");
        assert_eq!(mask("anything"), MASK);
    }
}
