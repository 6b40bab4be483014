//! Configuration errors that name the file, the key path and what was
//! expected.

use std::fmt;

use figment::Source;
use figment::error::Kind;

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the bad value came from: a file path, `environment`, `--set`,
    /// or `None` when it is a missing value.
    pub origin: Option<String>,
    /// The dotted key path, with list indexes in brackets, e.g.
    /// `room.ingress[1].rate`. Empty for the whole file.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about `key` in `origin`.
    pub fn new(
        origin: Option<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Converts every error in a figment error chain, prefixing key paths
    /// with `prefix` (the path of the value that was deserialized) and using
    /// `origin` when figment does not know where a value came from.
    pub fn from_figment(
        err: figment::Error,
        prefix: &str,
        origin: Option<&str>,
    ) -> Vec<ConfigError> {
        err.into_iter()
            .map(|e| {
                let mut path: Vec<String> = e.path.clone();
                let message = match &e.kind {
                    Kind::UnknownField(field, expected) => {
                        if path.last() != Some(field) {
                            path.push(field.clone());
                        }
                        format!(
                            "unknown key `{field}`; expected one of: {}",
                            expected.join(", ")
                        )
                    }
                    Kind::MissingField(field) => {
                        if path.last().map(String::as_str) != Some(field.as_ref()) {
                            path.push(field.to_string());
                        }
                        "missing required key".to_string()
                    }
                    kind => kind.to_string(),
                };
                let origin = e
                    .metadata
                    .as_ref()
                    .map(describe_source)
                    .or_else(|| origin.map(str::to_string));
                ConfigError {
                    origin,
                    key: join_key(prefix, &path),
                    message,
                }
            })
            .collect()
    }
}

/// Where a figment value came from, as errors say it: the file's path,
/// the `--set` text, or the provider's name (the environment).
pub fn describe_source(metadata: &figment::Metadata) -> String {
    match &metadata.source {
        Some(Source::File(path)) => path.display().to_string(),
        Some(Source::Custom(custom)) => custom.clone(),
        _ => metadata.name.to_string(),
    }
}

/// Joins a prefix like `room.ingress[0]` and figment path segments,
/// writing numeric segments as list indexes.
pub fn join_key(prefix: &str, segments: &[String]) -> String {
    let mut key = prefix.to_string();
    for segment in segments {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push('[');
            key.push_str(segment);
            key.push(']');
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, so that `lanparty check` can
/// list them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Adds errors.
    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.0.extend(errors);
    }

    /// Adds one error.
    pub fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// True when nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when empty, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(errors: Vec<ConfigError>) -> Self {
        ConfigErrors(errors)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
