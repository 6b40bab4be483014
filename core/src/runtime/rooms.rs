//! The room table of a node: rooms are created on the first link that
//! names them and dropped after the last one leaves; each gets a task
//! (`room_task.rs`) and, with a policy, its own pipeline template. Ports
//! attach links here and get a [`LinkHandle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::link::{LinkHandle, LinkSpec};
use super::room_task::{CaptureTap, Command, PortSink, RoomCore, SharedRoom, lock_room, run_room};
use crate::config::RuntimeSettings;
use crate::pipeline::PipelineTemplate;
use crate::room::{LinkCounters, Room, RoomCommand, RoomOutput, RoomStats};
use crate::stage::{LinkId, LinkInfo, LinkRole};
use crate::time::Clock;
use crate::wire::MacAddr;

/// A frame as it entered a room, for a live capture.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// When the room took it.
    pub at: std::time::SystemTime,
    /// The link it came from.
    pub link: LinkId,
    /// That link's name.
    pub link_name: Arc<str>,
    /// The frame.
    pub frame: Bytes,
}

struct RoomEntry {
    core: SharedRoom,
    run_to_completion: bool,
    room_id: u64,
    control: mpsc::UnboundedSender<Command>,
    frames: mpsc::Sender<(LinkId, Bytes)>,
    queue_full: Arc<AtomicU64>,
    mtu: watch::Sender<u16>,
    links: usize,
}

/// Every room of a node.
pub struct Rooms {
    template: PipelineTemplate,
    /// Templates of rooms with a policy, by room code.
    room_templates: Mutex<HashMap<Arc<str>, PipelineTemplate>>,
    settings: RuntimeSettings,
    clock: Clock,
    rooms: Mutex<HashMap<Arc<str>, RoomEntry>>,
    next_link: AtomicU32,
    next_room: AtomicU64,
}

impl Rooms {
    /// A node's room table. Rooms are spawned on the current tokio runtime.
    pub fn new(template: PipelineTemplate, settings: RuntimeSettings) -> Arc<Rooms> {
        Arc::new(Rooms {
            template,
            room_templates: Mutex::new(HashMap::new()),
            settings,
            clock: Clock::default(),
            rooms: Mutex::new(HashMap::new()),
            next_link: AtomicU32::new(1),
            next_room: AtomicU64::new(1),
        })
    }

    /// The runtime settings.
    pub fn settings(&self) -> RuntimeSettings {
        self.settings
    }

