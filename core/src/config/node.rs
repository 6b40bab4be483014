//! The node config file: what `lanparty run` and `lanparty check` read.
//!
//! ```yaml
//! node:
//!   name: relay-eu-1          # optional, for logs and status
//! ports:                      # by name; each a stage with a `type:`
//!   tap0: { type: tap, device: lp0 }
//! room:                       # the room template
//!   mtu: 1500
//!   ingress: [ { type: jumbo } ]
//!   router: { type: switch }
//!   egress: [ { type: reflection } ]
//! runtime:                    # queue sizes
//!   room_queue: 1024
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::Deserialize;

use super::error::{ConfigError, ConfigErrors};
use super::policy::RoomsSection;
use super::stage_spec::StageSpec;
use super::yaml::Yaml;
use crate::wire::MacAddr;

/// The prefix of environment variables that override config keys:
/// `LANPARTY_PORTS__RELAY__ROOM=ABC` sets `ports.relay.room`.
pub const ENV_PREFIX: &str = "LANPARTY_";
/// The separator between key segments in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// A whole node: relay, gateway or client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node-wide settings.
    #[serde(default)]
    pub node: NodeSection,
    /// The ports, by name. A name is used in logs, status and link names.
    pub ports: BTreeMap<String, StageSpec>,
    /// The room template: every room this node holds is built from it.
    #[serde(default)]
    pub room: RoomSpec,
    /// Queue sizes and threads.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// Room policies (a relay's per-room files, closed-relay mode).
    #[serde(default)]
    pub rooms: RoomsSection,
    /// The local admin socket (`lanparty status`, `lanparty capture`).
    #[serde(default)]
    pub admin: AdminSection,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `admin:` — the local admin socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `admin.socket`: the Unix socket path. Default
    /// `/run/lanparty/NODE_NAME.sock`; `off` disables the socket.
    #[serde(default)]
    pub socket: Option<String>,
}

impl AdminSection {
    /// The socket path for a node named `node` that joins rooms as `mac`
    /// (a client), or `None` when disabled.
    pub fn socket_path(&self, node: &str, mac: Option<MacAddr>) -> Option<PathBuf> {
        match self.socket.as_deref() {
            Some("off") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => Some(default_admin_socket(node, mac)),
        }
    }
}

/// The folder of default admin sockets.
pub const ADMIN_SOCKET_DIR: &str = "/run/lanparty";

/// Where a node's admin socket is when the config does not say:
/// `/run/lanparty/NODE.sock`, and for a client `NODE-MAC.sock` (MAC with
/// dashes), so two players on one machine never share one.
pub fn default_admin_socket(node: &str, mac: Option<MacAddr>) -> PathBuf {
    let name = match mac {
        Some(mac) => format!("{node}-{}", mac.to_string().replace(':', "-")),
        None => node.to_string(),
    };
    PathBuf::from(format!("{ADMIN_SOCKET_DIR}/{name}.sock"))
}

/// Checks an admin socket path's length (a Unix socket path has to fit
/// in 108 bytes).
pub fn check_admin_socket(path: &std::path::Path) -> Result<(), ConfigError> {
    if path.as_os_str().len() > 100 {
        return Err(ConfigError::new(
            None,
            "admin.socket",
            format!(
                "{} is too long: a Unix socket path must be under 100 bytes; set a shorter `admin.socket` (or `node.name`)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// `metrics:` — the Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `metrics.listen`: address:port to serve `GET /metrics` on, e.g.
    /// `127.0.0.1:9464`. Default: no endpoint.
    #[serde(default)]
    pub listen: Option<String>,
}

impl MetricsSection {
    /// The listen address, checked.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|text| {
                text.parse().map_err(|_| {
                    ConfigError::new(
                        None,
                        "metrics.listen",
                        format!("`{text}` is not an address:port, e.g. 127.0.0.1:9464"),
                    )
                })
            })
            .transpose()
    }
}

/// `node:` — node-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// `node.name`: a name for logs and status. Default `lanparty`.
    #[serde(default = "default_node_name")]
    pub name: String,
}

