//! The tokio runtime that drives ports and rooms.
//!
//! [`Node::build`] turns config sources into checked stages without opening
//! anything (that is all `lanparty check` does); [`Node::run`] starts every
//! port and runs until Ctrl-C, SIGTERM, the shutdown trigger, or a port
//! failing.

#[cfg(unix)]
pub mod admin;
pub mod identity;
mod link;
mod metrics;
mod metrics_http;
mod policy;
mod port;
mod room_task;
mod rooms;
mod shutdown;
mod status;

use std::sync::Arc;
use std::time::Duration;

use figment::Figment;

pub use crate::room::{
    FRAME_LOG, LinkCounters, LinkCountersSnapshot, LinkSink, LinkStats, RoomStats,
};
pub use identity::MacIdentity;
pub use link::{LinkHandle, LinkSpec};
pub use policy::{ActivePolicy, PolicyEvent, PolicyStore, ScanReport};
pub use port::{BoxFuture, Port, PortError};
pub use rooms::{CapturedFrame, Rooms};
pub use shutdown::{ShutdownSignal, ShutdownTrigger, shutdown_pair};
pub use status::{
    Metrics, NodeReport, NodeStatus, PoliciesReport, STATUS_VERSION, StatusBoard, StatusSource,
};

use crate::config::{
    ConfigErrors, ConfigSources, NodeConfig, RuntimeSettings, check_admin_socket, load_node,
    origin_of,
};
use crate::pipeline::PipelineTemplate;
use crate::registry::{Registry, StageBuild, StageKind};

/// How long ports get to clean up after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a running port gets from the runtime.
#[derive(Clone)]
pub struct PortContext {
    port: Arc<str>,
    rooms: Arc<Rooms>,
    shutdown: ShutdownSignal,
    policies: Arc<PolicyStore>,
    board: Arc<StatusBoard>,
}

impl PortContext {
    /// A context for the port named `port`.
    pub fn new(port: &str, rooms: Arc<Rooms>, shutdown: ShutdownSignal) -> PortContext {
        PortContext {
            port: port.into(),
            rooms,
            shutdown,
            policies: PolicyStore::none(),
            board: Arc::new(StatusBoard::default()),
        }
    }

    /// The same context publishing status to the node's `board`.
    pub fn with_status_board(mut self, board: Arc<StatusBoard>) -> PortContext {
        self.board = board;
        self
    }

    /// Publishes this port's live state for `lanparty status` and metrics.
    pub fn publish_status(&self, source: Arc<dyn StatusSource>) {
        self.board.publish(&self.port, source);
    }

    /// The same context with the node's room policies.
    pub fn with_policies(mut self, policies: Arc<PolicyStore>) -> PortContext {
        self.policies = policies;
        self
    }

    /// The node's room policies (empty unless `rooms.policy_dir` is set).
    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// The port's name from the config.
    pub fn port_name(&self) -> &str {
        &self.port
    }