    /// The MTU of the room template (the relay's ceiling for new rooms).
    pub fn template_mtu(&self) -> u16 {
        self.template.mtu()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, RoomEntry>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches a link to `room`, creating the room if needed.
    pub fn attach(self: &Arc<Self>, room: &str, spec: LinkSpec) -> LinkHandle {
        let id = LinkId(self.next_link.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(self.settings.link_queue);
        let counters = Arc::new(LinkCounters::default());
        let mut rooms = self.lock();
        let key: Arc<str> = Arc::from(room);
        let entry = rooms
            .entry(key.clone())
            .or_insert_with(|| self.spawn_room(&key));
        let info = LinkInfo {
            id,
            name: spec.name.into(),
            role: spec.role,
            macs: spec.macs,
            mtu: spec.mtu.unwrap_or(self.template.mtu()),
        };
        tracing::debug!(room, link = %id, name = %info.name, role = %info.role, "link attached");
        // The worker lives as long as the entry; a send cannot fail here.
        let _ = entry.control.send(Command::Room(RoomCommand::Attach {
            info,
            output: RoomOutput {
                id,
                sink: Arc::new(PortSink {
                    queue: tx,
                    sink: spec.sink,
                }),
                counters: counters.clone(),
            },
        }));
        entry.links += 1;
        LinkHandle {
            id,
            room: key,
            room_id: entry.room_id,
            core: entry.core.clone(),
            run_to_completion: entry.run_to_completion,
            to_room: entry.frames.clone(),
            room_queue_full: entry.queue_full.clone(),
            mtu: entry.mtu.subscribe(),
            from_room: rx,
            counters,
            rooms: self.clone(),
            gathering: AtomicBool::new(false),
        }
    }

    fn spawn_room(&self, room: &Arc<str>) -> RoomEntry {
        let room_id = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (frames, frames_rx) = mpsc::channel(self.settings.room_queue);
        let queue_full = Arc::new(AtomicU64::new(0));
        let core = Arc::new(Mutex::new(RoomCore::new(
            Room::new(
                room.clone(),
                room_id,
                self.template_for(room).instantiate(room),
            ),
            self.clock.clone(),
            self.settings.batch,
            queue_full.clone(),
            control_rx,
            frames_rx,
        )));
        tracing::info!(room = %room, room_id, "room created");
        tokio::spawn(run_room(core.clone()));
        let run_to_completion = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        RoomEntry {
            core,
            run_to_completion,
            room_id,
            control,
            frames,
            queue_full,
            mtu: watch::Sender::new(self.template.mtu()),
            links: 0,
        }
    }

    fn template_for(&self, room: &str) -> PipelineTemplate {
        self.room_templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(room)
            .unwrap_or(&self.template)
            .clone()
    }

    /// Gives `room` its own template (its policy), or back the node's
    /// (`None`). A room that exists now is retuned at once: its filters are
    /// rebuilt, its links, MAC table and MTU stay.
    pub fn set_room_template(&self, room: &str, template: Option<PipelineTemplate>) {
        {
            let mut templates = self
                .room_templates
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match template {
                Some(t) => templates.insert(Arc::from(room), t),
                None => templates.remove(room),
            };
        }
        if let Some(entry) = self.lock().get(room) {
            let _ = entry
                .control
                .send(Command::Room(RoomCommand::Retune(self.template_for(room))));
        }
    }

    /// The role of the link that has `mac` in `room` now (a client that
    /// owns it, or the link the room's switch learned it on), if any. The
    /// relay asks before admitting a player's MAC.
    pub fn mac_holder(&self, room: &str, mac: MacAddr) -> Option<LinkRole> {
        let core = self.lock().get(room)?.core.clone();
        let mut core = lock_room(&core);
        core.apply_commands();
        let now = core.clock.now();
        core.room.mac_holder(mac, now)
    }

    pub(super) fn detach(&self, room: &Arc<str>, id: LinkId) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        let _ = entry.control.send(Command::Room(RoomCommand::Detach(id)));
        entry.links = entry.links.saturating_sub(1);
        if entry.links == 0 {
            tracing::info!(room = %room, room_id = entry.room_id, "last link left; room dropped");
            rooms.remove(room);
        }
    }

    /// Sets a room's MTU (before frames flow).
    pub fn set_mtu(&self, room: &str, mtu: u16) {
        if let Some(entry) = self.lock().get(room) {
            let _ = entry.control.send(Command::Room(RoomCommand::SetMtu(mtu)));
            entry.mtu.send_replace(mtu);
        }
    }

    /// Starts a live capture of every frame entering `room`; `None` when
    /// the room does not exist. The capture ends when the receiver is
    /// dropped; frames it cannot take at once are dropped (the capture
    /// never slows the room) and counted in the room's `capture_dropped`.
    pub fn capture(&self, room: &str, queue: usize) -> Option<mpsc::Receiver<CapturedFrame>> {
        let rooms = self.lock();
        let entry = rooms.get(room)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        entry
            .control
            .send(Command::Room(RoomCommand::Capture(Box::new(CaptureTap(
                tx,
            )))))
            .ok()?;
        Some(rx)
    }

    /// Names of the rooms that exist now.
    pub fn room_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// A snapshot of every room.
    pub async fn stats(&self) -> Vec<RoomStats> {
        let waiting: Vec<_> = self
            .lock()
            .values()
            .filter_map(|entry| {
                let (tx, rx) = oneshot::channel();
                entry.control.send(Command::Stats(tx)).ok().map(|_| rx)
            })
            .collect();
        let mut out = Vec::new();
        for rx in waiting {
            if let Ok(stats) = rx.await {
                out.push(stats);
            }
        }
        out.sort_by(|a, b| a.room.cmp(&b.room));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoomSpec;
    use crate::registry::Registry;
    use crate::room::LinkSink;
    use crate::testing::frames::{Tags, ethernet};

    /// Collects what the room hands it; refuses everything once `full`.
    #[derive(Debug, Default)]
    struct RecordingSink {
        frames: Mutex<Vec<Bytes>>,
        full: std::sync::atomic::AtomicBool,
    }

    impl LinkSink for RecordingSink {
        fn deliver(&self, frame: Bytes) -> bool {
            if self.full.load(Ordering::Relaxed) {
                return false;
            }
            self.frames
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(frame);
            true
        }
    }

    fn rooms() -> Arc<Rooms> {
        let registry = Registry::global().unwrap();
        let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
        Rooms::new(template, RuntimeSettings::default())
    }

    fn spec(name: &str, mac: MacAddr, sink: Option<Arc<dyn LinkSink>>) -> LinkSpec {
        LinkSpec {
            name: name.into(),
            role: LinkRole::Client,
            macs: vec![mac],
            mtu: None,
            sink,
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_sink_takes_frames_in_place_of_the_queue_and_its_refusals_are_counted() {
        let rooms = rooms();
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let sink = Arc::new(RecordingSink::default());
        let from = rooms.attach("r", spec("a", a, None));
        let mut to = rooms.attach("r", spec("b", b, Some(sink.clone())));
        settle().await;
        let frame = Bytes::from(ethernet(MacAddr::BROADCAST, a, Tags::None, 0x0800, 46));
        assert!(from.send(frame.clone()));
        settle().await;
        assert_eq!(
            sink.frames.lock().unwrap().as_slice(),
            std::slice::from_ref(&frame)
        );
        assert!(to.try_recv().is_none(), "nothing is queued for a sink link");
        sink.full.store(true, Ordering::Relaxed);
        assert!(from.send(frame));
        settle().await;
        let counters = to.counters().snapshot();
        assert_eq!((counters.tx_frames, counters.tx_queue_full), (1, 1));
    }

    fn frame_from(src: MacAddr, tag: u8) -> Bytes {
        let mut f = ethernet(MacAddr::BROADCAST, src, Tags::None, 0x0800, 46);
        let last = f.len() - 1;
        f[last] = tag;
        Bytes::from(f)
    }

    /// Room "r" with link "a" (a queue) and link "b" (a recording sink):
    /// a's handle, b's sink, the room itself, and b's handle.
    fn sender_and_sink() -> (LinkHandle, Arc<RecordingSink>, SharedRoom, LinkHandle) {
        let rooms = rooms();
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let sink = Arc::new(RecordingSink::default());
        // No settling: the room applies the pending attaches itself before
        // it processes a frame.
        let to = rooms.attach("r", spec("b", b, Some(sink.clone())));
        let from = rooms.attach("r", spec("a", a, None));
        let core = rooms.lock().get("r").map(|e| e.core.clone()).unwrap();
        (from, sink, core, to)
    }

    fn recorded(sink: &RecordingSink) -> Vec<u8> {
        let frames = sink.frames.lock().unwrap();
        frames.iter().map(|f| f[f.len() - 1]).collect()
    }

    #[tokio::test]
    async fn a_frame_offered_to_a_free_room_is_delivered_before_send_returns() {
        let (from, sink, _core, _to) = sender_and_sink();
        assert!(from.run_to_completion, "one-thread runtime");
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        assert!(from.send(frame_from(a, 1)));
        assert_eq!(recorded(&sink), [1], "delivered in the sender's task");
        let counters = from.counters().snapshot();
        assert_eq!((counters.rx_frames, counters.rx_queue_full), (1, 0));
    }

    /// Records frames and counts the batches the room ends for it.
    #[derive(Debug, Default)]
    struct GatheringSink {
        sink: RecordingSink,
        flushes: std::sync::atomic::AtomicU64,
    }

    impl LinkSink for GatheringSink {
        fn deliver(&self, frame: Bytes) -> bool {
            self.sink.deliver(frame)
        }

        fn gathers(&self) -> bool {
            true
        }

        fn flush(&self) {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn send_all_hands_several_frames_over_as_one_batch_and_a_lone_one_alone() {
        let rooms = rooms();
        let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
        let sink = Arc::new(GatheringSink::default());
        let _to = rooms.attach("r", spec("b", b, Some(sink.clone())));
        let from = rooms.attach("r", spec("a", a, None));
        let flushes = || sink.flushes.load(Ordering::Relaxed);
        let mut frames: Vec<Bytes> = (1..=3).map(|tag| frame_from(a, tag)).collect();
        from.send_all(&mut frames);
        assert!(frames.is_empty());
        assert_eq!(recorded(&sink.sink), [1, 2, 3]);
        assert_eq!(flushes(), 1, "three frames, one batch");
        frames.push(frame_from(a, 4));
        from.send_all(&mut frames);
        assert_eq!(recorded(&sink.sink), [1, 2, 3, 4]);
        assert_eq!(flushes(), 2, "a lone frame ends its own batch");
        // Frame by frame, each ends a batch.
        for tag in 5..=6 {
            from.send(frame_from(a, tag));
        }
        assert_eq!(flushes(), 4);
    }

    #[tokio::test]
    async fn a_busy_room_queues_frames_and_a_later_direct_frame_never_overtakes_them() {
        let (from, sink, core, _to) = sender_and_sink();
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            // Another thread holds the room: frames 1 and 2 must queue.
            let _held = core.lock().unwrap();
            assert!(from.send(frame_from(a, 1)));
            assert!(from.send(frame_from(a, 2)));
        }
        assert!(recorded(&sink).is_empty(), "queued, not yet processed");
        // The room is free again: frame 3 goes direct, after the queue.
        assert!(from.send(frame_from(a, 3)));
        assert_eq!(recorded(&sink), [1, 2, 3]);
        assert_eq!(from.counters().snapshot().rx_frames, 3);
    }

    #[tokio::test]
    async fn the_room_task_processes_queued_frames_when_no_port_comes_back() {
        let (from, sink, core, _to) = sender_and_sink();
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            let _held = core.lock().unwrap();
            assert!(from.send(frame_from(a, 7)));
        }
        settle().await;
        assert_eq!(recorded(&sink), [7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_a_multi_threaded_runtime_frames_go_through_the_room_task_in_order() {
        let (from, sink, core, _to) = sender_and_sink();
        assert!(!from.run_to_completion, "ports never take the room's lock");
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        {
            // The room's task cannot run while we hold the room: every
            // frame must wait in the queue, none is processed here.
            let _held = core.lock().unwrap();
            for i in 0..10 {
                assert!(from.send(frame_from(a, i)));
            }
            assert!(recorded(&sink).is_empty());
        }
        for _ in 0..200 {
            if recorded(&sink).len() == 10 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(recorded(&sink), (0..10).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn a_full_room_queue_drops_and_counts() {
        let registry = Registry::global().unwrap();
        let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
        let settings = RuntimeSettings {
            room_queue: 2,
            ..RuntimeSettings::default()
        };
        let rooms = Rooms::new(template, settings);
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let from = rooms.attach("r", spec("a", a, None));
        let core = rooms.lock().get("r").map(|e| e.core.clone()).unwrap();
        let _held = core.lock().unwrap();
        let taken: Vec<bool> = (0..3).map(|i| from.send(frame_from(a, i))).collect();
        assert_eq!(taken, [true, true, false]);
        let counters = from.counters().snapshot();
        assert_eq!((counters.rx_frames, counters.rx_queue_full), (2, 1));
    }
}
