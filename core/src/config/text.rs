//! Keys whose value is text that people often write as a number: a room
//! code `2024`, a password `123456`. YAML (and `--set`) read those as
//! numbers; these helpers take a whole number as the text it was written as,
//! so `--set ports.relay.room=2024` works without quoting. YAML keeps
//! numbers with leading zeros (`0042`) as text already.

use serde::de::{self, Deserializer, Visitor};

struct TextOrNumber;

impl Visitor<'_> for TextOrNumber {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("text (or a whole number); quote anything else, e.g. \"1.5\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// `#[serde(deserialize_with = "text_or_number")]` for a `String` key.
pub fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(TextOrNumber)
}

/// `#[serde(default, deserialize_with = "optional_text_or_number")]` for an
/// `Option<String>` key.
pub fn optional_text_or_number<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    d.deserialize_any(TextOrNumber).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Keys {
        #[serde(deserialize_with = "text_or_number")]
        room: String,
        #[serde(default, deserialize_with = "optional_text_or_number")]
        credential: Option<String>,
    }

    fn parse(yaml: &str) -> Result<Keys, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_are_taken_as_written() {
        let k = parse("room: 2024\ncredential: 123456").unwrap();
        assert_eq!(
            (k.room.as_str(), k.credential.as_deref()),
            ("2024", Some("123456"))
        );
        assert_eq!(parse("room: \"0042\"").unwrap().room, "0042");
        assert_eq!(parse("room: 0042").unwrap().room, "0042");
        assert_eq!(parse("room: FRIDAY").unwrap().credential, None);
        let e = parse("room: 1.5").unwrap_err();
        assert!(e.contains("quote"), "{e}");
    }
}