    /// Attaches a link to `room` (created on first use).
    pub fn attach(&self, room: &str, spec: LinkSpec) -> LinkHandle {
        self.rooms.attach(room, spec)
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    /// The node's rooms.
    pub fn rooms(&self) -> &Arc<Rooms> {
        &self.rooms
    }

    /// The runtime settings (queue sizes, batch size).
    pub fn settings(&self) -> RuntimeSettings {
        self.rooms.settings()
    }
}

/// The room code used by nodes that hold a single room (client, gateway).
pub const DEFAULT_ROOM: &str = "default";

/// A checked node: every stage built, nothing opened yet.
pub struct Node {
    /// The node's name.
    pub name: String,
    /// The room template.
    pub template: PipelineTemplate,
    /// Ports by name.
    pub ports: Vec<(String, Box<dyn Port>)>,
    /// Runtime settings.
    pub settings: RuntimeSettings,
    /// Room policies.
    pub policies: Arc<PolicyStore>,
    /// The policy folder as first read: `check` reports its errors, `run`
    /// logs them and starts anyway (a broken policy never stops a relay).
    pub policy_report: ScanReport,
    /// The admin socket path, if enabled.
    pub admin_socket: Option<std::path::PathBuf>,
    /// The Prometheus endpoint, if configured.
    pub metrics: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("template", &self.template)
            .field(
                "ports",
                &self.ports.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Builds every port of a node config, collecting errors.
pub fn build_ports(
    config: &NodeConfig,
    figment: Option<&Figment>,
    registry: &Registry,
    errors: &mut ConfigErrors,
) -> Vec<(String, Box<dyn Port>)> {
    let mut ports = Vec::new();
    for (name, spec) in &config.ports {
        let stage = match spec.resolve(figment, &format!("ports.{name}")) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match registry.lookup(&stage, StageKind::Port) {
            Ok(registration) => {
                if let StageBuild::Port { build } = registration.build {
                    match build(&stage) {
                        Ok(port) => ports.push((name.clone(), port)),
                        Err(e) => errors.extend(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    ports
}

impl Node {
    /// Reads the config sources and builds every stage, listing every error.
    pub fn build(sources: &ConfigSources) -> Result<Node, ConfigErrors> {
        let registry = Registry::global().map_err(|e| {
            ConfigErrors::from(crate::config::ConfigError::new(None, "", e.to_string()))
        })?;
        let (figment, config) = load_node(sources)?;
        let mut errors = ConfigErrors::default();
        let template = PipelineTemplate::build(&config.room, Some(&figment), registry);
        let mut ports = build_ports(&config, Some(&figment), registry, &mut errors);
        let mac = identity::unify(&mut ports, |key| origin_of(&figment, key), &mut errors);
        let admin_socket = config.admin.socket_path(&config.node.name, mac);
        if let Some(path) = &admin_socket
            && let Err(e) = check_admin_socket(path)
        {
            errors.push(e);
        }
        let policies = PolicyStore::new(&config.rooms, config.room.clone());
        let policy_report = policies.scan(registry);
        match template {
            Ok(template) => errors.into_result(Node {
                name: config.node.name.clone(),
                template,
                ports,
                settings: config.runtime,
                policies,
                policy_report,
                admin_socket,
                metrics: config.metrics.listen_addr().ok().flatten(),
            }),
            Err(e) => {
                errors.extend(e.0);
                Err(errors)
            }
        }
    }

    /// Runs every port until shutdown. Ctrl-C and SIGTERM trigger it too.
    /// Returns the first port error, if a port failed.
    pub async fn run(self, trigger: ShutdownTrigger) -> Result<(), PortError> {
        let rooms = Rooms::new(self.template, self.settings);
        let mut tasks = tokio::task::JoinSet::new();
        tracing::info!(node = %self.name, ports = self.ports.len(), "node starting");
        self.policies.apply(&self.policy_report, &rooms);
        if let Some(dir) = self.policies.dir() {
            tracing::info!(dir = %dir.display(), rooms = self.policies.rooms().len(), require_policy = self.policies.require_policy(), "room policies loaded");
            if let Ok(registry) = Registry::global() {
                tokio::spawn(self.policies.clone().watch(
                    registry,
                    rooms.clone(),
                    trigger.signal(),
                ));
            }
        }
        let board = Arc::new(StatusBoard::default());
        let status = Arc::new(NodeStatus {
            name: self.name.clone(),
            started: std::time::Instant::now(),
            rooms: rooms.clone(),
            board: board.clone(),
            policies: self.policies.clone(),
        });
        if let Some(addr) = self.metrics {
            let listener = metrics_http::bind(addr)
                .await
                .map_err(|e| PortError::new("metrics", e))?;
            tokio::spawn(metrics_http::serve(
                listener,
                status.clone(),
                trigger.signal(),
            ));
        }
        #[cfg(unix)]
        let mut _admin_file = None;
        #[cfg(unix)]
        if let Some(path) = &self.admin_socket {
            match admin::bind(path) {
                Ok(listener) => {
                    _admin_file = Some(admin::SocketFile(path.clone()));
                    tokio::spawn(admin::serve(
                        listener,
                        path.clone(),
                        status.clone(),
                        trigger.signal(),
                    ));
                }
                Err(e) => tracing::warn!(
                    "no admin socket, `lanparty status` will not reach this node: {e} (set `admin.socket` to a writable path, or `off`)"
                ),
            }
        }
        for (name, port) in self.ports {
            let ctx = PortContext::new(&name, rooms.clone(), trigger.signal())
                .with_policies(self.policies.clone())
                .with_status_board(board.clone());
            tasks.spawn(async move {
                let result = port.run(ctx).await.map_err(|e| e.named(&name));
                (name, result)
            });
        }
        tokio::spawn(forward_os_signals(trigger.clone()));
        let mut signal = trigger.signal();
        let mut first_error = None;
        loop {
            tokio::select! {
                // The trigger logged `shutting down` and the reason.
                _ = signal.wait() => break,
                joined = tasks.join_next() => match joined {
                    None => {
                        tracing::info!(node = %self.name, "every port stopped");
                        // The last port may have failed (a one-port relay
                        // that cannot listen): that is the node's result.
                        return first_error.map_or(Ok(()), Err);
                    }
                    Some(Ok((name, Ok(())))) => tracing::info!(port = %name, "port stopped"),
                    Some(Ok((name, Err(e)))) => {
                        tracing::error!(port = %name, "{e}");
                        first_error.get_or_insert(e);
                        trigger.trigger(format!("port {name} failed"));
                    }
                    Some(Err(join)) => {
                        let e = PortError::new("?", format!("port task panicked or was cancelled: {join}"));
                        tracing::error!("{e}");
                        first_error.get_or_insert(e);
                        trigger.trigger("a port task failed");
                    }
                },
            }
        }
        let drain = async {
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((name, Err(e))) => {
                        tracing::error!(port = %name, "{e}");
                        first_error.get_or_insert(e);
                    }
                    Ok((name, Ok(()))) => tracing::debug!(port = %name, "port stopped"),
                    Err(join) => tracing::error!("port task failed: {join}"),
                }
            }
        };
        // Counters before the rooms go, so a run always ends with its numbers.
        log_room_stats(&rooms).await;
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            tracing::warn!("ports did not stop within {SHUTDOWN_GRACE:?}; abandoning them");
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Logs every room's counters: per link, and drops per stage and reason.
pub async fn log_room_stats(rooms: &Rooms) {
    for room in rooms.stats().await {
        tracing::info!(room = %room.room, frames_in = room.pipeline.frames_in, delivered = room.pipeline.delivered, queue_full = room.queue_full, macs = room.pipeline.table_len, "room counters");
        for link in &room.links {
            let c = link.counters;
            tracing::info!(room = %room.room, link = %link.name, role = %link.role, rx = c.rx_frames, rx_queue_full = c.rx_queue_full, tx = c.tx_frames, tx_queue_full = c.tx_queue_full, "link counters");
        }
        for stage in &room.pipeline.stages {
            for (reason, n) in &stage.counters.drops {
                tracing::info!(room = %room.room, stage = %stage.label, reason = %reason, dropped = n, "drops");
            }
        }
    }
}

async fn forward_os_signals(trigger: ShutdownTrigger) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            trigger.trigger("interrupted (Ctrl-C)");
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => trigger.trigger("interrupted (Ctrl-C)"),
            _ = term.recv() => trigger.trigger("terminated (SIGTERM)"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        trigger.trigger("interrupted (Ctrl-C)");
    }
}