fn default_node_name() -> String {
    "lanparty".into()
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: default_node_name(),
        }
    }
}

/// `room:` — the room template: MTU and pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSpec {
    /// `room.mtu`: the room MTU (L3 bytes per frame). On a client or
    /// gateway the relay's welcome sets it; on a relay it is every room's
    /// (a policy may set its room's). Default 1500; frames larger than a
    /// path's QUIC datagram travel in fragments.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// `room.ingress`: filters run on every frame before routing, in order.
    #[serde(default)]
    pub ingress: Vec<StageSpec>,
    /// `room.router`: the router. Default `{ type: switch }`.
    #[serde(default = "default_router")]
    pub router: StageSpec,
    /// `room.egress`: filters run per destination after routing, in order.
    #[serde(default)]
    pub egress: Vec<StageSpec>,
}

/// The default room MTU: Ethernet's 1500, so a room is a port on the
/// host's LAN. Frames larger than a path's datagram travel in fragments.
pub const DEFAULT_MTU: u16 = 1500;

fn default_mtu() -> u16 {
    DEFAULT_MTU
}

fn default_router() -> StageSpec {
    StageSpec::of_kind("switch")
}

impl Default for RoomSpec {
    fn default() -> Self {
        RoomSpec {
            mtu: DEFAULT_MTU,
            ingress: Vec::new(),
            router: default_router(),
            egress: Vec::new(),
        }
    }
}

/// `runtime:` — queue sizes. Every queue is bounded; a full queue drops and
/// counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// `runtime.room_queue`: frames waiting for their room's task (on a
    /// multi-threaded runtime; with one thread a port processes its frames
    /// at once, in its own task). Default 4096.
    #[serde(default = "default_room_queue")]
    pub room_queue: usize,
    /// `runtime.link_queue`: frames waiting for a link's port to send them.
    /// Default 1024.
    #[serde(default = "default_link_queue")]
    pub link_queue: usize,
    /// `runtime.batch`: queued frames a room processes per turn. Default 64.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// `runtime.threads`: worker threads; default: one per core. `1` runs
    /// everything on one current-thread runtime (no cross-thread wake-ups).
    #[serde(default)]
    pub threads: Option<usize>,
}

fn default_room_queue() -> usize {
    4096
}
fn default_link_queue() -> usize {
    1024
}
fn default_batch() -> usize {
    64
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            room_queue: default_room_queue(),
            link_queue: default_link_queue(),
            batch: default_batch(),
            threads: None,
        }
    }
}

impl RuntimeSettings {
    fn validate(&self, errors: &mut ConfigErrors) {
        for (key, value, max) in [
            ("runtime.room_queue", self.room_queue, 1 << 20),
            ("runtime.link_queue", self.link_queue, 1 << 20),
            ("runtime.batch", self.batch, 4096),
            ("runtime.threads", self.threads.unwrap_or(1), 1024),
        ] {
            if value == 0 || value > max {
                errors.push(ConfigError::new(
                    None,
                    key,
                    format!("must be 1..={max}, got {value}"),
                ));
            }
        }
    }
}

/// Where a config comes from: files, then environment overrides, then
/// `--set` overrides, each later source winning.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// Config files, merged in order.
    pub files: Vec<PathBuf>,
    /// Whether `LANPARTY_…` environment variables apply.
    pub env: bool,
    /// `key.path=value` overrides; values are read as YAML scalars.
    pub sets: Vec<String>,
}

impl ConfigSources {
    /// Files plus environment overrides plus `--set` overrides.
    pub fn new(files: Vec<PathBuf>, sets: Vec<String>) -> ConfigSources {
        ConfigSources {
            files,
            env: true,
            sets,
        }
    }

