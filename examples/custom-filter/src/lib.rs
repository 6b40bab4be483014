//! An example third-party filter: `udp-port-block` drops UDP traffic to or
//! from chosen ports — e.g. a game's noisy telemetry or voice port that
//! would otherwise be flooded to every player.
//!
//! This crate registers the filter with `inventory`; its binary
//! (`src/main.rs`) names the crate so the linker keeps the registration and
//! then hands over to lanparty's own CLI.
//!
//! Fails open on frames whose IP headers do not parse: it is a traffic
//! shaper, not a security boundary, and such frames are not UDP to a
//! blocked port as far as anyone can tell.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{
    FilterFactory, KeyDoc, StageBuild, StageRegistration, filter_factory,
};
use lanparty_core::stage::{DropReason, Filter, FilterContext, FilterSides, Verdict};
use lanparty_core::wire::FrameView;
use serde::Deserialize;

/// Drop reason: UDP to or from a blocked port.
pub const BLOCKED_PORT: DropReason = "blocked-udp-port";

/// `udp-port-block` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpPortBlockSettings {
    /// `ports`: UDP ports to drop (source or destination).
    pub ports: Vec<u16>,
}

/// The filter.
#[derive(Debug)]
pub struct UdpPortBlock {
    ports: Vec<u16>,
}

impl Filter for UdpPortBlock {
    fn ingress(&mut self, _ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        let l3 = frame.l3();
        if !l3.is_udp {
            return Verdict::Pass;
        }
        let hit = |port: Option<u16>| port.is_some_and(|p| self.ports.contains(&p));
        if hit(l3.src_port) || hit(l3.dst_port) {
            Verdict::Drop(BLOCKED_PORT)
        } else {
            Verdict::Pass
        }
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: UdpPortBlockSettings = config.parse()?;
    if settings.ports.is_empty() {
        return Err(vec![config.error("ports", "list at least one port")]);
    }
    Ok(filter_factory(settings, |s| UdpPortBlock {
        ports: s.ports.clone(),
    }))
}

lanparty_core::inventory::submit! {
    StageRegistration {
        name: "udp-port-block",
        summary: "example third-party filter: drop UDP to or from the listed ports (e.g. a game's telemetry)",
        keys: &[KeyDoc { name: "ports", ty: "list of integers", default: "required", doc: "UDP ports to drop" }],
        example: "ingress: [ { type: udp-port-block, ports: [27950] } ]",
        build: StageBuild::Filter { sides: FilterSides::Ingress, build },
    }
}
