//! Room password hashes as policy files hold them.
//!
//! New hashes are Argon2id in the PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`), memory-hard with the OWASP
//! parameters by default. Hashes made before (PBKDF2-HMAC-SHA256,
//! `pbkdf2-sha256$ITERATIONS$SALT$HASH`) are still read and verified, so a
//! relay upgrade locks nobody out. Both are checked against floors (too
//! cheap to guess against) and ceilings (a policy file must not make each
//! check cost the relay unbounded memory or time). Hashing and verifying is
//! `lanparty_transports::credentials`'s job; this module owns the format.

use std::fmt;

use serde::Deserialize;

/// Argon2id memory per hash by default, KiB (19 MiB: OWASP's first choice).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id passes by default.
pub const ARGON2_PASSES: u32 = 2;
/// Argon2id lanes (parallelism) by default.
pub const ARGON2_LANES: u32 = 1;
/// The least memory an Argon2id hash may use, KiB (OWASP's smallest row).
pub const ARGON2_MIN_MEMORY_KIB: u32 = 7 * 1024;
/// The least memory × passes an Argon2id hash may use, KiB: every row of
/// OWASP's table (19 MiB × 2, 12 MiB × 3, 9 MiB × 4, 7 MiB × 5) meets it.
pub const ARGON2_MIN_WORK_KIB: u64 = 35 * 1024;
/// The most memory a hash may ask of the relay per check, KiB (256 MiB;
/// the relay runs at most two checks at once).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The most passes a hash may ask for.
pub const ARGON2_MAX_PASSES: u32 = 16;
/// The most lanes a hash may ask for.
pub const ARGON2_MAX_LANES: u32 = 4;

/// The scheme name of the older PBKDF2 hashes.
pub const PBKDF2_SCHEME: &str = "pbkdf2-sha256";
/// Fewest PBKDF2 iterations a policy may use.
pub const MIN_ITERATIONS: u32 = 10_000;

/// A slow salted password hash, as `lanparty room hash-password` prints it.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// Argon2id (what new hashes are).
    Argon2id(Argon2idHash),
    /// PBKDF2-HMAC-SHA256 (older hashes, still verified).
    Pbkdf2(Pbkdf2Hash),
}

/// An Argon2id hash: its PHC string and the costs read from it.
#[derive(Clone, PartialEq, Eq)]
pub struct Argon2idHash {
    phc: String,
    /// Memory per check, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl Argon2idHash {
    /// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$SALT$HASH`).
    pub fn phc(&self) -> &str {
        &self.phc
    }
}

/// A PBKDF2-HMAC-SHA256 hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Pbkdf2Hash {
    /// Iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Vec<u8>,
    /// The derived key (32 bytes).
    pub hash: Vec<u8>,
}

impl fmt::Debug for PasswordHash {
    /// The scheme and costs, never salt or hash bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Argon2id(h) => write!(
                f,
                "PasswordHash(argon2id, m={} KiB, t={}, p={})",
                h.memory_kib, h.passes, h.lanes
            ),
            PasswordHash::Pbkdf2(h) => {
                write!(
                    f,
                    "PasswordHash({PBKDF2_SCHEME}, {} iterations)",
                    h.iterations
                )
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Argon2id(h) => f.write_str(&h.phc),
            PasswordHash::Pbkdf2(h) => write!(
                f,
                "{PBKDF2_SCHEME}${}${}${}",
                h.iterations,
                hex(&h.salt),
                hex(&h.hash)
            ),
        }
    }
}

const EXPECTED: &str = "expected a hash printed by `lanparty room hash-password` ($argon2id$v=19$m=…,t=…,p=…$SALT$HASH, or an older pbkdf2-sha256$ITERATIONS$SALT$HASH), never the password itself";

/// Checks Argon2id costs against the floors and ceilings.
pub fn check_argon2_costs(memory_kib: u32, passes: u32, lanes: u32) -> Result<(), String> {
    if memory_kib < ARGON2_MIN_MEMORY_KIB
        || u64::from(memory_kib) * u64::from(passes) < ARGON2_MIN_WORK_KIB
    {
        return Err(format!(
            "m={memory_kib} KiB, t={passes} is too cheap to guess against; use at least m={ARGON2_MIN_MEMORY_KIB} and m×t ≥ {ARGON2_MIN_WORK_KIB} (the default is m={ARGON2_MEMORY_KIB}, t={ARGON2_PASSES})"
        ));
    }
    if memory_kib > ARGON2_MAX_MEMORY_KIB || passes > ARGON2_MAX_PASSES || lanes > ARGON2_MAX_LANES
    {
        return Err(format!(
            "m={memory_kib} KiB, t={passes}, p={lanes} would make every credential check too costly for the relay; at most m={ARGON2_MAX_MEMORY_KIB}, t={ARGON2_MAX_PASSES}, p={ARGON2_MAX_LANES}"
        ));
    }
    Ok(())
}

