//! Scheduler tests on a simulated clock: sparse flows overtake a bulk
//! backlog, CoDel drops only after a standing queue outlasts `interval`,
//! ECN marks instead of dropping, memory stays bounded under floods, and
//! non-IP frames are never starved.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::testing::frames::{self, Tags};
use crate::wire::MacAddr;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn ms(n: u64) -> Timestamp {
    Timestamp::ZERO + Duration::from_millis(n)
}

fn udp(sport: u16, len: usize) -> Bytes {
    Bytes::from(frames::ipv4_udp(
        B,
        A,
        Tags::None,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        sport,
        9,
        &vec![0u8; len],
    ))
}

/// A UDP frame whose IPv4 header says ECT(0).
fn ect_udp(sport: u16, len: usize) -> Bytes {
    let mut frame = udp(sport, len).to_vec();
    let old = u16::from_be_bytes([frame[14], frame[15]]);
    frame[15] |= 0b10;
    let new = u16::from_be_bytes([frame[14], frame[15]]);
    let sum = u16::from_be_bytes([frame[24], frame[25]]);
    let updated = crate::wire::checksum::update_checksum(sum, old, new);
    frame[24..26].copy_from_slice(&updated.to_be_bytes());
    Bytes::from(frame)
}

fn sport(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[34], frame[35]])
}

fn fq(settings: QueueSettings) -> Scheduler {
    Scheduler::new(&settings, 1514)
}

#[test]
fn a_sparse_flow_overtakes_a_bulk_backlog() {
    let mut s = fq(QueueSettings::default());
    for _ in 0..200 {
        s.enqueue(ms(0), udp(1000, 1400));
    }
    // Drain a little of the bulk flow, then a game packet arrives.
    for _ in 0..3 {
        assert_eq!(sport(&s.dequeue(ms(1)).unwrap()), 1000);
    }
    s.enqueue(ms(1), udp(2000, 60));
    let next = s.dequeue(ms(1)).unwrap();
    assert_eq!(sport(&next), 2000, "the new flow goes first");
    // The FIFO discipline makes it wait behind everything.
    let mut fifo = fq(QueueSettings {
        discipline: Discipline::Fifo,
        ..QueueSettings::default()
    });
    for _ in 0..200 {
        fifo.enqueue(ms(0), udp(1000, 1400));
    }
    fifo.enqueue(ms(1), udp(2000, 60));
    let position = (0..)
        .map_while(|_| fifo.dequeue(ms(1)))
        .position(|f| sport(&f) == 2000);
    assert_eq!(position, Some(200));
}

#[test]
fn two_bulk_flows_share_by_bytes() {
    let mut s = fq(QueueSettings::default());
    for _ in 0..300 {
        s.enqueue(ms(0), udp(1, 1400));
        s.enqueue(ms(0), udp(2, 1400));
        s.enqueue(ms(0), udp(2, 1400));
    }
    let mut bytes = [0usize; 3];
    for _ in 0..300 {
        let f = s.dequeue(ms(0)).unwrap();
        bytes[sport(&f) as usize] += f.len();
    }
    let ratio = bytes[1] as f64 / bytes[2] as f64;
    assert!((0.9..1.1).contains(&ratio), "{bytes:?}");
}

/// Feeds one flow at `arrive_every` and serves at `serve_every` for
/// `total` ms; returns (drops, the time of the first drop).
fn standing_queue(
    settings: QueueSettings,
    arrive_us: u64,
    serve_us: u64,
    total_ms: u64,
) -> (Scheduler, Option<u64>) {
    let mut s = fq(settings);
    let mut first_drop = None;
    let (mut next_arrival, mut next_service) = (0u64, 0u64);
    let end = total_ms * 1000;
    while next_arrival.min(next_service) < end {
        if next_arrival <= next_service {
            s.enqueue(Timestamp::from_nanos(next_arrival * 1000), ect_or_not(&s));
            next_arrival += arrive_us;
        } else {
            let before = s.stats().codel_drops + s.stats().ce_marks;
            let _ = s.dequeue(Timestamp::from_nanos(next_service * 1000));
            if first_drop.is_none() && s.stats().codel_drops + s.stats().ce_marks > before {
                first_drop = Some(next_service / 1000);
            }
            next_service += serve_us;
        }
    }
    (s, first_drop)
}

