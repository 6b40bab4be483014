//! A figment format for YAML over `serde_norway`, the maintained fork of
//! `serde_yaml` (figment's own `yaml` feature uses the deprecated crate).

use serde::de::DeserializeOwned;

/// YAML as a figment [`figment::providers::Format`].
#[derive(Debug, Clone, Copy)]
pub struct Yaml;

impl figment::providers::Format for Yaml {
    type Error = serde_norway::Error;
    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        serde_norway::from_str(string)
    }
}

/// A stage key's default written as config text (`#[key(default =
/// "300s")]`), read by the same parser as the key itself, so the default
/// is stated once and reads in `lanparty stages` exactly as a user would
/// write it. `#[stage_kind]` generates a test per default that reads it,
/// so a default that does not parse fails `cargo test` of its crate, not a
/// node.
pub fn default_from_text<T: DeserializeOwned>(stage: &str, key: &str, text: &str) -> T {
    serde_norway::from_str(text).unwrap_or_else(|e| {
        panic!("stage `{stage}`: the default of `{key}` (`{text}`) does not parse: {e}")
    })
}
