//! Stage entries in a config: plain maps with a `type:` key, handed to the
//! stage kind's own parser.

use std::path::{Path, PathBuf};

use figment::value::magic::Tagged;
use figment::value::{Dict, Tag, Value};
use figment::{Figment, Source};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// One stage entry as written, before its kind's parser has looked at it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct StageSpec(Tagged<Dict>);

impl StageSpec {
    /// A spec of kind `kind` with no other keys (used for defaults).
    pub fn of_kind(kind: &str) -> StageSpec {
        let mut dict = Dict::new();
        dict.insert("type".into(), Value::from(kind.to_string()));
        StageSpec(Tagged::from(dict))
    }

    /// The entry's `type:` value, if it is a string.
    pub fn kind(&self) -> Option<&str> {
        match self.0.get("type") {
            Some(Value::String(_, kind)) => Some(kind),
            _ => None,
        }
    }

    /// Resolves the entry into a [`StageConfig`]: finds the `type:` key and
    /// the file the entry was written in. `path` is where the entry sits,
    /// e.g. `room.ingress[0]`.
    pub fn resolve(
        &self,
        figment: Option<&Figment>,
        path: &str,
    ) -> Result<StageConfig, ConfigError> {
        // The file the entry was written in. When `--set` or the
        // environment changed one of its keys, the entry's own tag names
        // that override; its other keys still carry their file's tag.
        let file_of = |tag: Tag| {
            figment
                .and_then(|f| f.get_metadata(tag))
                .and_then(|m| match &m.source {
                    Some(Source::File(p)) => Some(p.clone()),
                    _ => None,
                })
        };
        let file = file_of(self.0.tag()).or_else(|| self.0.values().find_map(|v| file_of(v.tag())));
        let origin = file.as_ref().map(|p| p.display().to_string());
        let mut values = (*self.0).clone();
        let kind = match values.remove("type") {
            Some(Value::String(_, kind)) => kind,
            Some(_) => {
                return Err(ConfigError::new(
                    origin,
                    format!("{path}.type"),
                    "`type` must be a string naming a stage kind",
                ));
            }
            None => {
                return Err(ConfigError::new(
                    origin,
                    path,
                    "stage entry has no `type:` key; run `lanparty stages` for the kinds",
                ));
            }
        };
        Ok(StageConfig {
            kind,
            path: path.to_string(),
            file,
            values,
        })
    }
}

/// A stage entry ready for its kind's parser.
#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    /// The `type:` value.
    pub kind: String,
    /// Where the entry sits in the config, e.g. `room.ingress[0]`.
    pub path: String,
    /// The file the entry came from, when it came from a file.
    pub file: Option<PathBuf>,
    /// The entry's keys other than `type`.
    pub values: Dict,
}

impl StageConfig {
    /// A stage config built in code (tests, defaults).
    pub fn from_yaml(kind: &str, yaml: &str) -> Result<StageConfig, ConfigError> {
        let values: Dict = if yaml.trim().is_empty() {
            Dict::new()
        } else {
            serde_norway::from_str(yaml).map_err(|e| ConfigError::new(None, "", e.to_string()))?
        };
        Ok(StageConfig {
            kind: kind.to_string(),
            path: kind.to_string(),
            file: None,
            values,
        })
    }

    /// Where errors about this entry are said to come from.
    pub fn origin(&self) -> Option<String> {
        self.file.as_ref().map(|p| p.display().to_string())
    }

    /// Deserializes the entry's keys (without `type`) into the stage's own
    /// settings type, which should `deny_unknown_fields`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Vec<ConfigError>> {
        Value::Dict(Tag::Default, self.values.clone())
            .deserialize::<T>()
            .map_err(|e| ConfigError::from_figment(e, &self.path, self.origin().as_deref()))
    }

    /// An error about `key` (relative to this entry).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let key = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        ConfigError::new(self.origin(), key, message)
    }

    /// Resolves a path written in this entry: relative paths are relative to
    /// the directory of the file the entry was written in.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        match self.file.as_ref().and_then(|f| f.parent()) {
            Some(dir) => dir.join(path),
            None => path.to_path_buf(),
        }
    }
}