thread_local! {
    static ECT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn ect_or_not(_: &Scheduler) -> Bytes {
    if ECT.with(|e| e.get()) {
        ect_udp(7, 1000)
    } else {
        udp(7, 1000)
    }
}

#[test]
fn codel_waits_an_interval_above_target_before_dropping() {
    ECT.with(|e| e.set(false));
    // Arrivals at 1.25x the service rate: the queue grows steadily; the
    // delay passes 5 ms early, and CoDel must wait a full 100 ms beyond.
    let (s, first) = standing_queue(QueueSettings::default(), 800, 1000, 400);
    let first = first.expect("CoDel dropped");
    assert!((100..=130).contains(&first), "first drop at {first} ms");
    assert!(s.stats().codel_drops > 0);
    assert_eq!(s.stats().ce_marks, 0);
    // Below the service rate nothing is ever dropped.
    let (s, first) = standing_queue(QueueSettings::default(), 1100, 1000, 1000);
    assert_eq!(first, None);
    assert_eq!(s.stats().codel_drops, 0);
    assert_eq!(s.stats().overflow_drops, 0);
}

/// A window-based responsive sender (Reno: one more frame per window of
/// acks, half the window on a drop or mark, at most once per round trip;
/// 10 ms base round trip) against a server of one 1000-byte frame per ms.
/// Returns the mean queueing delay over the last second, in ms, and the
/// frames delivered in that second.
fn reno_delay(settings: QueueSettings, ecn: bool) -> (f64, u64) {
    const BASE_RTT: u64 = 10;
    let mut s = fq(settings);
    let mut cwnd = 2.0f64;
    let mut inflight = 0u64;
    let mut acks: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut recovery_until = 0u64;
    let mut delays = Vec::new();
    let mut delivered = 0;
    for t in 0..5000u64 {
        while acks.front().is_some_and(|&at| at <= t) {
            acks.pop_front();
            inflight -= 1;
            cwnd += 1.0 / cwnd;
        }
        while (inflight as f64) < cwnd.floor() {
            inflight += 1;
            s.enqueue(ms(t), if ecn { ect_udp(7, 1000) } else { udp(7, 1000) });
        }
        let before = s.stats().codel_drops + s.stats().overflow_drops;
        let frame = s.dequeue(ms(t));
        let lost = s.stats().codel_drops + s.stats().overflow_drops - before;
        inflight -= lost;
        let marked = frame.as_ref().is_some_and(|f| f[15] & 0b11 == 0b11);
        if (lost > 0 || marked) && t >= recovery_until {
            cwnd = (cwnd / 2.0).max(2.0);
            recovery_until = t + BASE_RTT;
        }
        if frame.is_some() {
            acks.push_back(t + BASE_RTT);
            if t >= 4000 {
                delivered += 1;
            }
        }
        if t >= 4000 {
            // Frames waiting ahead of a new arrival, one served per ms.
            delays.push(s.stats().backlog_frames as f64);
        }
    }
    (delays.iter().sum::<f64>() / delays.len() as f64, delivered)
}

#[test]
fn codel_holds_a_responsive_flow_near_target() {
    let (codel, codel_out) = reno_delay(QueueSettings::default(), false);
    let (fifo, fifo_out) = reno_delay(
        QueueSettings {
            discipline: Discipline::Fifo,
            ..QueueSettings::default()
        },
        false,
    );
    assert!(codel < 15.0, "fq-codel standing delay {codel} ms");
    assert!(fifo > 10.0 * codel, "fifo {fifo} ms vs fq-codel {codel} ms");
    // The link stays busy: the short queue costs (almost) no throughput.
    assert!(codel_out >= 900, "fq-codel delivered {codel_out}/1000");
    assert!(fifo_out >= 900, "fifo delivered {fifo_out}/1000");
    let (marked, marked_out) = reno_delay(QueueSettings::default(), true);
    assert!(marked < 15.0, "with ECN marks {marked} ms");
    assert!(
        marked_out >= 900,
        "with ECN marks delivered {marked_out}/1000"
    );
}

#[test]
fn ecn_capable_frames_are_marked_not_dropped() {
    ECT.with(|e| e.set(true));
    let (s, first) = standing_queue(QueueSettings::default(), 800, 1000, 400);
    ECT.with(|e| e.set(false));
    assert!(first.is_some());
    assert!(s.stats().ce_marks > 0);
    assert_eq!(s.stats().codel_drops, 0);
    // With ecn off the same frames are dropped.
    ECT.with(|e| e.set(true));
    let (s, _) = standing_queue(
        QueueSettings {
            ecn: false,
            ..QueueSettings::default()
        },
        800,
        1000,
        400,
    );
    ECT.with(|e| e.set(false));
    assert_eq!(s.stats().ce_marks, 0);
    assert!(s.stats().codel_drops > 0);
}

#[test]
fn marked_frames_come_out_with_ce_set() {
    let mut s = fq(QueueSettings::default());
    for i in 0..400u64 {
        s.enqueue(ms(i), ect_udp(7, 1000));
    }
    let mut marked = 0;
    for i in 0..400u64 {
        if let Some(f) = s.dequeue(ms(400 + i)) {
            if f[15] & 0b11 == 0b11 {
                marked += 1;
                assert!(crate::queue::ecn::is_ecn_capable(&f));
            }
        }
    }
    assert!(marked > 0);
    assert_eq!(marked as u64, s.stats().ce_marks);
}

#[test]
fn memory_is_bounded_under_a_flood_of_distinct_flows() {
    let settings = QueueSettings {
        limit: crate::config::ConfigSize(1 << 20),
        flows: 64,
        ..QueueSettings::default()
    };
    let mut s = fq(settings);
    for i in 0..100_000u32 {
        s.enqueue(ms(0), udp((i % 60_000) as u16, 100));
    }
    let st = s.stats();
    assert!(st.backlog_bytes + st.backlog_frames * fq::FRAME_COST as u64 <= 1 << 20);
    assert!(st.backlog_bytes > 600_000, "the flood filled the queue");
    assert!(st.active_flows <= 64);
    assert_eq!(st.enqueued, 100_000);
    assert_eq!(st.enqueued, st.overflow_drops + st.backlog_frames);
    // Everything still queued comes out, and the accounting returns to zero.
    let drained = (0..).map_while(|_| s.dequeue(ms(1))).count() as u64;
    assert_eq!(drained, st.backlog_frames);
    assert_eq!(s.stats().backlog_bytes, 0);
    assert_eq!(s.stats().active_flows, 0);
}

#[test]
fn fifo_tail_drops_at_its_limit() {
    let mut s = fq(QueueSettings {
        discipline: Discipline::Fifo,
        limit: crate::config::ConfigSize(16 * 1024),
        ..QueueSettings::default()
    });
    for _ in 0..100 {
        s.enqueue(ms(0), udp(1, 1000));
    }
    let st = s.stats();
    assert!(st.backlog_bytes <= 16 * 1024);
    assert_eq!(st.enqueued + st.overflow_drops, 100);
    s.flush();
    assert!(s.is_empty());
    assert_eq!(s.stats().flushed, st.enqueued);
}

#[test]
fn non_ip_frames_are_never_starved() {
    let mut s = fq(QueueSettings::default());
    let arp = || {
        Bytes::from(frames::arp_request(
            A,
            Tags::None,
            [1, 1, 1, 1],
            [1, 1, 1, 2],
        ))
    };
    let mut arp_out = 0;
    // Eight bulk flows keep the queue full; one ARP every 10 ms.
    for t in 0..1000u64 {
        for flow in 0..8 {
            s.enqueue(ms(t), udp(100 + flow, 1400));
        }
        if t % 10 == 0 {
            s.enqueue(ms(t), arp());
        }
        for _ in 0..4 {
            if let Some(f) = s.dequeue(ms(t)) {
                if u16::from_be_bytes([f[12], f[13]]) == 0x0806 {
                    arp_out += 1;
                }
            }
        }
    }
    assert_eq!(arp_out, 100, "every ARP went out");
}

#[test]
fn flush_empties_every_flow() {
    let mut s = fq(QueueSettings::default());
    for i in 0..50 {
        s.enqueue(ms(0), udp(i, 100));
    }
    s.flush();
    assert!(s.is_empty());
    assert_eq!(s.dequeue(ms(1)), None);
    assert_eq!(s.stats().flushed, 50);
    assert_eq!(s.stats().backlog_bytes, 0);
}

#[test]
fn settings_defaults_and_checks() {
    let d: QueueSettings = serde_norway::from_str("{}").unwrap();
    assert_eq!(d.discipline, Discipline::FqCodel);
    assert_eq!(d.target.0, Duration::from_millis(5));
    assert_eq!(d.interval.0, Duration::from_millis(100));
    assert_eq!(d.limit.0, 4 << 20);
    assert_eq!(d.flows, 1024);
    assert!(d.ecn);
    assert!(d.check().is_empty());
    let bad: QueueSettings = serde_norway::from_str(
        "{ target: 0ms, interval: 1ms, limit: 1KiB, flows: 0, quic_buffer: 1s }",
    )
    .unwrap();
    let keys: Vec<_> = bad.check().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["target", "limit", "flows", "quic_buffer"]);
    assert!(serde_norway::from_str::<QueueSettings>("{ disciplin: fifo }").is_err());
    let fifo: QueueSettings = serde_norway::from_str("{ discipline: fifo, limit: 1MiB }").unwrap();
    assert_eq!(fifo.discipline, Discipline::Fifo);
}
