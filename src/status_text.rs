//! `lanparty status` as text, like `wg show`: the node's typed report
//! (`NodeReport`, with the QUIC ports' `ServerReport` / `ClientReport`)
//! rendered for a person. Refuses a report of another schema version.

use lanparty_core::room::RoomStats;
use lanparty_core::runtime::{NodeReport, STATUS_VERSION};
use lanparty_transports::datapath::DatapathSnapshot;
use lanparty_transports::report::{
    CLIENT_KIND, ClientReport, ClientState, SERVER_KIND, SendReport, ServerReport,
};
use serde_json::Value;

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn rtt(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

/// The report as text; an error when it is not a report this binary reads.
pub fn render(value: &Value) -> Result<String, String> {
    let version = value.get("version").and_then(Value::as_u64);
    if version != Some(u64::from(STATUS_VERSION)) {
        return Err(format!(
            "the node reports status version {}, this lanparty reads version {STATUS_VERSION}: use the lanparty binary the node runs (or --json)",
            version.map_or_else(|| "none".to_string(), |v| v.to_string())
        ));
    }
    let r: NodeReport = serde_json::from_value(value.clone()).map_err(|e| {
        format!("the node's status report does not read as version {STATUS_VERSION}: {e}")
    })?;
    let mut out = format!("node: {} (up {})\n", r.node, duration(r.uptime_s));
    if let Some(dir) = &r.policies.dir {
        out += &format!(
            "  policies: {dir}{} [{}]\n",
            if r.policies.require_policy {
                " (closed relay)"
            } else {
                ""
            },
            r.policies.rooms.join(", ")
        );
    }
    for (name, port) in &r.ports {
        let kind = port.get("type").and_then(Value::as_str).unwrap_or("-");
        out += &format!("\nport: {name} ({kind})\n");
        let text = match kind {
            SERVER_KIND => serde_json::from_value(port.clone()).map(|s| server(&s)),
            CLIENT_KIND => serde_json::from_value(port.clone()).map(|c| client(&c)),
            _ => Ok(String::new()),
        };
        out += &text.unwrap_or_else(|e| format!("  (report unreadable: {e}; see --json)\n"));
    }
    for room in &r.rooms {
        out += &self::room(room);
    }
    Ok(out)
}

fn server(s: &ServerReport) -> String {
    let mut out = format!(
        "  connections: {} ({} live), admitted: {}, handshake failures: {}\n",
        s.connections, s.live_connections, s.admitted, s.handshake_failures
    );
    // One loop per runtime thread: where each peer runs says how they spread.
    let loops = s.loops > 1;
    if loops {
        out += &format!("  loops: {} (one per runtime thread)\n", s.loops);
    }
    for (what, map) in [
        ("rejects", &s.rejects),
        ("protocol errors", &s.protocol_errors),
    ] {
        if !map.is_empty() {
            let list: Vec<String> = map.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out += &format!("  {what}: {}\n", list.join(", "));
        }
    }
    out += &datapath(&s.datapath);
    for p in &s.peers {
        out += &format!(
            "\n  peer#{}: {} {} in room {}\n    remote: {}  rtt: {}  mtu: {}  up: {}\n    sent: {} frames, {} bytes, {} dropped\n",
            p.peer_id,
            p.role,
            p.mac,
            p.room,
            p.path.remote,
            rtt(p.path.rtt_us),
            p.mtu,
            duration(p.uptime_s),
            p.frames_tx,
            p.bytes_tx,
            p.dropped_tx
        );
        out += &sending(&p.send);
        if loops {
            out += &format!("    loop: {}\n", p.loop_index);
        }
    }
    out
}

fn client(c: &ClientReport) -> String {
    let state = match c.state {
        ClientState::Connected => "connected",
        ClientState::Reconnecting => "reconnecting",
    };
    let mut out = format!(
        "  relay: {}  room: {}  role: {}  mac: {}\n  state: {state}  sessions: {}  reconnects: {}  failed attempts: {}\n",
        c.relay, c.room, c.role, c.mac, c.sessions, c.reconnects, c.failed_attempts
    );
    match (&c.session, &c.last_error) {
        (Some(s), _) => {
            out += &format!(
                "  peer#{}  room id {}  mtu {}  remote {}  rtt {}  up {}  header compression {}\n",
                s.peer_id,
                s.room_id,
                s.mtu,
                s.path.remote,
                rtt(s.path.rtt_us),
                duration(s.uptime_s),
                if s.header_compression { "on" } else { "off" }
            );
            out += &sending(&c.send);
        }
        (None, Some(e)) => out += &format!("  last error: {e}\n"),
        (None, None) => {}
    }
    out + &datapath(&c.datapath)
}

/// A connection's sending side: its rate now, and whether its frames go
/// out header-compressed (the gate of `compress_below_mbps`).
fn sending(s: &SendReport) -> String {
    format!(
        "    sending: {:.1} Mbit/s  headers: {}  queued: {} frames\n",
        s.send_rate as f64 * 8.0 / 1e6,
        if s.compressing { "compressed" } else { "whole" },
        s.queue.backlog_frames
    )
}

/// The data path's traffic counters of a QUIC port.
fn datapath(d: &DatapathSnapshot) -> String {
    format!(
        "  datagrams in/out: {}/{}  header-compressed out/rebuilt in: {}/{}  fragmented out/reassembled in: {}/{}\n",
        d.datagrams_in,
        d.datagrams_out,
        d.compressed_out,
        d.compressed_in,
        d.fragmented_out,
        d.reassembled
    )
}

fn room(room: &RoomStats) -> String {
    let p = &room.pipeline;
    let mut out = format!(
        "\nroom: {} (id {})  mtu: {}  macs learned: {}  frames in: {}  delivered: {}  queue full: {}\n",
        room.room, room.room_id, room.mtu, p.table_len, p.frames_in, p.delivered, room.queue_full
    );
    for link in &room.links {
        let c = &link.counters;
        let macs: Vec<String> = link.macs.iter().map(ToString::to_string).collect();
        out += &format!(
            "  link {}: {} {}  rx {} frames / {} bytes  tx {} frames / {} bytes  dropped rx {} tx {}\n",
            link.name,
            link.role,
            macs.join(","),
            c.rx_frames,
            c.rx_bytes,
            c.tx_frames,
            c.tx_bytes,
            c.rx_queue_full,
            c.tx_queue_full
        );
    }
    for stage in &p.stages {
        let c = &stage.counters;
        let drops: Vec<String> = c
            .drops
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        out += &format!(
            "  stage {}: rx {} pass {}{}\n",
            stage.label,
            c.rx,
            c.pass,
            if drops.is_empty() {
                String::new()
            } else {
                format!("  dropped: {}", drops.join(", "))
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report() -> Value {
        json!({
            "version": STATUS_VERSION, "node": "r", "uptime_s": 61, "ports": {},
            "policies": {"dir": null, "require_policy": false, "rooms": []},
            "rooms": [{
                "room": "R", "room_id": 1, "mtu": 1394, "queue_full": 0, "captures": 0,
                "capture_dropped": 0, "links": [],
                "pipeline": {"frames_in": 5, "delivered": 2, "table_len": 1, "stages": [
                    {"label": "ingress[0]:mac-guard", "kind": "mac-guard",
                     "counters": {"rx": 5, "pass": 2, "rewritten": 0, "drops": [["spoofed-source", 3]]}}
                ]}
            }]
        })
    }

    #[test]
    fn a_relay_with_several_loops_shows_them_and_each_peers_loop() {
        use lanparty_transports::report::{PathReport, PeerReport, SendReport};
        let peer = |id: u8, loop_index: u64| PeerReport {
            peer_id: u64::from(id),
            room: "R".into(),
            role: lanparty_core::control::PeerRole::Client,
            mac: lanparty_core::wire::MacAddr([2, 0, 0, 0, 0, id]),
            path: PathReport {
                remote: "10.0.0.1:5000".into(),
                rtt_us: 800,
                cwnd: 12_000,
                congestion_events: 0,
                lost_packets: 0,
            },
            mtu: 1500,
            loop_index,
            uptime_s: 5,
            frames_tx: 1,
            bytes_tx: 100,
            dropped_tx: 0,
            send: SendReport {
                queue: Default::default(),
                send_rate: 0,
                compressing: false,
            },
        };
        let relay = ServerReport {
            kind: SERVER_KIND.into(),
            loops: 2,
            connections: 2,
            live_connections: 2,
            handshake_failures: 0,
            handshake_timeouts: 0,
            handshakes_in_progress: 0,
            retries: 0,
            handshakes_refused: 0,
            handshake_packets_dropped: 0,
            admitted: 2,
            rejects: Default::default(),
            protocol_errors: Default::default(),
            datapath: DatapathSnapshot::default(),
            peers: vec![peer(1, 0), peer(2, 1)],
        };
        let text = server(&relay);
        assert!(text.contains("loops: 2 (one per runtime thread)"), "{text}");
        assert!(text.contains("    loop: 1\n"), "{text}");
        assert!(
            text.contains("    sending: 0.0 Mbit/s  headers: whole  queued: 0 frames\n"),
            "{text}"
        );
        let one = ServerReport { loops: 1, ..relay };
        assert!(
            !server(&one).contains("loop"),
            "one loop is not worth a line"
        );
    }

    #[test]
    fn status_text_shows_drops_by_stage_and_reason() {
        let text = render(&report()).unwrap();
        assert!(text.contains("node: r (up 1m01s)"), "{text}");
        assert!(
            text.contains("stage ingress[0]:mac-guard: rx 5 pass 2  dropped: spoofed-source 3"),
            "{text}"
        );
    }

    #[test]
    fn a_report_of_another_version_is_refused_with_what_to_do() {
        let mut old = report();
        old["version"] = json!(STATUS_VERSION + 1);
        let e = render(&old).unwrap_err();
        assert!(e.contains("status version") && e.contains("--json"), "{e}");
        let e = render(&json!({"node": "r"})).unwrap_err();
        assert!(e.contains("version none"), "{e}");
    }
}