    /// Merges every source into one figment, checking that every file can
    /// be read and every `--set` is well formed.
    pub fn figment(&self) -> Result<Figment, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut figment = Figment::new();
        if self.files.is_empty() {
            errors.push(ConfigError::new(None, "", "no config file given"));
        }
        for file in &self.files {
            match std::fs::metadata(file) {
                Ok(meta) if meta.is_file() => {
                    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.clone());
                    figment = figment.merge(Yaml::file_exact(absolute));
                }
                Ok(_) => errors.push(ConfigError::new(
                    Some(file.display().to_string()),
                    "",
                    "is not a regular file",
                )),
                Err(e) => errors.push(ConfigError::new(
                    Some(file.display().to_string()),
                    "",
                    format!("cannot read config file: {e}"),
                )),
            }
        }
        if self.env {
            figment = figment.merge(Env::prefixed(ENV_PREFIX).split(ENV_SEPARATOR));
        }
        for set in &self.sets {
            match parse_set(set) {
                Ok((key, value)) => {
                    figment = figment.merge(SetOverride {
                        text: set.clone(),
                        value: Serialized::global(&key, value),
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        errors.into_result(figment)
    }
}

/// One `--set` as a figment provider whose values say they came from
/// `--set KEY=VALUE`, so an error about them names the flag, not a file.
struct SetOverride {
    text: String,
    value: Serialized<Value>,
}

impl Provider for SetOverride {
    fn metadata(&self) -> Metadata {
        Metadata::named("--set").source(Source::Custom(format!("--set {}", self.text)))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.value.data()
    }
}

/// Parses `key.path=value` into a key and a YAML scalar value.
pub fn parse_set(set: &str) -> Result<(String, Value), ConfigError> {
    let origin = Some(format!("--set {set}"));
    let Some((key, raw)) = set.split_once('=') else {
        return Err(ConfigError::new(
            origin,
            "",
            "expected KEY.PATH=VALUE, e.g. ports.relay.room=ROOM1",
        ));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|segment| segment.is_empty()) {
        return Err(ConfigError::new(
            origin,
            key,
            "key path has an empty segment",
        ));
    }
    let value: Value = if raw.is_empty() {
        Value::from(String::new())
    } else {
        serde_norway::from_str(raw).map_err(|e| {
            ConfigError::new(origin.clone(), key, format!("value is not valid YAML: {e}"))
        })?
    };
    Ok((key.to_string(), value))
}

/// Reads and checks the shape of a node config (not yet the stages in it).
pub fn load_node(sources: &ConfigSources) -> Result<(Figment, NodeConfig), ConfigErrors> {
    let figment = sources.figment()?;
    let node: NodeConfig = figment
        .extract()
        .map_err(|e| ConfigErrors::from(ConfigError::from_figment(e, "", None)))?;
    let mut errors = ConfigErrors::default();
    node.runtime.validate(&mut errors);
    node.rooms.validate(&mut errors);
    if let Err(e) = node.metrics.listen_addr() {
        errors.push(e);
    }
    if let Err(e) = crate::wire::mtu::validate_mtu(u32::from(node.room.mtu)) {
        errors.push(ConfigError::new(None, "room.mtu", e.to_string()));
    }
    if node.ports.is_empty() {
        errors.push(ConfigError::new(
            None,
            "ports",
            "a node needs at least one port",
        ));
    }
    for name in node.ports.keys() {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(ConfigError::new(
                None,
                format!("ports.{name}"),
                "port names may hold only letters, digits, '-' and '_'",
            ));
        }
    }
    for error in &mut errors.0 {
        if error.origin.is_none() {
            error.origin = origin_of(&figment, &error.key);
        }
    }
    errors.into_result((figment, node))
}

/// Where the value at `key` came from: its file, `--set`, or the
/// environment.
pub fn origin_of(figment: &Figment, key: &str) -> Option<String> {
    figment
        .find_metadata(key)
        .map(super::error::describe_source)
}
