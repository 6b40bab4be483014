//! Durations in configs: an integer number of seconds, or a string with a
//! unit: `500us`, `250ms`, `30s`, `5m`, `1h`. Also the number-and-unit
//! reading that sizes (`size.rs`) share.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration as written in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

/// Splits `250ms` into 250 and `ms`; `what` names the kind of value in
/// the error (`a duration; write e.g. 250ms`).
pub(super) fn number_and_unit<'a>(text: &'a str, what: &str) -> Result<(u64, &'a str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value = digits
        .parse()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    Ok((value, unit.trim()))
}

/// Deserializes a config value written as a bare number or as text.
pub(super) fn number_or_text<'de, D, T>(
    deserializer: D,
    number: fn(u64) -> T,
    text: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(number(n)),
        Raw::Text(t) => text(&t).map_err(serde::de::Error::custom),
    }
}

/// Parses `500us`, `250ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text, "a duration; write e.g. 250ms, 30s, 5m or 1h")?;
    let duration = match unit {
        "us" => Duration::from_micros(value),
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}`; use us, ms, s, m or h"
            ));
        }
    };
    Ok(duration)
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        number_or_text(
            deserializer,
            |s| ConfigDuration(Duration::from_secs(s)),
            |t| parse_duration(t).map(ConfigDuration),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
    }
}
