//! Pipeline tests written in YAML and run by `lanparty test FILE…`.
//!
//! ```yaml
//! room:                       # a room section, or instead:
//! # config: ../relay.yaml     #   the room section of a node config
//!   router: { type: switch, ageing: 10s }
//! links:                      # created in this order for every case
//!   alice: { role: client, mac: "02:00:00:00:00:01" }
//!   bob:   { role: client, mac: "02:00:00:00:00:02" }
//! cases:
//!   - name: broadcast reaches everyone but the sender
//!     steps:
//!       - send: alice
//!         frame: { kind: arp-request }
//!         expect: { to: [bob] }
//!       - advance: 11s
//!       - remove: bob
//!       - send: alice
//!         frame: { dst: bob, ethertype: ipv4, size: 64 }
//!         expect: { dropped: no-destination }
//! ```
//!
//! Frame `kind`s: `ethernet` (default; `ethertype`, `size` = payload bytes),
//! `ipv4-udp` (`src_port`, `dst_port`, `size` = L3 bytes), `arp-request`,
//! `dhcp-discover`, `dhcp-offer`, `dhcpv6-advertise`, `ipv6-ra`
//! (`router_lifetime`), `ipv6-echo`, `stp-bpdu`, `lldp`, `lacp`, `pause`,
//! `eapol`, and `raw` (`hex`). `src` and `dst` take a MAC, a link name
//! (its MAC) or `broadcast`; `src` defaults to the sending link's MAC.
//! `vlan: [10]` adds an 802.1Q tag, `vlan: [100, 10]` QinQ tags.
//!
//! `expect` keys: `to` (the exact set of links the frame leaves on),
//! `dropped` (a reason, or `{ stage, reason }` where `stage` is a kind name
//! or label such as `ingress[0]:jumbo`), `egress_dropped` (list of the
//! same, one per dropped destination), `unchanged` (delivered bytes equal
//! the sent bytes; `false` asserts they were rewritten).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use figment::Figment;
use figment::providers::Format;
use serde::Deserialize;

use super::frames::{self, Tags};
use super::harness::{Delivery, Harness};
use crate::config::{
    ConfigDuration, ConfigError, ConfigErrors, ConfigSources, RoomSpec, Yaml, load_node,
};
use crate::pipeline::PipelineTemplate;
use crate::registry::Registry;
use crate::stage::LinkRole;
use crate::wire::{MacAddr, ethertype};

