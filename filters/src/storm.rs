//! `storm`: broadcast and multicast rate limit per link, a token bucket of
//! `rate` frames per second with room for `burst`. The defaults let LAN game
//! discovery, ARP, mDNS and DHCP through untouched (they send a few frames a
//! second) but stop one player's broadcast storm or loop from flooding every
//! other player's uplink. Unicast is not limited.
//!
//! Decides on the destination MAC only (validated by the pipeline), so it
//! never meets a frame it cannot classify. Time comes from the pipeline, so
//! tests drive it with the simulated clock.

use lanparty_core::config::{ConfigError, StageConfig};
use lanparty_core::registry::{FilterFactory, filter_factory};
use lanparty_core::stage::{
    DropReason, Filter, FilterContext, LinkId, LinkInfo, LinkRole, Verdict,
};
use lanparty_core::time::Timestamp;
use lanparty_core::wire::FrameView;

use crate::roles::RoleSet;

/// Drop reason: over the broadcast/multicast rate.
pub const STORM: DropReason = "storm";

/// Broadcast/multicast rate limit per link (token bucket); unicast is not
/// limited.
#[lanparty_core::stage_kind(filter(ingress), name = "storm", build = build,
    example = "ingress: [ { type: storm, rate: 200, burst: 400 } ]")]
#[derive(Debug, Clone)]
pub struct StormSettings {
    /// Broadcast/multicast frames per second per link.
    #[key(default = 200)]
    pub rate: u32,
    /// Frames a link may send at once before the rate applies.
    #[key(default = 400)]
    pub burst: u32,
    /// The roles limited.
    #[key(default = "[client, gateway, lan, host]", shown = "all")]
    pub roles: Vec<LinkRole>,
}

/// Tokens are counted in millionths of a frame, so that refills are exact
/// at any rate without floating point.
const MICRO: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    link: LinkId,
    tokens: u64,
    last: Timestamp,
}

/// The filter.
#[derive(Debug)]
pub struct Storm {
    rate: u64,
    burst: u64,
    roles: RoleSet,
    buckets: Vec<Bucket>,
}

impl Storm {
    fn bucket(&mut self, link: LinkId, now: Timestamp) -> &mut Bucket {
        let i = match self.buckets.iter().position(|b| b.link == link) {
            Some(i) => i,
            None => {
                self.buckets.push(Bucket {
                    link,
                    tokens: self.burst * MICRO,
                    last: now,
                });
                self.buckets.len() - 1
            }
        };
        &mut self.buckets[i]
    }
}

impl Filter for Storm {
    fn ingress(&mut self, ctx: &FilterContext<'_>, frame: &FrameView<'_>) -> Verdict {
        if !frame.eth().dst.is_multicast() || !self.roles.contains(ctx.ingress.role) {
            return Verdict::Pass;
        }
        let (rate, cap) = (self.rate, self.burst * MICRO);
        let bucket = self.bucket(ctx.ingress.id, ctx.now);
        let elapsed = ctx.now.saturating_since(bucket.last);
        // rate frames/s = rate * MICRO tokens per 1e9 ns = rate / 1000 tokens per ns.
        let refill =
            (elapsed.as_nanos().min(u128::from(u64::MAX)) as u64).saturating_mul(rate) / 1_000;
        bucket.tokens = bucket.tokens.saturating_add(refill).min(cap);
        bucket.last = ctx.now;
        if bucket.tokens >= MICRO {
            bucket.tokens -= MICRO;
            Verdict::Pass
        } else {
            Verdict::Drop(STORM)
        }
    }

    fn link_added(&mut self, link: &LinkInfo) {
        self.buckets.retain(|b| b.link != link.id);
    }

    fn link_removed(&mut self, link: LinkId) {
        self.buckets.retain(|b| b.link != link);
    }
}

