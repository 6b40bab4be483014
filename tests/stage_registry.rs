//! Every registered stage kind, checked against its own documentation: the
//! keys `lanparty stages NAME` documents are exactly the keys its settings
//! accept (asked of the parser itself, with a key nobody accepts), and its
//! example names its kind and builds in a node config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use lanparty_core::config::StageConfig;
use lanparty_core::registry::{Registry, StageBuild, StageRegistration};

// Link every stage crate the binary links (src/stages.rs).
use lanparty_filters as _;
use lanparty_ports as _;
use lanparty_transports as _;

/// The keys the stage's settings accept, from the error its parser gives
/// for an unknown key (`unknown key `…`; expected one of: a, b, c`).
fn accepted_keys(r: &StageRegistration) -> BTreeSet<String> {
    let config = StageConfig::from_yaml(r.name, "no_stage_accepts_this_key: 1").unwrap();
    let errors: Vec<String> = match r.build {
        StageBuild::Filter { build, .. } => build(&config).err(),
        StageBuild::Router { build } => build(&config).err(),
        StageBuild::Port { build } => build(&config).err(),
    }
    .map(|errors| errors.iter().map(ToString::to_string).collect())
    .unwrap_or_default();
    let unknown = errors
        .iter()
        .find(|e| e.contains("no_stage_accepts_this_key"))
        .unwrap_or_else(|| panic!("{}: an unknown key was not refused: {errors:?}", r.name));
    match unknown.split_once("expected one of: ") {
        Some((_, list)) => list
            .split(',')
            .map(|k| k.trim().trim_matches('`').to_string())
            .filter(|k| !k.is_empty())
            .collect(),
        // A stage without settings.
        None => BTreeSet::new(),
    }
}

#[test]
fn documented_keys_are_exactly_the_accepted_keys() {
    let registry = Registry::global().unwrap();
    // Every kind the binary links (tests/cli.rs lists them by name).
    let names: Vec<&str> = registry.iter().map(|r| r.name).collect();
    assert!(names.len() >= 18, "stage crates not linked: {names:?}");
    let mut problems = Vec::new();
    let mut keys_checked = 0;
    for r in registry.iter() {
        let documented: BTreeSet<String> = r.keys.iter().map(|k| k.name.to_string()).collect();
        let accepted = accepted_keys(r);
        keys_checked += accepted.len();
        if documented != accepted {
            problems.push(format!(
                "{}: documented but not accepted {:?}; accepted but not documented {:?}",
                r.name,
                documented.difference(&accepted).collect::<Vec<_>>(),
                accepted.difference(&documented).collect::<Vec<_>>()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        keys_checked > 80,
        "only {keys_checked} keys read back from the parsers"
    );
}

#[test]
fn every_example_names_its_own_kind() {
    let registry = Registry::global().unwrap();
    for r in registry.iter() {
        assert!(
            r.example.contains(&format!("type: {}", r.name)),
            "{}: the example does not show `type: {}`:\n{}",
            r.name,
            r.name,
            r.example
        );
    }
}

/// A node config around a stage's example: port examples are whole
/// `ports:` sections; filter and router examples go under `room:` beside
/// a TAP port.
fn node_config(example: &str) -> String {
    if example.trim_start().starts_with("ports:") {
        format!("node: {{ name: example }}\n{example}\n")
    } else {
        let room: String = example.lines().map(|l| format!("  {l}\n")).collect();
        format!(
            "node: {{ name: example }}\nports:\n  lab: {{ type: tap, device: lpex0 }}\nroom:\n{room}"
        )
    }
}

#[test]
fn every_example_builds() {
    use lanparty_core::config::ConfigSources;
    use lanparty_core::runtime::Node;
    let dir = std::env::temp_dir().join(format!("lanparty-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // What examples name: a pinned relay certificate next to the config.
    let files = lanparty_transports::tls::SelfSignedFiles::in_dir(&dir);
    lanparty_transports::tls::generate_self_signed(&files, &["lanparty-relay.local".into()])
        .unwrap();
    let registry = Registry::global().unwrap();
    let mut problems = Vec::new();
    for r in registry.iter() {
        let file = dir.join(format!("{}.yaml", r.name));
        std::fs::write(&file, node_config(r.example)).unwrap();
        if let Err(errors) = Node::build(&ConfigSources::new(vec![file], Vec::new())) {
            problems.push(format!("{}: {errors}", r.name));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
