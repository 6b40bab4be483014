//! A client's one MAC identity.
//!
//! A player's node has two ports that must agree on one MAC: the session
//! with the relay announces it in the hello (and the relay admits only
//! frames from it), and the adapter (TAP, tun-l2, Wintun) sends as it. Two
//! keys that must be kept in step silently lose every frame when they are
//! not, so [`unify`] makes them one: when a node has exactly one port that
//! announces a MAC, an adapter without `mac` takes it, and an adapter whose
//! `mac` differs is a config error naming both keys.

use crate::config::{ConfigError, ConfigErrors};
use crate::wire::MacAddr;

use super::Port;

/// A port's part in the node's MAC identity.
#[derive(Debug)]
pub enum MacIdentity<'a> {
    /// None (a relay's server, a gateway's LAN interface).
    None,
    /// The port announces this MAC to the relay: a client's session.
    Announces(MacAddr),
    /// The port is an adapter sending as `mac` (`None`: not configured,
    /// take the announced one).
    Adapter {
        /// The configured MAC, filled in by [`unify`].
        mac: &'a mut Option<MacAddr>,
        /// True when the adapter cannot run without one (an emulated
        /// adapter has no kernel MAC to fall back on).
        required: bool,
    },
}

/// The MAC the node joins rooms as, with the name of the port that
/// announces it: `None` unless exactly one port announces one (a client).
pub fn announced(ports: &mut [(String, Box<dyn Port>)]) -> Option<(String, MacAddr)> {
    let mut found = ports
        .iter_mut()
        .filter_map(|(name, port)| match port.mac_identity() {
            MacIdentity::Announces(mac) => Some((name.clone(), mac)),
            _ => None,
        });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Gives each adapter of `ports` the MAC the node announces, or reports an
/// adapter whose configured `mac` disagrees with it. `ports` are
/// `(name, port)` as under the config's `ports:`; `origin` says where a
/// key's value came from. Returns the announced MAC.
pub fn unify(
    ports: &mut [(String, Box<dyn Port>)],
    origin: impl Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> Option<MacAddr> {
    let Some((session, mac)) = announced(ports) else {
        // No session (or several): each adapter keeps what it was given.
        for (name, port) in ports.iter_mut() {
            if let MacIdentity::Adapter {
                mac: None,
                required: true,
            } = port.mac_identity()
            {
                let key = format!("ports.{name}.mac");
                errors.push(ConfigError::new(
                    origin(&key),
                    key,
                    "missing: this node has no single `quic-client` whose MAC the adapter could take; set the MAC the room should see",
                ));
            }
        }
        return None;
    };
    for (name, port) in ports.iter_mut() {
        if let MacIdentity::Adapter { mac: adapter, .. } = port.mac_identity() {
            match *adapter {
                None => *adapter = Some(mac),
                Some(own) if own != mac => {
                    let key = format!("ports.{name}.mac");
                    errors.push(ConfigError::new(
                        origin(&key),
                        key.clone(),
                        format!(
                            "{own} is not the MAC `ports.{session}.mac` joins the room with ({mac}); the relay admits frames only from that one, so every frame would be lost. Remove `{key}` (the adapter takes the session's) or make the two equal"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Some(mac)
}
