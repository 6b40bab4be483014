//! Per-room policy files and the relay's `rooms:` section.
//!
//! A relay names a policy folder; each `ROOM.yaml` in it overrides the
//! relay's room template for the room with that code:
//!
//! ```yaml
//! max_peers: 8
//! mtu: 1300
//! gateway: required            # required | allowed | forbidden
//! allowed_macs: [02:00:00:00:00:01]
//! credentials:
//!   players: ["$argon2id$v=19$m=19456,t=2,p=1$…$…"]   # from `lanparty room hash-password`
//!   gateway: ["$argon2id$v=19$m=19456,t=2,p=1$…$…"]
//! ingress:                     # same type as a template filter: retunes it
//!   - { type: storm, rate: 200, burst: 400 }
//! egress: []                   # a new type: appended after the template's
//! ```

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;
use super::error::{ConfigError, ConfigErrors};
use super::password::PasswordHash;
use super::stage_spec::StageSpec;
use super::yaml::Yaml;
use crate::wire::MacAddr;

/// `rooms:` — where a relay's room policies live and how they are enforced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsSection {
    /// `rooms.policy_dir`: the folder of `ROOM.yaml` policy files, relative
    /// to the config file that names it. Default: none (every room uses
    /// the template).
    #[serde(default)]
    pub policy_dir: Option<RelativePathBuf>,
    /// `rooms.require_policy`: reject room codes that have no policy file
    /// (`no_such_room`): a closed relay. Default false.
    #[serde(default)]
    pub require_policy: bool,
    /// `rooms.reload_interval`: how often the folder is read again besides
    /// the watch that applies edits at once (the fallback where watching is
    /// unavailable or misses an event). Default 2s.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: ConfigDuration,
    /// `rooms.auth_failures_per_minute`: failed credential checks allowed
    /// per source address per minute; more get `rate_limited`. Default 5.
    #[serde(default = "default_auth_failures")]
    pub auth_failures_per_minute: u32,
}

fn default_reload_interval() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(2))
}

fn default_auth_failures() -> u32 {
    5
}

impl Default for RoomsSection {
    fn default() -> Self {
        RoomsSection {
            policy_dir: None,
            require_policy: false,
            reload_interval: default_reload_interval(),
            auth_failures_per_minute: default_auth_failures(),
        }
    }
}

impl RoomsSection {
    /// The policy folder as an absolute or working-directory path.
    pub fn policy_dir(&self) -> Option<PathBuf> {
        self.policy_dir.as_ref().map(|p| p.relative())
    }

    pub(crate) fn validate(&self, errors: &mut ConfigErrors) {
        if self.require_policy && self.policy_dir.is_none() {
            errors.push(ConfigError::new(
                None,
                "rooms.require_policy",
                "a closed relay needs `rooms.policy_dir`: the folder of ROOM.yaml policies",
            ));
        }
        if self.reload_interval.0 < std::time::Duration::from_millis(100) {
            errors.push(ConfigError::new(
                None,
                "rooms.reload_interval",
                "must be at least 100ms",
            ));
        }
        if self.auth_failures_per_minute == 0 {
            errors.push(ConfigError::new(
                None,
                "rooms.auth_failures_per_minute",
                "must be at least 1",
            ));
        }
    }
}

/// Who may hold a room's gateway seat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayRule {
    /// Clients are admitted only while the room has its gateway (they are
    /// told `no_gateway`, a retryable reject, until it comes).
    Required,
    /// A gateway may join; the room works without one. The default.
    #[default]
    Allowed,
    /// No gateway may join (`role_forbidden`): a clients-only room.
    Forbidden,
}

/// `credentials:` — what a hello must carry to be admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// `credentials.players`: hashes of the room password or per-player
    /// tokens; a client's credential must match one.
    #[serde(default)]
    pub players: Vec<PasswordHash>,
    /// `credentials.gateway`: hashes a gateway's credential must match.
    /// Kept apart from `players` so a player cannot take the gateway seat.
    #[serde(default)]
    pub gateway: Vec<PasswordHash>,
}

