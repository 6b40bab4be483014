//! A relay's room policies at run time: loaded from the policy folder,
//! read again when the folder changes (watched through `notify`) and every
//! `rooms.reload_interval`, applied without a restart.
//!
//! - an edited or new file replaces the room's policy: new limits and
//!   credentials apply to the next admissions, filter parameters at once in
//!   the live room (its links, MAC table and MTU stay);
//! - a deleted file removes the policy: on a closed relay
//!   (`require_policy`) the live room is closed (its peers are disconnected
//!   with `policy_changed`); otherwise the room reverts to the template;
//! - a file that does not parse or check keeps the previous policy (or
//!   none), and what is wrong is logged once per version of the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;

use super::rooms::Rooms;
use super::shutdown::ShutdownSignal;
use crate::config::{
    ConfigError, ConfigErrors, RoomPolicy, RoomSpec, RoomsSection, policy_room_code,
};
use crate::control::validate::validate_room_code;
use crate::pipeline::PipelineTemplate;
use crate::registry::Registry;

/// A room's policy as the relay applies it.
#[derive(Debug)]
pub struct ActivePolicy {
    /// The room code.
    pub room: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The policy.
    pub policy: RoomPolicy,
    /// The room template with the policy's filters merged in.
    pub template: PipelineTemplate,
}

/// What changed in the policy folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEvent {
    /// A room's policy is new or was edited.
    Changed(String),
    /// A room's policy file was deleted.
    Removed(String),
}

/// The outcome of one look at the folder.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Policies that changed.
    pub events: Vec<PolicyEvent>,
    /// Files that did not load (newly broken or newly seen broken).
    pub errors: Vec<(PathBuf, ConfigErrors)>,
}

#[derive(Default)]
struct StoreState {
    /// Last content seen per file, so an unchanged file is not parsed again
    /// and a broken one is reported once.
    seen: HashMap<PathBuf, Vec<u8>>,
    policies: HashMap<String, Arc<ActivePolicy>>,
    dir_missing_logged: bool,
}

/// Every room policy of a relay.
pub struct PolicyStore {
    dir: Option<PathBuf>,
    section: RoomsSection,
    base: RoomSpec,
    state: Mutex<StoreState>,
    events: broadcast::Sender<PolicyEvent>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .field("require_policy", &self.section.require_policy)
            .finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// A node without policies: every room uses the template.
    pub fn none() -> Arc<PolicyStore> {
        PolicyStore::new(&RoomsSection::default(), RoomSpec::default())
    }

