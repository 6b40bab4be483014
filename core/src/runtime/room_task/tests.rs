//! The room driver's ordering rules, driven by hand: frames and commands
//! through the same channels the runtime uses, time from a simulated
//! clock, no runtime and no sleeps.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::config::RoomSpec;
use crate::pipeline::PipelineTemplate;
use crate::registry::Registry;
use crate::stage::LinkRole;
use crate::testing::frames::{Tags, ethernet};
use crate::time::SimulatedClock;
use crate::wire::MacAddr;

/// Collects what the room hands it, and counts the batches it ends.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Bytes>>, AtomicU64);

impl LinkSink for Recorder {
    fn deliver(&self, frame: Bytes) -> bool {
        self.0.lock().unwrap().push(frame);
        true
    }

    fn flush(&self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }

    fn gathers(&self) -> bool {
        true
    }
}

impl Recorder {
    /// The tag byte (the frame's last) of everything delivered, in order.
    fn tags(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|f| f[f.len() - 1])
            .collect()
    }

    fn flushes(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
}

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 3]);

struct Driver {
    core: RoomCore,
    clock: SimulatedClock,
    control: mpsc::UnboundedSender<Command>,
    frames: mpsc::Sender<(LinkId, Bytes)>,
}

/// A room driver over a default room (switch router), `batch_limit` queued
/// frames a turn.
fn driver(batch_limit: usize) -> Driver {
    let registry = Registry::global().unwrap();
    let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
    let room = Room::new("r".into(), 1, template.instantiate("r"));
    let clock = SimulatedClock::default();
    clock.advance(Duration::from_secs(1));
    let (control, control_rx) = mpsc::unbounded_channel();
    let (frames, frames_rx) = mpsc::channel(64);
    let core = RoomCore::new(
        room,
        Clock::Simulated(clock.clone()),
        batch_limit,
        Arc::new(AtomicU64::new(0)),
        control_rx,
        frames_rx,
    );
    Driver {
        core,
        clock,
        control,
        frames,
    }
}

fn attach(control: &mpsc::UnboundedSender<Command>, id: u32, mac: MacAddr) -> Arc<Recorder> {
    let sink = Arc::new(Recorder::default());
    let command = crate::room::attach_command(id, LinkRole::Client, mac, sink.clone());
    control.send(Command::Room(command)).unwrap();
    sink
}

/// A frame from `src` to `dst` whose last byte is `tag`.
fn frame(dst: MacAddr, src: MacAddr, tag: u8) -> Bytes {
    let mut f = ethernet(dst, src, Tags::None, 0x0800, 46);
    if let Some(last) = f.last_mut() {
        *last = tag;
    }
    Bytes::from(f)
}

#[test]
fn a_direct_frame_never_overtakes_frames_queued_before_it() {
    let mut d = driver(2);
    let b = attach(&d.control, 2, B);
    let _a = attach(&d.control, 1, A);
    for tag in 1..=3 {
        d.frames
            .try_send((LinkId(1), frame(MacAddr::BROADCAST, A, tag)))
            .unwrap();
    }
    // Two of the three queued frames fit this turn: the port's frame must
    // queue behind the third instead of going first.
    let Direct::Queue(fourth) = d
        .core
        .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 4), true)
    else {
        panic!("a frame went ahead of one queued before it");
    };
    assert_eq!(b.tags(), [1, 2]);
    d.frames.try_send((LinkId(1), fourth)).unwrap();
    assert!(matches!(
        d.core
            .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 5), true),
        Direct::Processed
    ));
    assert_eq!(
        b.tags(),
        [1, 2, 3, 4, 5],
        "in the order the port offered them"
    );
}

#[test]
fn commands_sent_before_a_frame_apply_before_it() {
    let mut d = driver(8);
    let _a = attach(&d.control, 1, A);
    let c = attach(&d.control, 3, C);
    assert!(matches!(
        d.core
            .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 1), true),
        Direct::Processed
    ));
    assert_eq!(c.tags(), [1], "the link attached before the frame got it");
    d.control
        .send(Command::Room(RoomCommand::Detach(LinkId(3))))
        .unwrap();
    d.core
        .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 2), true);
    assert_eq!(c.tags(), [1], "the link detached before the frame did not");
    drop(d.control);
    assert!(
        matches!(
            d.core
                .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 3), true),
            Direct::Closed
        ),
        "a room the table dropped takes no more frames"
    );
}

#[test]
fn the_driver_hands_the_room_its_clock() {
    let mut d = driver(8);
    let a = attach(&d.control, 1, A);
    let b = attach(&d.control, 2, B);
    let c = attach(&d.control, 3, C);
    // B speaks: the switch learns where B is, at the clock's time.
    d.core
        .direct(LinkId(2), frame(MacAddr::BROADCAST, B, 1), true);
    d.core.direct(LinkId(1), frame(B, A, 2), true);
    assert_eq!(
        (b.tags(), c.tags()),
        (vec![2], vec![1]),
        "known unicast to B only"
    );
    // Past the switch's ageing (300 s) B is forgotten: unicast floods.
    d.clock.advance(Duration::from_secs(301));
    d.core.direct(LinkId(1), frame(B, A, 3), true);
    assert_eq!((b.tags(), c.tags()), (vec![2, 3], vec![1, 3]));
    assert_eq!(a.tags(), [1], "nothing comes back to the sender");
}

#[test]
fn every_batch_ends_with_a_flush_so_nothing_waits_past_it() {
    let mut d = driver(8);
    let _a = attach(&d.control, 1, A);
    let b = attach(&d.control, 2, B);
    // A lone frame ends its own batch.
    d.core
        .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 1), true);
    assert_eq!((b.tags(), b.flushes()), (vec![1], 1));
    // Gathered frames (a session draining its datagrams) end theirs once.
    d.core
        .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 2), false);
    d.core
        .direct(LinkId(1), frame(MacAddr::BROADCAST, A, 3), false);
    assert_eq!(b.flushes(), 1, "held until the port says the batch is over");
    d.core.flush();
    assert_eq!((b.tags(), b.flushes()), (vec![1, 2, 3], 2));
    // The room task's batches of queued frames end with one too.
    for tag in 4..=6 {
        d.frames
            .try_send((LinkId(1), frame(MacAddr::BROADCAST, A, tag)))
            .unwrap();
    }
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(d.core.poll_work(&mut cx).is_pending());
    assert_eq!((b.tags(), b.flushes()), (vec![1, 2, 3, 4, 5, 6], 3));
}
