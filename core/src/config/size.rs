//! Byte sizes in configs: an integer number of bytes, or a string with a
//! unit: `64KiB`, `2MiB`, `1GiB` (powers of 1024) or `500kB`, `2MB`
//! (powers of 1000).

use serde::{Deserialize, Deserializer};

use super::duration::{number_and_unit, number_or_text};

/// A byte size as written in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigSize(pub u64);

/// Parses `1500`, `64KiB`, `2MiB`, `1GiB`, `500kB`, `2MB` or `1GB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text, "a size; write e.g. 1500, 64KiB or 2MiB")?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use B, KiB, MiB, GiB, kB, MB or GB"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        number_or_text(deserializer, ConfigSize, |t| parse_size(t).map(ConfigSize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500kB"), Ok(500_000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(
            parse_size("2 mb")
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!(parse_size("MiB").unwrap_err().contains("not a size"));
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn from_yaml_number_or_text() {
        let n: ConfigSize = serde_norway::from_str("4096").unwrap();
        assert_eq!(n, ConfigSize(4096));
        let t: ConfigSize = serde_norway::from_str("2MiB").unwrap();
        assert_eq!(t, ConfigSize(2 << 20));
        assert!(serde_norway::from_str::<ConfigSize>("two").is_err());
    }
}
