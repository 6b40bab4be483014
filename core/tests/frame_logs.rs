//! Per-frame debug logs (target `lanparty::frames`): one line per frame
//! saying where it came from and went, or which stage dropped it and why.
//! Its own test binary: tracing's per-callsite interest is process-wide,
//! so a subscriber installed here must not race other tests' threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lanparty_core::config::{RoomSpec, RuntimeSettings};
use lanparty_core::pipeline::PipelineTemplate;
use lanparty_core::registry::Registry;
use lanparty_core::runtime::{FRAME_LOG, LinkSink, LinkSpec, Rooms};
use lanparty_core::stage::LinkRole;
use lanparty_core::testing::frames::{Tags, ethernet};
use lanparty_core::wire::MacAddr;

/// Keeps every event's fields as `name=value` text.
#[derive(Default, Clone)]
struct EventLog(Arc<Mutex<Vec<String>>>);

struct Fields(Vec<String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for EventLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == FRAME_LOG
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0.join(" "));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Debug)]
struct Discard;

impl LinkSink for Discard {
    fn deliver(&self, _: Bytes) -> bool {
        true
    }
}

#[tokio::test]
async fn frame_logs_say_where_each_frame_went_or_which_stage_dropped_it() {
    let log = EventLog::default();
    tracing::subscriber::set_global_default(log.clone()).unwrap();
    let registry = Registry::global().unwrap();
    let template = PipelineTemplate::build(&RoomSpec::default(), None, registry).unwrap();
    let rooms = Rooms::new(template, RuntimeSettings::default());
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let spec = |name: &str, mac: MacAddr| LinkSpec {
        name: name.into(),
        role: LinkRole::Client,
        macs: vec![mac],
        mtu: None,
        sink: Some(Arc::new(Discard)),
    };
    let _to = rooms.attach("r", spec("b", b));
    let from = rooms.attach("r", spec("a", a));
    let frame = ethernet(MacAddr::BROADCAST, a, Tags::None, 0x0800, 46);
    assert!(from.send(Bytes::from(frame)));
    // Too short for an Ethernet header: the pipeline drops it.
    assert!(from.send(Bytes::from_static(&[0u8; 6])));

    let lines = log.0.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for expected in [
        "room=r",
        "from=\"a\"",
        "src=02:00:00:00:00:01",
        "ethertype_name=\"ipv4\"",
        "action=\"forward\"",
        "to=[\"b\"]",
    ] {
        assert!(lines[0].contains(expected), "{expected} in {}", lines[0]);
    }
    for expected in ["from=\"a\"", "action=\"drop\"", "stage=", "reason="] {
        assert!(lines[1].contains(expected), "{expected} in {}", lines[1]);
    }
}
