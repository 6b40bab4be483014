//! An example third-party filter: `udp-port-block` drops UDP traffic to or
//! from chosen ports — e.g. a game's noisy telemetry or voice port that
//! would otherwise be flooded to every player.
//!
//! `#[stage_kind]` on the settings struct declares the whole stage kind:
//! its keys (the fields, documented by their doc comments), the summary
//! (the struct's doc comment) and the registration. The binary
//! (`src/main.rs`) names this crate so the linker keeps the registration.
//!
//! Fails open on frames whose IP headers do not parse: it is a traffic
//! shaper, not a security boundary.

use lanparty_core::config::StageConfig;
use lanparty_core::registry::{BuildResult, FilterFactory, filter_factory};
use lanparty_core::stage::{Filter, FilterContext, Verdict};
use lanparty_core::wire::FrameView;

/// Example third-party filter: drop UDP to or from the listed ports (e.g.
/// a game's telemetry).
#[lanparty_core::stage_kind(filter(ingress), name = "udp-port-block", build = build,
    example = "ingress: [ { type: udp-port-block, ports: [27950] } ]")]
pub struct UdpPortBlock {
    /// UDP ports to drop (source or destination).
    pub ports: Vec<u16>,
}

impl Filter for UdpPortBlock {
    fn ingress(&mut self, _ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        let l3 = frame.l3();
        let hit = |port: Option<u16>| port.is_some_and(|p| self.ports.contains(&p));
        if l3.is_udp && (hit(l3.src_port) || hit(l3.dst_port)) {
            Verdict::Drop("blocked-udp-port")
        } else {
            Verdict::Pass
        }
    }
}

fn build(config: &StageConfig) -> BuildResult<FilterFactory> {
    let settings: UdpPortBlock = config.parse()?;
    if settings.ports.is_empty() {
        return Err(vec![config.error("ports", "list at least one port")]);
    }
    Ok(filter_factory(settings, |s| UdpPortBlock {
        ports: s.ports.clone(),
    }))
}