fn build(config: &StageConfig) -> Result<FilterFactory, Vec<ConfigError>> {
    let settings: StormSettings = config.parse()?;
    let mut errors = Vec::new();
    if settings.rate == 0 {
        errors.push(config.error(
            "rate",
            "must be at least 1 frame/s (remove the filter to disable it)",
        ));
    }
    if settings.burst == 0 {
        errors.push(config.error("burst", "must be at least 1"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(filter_factory(settings, |s| Storm {
        rate: u64::from(s.rate),
        burst: u64::from(s.burst),
        roles: s.roles.iter().collect(),
        buckets: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lanparty_core::stage::LinkRole;
    use lanparty_core::testing::Harness;
    use lanparty_core::testing::frames::{self, Tags};
    use lanparty_core::wire::MacAddr;

    const C: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const D: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn bcast(src: MacAddr) -> Vec<u8> {
        frames::ethernet(MacAddr::BROADCAST, src, Tags::None, 0x0800, 46)
    }

    fn harness(yaml: &str) -> Harness {
        let mut h = Harness::from_room_yaml(yaml).unwrap();
        h.add_link("c", LinkRole::Client, C);
        h.add_link("d", LinkRole::Client, D);
        h.add_link("gw", LinkRole::Gateway, MacAddr([2, 0, 0, 0, 0, 3]));
        h
    }

    fn passed(h: &mut Harness, from: &str, src: MacAddr, n: usize) -> usize {
        (0..n)
            .filter(|_| h.send(from, bcast(src)).dropped.is_none())
            .count()
    }

    #[test]
    fn burst_then_rate_on_the_simulated_clock() {
        let mut h = harness("ingress: [ { type: storm, rate: 10, burst: 5 } ]");
        assert_eq!(passed(&mut h, "c", C, 20), 5);
        h.advance(Duration::from_millis(500)); // 5 tokens back
        assert_eq!(passed(&mut h, "c", C, 20), 5);
        h.advance(Duration::from_millis(100)); // 1 token
        assert_eq!(passed(&mut h, "c", C, 20), 1);
        h.advance(Duration::from_secs(60)); // capped at the burst
        assert_eq!(passed(&mut h, "c", C, 20), 5);
        assert_eq!(h.stats().dropped("storm"), 15 + 15 + 19 + 15);
    }

    #[test]
    fn per_link_and_unicast_untouched() {
        let mut h = harness("ingress: [ { type: storm, rate: 1, burst: 2 } ]");
        assert_eq!(passed(&mut h, "c", C, 5), 2);
        assert_eq!(
            passed(&mut h, "d", D, 5),
            2,
            "another link has its own bucket"
        );
        let unicast = frames::ethernet(D, C, Tags::None, 0x0800, 46);
        for _ in 0..50 {
            assert!(h.send("c", unicast.clone()).dropped.is_none());
        }
    }

    #[test]
    fn defaults_let_discovery_through() {
        // A busy LAN for a minute: several games announcing, ARP, mDNS and
        // SSDP chatter, 150 broadcast/multicast frames a second from one
        // link, after a start-up burst of 300.
        let mut h = harness("ingress: [ { type: storm } ]");
        assert_eq!(passed(&mut h, "gw", MacAddr([2, 0, 0, 0, 0, 3]), 300), 300);
        for _ in 0..600 {
            assert_eq!(passed(&mut h, "gw", MacAddr([2, 0, 0, 0, 0, 3]), 15), 15);
            h.advance(Duration::from_millis(100));
        }
        // A flood of 10,000 frames in one second is cut to burst + rate.
        h.advance(Duration::from_secs(10));
        let mut through = 0;
        for _ in 0..100 {
            through += passed(&mut h, "c", C, 100);
            h.advance(Duration::from_millis(10));
        }
        assert!((590..=601).contains(&through), "{through}");
    }

    #[test]
    fn exempt_roles_and_bad_settings() {
        let mut h = harness("ingress: [ { type: storm, rate: 1, burst: 1, roles: [client] } ]");
        assert_eq!(passed(&mut h, "gw", MacAddr([2, 0, 0, 0, 0, 3]), 10), 10);
        assert!(Harness::from_room_yaml("ingress: [ { type: storm, rate: 0 } ]").is_err());
        assert!(Harness::from_room_yaml("ingress: [ { type: storm, burst: 0 } ]").is_err());
    }
}
