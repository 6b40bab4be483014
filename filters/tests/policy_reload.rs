//! Room policies at run time, with real filters: a policy retunes a live
//! room's filters; edits, broken files, fixes and deletions behave as
//! README documents; extra filters are appended.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lanparty_core::config::{RoomSpec, RoomsSection};
use lanparty_core::pipeline::PipelineTemplate;
use lanparty_core::registry::Registry;
use lanparty_core::runtime::{LinkHandle, LinkSpec, PolicyEvent, PolicyStore, Rooms};
use lanparty_core::stage::LinkRole;
use lanparty_core::testing::frames::{Tags, ethernet};
use lanparty_core::wire::MacAddr;
use lanparty_filters as _;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

fn base() -> RoomSpec {
    use figment::providers::Format;
    figment::Figment::from(lanparty_core::config::Yaml::string(
        "ingress: [ { type: storm, rate: 1000, burst: 1000 } ]\n",
    ))
    .extract()
    .unwrap()
}

fn store(dir: &Path, require: bool) -> Arc<PolicyStore> {
    let yaml = format!("policy_dir: {}\nrequire_policy: {require}\n", dir.display());
    use figment::providers::Format;
    let section: RoomsSection = figment::Figment::from(lanparty_core::config::Yaml::string(&yaml))
        .extract()
        .unwrap();
    PolicyStore::new(&section, base())
}

fn link(rooms: &Arc<Rooms>, name: &str, mac: MacAddr) -> LinkHandle {
    rooms.attach(
        "ROOM",
        LinkSpec {
            name: name.into(),
            role: LinkRole::Client,
            macs: vec![mac],
            mtu: None,
            sink: None,
        },
    )
}

/// Sends `n` frames of `ethertype` from `from`, returns how many reach `to`.
async fn through(from: &LinkHandle, to: &mut LinkHandle, ethertype: u16, n: usize) -> usize {
    for _ in 0..n {
        from.send(ethernet(MacAddr::BROADCAST, A, Tags::None, ethertype, 46).into());
    }
    let mut got = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), to.recv()).await {
        got += 1;
    }
    got
}

fn scan(store: &PolicyStore, rooms: &Rooms) -> lanparty_core::runtime::ScanReport {
    let report = store.scan(Registry::global().unwrap());
    store.apply(&report, rooms);
    report
}

#[tokio::test]
async fn policies_retune_live_rooms_and_survive_broken_edits() {
    let dir = tempdir();
    let file = dir.join("ROOM.yaml");
    let registry = Registry::global().unwrap();
    let template = PipelineTemplate::build(&base(), None, registry).unwrap();
    let rooms = Rooms::new(template, Default::default());
    let store = store(&dir, false);
    let mut events = store.subscribe();

    // A live room before any policy: the template's generous storm limit.
    let a = link(&rooms, "a", A);
    let mut b = link(&rooms, "b", B);
    assert_eq!(through(&a, &mut b, 0x0800, 5).await, 5);

    // New policy file: a strict storm limit, applied to the live room.
    std::fs::write(&file, "ingress: [ { type: storm, rate: 1, burst: 2 } ]\n").unwrap();
    let report = scan(&store, &rooms);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        events.try_recv().unwrap(),
        PolicyEvent::Changed("ROOM".into())
    );
    assert_eq!(through(&a, &mut b, 0x0800, 5).await, 2);

    // An extra filter kind is appended after the template's.
    std::fs::write(
        &file,
        "ingress:\n  - { type: storm, rate: 1000, burst: 1000 }\n  - { type: ethertype, allow: [ipv4] }\n",
    )
    .unwrap();
    scan(&store, &rooms);
    assert_eq!(through(&a, &mut b, 0x0800, 3).await, 3);
    assert_eq!(
        through(&a, &mut b, 0x86dd, 3).await,
        0,
        "IPv6 is not on the allow-list"
    );

    // A broken edit: the error names the file and key, the previous policy stays.
    while events.try_recv().is_ok() {}
    std::fs::write(&file, "ingress: [ { type: storm, rat: 1 } ]\n").unwrap();
    let report = scan(&store, &rooms);
    let text = format!("{:?}", report.errors);
    assert!(text.contains("ROOM.yaml") && text.contains("rat"), "{text}");
    assert!(events.try_recv().is_err(), "a broken file changes nothing");
    assert_eq!(
        through(&a, &mut b, 0x86dd, 3).await,
        0,
        "the previous policy is still in force"
    );
    // The same broken content is not reported again.
    assert!(scan(&store, &rooms).errors.is_empty());

    // Fixed.
    std::fs::write(&file, "max_peers: 4\n").unwrap();
    scan(&store, &rooms);
    assert_eq!(store.get("ROOM").unwrap().policy.max_peers, Some(4));
    assert_eq!(through(&a, &mut b, 0x86dd, 3).await, 3);

    // Deleted: the room reverts to the template.
    std::fs::write(&file, "ingress: [ { type: storm, rate: 1, burst: 1 } ]\n").unwrap();
    scan(&store, &rooms);
    assert_eq!(through(&a, &mut b, 0x0800, 3).await, 1);
    std::fs::remove_file(&file).unwrap();
    scan(&store, &rooms);
    while let Ok(event) = events.try_recv() {
        if event == PolicyEvent::Removed("ROOM".into()) {
            break;
        }
    }
    assert!(store.get("ROOM").is_none());
    assert_eq!(through(&a, &mut b, 0x0800, 3).await, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_policy_files_are_reported_with_file_and_key() {
    let dir = tempdir();
    let registry = Registry::global().unwrap();
    for (name, content, expect) in [
        ("BAD1.yaml", "max_peers: 0\n", "max_peers"),
        ("BAD2.yaml", "gateway: sometimes\n", "gateway"),
        ("BAD3.yaml", "ingress: [ { type: nonsense } ]\n", "nonsense"),
        (
            "BAD4.yaml",
            "egress: [ { type: storm } ]\n",
            "ingress filter",
        ),
        (
            "BAD5.yaml",
            "credentials: { players: [hunter2] }\n",
            "hash-password",
        ),
        (
            "BAD6.yaml",
            "credentials: { players: ['pbkdf2-sha256$100000$000102030405060708090a0b0c0d0e0f$000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f'] }\n",
            "credentials.gateway",
        ),
        ("bad room!.yaml", "{}\n", "room code"),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
        let errors = store(&dir, true)
            .load_file(&dir.join(name), registry)
            .unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains(name) && text.contains(expect),
            "{name}: {text}"
        );
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lanparty-policy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
