//! The pipeline harness: a room pipeline with named virtual links, a
//! simulated clock, and a record of what left where. Filter authors and
//! lanparty's own tests use it the same way.
//!
//! ```
//! use lanparty_core::stage::LinkRole;
//! use lanparty_core::testing::{frames, Harness};
//!
//! let mut h = Harness::from_room_yaml("router: { type: switch }").unwrap();
//! let alice = "02:00:00:00:00:01".parse().unwrap();
//! h.add_link("alice", LinkRole::Client, alice);
//! h.add_link("bob", LinkRole::Client, "02:00:00:00:00:02".parse().unwrap());
//! let arp = frames::arp_request(alice, frames::Tags::None, [10, 0, 0, 1], [10, 0, 0, 2]);
//! assert_eq!(h.send("alice", arp).destinations(), ["bob"]);
//! ```

use std::time::Duration;

use bytes::Bytes;
use figment::Figment;
use figment::providers::Format;

use crate::config::{ConfigError, ConfigErrors, RoomSpec, Yaml};
use crate::pipeline::{Pipeline, PipelineStats, PipelineTemplate};
use crate::registry::Registry;
use crate::stage::{LinkId, LinkInfo, LinkRole};
use crate::time::Timestamp;
use crate::wire::MacAddr;

/// What happened to one injected frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Frames that left, by link name, in routing order.
    pub delivered: Vec<(String, Bytes)>,
    /// Set when the frame was dropped before any destination: the stage's
    /// label (`ingress[0]:jumbo`, `router:switch`, `pipeline`) and reason.
    pub dropped: Option<(String, String)>,
    /// Per-destination drops by egress filters: (stage label, reason), one
    /// entry per dropped (frame, destination) pair.
    pub egress_dropped: Vec<(String, String)>,
}

impl Delivery {
    /// Names of the links the frame left on, sorted.
    pub fn destinations(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.delivered.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// The drop reason, if dropped before routing or by the router.
    pub fn drop_reason(&self) -> Option<&str> {
        self.dropped.as_ref().map(|(_, r)| r.as_str())
    }

    /// The bytes delivered to `link`, if any.
    pub fn frame_to(&self, link: &str) -> Option<&Bytes> {
        self.delivered
            .iter()
            .find(|(n, _)| n == link)
            .map(|(_, b)| b)
    }
}

/// A room pipeline with named virtual links and a simulated clock.
pub struct Harness {
    pipeline: Pipeline,
    now: Timestamp,
    links: Vec<(String, LinkId, MacAddr)>,
    next_id: u32,
    out: Vec<(LinkId, Bytes)>,
}

impl Harness {
    /// A harness over a fresh instance of `template`.
    pub fn new(template: &PipelineTemplate) -> Harness {
        Harness {
            pipeline: template.instantiate("harness"),
            now: Timestamp::ZERO,
            links: Vec::new(),
            next_id: 1,
            out: Vec::new(),
        }
    }

    /// A harness for a `room:` section written in YAML (its `mtu`,
    /// `ingress`, `router`, `egress`), with every stage linked into this
    /// binary available.
    pub fn from_room_yaml(yaml: &str) -> Result<Harness, ConfigErrors> {
        Ok(Harness::new(&template_from_yaml(yaml)?))
    }

    /// Adds a link with the room's MTU.
    pub fn add_link(&mut self, name: &str, role: LinkRole, mac: MacAddr) -> LinkId {
        let mtu = self.pipeline.mtu();
        self.add_link_with_mtu(name, role, mac, mtu)
    }

    /// Adds a link with its own MTU.
    pub fn add_link_with_mtu(
        &mut self,
        name: &str,
        role: LinkRole,
        mac: MacAddr,
        mtu: u16,
    ) -> LinkId {
        let id = LinkId(self.next_id);
        self.next_id += 1;
        self.links.push((name.to_string(), id, mac));
        self.pipeline.add_link(LinkInfo {
            id,
            name: name.into(),
            role,
            macs: vec![mac],
            mtu,
        });
        id
    }

    /// Removes a link; false if there is none by that name.
    pub fn remove_link(&mut self, name: &str) -> bool {
        let Some(i) = self.links.iter().position(|(n, _, _)| n == name) else {
            return false;
        };
        let (_, id, _) = self.links.remove(i);
        self.pipeline.remove_link(id)
    }

    /// The id of the link named `name`.
    pub fn link_id(&self, name: &str) -> Option<LinkId> {
        self.links
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, id, _)| *id)
    }

    /// The MAC the link named `name` was added with.
    pub fn link_mac(&self, name: &str) -> Option<MacAddr> {
        self.links
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, mac)| *mac)
    }

    fn link_name(&self, id: LinkId) -> String {
        self.links
            .iter()
            .find(|(_, i, _)| *i == id)
            .map_or_else(|| id.to_string(), |(n, _, _)| n.clone())
    }

    /// Injects a frame as if it arrived on the link named `from` (an unknown
    /// name injects from a link the room does not know).
    pub fn send(&mut self, from: &str, frame: impl Into<Bytes>) -> Delivery {
        let ingress = self.link_id(from).unwrap_or(LinkId(u32::MAX));
        self.out.clear();
        let result = self
            .pipeline
            .process(self.now, ingress, frame.into(), &mut self.out);
        let mut delivery = Delivery::default();
        let out = std::mem::take(&mut self.out);
        for (id, bytes) in &out {
            delivery
                .delivered
                .push((self.link_name(*id), bytes.clone()));
        }
        self.out = out;
        if let Err(dropped) = result {
            delivery.dropped = Some((
                self.pipeline.stage_label(dropped.stage),
                dropped.reason.to_string(),
            ));
        }
        for (_, dropped) in self.pipeline.egress_drops() {
            delivery.egress_dropped.push((
                self.pipeline.stage_label(dropped.stage),
                dropped.reason.to_string(),
            ));
        }
        delivery
    }

    /// Moves the simulated clock forward and ticks the pipeline.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.pipeline.tick(self.now);
    }

    /// The simulated time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Every stage's counters.
    pub fn stats(&self) -> PipelineStats {
        self.pipeline.stats()
    }

    /// The pipeline itself.
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }
}

/// Builds a pipeline template from a `room:` section written in YAML.
pub fn template_from_yaml(yaml: &str) -> Result<PipelineTemplate, ConfigErrors> {
    let registry = Registry::global()
        .map_err(|e| ConfigErrors::from(ConfigError::new(None, "", e.to_string())))?;
    let figment = Figment::from(Yaml::string(yaml));
    let room: RoomSpec = figment
        .extract()
        .map_err(|e| ConfigErrors::from(ConfigError::from_figment(e, "room", None)))?;
    PipelineTemplate::build(&room, Some(&figment), registry)
}
