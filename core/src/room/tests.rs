//! The room's rules, driven by hand with a simulated clock: no runtime, no
//! sleeps.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::config::RoomSpec;
use crate::pipeline::{PipelineTemplate, UNKNOWN_LINK};
use crate::registry::Registry;
use crate::testing::frames::{Tags, ethernet};

/// Collects what the room hands it; refuses everything while `full`.
#[derive(Debug, Default)]
struct Recorder {
    frames: Mutex<Vec<Bytes>>,
    full: AtomicBool,
}

impl LinkSink for Recorder {
    fn deliver(&self, frame: Bytes) -> bool {
        if self.full.load(Ordering::Relaxed) {
            return false;
        }
        self.frames.lock().unwrap().push(frame);
        true
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.frames.lock().unwrap().len()
    }
}

/// A capture whose reader answers `answer` (shared, so the test can change
/// it) and counts what it took.
#[derive(Debug)]
struct Tap {
    answer: Arc<Mutex<Tapped>>,
    taken: Arc<Mutex<Vec<(LinkId, String)>>>,
}

impl FrameTap for Tap {
    fn offer(&self, link: LinkId, link_name: &Arc<str>, _frame: &Bytes) -> Tapped {
        let answer = *self.answer.lock().unwrap();
        if answer == Tapped::Taken {
            self.taken
                .lock()
                .unwrap()
                .push((link, link_name.to_string()));
        }
        answer
    }

    fn is_closed(&self) -> bool {
        *self.answer.lock().unwrap() == Tapped::Closed
    }
}

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const HOST: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

fn room() -> Room {
    let registry = Registry::global().unwrap();
    let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
    Room::new("r".into(), 7, template.instantiate("r"))
}

fn attach(room: &mut Room, id: u32, role: LinkRole, mac: MacAddr) -> Arc<Recorder> {
    let sink = Arc::new(Recorder::default());
    room.apply(attach_command(id, role, mac, sink.clone()));
    sink
}

fn frame(dst: MacAddr, src: MacAddr) -> Bytes {
    Bytes::from(ethernet(dst, src, Tags::None, 0x0800, 46))
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_nanos(1) + Duration::from_secs(secs)
}

#[test]
fn links_come_and_go_by_command_and_frames_follow() {
    let mut room = room();
    let _a = attach(&mut room, 1, LinkRole::Client, A);
    let b = attach(&mut room, 2, LinkRole::Client, B);
    let out = room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, A));
    assert_eq!((out.delivered, out.refused, out.dropped), (1, 0, None));
    assert_eq!(b.count(), 1);
    room.apply(RoomCommand::Detach(LinkId(2)));
    let out = room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, A));
    assert_eq!(out.delivered, 0);
    assert_eq!(b.count(), 1, "a detached link gets nothing");
    // A frame from a link the room does not know is dropped, and says so.
    let out = room.process(at(0), false, LinkId(2), frame(MacAddr::BROADCAST, B));
    assert_eq!(out.dropped.map(|d| d.reason), Some(UNKNOWN_LINK));
    let stats = room.stats(3);
    assert_eq!(
        (stats.room.as_str(), stats.room_id, stats.queue_full),
        ("r", 7, 3)
    );
    assert_eq!(stats.links.len(), 1);
}

#[test]
fn a_refused_delivery_is_reported_and_counted_on_its_link() {
    let mut room = room();
    let _a = attach(&mut room, 1, LinkRole::Client, A);
    let b = attach(&mut room, 2, LinkRole::Client, B);
    b.full.store(true, Ordering::Relaxed);
    let out = room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, A));
    assert_eq!((out.delivered, out.refused), (0, 1));
    let counters = room.stats(0).links[1].counters;
    assert_eq!((counters.tx_frames, counters.tx_queue_full), (0, 1));
}

#[test]
fn a_capture_sees_every_entering_frame_and_a_slow_or_gone_reader_costs_nothing() {
    let mut room = room();
    let _a = attach(&mut room, 1, LinkRole::Client, A);
    let b = attach(&mut room, 2, LinkRole::Client, B);
    let answer = Arc::new(Mutex::new(Tapped::Taken));
    let taken = Arc::new(Mutex::new(Vec::new()));
    room.apply(RoomCommand::Capture(Box::new(Tap {
        answer: answer.clone(),
        taken: taken.clone(),
    })));
    room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, A));
    assert_eq!(*taken.lock().unwrap(), [(LinkId(1), "link1".to_string())]);
    // A reader that is behind: counted, the frame still goes on.
    *answer.lock().unwrap() = Tapped::Full;
    room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, A));
    assert_eq!(b.count(), 2);
    assert_eq!(
        (room.stats(0).captures, room.stats(0).capture_dropped),
        (1, 1)
    );
    // A reader that is gone: the capture ends.
    *answer.lock().unwrap() = Tapped::Closed;
    room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, A));
    assert_eq!(room.stats(0).captures, 0);
    assert_eq!(room.captures.len(), 0);
    assert_eq!(b.count(), 3);
}

#[test]
fn the_switch_learns_and_forgets_on_the_rooms_clock() {
    // A host behind the LAN link is learned from its frame and forgotten
    // after the switch's 300 s ageing, on the time the driver passes in.
    let mut room = room();
    let _lan = attach(&mut room, 1, LinkRole::Lan, MacAddr([2, 0, 0, 0, 0, 8]));
    let a = attach(&mut room, 2, LinkRole::Client, A);
    let b = attach(&mut room, 3, LinkRole::Client, B);
    room.process(at(0), false, LinkId(1), frame(MacAddr::BROADCAST, HOST));
    assert_eq!(room.mac_holder(HOST, at(0)), Some(LinkRole::Lan));
    // Unicast to the host goes to the LAN link only.
    let out = room.process(at(10), false, LinkId(2), frame(HOST, A));
    assert_eq!(out.delivered, 1);
    assert_eq!(b.count(), 1, "only the first broadcast");
    room.tick(at(400));
    assert_eq!(room.mac_holder(HOST, at(400)), None);
    // Forgotten: now it floods to every other link.
    let out = room.process(at(401), false, LinkId(2), frame(HOST, A));
    assert_eq!(out.delivered, 2);
    assert_eq!(b.count(), 2);
    assert_eq!(a.count(), 1, "from the host's broadcast, not its own frame");
    // An admitted client's MAC is held whatever the time.
    assert_eq!(room.mac_holder(A, at(100_000)), Some(LinkRole::Client));
}
