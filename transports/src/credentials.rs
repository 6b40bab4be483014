//! Room credentials: slow salted hashes — Argon2id for new ones, PBKDF2-
//! HMAC-SHA256 still verified for older ones — compared in constant time,
//! and a per-address limit on failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use argon2::password_hash::phc;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use lanparty_core::config::{
    ARGON2_LANES, ARGON2_MEMORY_KIB, ARGON2_PASSES, MIN_ITERATIONS, PasswordHash, Pbkdf2Hash,
    check_argon2_costs,
};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

/// The longest credential accepted (longer ones fail without hashing).
pub const MAX_CREDENTIAL_LEN: usize = 256;

const PBKDF2: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;

/// Argon2id costs for a new hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    /// Memory per check, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
}

impl Default for Argon2Cost {
    /// OWASP's first choice: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Argon2Cost {
            memory_kib: ARGON2_MEMORY_KIB,
            passes: ARGON2_PASSES,
        }
    }
}

fn check_length(password: &str) -> Result<(), String> {
    if password.is_empty() || password.len() > MAX_CREDENTIAL_LEN {
        return Err(format!("a password must be 1..={MAX_CREDENTIAL_LEN} bytes"));
    }
    Ok(())
}

fn salt() -> Result<[u8; 16], String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system random generator failed")?;
    Ok(salt)
}

/// Hashes a password or token with Argon2id and a fresh random salt.
pub fn hash_password(password: &str, cost: Argon2Cost) -> Result<PasswordHash, String> {
    check_length(password)?;
    check_argon2_costs(cost.memory_kib, cost.passes, ARGON2_LANES)?;
    let params = argon2::Params::new(cost.memory_kib, cost.passes, ARGON2_LANES, None)
        .map_err(|e| format!("Argon2 parameters: {e}"))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let phc = hasher
        .hash_password_with_salt(password.as_bytes(), &salt()?)
        .map_err(|e| format!("Argon2 hashing failed: {e}"))?;
    phc.to_string().parse()
}

/// Hashes with PBKDF2-HMAC-SHA256, the scheme before Argon2id: relays still
/// verify such hashes, and tests make them to prove it. New hashes should
/// come from [`hash_password`].
pub fn hash_password_pbkdf2(password: &str, iterations: u32) -> Result<PasswordHash, String> {
    check_length(password)?;
    let rounds =
        NonZeroU32::new(iterations.max(MIN_ITERATIONS)).ok_or("iterations must be positive")?;
    let salt = salt()?.to_vec();
    let mut hash = vec![0u8; 32];
    pbkdf2::derive(PBKDF2, rounds, &salt, password.as_bytes(), &mut hash);
    Ok(PasswordHash::Pbkdf2(Pbkdf2Hash {
        iterations: rounds.get(),
        salt,
        hash,
    }))
}

fn matches(hash: &PasswordHash, credential: &str) -> bool {
    match hash {
        PasswordHash::Argon2id(h) => phc::PasswordHash::new(h.phc()).is_ok_and(|parsed| {
            // The hash's own parameters are used; the output comparison is
            // constant-time.
            argon2::Argon2::default()
                .verify_password(credential.as_bytes(), &parsed)
                .is_ok()
        }),
        PasswordHash::Pbkdf2(h) => NonZeroU32::new(h.iterations).is_some_and(|rounds| {
            pbkdf2::verify(PBKDF2, rounds, &h.salt, credential.as_bytes(), &h.hash).is_ok()
        }),
    }
}

/// True when `credential` matches one of `hashes`. Every hash is checked
/// (no early exit) and each comparison is constant-time, so the time taken
/// says nothing about which one matched or how close a guess was.
pub fn verify(hashes: &[PasswordHash], credential: &str) -> bool {
    if credential.len() > MAX_CREDENTIAL_LEN {
        return false;
    }
    hashes
        .iter()
        .fold(false, |matched, h| matches(h, credential) | matched)
}

/// Failed credential checks per source address, in one-minute windows.
#[derive(Debug)]
pub struct FailureLimiter {
    per_minute: u32,
    windows: HashMap<IpAddr, (Instant, u32)>,
}

/// Addresses remembered at most; older windows are forgotten first.
const MAX_TRACKED: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

impl FailureLimiter {
    /// A limiter allowing `per_minute` failures per address per minute.
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            per_minute: per_minute.max(1),
            windows: HashMap::new(),
        }
    }

    /// True when `ip` has used up its failures for this minute.
    pub fn is_limited(&self, ip: IpAddr, now: Instant) -> bool {
        self.windows
            .get(&ip)
            .is_some_and(|(start, n)| now.duration_since(*start) < WINDOW && *n >= self.per_minute)
    }

    /// Counts a failure from `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        if self.windows.len() >= MAX_TRACKED {
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = self.windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let cheap = Argon2Cost {
            memory_kib: lanparty_core::config::ARGON2_MIN_MEMORY_KIB,
            passes: 5,
        };
        let h = hash_password("correct horse", cheap).unwrap();
        assert!(
            h.to_string().starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
            "{h}"
        );
        let legacy = hash_password_pbkdf2("battery staple", MIN_ITERATIONS).unwrap();
        for (hash, password) in [(h.clone(), "correct horse"), (legacy, "battery staple")] {
            let parsed: PasswordHash = hash.to_string().parse().unwrap();
            let hashes = std::slice::from_ref(&parsed);
            assert!(verify(hashes, password));
            assert!(!verify(hashes, &password[1..]));
            assert!(!verify(hashes, ""));
            assert!(!verify(hashes, &"x".repeat(10_000)));
        }
        let other = hash_password("correct horse", cheap).unwrap();
        assert_ne!(other, h, "every hash has its own salt");
        assert!(hash_password("", cheap).is_err());
        // Costs below the floor are refused when hashing too.
        let e = hash_password(
            "x",
            Argon2Cost {
                memory_kib: 1024,
                passes: 1,
            },
        )
        .unwrap_err();
        assert!(e.contains("too cheap"), "{e}");
    }

    #[test]
    fn old_and_new_hashes_verify_side_by_side() {
        let hashes = [
            hash_password_pbkdf2("old", MIN_ITERATIONS).unwrap(),
            hash_password("new", Argon2Cost::default()).unwrap(),
        ];
        assert!(verify(&hashes, "old") && verify(&hashes, "new") && !verify(&hashes, "neither"));
    }

    #[test]
    fn failures_are_limited_per_address_per_minute() {
        let mut l = FailureLimiter::new(2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        l.record_failure(a, t);
        assert!(!l.is_limited(a, t));
        l.record_failure(a, t);
        assert!(l.is_limited(a, t));
        assert!(!l.is_limited(b, t), "other addresses are not affected");
        assert!(!l.is_limited(a, t + WINDOW), "a new minute starts over");
    }
}
