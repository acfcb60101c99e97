//! What several connectors' configs share: credentials ([`Secret`]), the word enums that
//! read the guide's spellings, the payload format of the message connectors, and a few
//! defaults.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::spec::connector::Role;

/// What a secret shows instead of its value.
pub const MASK: &str = "********";

/// A credential. `Debug` and `Display` show [`MASK`]; serde reads and writes the value as
/// written (clear text, or `enc:v1:…` ciphertext that the connector decrypts when it opens).
///
/// Every secret-bearing config field is of this type: its schema is `writeOnly`, and that is
/// what [`secret_paths`](super::secret_paths::secret_paths) derives the one list of secret
/// fields from (sealed at rest, masked in answers).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value as written: only a connector that is about to use it should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }
}


/// Credentials are write-only strings in the schemas: the UI shows a password input and
/// never echoes them back.
impl JsonSchema for Secret {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "password", "writeOnly": true})
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MASK:?}")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Reads one of a fixed set of words case-insensitively, with spaces and dashes taken as
/// underscores, so the guide's `API_KEY` and `bearer_token` both read.
pub(crate) fn normalize_word(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// An enum read from one of a fixed set of words (several spellings each), written in its
/// canonical spelling; its schema lists the canonical spellings.
macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $canon:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// Every accepted spelling's canonical form, for messages.
            pub const NAMES: &'static [&'static str] = &[$($canon),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $canon),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match $crate::spec::connectors::common::normalize_word(&s).as_str() {
                    $($canon $(| $alias)* => Ok($name::$variant),)+
                    _ => Err(format!("unknown value `{s}`; expected one of: {}", $name::NAMES.join(", "))),
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str {
                v.as_str()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({"type": "string", "enum": $name::NAMES})
            }
        }
    };
}

pub(crate) use word_enum;


/// How a message's payload becomes a record (and a record a payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// One JSON object per message (default); anything else goes to the dead letter.
    Json,
    /// Any bytes, as the record `{"payload": "<text>"}` (invalid UTF-8 is replaced).
    /// A destination sends the record's `payload` field (or the record as JSON without one).
    Text,
}

pub(crate) fn default_payload_format() -> PayloadFormat {
    PayloadFormat::Json
}

/// Seconds to wait for a connection when `connect_timeout` is absent.
pub(crate) fn default_connect_timeout() -> u64 {
    10
}

pub(crate) fn default_true() -> bool {
    true
}

/// How messages name a role.
pub(crate) fn role_word(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Sink => "destination",
        Role::Any => "connector",
    }
}

/// The user info of a URL (`user[:password]` before the host), when it has one: the user
/// and whether a password follows it.
pub(crate) fn url_userinfo(url: &str) -> Option<(&str, bool)> {
    let rest = &url[url.find("://")? + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (info, _host) = authority.rsplit_once('@')?;
    Some(match info.split_once(':') {
        Some((user, _)) => (user, true),
        None => (info, false),
    })
}

/// Whether `url` is an absolute `http`/`https` URL with a host (a light check: the
/// connector parses it fully when it opens).
pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.starts_with(':') && !host.contains(char::is_whitespace)
    })
}