    /// A store for the `rooms:` section; `base` is the node's `room:`
    /// section that policies are merged into. Nothing is read yet.
    pub fn new(section: &RoomsSection, base: RoomSpec) -> Arc<PolicyStore> {
        Arc::new(PolicyStore {
            dir: section.policy_dir(),
            section: section.clone(),
            base,
            state: Mutex::new(StoreState::default()),
            events: broadcast::channel(256).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The policy folder, if one is configured.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// True on a closed relay: rooms without a policy are refused.
    pub fn require_policy(&self) -> bool {
        self.section.require_policy
    }

    /// Failed credential checks allowed per source address per minute.
    pub fn auth_failures_per_minute(&self) -> u32 {
        self.section.auth_failures_per_minute
    }

    /// The policy of `room`, if it has one.
    pub fn get(&self, room: &str) -> Option<Arc<ActivePolicy>> {
        self.lock().policies.get(room).cloned()
    }

    /// Every room code with a policy, sorted.
    pub fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self.lock().policies.keys().cloned().collect();
        rooms.sort();
        rooms
    }

    /// Policy changes as they are applied.
    pub fn subscribe(&self) -> broadcast::Receiver<PolicyEvent> {
        self.events.subscribe()
    }

    /// Loads one policy file into its room code and checked policy.
    pub fn load_file(
        &self,
        path: &Path,
        registry: &Registry,
    ) -> Result<ActivePolicy, ConfigErrors> {
        let origin = Some(path.display().to_string());
        let room = policy_room_code(path).ok_or_else(|| {
            ConfigError::new(origin.clone(), "", "a policy file is named ROOM.yaml")
        })?;
        validate_room_code(&room).map_err(|e| {
            ConfigError::new(
                origin.clone(),
                "",
                format!("the file name must be a room code: {e}"),
            )
        })?;
        let (figment, policy) = RoomPolicy::load(path)?;
        let template = PipelineTemplate::with_policy(&self.base, &policy, Some(&figment), registry)
            .map_err(|mut errors| {
                for e in &mut errors.0 {
                    e.origin.get_or_insert_with(|| path.display().to_string());
                }
                errors
            })?;
        Ok(ActivePolicy {
            room,
            file: path.to_path_buf(),
            policy,
            template,
        })
    }

    /// Looks at the folder once: loads new and edited files, drops deleted
    /// ones, keeps the previous policy where a file is broken.
    pub fn scan(&self, registry: &Registry) -> ScanReport {
        let mut report = ScanReport::default();
        let Some(dir) = &self.dir else {
            return report;
        };
        let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if policy_room_code(&path).is_none() || !path.is_file() {
                        continue;
                    }
                    match std::fs::read(&path) {
                        Ok(content) => {
                            files.insert(path, content);
                        }
                        Err(e) => report.errors.push((
                            path.clone(),
                            ConfigError::new(
                                Some(path.display().to_string()),
                                "",
                                format!("cannot read: {e}"),
                            )
                            .into(),
                        )),
                    }
                }
                self.lock().dir_missing_logged = false;
            }
            Err(e) => {
                let mut state = self.lock();
                if !state.dir_missing_logged {
                    state.dir_missing_logged = true;
                    report.errors.push((
                        dir.clone(),
                        ConfigError::new(
                            Some(dir.display().to_string()),
                            "rooms.policy_dir",
                            format!("cannot read the policy folder ({e}); rooms have no policies until it is back"),
                        )
                        .into(),
                    ));
                }
            }
        }
        let mut state = self.lock();
        // Deleted files.
        let gone: Vec<PathBuf> = state
            .seen
            .keys()
            .filter(|p| !files.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            state.seen.remove(&path);
            if let Some(room) = policy_room_code(&path)
                && state.policies.get(&room).is_some_and(|p| p.file == path)
            {
                state.policies.remove(&room);
                report.events.push(PolicyEvent::Removed(room));
            }
        }
        // New and edited files.
        let mut paths: Vec<&PathBuf> = files.keys().collect();
        paths.sort();
        for path in paths {
            let content = &files[path];
            if state.seen.get(path) == Some(content) {
                continue;
            }
            state.seen.insert(path.clone(), content.clone());
            drop(state);
            let loaded = self.load_file(path, registry);
            state = self.lock();
            match loaded {
                Ok(active) => {
                    let room = active.room.clone();
                    if let Some(other) = state.policies.get(&room)
                        && other.file != *path
                    {
                        report.errors.push((
                            path.clone(),
                            ConfigError::new(
                                Some(path.display().to_string()),
                                "",
                                format!(
                                    "room {room} already has a policy in {}; this file is ignored",
                                    other.file.display()
                                ),
                            )
                            .into(),
                        ));
                        continue;
                    }
                    state.policies.insert(room.clone(), Arc::new(active));
                    report.events.push(PolicyEvent::Changed(room));
                }
                Err(errors) => report.errors.push((path.clone(), errors)),
            }
        }
        report
    }

    /// Applies a scan: logs it, retunes live rooms, tells subscribers.
    pub fn apply(&self, report: &ScanReport, rooms: &Rooms) {
        for (path, errors) in &report.errors {
            let kept = policy_room_code(path)
                .and_then(|room| self.get(&room))
                .map_or("no policy", |_| "the previous policy");
            for e in &errors.0 {
                tracing::error!(file = %path.display(), "policy not loaded, {kept} stays in force: {e}");
            }
        }
        for event in &report.events {
            match event {
                PolicyEvent::Changed(room) => {
                    let policy = self.get(room);
                    tracing::info!(%room, file = %policy.as_ref().map(|p| p.file.display().to_string()).unwrap_or_default(), "room policy loaded");
                    rooms.set_room_template(room, policy.map(|p| p.template.clone()));
                }
                PolicyEvent::Removed(room) => {
                    if self.require_policy() {
                        tracing::warn!(%room, "room policy deleted: the room is closed (closed relay)");
                    } else {
                        tracing::warn!(%room, "room policy deleted: the room reverts to the relay's template");
                    }
                    rooms.set_room_template(room, None);
                }
            }
            let _ = self.events.send(event.clone());
        }
    }

    /// Re-reads the folder whenever the kernel says something in it changed
    /// (inotify through the `notify` crate: an edit applies within
    /// `SETTLE` plus the scan), and every `rooms.reload_interval` as a
    /// fallback where watching is unavailable or misses an event (a folder
    /// deleted and made again, a network file system), until shutdown.
    pub async fn watch(
        self: Arc<Self>,
        registry: &'static Registry,
        rooms: Arc<Rooms>,
        mut shutdown: ShutdownSignal,
    ) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
        let _watcher = match folder_watcher(&dir, changed_tx) {
            Ok(watcher) => {
                tracing::debug!(dir = %dir.display(), "watching the policy folder");
                Some(watcher)
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), every = ?self.section.reload_interval.0, "cannot watch the policy folder ({e}); checking it periodically instead");
                None
            }
        };
        // `Node::build` read the folder just now: the first look is one
        // interval away.
        let period = self
            .section
            .reload_interval
            .0
            .max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticker.tick() => {}
                Some(()) = changed.recv() => {
                    // An editor's save is several events (write, rename):
                    // let them settle, then read once.
                    tokio::time::sleep(SETTLE).await;
                    while changed.try_recv().is_ok() {}
                }
            }
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.scan(registry)).await {
                Ok(report) => self.apply(&report, &rooms),
                Err(e) => tracing::error!("policy reload failed: {e}"),
            }
        }
    }
}

/// How long a burst of folder events is given to settle before the folder
/// is read.
pub const SETTLE: Duration = Duration::from_millis(20);

/// A watcher that sends on `changed` whenever something in `dir` changes
/// (dropping the signal when one is already pending).
fn folder_watcher(
    dir: &Path,
    changed: tokio::sync::mpsc::Sender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = changed.try_send(());
        }
    })?;
    watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
