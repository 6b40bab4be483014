//! In-process QUIC: room policies at the relay — credentials (right, wrong,
//! missing, the gateway seat), the failed-attempt limit, a closed relay,
//! and hot reload of limits and of a deleted policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use lanparty_core::control::{ControlMessage, Credential, RejectCode};
use lanparty_transports::credentials::{Argon2Cost, hash_password, hash_password_pbkdf2};
use support::*;

/// An Argon2id hash at the cheapest costs a policy accepts (tests hash a lot).
fn hash(password: &str) -> String {
    let cheapest = Argon2Cost {
        memory_kib: lanparty_core::config::ARGON2_MIN_MEMORY_KIB,
        passes: 5,
    };
    hash_password(password, cheapest).unwrap().to_string()
}

/// A PBKDF2 hash, as policies written before Argon2id hold.
fn old_hash(password: &str) -> String {
    hash_password_pbkdf2(password, lanparty_core::config::MIN_ITERATIONS)
        .unwrap()
        .to_string()
}

fn write_policy(dir: &TempDir, room: &str, yaml: &str) {
    let folder = dir.0.join("policies");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(format!("{room}.yaml")), yaml).unwrap();
}

fn rooms_section(dir: &TempDir, require: bool, extra: &str) -> String {
    format!(
        "policy_dir: {}\nrequire_policy: {require}\n{extra}",
        dir.0.join("policies").display()
    )
}