/// A YAML pipeline test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    room: Option<RoomSpec>,
    #[serde(default)]
    config: Option<PathBuf>,
    links: BTreeMap<String, LinkDesc>,
    #[serde(default)]
    link_order: Option<Vec<String>>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkDesc {
    role: LinkRole,
    mac: MacAddr,
    #[serde(default)]
    mtu: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    send: Option<String>,
    #[serde(default)]
    frame: Option<FrameDesc>,
    #[serde(default)]
    repeat: Option<u32>,
    #[serde(default)]
    expect: Option<Expect>,
    #[serde(default)]
    advance: Option<ConfigDuration>,
    #[serde(default)]
    remove: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameDesc {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    dst: Option<String>,
    #[serde(default)]
    vlan: Vec<u16>,
    #[serde(default)]
    ethertype: Option<EtherTypeDesc>,
    #[serde(default)]
    size: Option<usize>,
    #[serde(default)]
    src_port: Option<u16>,
    #[serde(default)]
    dst_port: Option<u16>,
    #[serde(default)]
    router_lifetime: Option<u16>,
    #[serde(default)]
    hex: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EtherTypeDesc {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DropDesc {
    Reason(String),
    Full {
        #[serde(default)]
        stage: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    to: Option<Vec<String>>,
    #[serde(default)]
    dropped: Option<DropDesc>,
    #[serde(default)]
    egress_dropped: Option<Vec<DropDesc>>,
    #[serde(default)]
    unchanged: Option<bool>,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Why it failed, or `None` when it passed.
    pub failure: Option<String>,
}

/// The outcome of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileResult {
    /// The file.
    pub file: PathBuf,
    /// Its description line, if any.
    pub description: Option<String>,
    /// Every case, in order.
    pub cases: Vec<CaseResult>,
}

/// Loads and runs every case of a YAML pipeline test file.
pub fn run_test_file(path: &Path) -> Result<FileResult, ConfigErrors> {
    let origin = Some(path.display().to_string());
    if let Err(e) = std::fs::File::open(path) {
        return Err(ConfigError::new(origin, "", format!("cannot read test file: {e}")).into());
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let figment = Figment::from(Yaml::file_exact(&absolute));
    let file: TestFile = figment
        .extract()
        .map_err(|e| ConfigErrors::from(ConfigError::from_figment(e, "", origin.as_deref())))?;
    let template = load_template(&file, &figment, &absolute)?;
    let mut order: Vec<&String> = file.links.keys().collect();
    if let Some(explicit) = &file.link_order {
        order = explicit.iter().collect();
        if let Some(missing) = explicit.iter().find(|n| !file.links.contains_key(*n)) {
            return Err(ConfigError::new(
                origin,
                "link_order",
                format!("names unknown link `{missing}`"),
            )
            .into());
        }
    }
    let cases = file
        .cases
        .iter()
        .map(|case| CaseResult {
            name: case.name.clone(),
            failure: run_case(&template, &file, &order, case).err(),
        })
        .collect();
    Ok(FileResult {
        file: path.to_path_buf(),
        description: file.description.clone(),
        cases,
    })
}

fn load_template(
    file: &TestFile,
    figment: &Figment,
    path: &Path,
) -> Result<PipelineTemplate, ConfigErrors> {
    let registry = Registry::global()
        .map_err(|e| ConfigErrors::from(ConfigError::new(None, "", e.to_string())))?;
    let origin = Some(path.display().to_string());
    match (&file.room, &file.config) {
        (Some(room), None) => PipelineTemplate::build(room, Some(figment), registry),
        (None, Some(config)) => {
            let config_path = path
                .parent()
                .map_or_else(|| config.clone(), |dir| dir.join(config));
            let sources = ConfigSources {
                files: vec![config_path],
                env: false,
                sets: Vec::new(),
            };
            let (node_figment, node) = load_node(&sources)?;
            PipelineTemplate::build(&node.room, Some(&node_figment), registry)
        }
        _ => Err(ConfigError::new(
            origin,
            "room",
            "give exactly one of `room:` (a room section) or `config:` (a node config file)",
        )
        .into()),
    }
}

fn run_case(
    template: &PipelineTemplate,
    file: &TestFile,
    order: &[&String],
    case: &Case,
) -> Result<(), String> {
    let mut h = Harness::new(template);
    for name in order {
        let link = &file.links[*name];
        let mtu = link.mtu.unwrap_or(template.mtu());
        h.add_link_with_mtu(name, link.role, link.mac, mtu);
    }
    for (i, step) in case.steps.iter().enumerate() {
        run_step(&mut h, step).map_err(|e| format!("step {}: {e}", i + 1))?;
    }
    Ok(())
}

fn run_step(h: &mut Harness, step: &Step) -> Result<(), String> {
    let actions = [
        step.send.is_some(),
        step.advance.is_some(),
        step.remove.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        return Err("a step needs exactly one of `send`, `advance` or `remove`".into());
    }
    if let Some(by) = step.advance {
        h.advance(by.0);
        return Ok(());
    }
    if let Some(name) = &step.remove {
        return if h.remove_link(name) {
            Ok(())
        } else {
            Err(format!("no link `{name}` to remove"))
        };
    }
    let from = step.send.as_deref().unwrap_or_default();
    let desc = step.frame.clone().unwrap_or_default();
    let frame = Bytes::from(build_frame(h, from, &desc)?);
    let repeat = step.repeat.unwrap_or(1).max(1);
    let mut last = Delivery::default();
    for _ in 0..repeat {
        last = h.send(from, frame.clone());
    }
    match &step.expect {
        Some(expect) => check(expect, &last, &frame),
        None => Ok(()),
    }
}

fn resolve_mac(h: &Harness, text: &str) -> Result<MacAddr, String> {
    if text == "broadcast" {
        return Ok(MacAddr::BROADCAST);
    }
    if let Some(mac) = h.link_mac(text) {
        return Ok(mac);
    }
    text.parse()
        .map_err(|_| format!("`{text}` is neither a MAC, a link name nor `broadcast`"))
}

fn build_frame(h: &Harness, from: &str, d: &FrameDesc) -> Result<Vec<u8>, String> {
    let src = match &d.src {
        Some(text) => resolve_mac(h, text)?,
        None => h
            .link_mac(from)
            .ok_or_else(|| format!("no link `{from}`; give the frame a `src`"))?,
    };
    let dst = d.dst.as_deref().map(|t| resolve_mac(h, t)).transpose()?;
    let tags = Tags::from_ids(&d.vlan).ok_or("`vlan` takes at most two VLAN ids")?;
    let kind = d.kind.as_deref().unwrap_or("ethernet");
    let broadcast = dst.unwrap_or(MacAddr::BROADCAST);
    Ok(match kind {
        "ethernet" => {
            let ethertype = match &d.ethertype {
                None => ethertype::IPV4,
                Some(EtherTypeDesc::Number(n)) => *n,
                Some(EtherTypeDesc::Name(name)) => {
                    ethertype::parse(name).ok_or_else(|| format!("unknown ethertype `{name}`"))?
                }
            };
            frames::ethernet(broadcast, src, tags, ethertype, d.size.unwrap_or(46))
        }
        "ipv4-udp" => {
            let payload = vec![0u8; d.size.unwrap_or(64).saturating_sub(28)];
            frames::ipv4_udp(
                broadcast,
                src,
                tags,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                d.src_port.unwrap_or(40000),
                d.dst_port.unwrap_or(40001),
                &payload,
            )
        }
        "arp-request" => frames::arp_request(src, tags, [10, 0, 0, 1], [10, 0, 0, 2]),
        "dhcp-discover" => frames::dhcp_discover(src, tags),
        "dhcp-offer" => frames::dhcp_offer(src, tags, dst.unwrap_or(src)),
        "dhcpv6-advertise" => {
            frames::dhcpv6_advertise(dst.unwrap_or(MacAddr([0x33, 0x33, 0, 1, 0, 2])), src, tags)
        }
        "ipv6-ra" => frames::ipv6_ra(src, tags, d.router_lifetime.unwrap_or(1800)),
        "ipv6-echo" => frames::ipv6_echo(broadcast, src, tags),
        "stp-bpdu" => frames::stp_bpdu(src, tags),
        "lldp" => frames::lldp(src, tags),
        "lacp" => frames::lacp(src, tags),
        "pause" => frames::pause(src, 0xffff),
        "eapol" => frames::eapol_start(src),
        "raw" => frames::from_hex(d.hex.as_deref().ok_or("a `raw` frame needs `hex`")?)?,
        other => return Err(format!("unknown frame kind `{other}`")),
    })
}

fn drop_matches(want: &DropDesc, stage: &str, reason: &str) -> bool {
    let (want_stage, want_reason) = match want {
        DropDesc::Reason(r) => (None, r.as_str()),
        DropDesc::Full { stage, reason } => (stage.as_deref(), reason.as_str()),
    };
    let stage_ok = want_stage.is_none_or(|s| stage == s || stage.rsplit(':').next() == Some(s));
    stage_ok && reason == want_reason
}

fn check(expect: &Expect, got: &Delivery, sent: &Bytes) -> Result<(), String> {
    let dropped = got.dropped.as_ref().map(|(s, r)| format!("{r} (at {s})"));
    if let Some(to) = &expect.to {
        let mut want: Vec<&str> = to.iter().map(String::as_str).collect();
        want.sort_unstable();
        if got.destinations() != want {
            return Err(format!(
                "expected the frame to leave on {want:?}, it left on {:?}{}",
                got.destinations(),
                dropped
                    .as_ref()
                    .map(|d| format!("; dropped: {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    match (&expect.dropped, &got.dropped) {
        (Some(want), Some((stage, reason))) if !drop_matches(want, stage, reason) => {
            return Err(format!("expected drop {want:?}, got {reason} at {stage}"));
        }
        (Some(want), None) => {
            return Err(format!(
                "expected drop {want:?}, but it left on {:?}",
                got.destinations()
            ));
        }
        _ => {}
    }
    if let Some(want) = &expect.egress_dropped {
        let ok = want.len() == got.egress_dropped.len()
            && want
                .iter()
                .zip(&got.egress_dropped)
                .all(|(w, (s, r))| drop_matches(w, s, r));
        if !ok {
            return Err(format!(
                "expected egress drops {want:?}, got {:?}",
                got.egress_dropped
            ));
        }
    }
    if let Some(unchanged) = expect.unchanged {
        for (link, bytes) in &got.delivered {
            if (bytes == sent) != unchanged {
                return Err(format!(
                    "frame to {link} was {}",
                    if unchanged {
                        "rewritten, expected unchanged"
                    } else {
                        "unchanged, expected a rewrite"
                    }
                ));
            }
        }
    }
    Ok(())
}
