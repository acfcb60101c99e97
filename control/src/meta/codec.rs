//! Versioned JSON for stored values: `{"v": 1, "data": ...}`. A value of another version is
//! an error that says so, never a silent default.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version of stored values this build writes and reads.
pub const VALUE_VERSION: u64 = 1;

#[derive(Serialize)]
struct Out<'a, T> {
    v: u64,
    data: &'a T,
}

#[derive(serde::Deserialize)]
struct In<T> {
    v: u64,
    data: T,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(&Out { v: VALUE_VERSION, data: value }).expect("stored values serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u64,
    }
    match serde_json::from_slice::<In<T>>(bytes) {
        Ok(v) if v.v == VALUE_VERSION => Ok(v.data),
        Ok(v) => Err(format!("a stored value of version {}; this build reads version {VALUE_VERSION}", v.v)),
        Err(e) => match serde_json::from_slice::<Version>(bytes) {
            Ok(ver) if ver.v != VALUE_VERSION => Err(format!("a stored value of version {}; this build reads version {VALUE_VERSION}", ver.v)),
            _ => Err(e.to_string()),
        },
    }
}