fn parse_argon2id(text: &str) -> Result<PasswordHash, String> {
    use argon2::password_hash::phc;
    let parsed = phc::PasswordHash::new(text).map_err(|e| format!("{e}; {EXPECTED}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "`{}` hashes are not accepted, only argon2id; {EXPECTED}",
            parsed.algorithm
        ));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(format!("the hash has no salt or no output; {EXPECTED}"));
    }
    let params = argon2::Params::try_from(&parsed).map_err(|e| format!("{e}; {EXPECTED}"))?;
    check_argon2_costs(params.m_cost(), params.t_cost(), params.p_cost())?;
    Ok(PasswordHash::Argon2id(Argon2idHash {
        phc: text.to_string(),
        memory_kib: params.m_cost(),
        passes: params.t_cost(),
        lanes: params.p_cost(),
    }))
}

fn parse_pbkdf2(text: &str) -> Result<PasswordHash, String> {
    let parts: Vec<&str> = text.split('$').collect();
    let [_, iterations, salt, hash] = parts.as_slice() else {
        return Err(EXPECTED.into());
    };
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| format!("iterations `{iterations}` is not a number; {EXPECTED}"))?;
    if iterations < MIN_ITERATIONS {
        return Err(format!(
            "{iterations} iterations is too fast to guess against; use at least {MIN_ITERATIONS} (or make a new argon2id hash)"
        ));
    }
    let salt = unhex(salt)
        .filter(|s| s.len() >= 16)
        .ok_or_else(|| format!("the salt must be at least 16 bytes of hex; {EXPECTED}"))?;
    let hash = unhex(hash)
        .filter(|h| h.len() == 32)
        .ok_or_else(|| format!("the hash must be 32 bytes of hex; {EXPECTED}"))?;
    Ok(PasswordHash::Pbkdf2(Pbkdf2Hash {
        iterations,
        salt,
        hash,
    }))
}

impl std::str::FromStr for PasswordHash {
    type Err = String;

    fn from_str(text: &str) -> Result<PasswordHash, String> {
        if text.starts_with("$argon2") {
            parse_argon2id(text)
        } else if text.starts_with(&format!("{PBKDF2_SCHEME}$")) {
            parse_pbkdf2(text)
        } else {
            let scheme = text.split('$').find(|s| !s.is_empty()).unwrap_or_default();
            let scheme = if scheme.len() > 16 { "?" } else { scheme };
            Err(format!("unknown hash scheme `{scheme}`; {EXPECTED}"))
        }
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pbkdf2_hashes_still_round_trip() {
        let text = format!(
            "pbkdf2-sha256$100000${}${}",
            "ab".repeat(16),
            "cd".repeat(32)
        );
        let hash: PasswordHash = text.parse().unwrap();
        assert_eq!(hash.to_string(), text);
        assert!(
            !format!("{hash:?}").contains("cdcd"),
            "Debug shows no hash bytes"
        );
    }

    #[test]
    fn argon2id_hashes_round_trip_and_costs_are_bounded() {
        // RFC 9106-style PHC string with OWASP's default costs.
        let text = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vf1xt7dC9FYxmSMkf2zVvaIs7mGeV6fxQmB2XwFh+vc";
        let hash: PasswordHash = text.parse().unwrap();
        assert_eq!(hash.to_string(), text);
        assert_eq!(
            format!("{hash:?}"),
            "PasswordHash(argon2id, m=19456 KiB, t=2, p=1)"
        );
        for (bad, says) in [
            (
                "$argon2id$v=19$m=4096,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$Vf1xt7dC9FYxmSMkf2zVvaIs7mGeV6fxQmB2XwFh+vc",
                "too cheap",
            ),
            (
                "$argon2id$v=19$m=8192,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$Vf1xt7dC9FYxmSMkf2zVvaIs7mGeV6fxQmB2XwFh+vc",
                "too cheap",
            ),
            (
                "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vf1xt7dC9FYxmSMkf2zVvaIs7mGeV6fxQmB2XwFh+vc",
                "too costly",
            ),
            (
                "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vf1xt7dC9FYxmSMkf2zVvaIs7mGeV6fxQmB2XwFh+vc",
                "only argon2id",
            ),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA",
                "no salt or no output",
            ),
            ("hunter2", "unknown hash scheme"),
            ("pbkdf2-sha256$100$aa$bb", "too fast"),
            ("bcrypt$1$2$3", "unknown hash scheme `bcrypt`"),
            ("pbkdf2-sha256$100000$zz$cd", "salt"),
        ] {
            let e = bad.parse::<PasswordHash>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
