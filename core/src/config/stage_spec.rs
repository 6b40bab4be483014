//! Stage entries in a config: plain maps with a `type:` key, handed to the
//! stage kind's own parser.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::magic::Tagged;
use figment::value::{Dict, Tag, Value};
use figment::{Figment, Source};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{ConfigError, describe_source, join_key};

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
        // Keys set by `--set` or the environment, and where from.
        let mut overrides = BTreeMap::new();
        if let Some(figment) = figment {
            collect_overrides(figment, "", &self.0, &mut overrides);
        }
        let origin = file.as_ref().map(|p| p.display().to_string()).or_else(|| {
            // An entry that exists only through overrides (a misspelt port
            // name in `--set`): name the override.
            let meta = figment?.get_metadata(self.0.tag())?;
            Some(describe_source(meta))
        });
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
            None if file.is_none() && !overrides.is_empty() => {
                return Err(ConfigError::new(
                    origin,
                    path,
                    "no such entry in the config files, so this override would make a new one without a `type:` key; is the name misspelt?",
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
            overrides,
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
    /// Keys of the entry given by `--set` or the environment, with the
    /// override that gave them (errors about them name it, not the file).
    pub overrides: BTreeMap<String, String>,
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
            overrides: BTreeMap::new(),
            values,
        })
    }

    /// Where errors about this entry are said to come from.
    pub fn origin(&self) -> Option<String> {
        self.file.as_ref().map(|p| p.display().to_string())
    }

    /// Where the value of `key` (relative to the entry, e.g. `room` or
    /// `trust.pin`) came from: the override that set it, else the file.
    pub fn origin_of(&self, key: &str) -> Option<String> {
        self.override_of(key).or_else(|| self.origin())
    }

    /// The override that set `key` or a key above it, if one did.
    fn override_of(&self, key: &str) -> Option<String> {
        let mut prefix = key;
        loop {
            if let Some(origin) = self.overrides.get(prefix) {
                return Some(origin.clone());
            }
            prefix = &prefix[..prefix.rfind(['.', '['])?];
        }
    }

    /// Deserializes the entry's keys (without `type`) into the stage's own
    /// settings type, which should `deny_unknown_fields`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Vec<ConfigError>> {
        Value::Dict(Tag::Default, self.values.clone())
            .deserialize::<T>()
            .map_err(|e| {
                let mut errors = ConfigError::from_figment(e, &self.path, None);
                for error in &mut errors {
                    let key = error.key.strip_prefix(&self.path).unwrap_or(&error.key);
                    error.origin = self.origin_of(key.trim_start_matches('.'));
                }
                errors
            })
    }

    /// An error about `key` (relative to this entry).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let origin = self.origin_of(key);
        let key = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        ConfigError::new(origin, key, message)
    }

    /// Resolves the path given for `key` (relative to the entry, e.g.
    /// `trust.pin`): a relative path written in a file is relative to that
    /// file's folder; one given by `--set` or the environment is relative to
    /// the working directory, as any path typed on a command line. The same
    /// rule as figment's `RelativePathBuf` for node-level keys such as
    /// `rooms.policy_dir`.
    pub fn resolve_path(&self, key: &str, path: &Path) -> PathBuf {
        if path.is_absolute() || self.override_of(key).is_some() {
            return path.to_path_buf();
        }
        match self.file.as_ref().and_then(|f| f.parent()) {
            Some(dir) => dir.join(path),
            None => path.to_path_buf(),
        }
    }
}

/// Records every value under `dict` that an override (`--set`, the
/// environment) gave, by its key path below the entry.
fn collect_overrides(
    figment: &Figment,
    prefix: &str,
    dict: &Dict,
    out: &mut BTreeMap<String, String>,
) {
    for (key, value) in dict {
        let path = join_key(prefix, std::slice::from_ref(key));
        match value {
            Value::Dict(_, inner) => collect_overrides(figment, &path, inner, out),
            _ => {
                if let Some(meta) = figment.get_metadata(value.tag())
                    && !matches!(meta.source, Some(Source::File(_)))
                {
                    out.insert(path, describe_source(meta));
                }
            }
        }
    }
}
