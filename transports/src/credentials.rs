//! Room credentials: slow salted hashes (PBKDF2-HMAC-SHA256), compared in
//! constant time, and a per-address limit on failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use lanparty_core::config::{MIN_ITERATIONS, PasswordHash};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

/// Iterations `lanparty room hash-password` uses by default: about 50 ms
/// per check on one core of a small VPS.
pub const DEFAULT_ITERATIONS: u32 = 100_000;
/// The longest credential accepted (longer ones fail without hashing).
pub const MAX_CREDENTIAL_LEN: usize = 256;

const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;

/// Hashes a password or token with a fresh random salt.
pub fn hash_password(password: &str, iterations: u32) -> Result<PasswordHash, String> {
    if password.is_empty() || password.len() > MAX_CREDENTIAL_LEN {
        return Err(format!("a password must be 1..={MAX_CREDENTIAL_LEN} bytes"));
    }
    let rounds =
        NonZeroU32::new(iterations.max(MIN_ITERATIONS)).ok_or("iterations must be positive")?;
    let mut salt = vec![0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system random generator failed")?;
    let mut hash = vec![0u8; 32];
    pbkdf2::derive(ALGORITHM, rounds, &salt, password.as_bytes(), &mut hash);
    Ok(PasswordHash {
        iterations: rounds.get(),
        salt,
        hash,
    })
}

/// True when `credential` matches one of `hashes`. Every hash is checked
/// (no early exit) and each comparison is constant-time, so the time taken
/// says nothing about which one matched or how close a guess was.
pub fn verify(hashes: &[PasswordHash], credential: &str) -> bool {
    if credential.len() > MAX_CREDENTIAL_LEN {
        return false;
    }
    let mut matched = false;
    for h in hashes {
        let Some(rounds) = NonZeroU32::new(h.iterations) else {
            continue;
        };
        matched |=
            pbkdf2::verify(ALGORITHM, rounds, &h.salt, credential.as_bytes(), &h.hash).is_ok();
    }
    matched
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
        let h = hash_password("correct horse", MIN_ITERATIONS).unwrap();
        let parsed: PasswordHash = h.to_string().parse().unwrap();
        let hashes = std::slice::from_ref(&parsed);
        assert!(verify(hashes, "correct horse"));
        assert!(!verify(hashes, "correct hors"));
        assert!(!verify(hashes, ""));
        assert!(!verify(hashes, &"x".repeat(10_000)));
        let other = hash_password("correct horse", MIN_ITERATIONS).unwrap();
        assert_ne!(other.salt, h.salt, "every hash has its own salt");
        assert!(hash_password("", MIN_ITERATIONS).is_err());
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