fn credential(text: &str) -> String {
    format!("credential: \"{text}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_keep_strangers_out_and_players_off_the_gateway_seat() {
    let dir = TempDir::new();
    write_policy(
        &dir,
        "LOCKED",
        &format!(
            "credentials:\n  players: ['{}', '{}']\n  gateway: ['{}']\n",
            hash("room password"),
            old_hash("alice token"),
            hash("gateway secret")
        ),
    );
    let relay = Relay::with_policies(&dir, "", &rooms_section(&dir, false, "")).await;

    let e = rejected(&relay, "LOCKED", "client", mac(1), "").await;
    assert!(
        e.contains("unauthorized") && e.contains("needs a player credential"),
        "{e}"
    );
    let e = rejected(&relay, "LOCKED", "client", mac(1), &credential("guess")).await;
    assert!(
        e.contains("unauthorized") && e.contains("wrong player credential"),
        "{e}"
    );
    assert!(
        !e.contains("guess"),
        "a credential never appears in messages: {e}"
    );
    // A player's password does not open the gateway seat.
    let e = rejected(
        &relay,
        "LOCKED",
        "gateway",
        mac(9),
        &credential("room password"),
    )
    .await;
    assert!(e.contains("wrong gateway credential"), "{e}");

    let yaml = client_yaml(
        &relay,
        "LOCKED",
        "client",
        mac(1),
        &credential("room password"),
    );
    let a = Peer::start_with(&yaml, mac(1)).await;
    a.wait_sessions(1).await;
    let yaml = client_yaml(
        &relay,
        "LOCKED",
        "client",
        mac(2),
        &credential("alice token"),
    );
    let b = Peer::start_with(&yaml, mac(2)).await;
    b.wait_sessions(1).await;
    let yaml = client_yaml(
        &relay,
        "LOCKED",
        "gateway",
        mac(3),
        &credential("gateway secret"),
    );
    let gw = Peer::start_with(&yaml, mac(3)).await;
    gw.wait_sessions(1).await;
    // Rooms without a policy need nothing.
    let _open = Peer::join(&relay, "OPEN", "client", mac(4)).await;
    assert_eq!(relay.counters.rejects.get("unauthorized"), 3);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_credentials_are_limited_per_address() {
    let dir = TempDir::new();
    write_policy(
        &dir,
        "LOCKED",
        &format!(
            "gateway: forbidden\ncredentials: {{ players: ['{}'] }}\n",
            hash("right")
        ),
    );
    let relay = Relay::with_policies(
        &dir,
        "",
        &rooms_section(&dir, false, "auth_failures_per_minute: 2"),
    )
    .await;
    let with = |text: &str| {
        let mut h = hello("LOCKED", mac(1));
        h.credential = Some(Credential(text.into()));
        h
    };
    assert_eq!(
        reject_code(&relay, with("wrong1")).await,
        RejectCode::Unauthorized
    );
    assert_eq!(
        reject_code(&relay, with("wrong2")).await,
        RejectCode::Unauthorized
    );
    // Now even the right one waits out the minute.
    assert_eq!(
        reject_code(&relay, with("right")).await,
        RejectCode::RateLimited
    );
    assert!(!RejectCode::RateLimited.is_final());
    assert_eq!(relay.counters.rejects.get("rate_limited"), 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_relay_hosts_only_rooms_with_a_policy_and_closes_a_deleted_one() {
    let dir = TempDir::new();
    write_policy(&dir, "PARTY", "max_peers: 8\n");
    let relay = Relay::with_policies(
        &dir,
        "",
        &rooms_section(&dir, true, "reload_interval: 100ms"),
    )
    .await;
    let e = rejected(&relay, "ELSEWHERE", "client", mac(1), "").await;
    assert!(e.contains("no_such_room"), "{e}");

    let mut a = Peer::join(&relay, "PARTY", "client", mac(1)).await;
    let (conn, mut send, mut recv, reply) = raw_hello_streams(&relay, hello("PARTY", mac(2))).await;
    assert!(
        matches!(reply, Some(ControlMessage::Welcome(_))),
        "{reply:?}"
    );

    // The operator deletes the policy: the room is closed, everyone told why.
    std::fs::remove_file(dir.0.join("policies/PARTY.yaml")).unwrap();
    relay.reload();
    let mut told = None;
    while let Ok(Ok(Some(m))) = tokio::time::timeout(
        Duration::from_secs(3),
        lanparty_core::control::read_message(&mut recv, 1 << 16),
    )
    .await
    {
        if let ControlMessage::Disconnect { reason, message } = m {
            told = Some((reason, message));
            break;
        }
    }
    let (reason, message) = told.expect("a disconnect");
    assert_eq!(
        reason,
        lanparty_core::control::DisconnectReason::PolicyChanged
    );
    assert!(message.contains("PARTY"), "{message}");
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut a.task)
        .await
        .expect("the client stops: a closed room is final");
    let e = ended.unwrap().expect_err("kicked").to_string();
    assert!(e.contains("closed by the relay operator"), "{e}");
    drop((conn, &mut send));
    // And nobody gets back in.
    let e = rejected(&relay, "PARTY", "client", mac(3), "").await;
    assert!(e.contains("no_such_room"), "{e}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_limits_apply_to_the_next_admissions() {
    let dir = TempDir::new();
    write_policy(&dir, "SMALL", "max_peers: 1\n");
    let relay = Relay::with_policies(&dir, "", &rooms_section(&dir, false, "")).await;
    let _a = Peer::join(&relay, "SMALL", "client", mac(1)).await;
    let b = Peer::start_with(&client_yaml(&relay, "SMALL", "client", mac(2), ""), mac(2)).await;
    let counters = b.counters.clone();
    wait_for("room_full retries", Duration::from_secs(5), || {
        counters.failed_attempts.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!(counters.sessions.load(Ordering::Relaxed), 0);
    write_policy(&dir, "SMALL", "max_peers: 2\n");
    let report = relay.reload();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    b.wait_sessions(1).await;
    // A broken edit keeps the last good limits.
    write_policy(&dir, "SMALL", "max_peers: many\n");
    let report = relay.reload();
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        relay.policies.get("SMALL").unwrap().policy.max_peers,
        Some(2)
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_rules_mac_lists_and_mtu_from_policies() {
    let dir = TempDir::new();
    write_policy(&dir, "NOGW", "gateway: forbidden\n");
    write_policy(&dir, "NEEDGW", "gateway: required\n");
    write_policy(
        &dir,
        "LISTED",
        "allowed_macs: ['02:00:00:00:00:21']\nmtu: 1280\n",
    );
    let relay = Relay::with_policies(&dir, "", &rooms_section(&dir, false, "")).await;

    let e = rejected(&relay, "NOGW", "gateway", mac(1), "").await;
    assert!(e.contains("role_forbidden"), "{e}");
    let _player = Peer::join(&relay, "NOGW", "client", mac(2)).await;

    // A client waits (retrying) until the room's gateway is there.
    let c = Peer::start_with(&client_yaml(&relay, "NEEDGW", "client", mac(3), ""), mac(3)).await;
    let counters = c.counters.clone();
    wait_for("no_gateway retries", Duration::from_secs(5), || {
        counters.failed_attempts.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(relay.counters.rejects.get("no_gateway") >= 1);
    let _gw = Peer::join(&relay, "NEEDGW", "gateway", mac(4)).await;
    c.wait_sessions(1).await;

    let e = rejected(&relay, "LISTED", "client", mac(22), "").await;
    assert!(
        e.contains("unauthorized") && e.contains("allowed MACs"),
        "{e}"
    );
    match raw_hello(&relay, hello("LISTED", mac(0x21))).await.2 {
        Some(ControlMessage::Welcome(w)) => assert_eq!(w.mtu, 1280, "the policy's MTU"),
        other => panic!("expected a welcome, got {other:?}"),
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_applies_when_the_file_changes_not_at_the_next_poll() {
    use lanparty_core::registry::Registry;
    use lanparty_core::runtime::shutdown_pair;
    let dir = TempDir::new();
    write_policy(&dir, "WATCHED", "max_peers: 1\n");
    // A poll an hour away: only the folder watch can apply the edit.
    let relay =
        Relay::with_policies(&dir, "", &rooms_section(&dir, false, "reload_interval: 1h")).await;
    let (trigger, signal) = shutdown_pair();
    tokio::spawn(relay.policies.clone().watch(
        Registry::global().unwrap(),
        relay.rooms.clone(),
        signal,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let max_peers = |room: &str| relay.policies.get(room).and_then(|p| p.policy.max_peers);
    let written = std::time::Instant::now();
    write_policy(&dir, "WATCHED", "max_peers: 2\n");
    wait_for("the edit to apply", Duration::from_secs(5), || {
        max_peers("WATCHED") == Some(2)
    })
    .await;
    eprintln!(
        "policy edit applied {:?} after the write",
        written.elapsed()
    );
    // A new file, named in lower case, is the upper-case room's policy.
    write_policy(&dir, "late", "max_peers: 3\n");
    wait_for("the new file to apply", Duration::from_secs(5), || {
        max_peers("LATE") == Some(3)
    })
    .await;
    // A deleted file goes as soon.
    std::fs::remove_file(dir.0.join("policies/late.yaml")).unwrap();
    wait_for("the deletion to apply", Duration::from_secs(5), || {
        relay.policies.get("LATE").is_none()
    })
    .await;
    trigger.trigger("test over");
    relay.stop().await;
}
