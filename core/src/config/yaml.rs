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