/// One room's policy file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPolicy {
    /// `max_peers`: peers in the room at once (default: the relay's
    /// `max_peers_per_room`).
    #[serde(default)]
    pub max_peers: Option<usize>,
    /// `mtu`: the room MTU ceiling (default: the template's `room.mtu`).
    /// Applies when the room is next created; a live room keeps its MTU.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// `gateway`: required, allowed (default) or forbidden.
    #[serde(default)]
    pub gateway: GatewayRule,
    /// `allowed_macs`: the only client MACs admitted (default: any).
    #[serde(default)]
    pub allowed_macs: Option<Vec<MacAddr>>,
    /// `credentials`: password / token hashes (default: none needed).
    #[serde(default)]
    pub credentials: Credentials,
    /// `ingress`: filters that retune the template's filter of the same
    /// type, or are appended after the template's ingress filters.
    #[serde(default)]
    pub ingress: Vec<StageSpec>,
    /// `egress`: the same for egress filters.
    #[serde(default)]
    pub egress: Vec<StageSpec>,
}

impl RoomPolicy {
    /// Reads and checks a policy file. Errors name the file and the key.
    pub fn load(path: &Path) -> Result<(Figment, RoomPolicy), ConfigErrors> {
        use figment::providers::Format;
        let origin = Some(path.display().to_string());
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigError::new(origin, "", format!("cannot read: {e}")).into());
        }
        let figment = Figment::from(Yaml::file(path));
        let policy: RoomPolicy = figment
            .extract()
            .map_err(|e| ConfigErrors(ConfigError::from_figment(e, "", origin.as_deref())))?;
        let mut errors = ConfigErrors::default();
        policy.validate(origin.as_deref(), &mut errors);
        errors.into_result((figment, policy))
    }

    fn validate(&self, origin: Option<&str>, errors: &mut ConfigErrors) {
        let origin = || origin.map(str::to_string);
        if let Some(max) = self.max_peers
            && !(1..=4096).contains(&max)
        {
            errors.push(ConfigError::new(origin(), "max_peers", "must be 1..=4096"));
        }
        if let Some(mtu) = self.mtu
            && let Err(e) = crate::wire::mtu::validate_mtu(u32::from(mtu))
        {
            errors.push(ConfigError::new(origin(), "mtu", e.to_string()));
        }
        if let Some(macs) = &self.allowed_macs {
            for (i, mac) in macs.iter().enumerate() {
                if mac.is_multicast() || mac.is_zero() {
                    errors.push(ConfigError::new(
                        origin(),
                        format!("allowed_macs[{i}]"),
                        format!("{mac} cannot be an adapter's MAC"),
                    ));
                }
            }
        }
        let creds = &self.credentials;
        if !creds.players.is_empty()
            && creds.gateway.is_empty()
            && self.gateway != GatewayRule::Forbidden
        {
            errors.push(ConfigError::new(
                origin(),
                "credentials.gateway",
                "the room has player credentials but none for the gateway seat, so any player could not be told apart from a gateway; add `credentials.gateway` hashes, or set `gateway: forbidden`",
            ));
        }
        if !creds.gateway.is_empty() && self.gateway == GatewayRule::Forbidden {
            errors.push(ConfigError::new(
                origin(),
                "credentials.gateway",
                "gateway credentials in a room with `gateway: forbidden` can never be used; remove one of them",
            ));
        }
    }

    /// True when a hello must carry a credential for `gateway` (true) or
    /// client (false) role.
    pub fn needs_credential(&self, gateway: bool) -> bool {
        if gateway {
            !self.credentials.gateway.is_empty()
        } else {
            !self.credentials.players.is_empty()
        }
    }
}

/// The room code a policy file is for: its file name without `.yaml` /
/// `.yml`, as a room key (upper case: `friday.yaml` is room FRIDAY's);
/// `None` for files that are not policies.
pub fn policy_room_code(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "yaml" && ext != "yml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.starts_with('.') {
        return None;
    }
    Some(crate::control::room_key(stem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_names_give_room_codes() {
        assert_eq!(
            policy_room_code(Path::new("p/LAN-1.yaml")).as_deref(),
            Some("LAN-1")
        );
        assert_eq!(policy_room_code(Path::new("p/x.yml")).as_deref(), Some("X"));
        assert_eq!(policy_room_code(Path::new("p/x.yaml~")), None);
        assert_eq!(policy_room_code(Path::new("p/.x.yaml.swp")), None);
        assert_eq!(policy_room_code(Path::new("p/README")), None);
    }
}
