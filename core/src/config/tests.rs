//! Config loading tests: YAML, environment and `--set` layers, errors that
//! name the file, line and key.

use std::io::Write;
use std::path::PathBuf;

use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("lanparty-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sources(files: Vec<PathBuf>, sets: &[&str]) -> ConfigSources {
    ConfigSources {
        files,
        env: false,
        sets: sets.iter().map(|s| s.to_string()).collect(),
    }
}

const NODE: &str = "
node: { name: test }
ports:
  lan: { type: tap, device: lp0 }
room:
  mtu: 1400
  ingress:
    - { type: jumbo }
  router: { type: switch, max_macs: 10 }
";

#[test]
fn loads_a_node() {
    let dir = TempDir::new("load");
    let file = dir.file("node.yaml", NODE);
    let (_, node) = load_node(&sources(vec![file], &[])).unwrap();
    assert_eq!(node.node.name, "test");
    assert_eq!(node.room.mtu, 1400);
    assert_eq!(node.room.ingress.len(), 1);
    assert_eq!(node.runtime, RuntimeSettings::default());
    assert!(node.ports.contains_key("lan"));
}

#[test]
fn misspelt_key_names_file_and_key() {
    let dir = TempDir::new("typo");
    let file = dir.file("node.yaml", &NODE.replace("  mtu: 1400", "  mtuu: 1400"));
    let errors = load_node(&sources(vec![file.clone()], &[])).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("`room.mtuu`"), "{text}");
    assert!(text.contains("unknown key"), "{text}");
}

#[test]
fn yaml_syntax_error_names_the_file_and_line() {
    let dir = TempDir::new("syntax");
    let file = dir.file("node.yaml", "ports:\n  a: [\n");
    let text = load_node(&sources(vec![file.clone()], &[]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("node.yaml"), "{text}");
    assert!(text.contains("line"), "{text}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let text = load_node(&sources(vec!["/nonexistent/lanparty.yaml".into()], &[]))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("/nonexistent/lanparty.yaml: cannot read config file"),
        "{text}"
    );
}

#[test]
fn set_overrides_win_and_are_typed() {
    let dir = TempDir::new("set");
    let file = dir.file("node.yaml", NODE);
    let (_, node) = load_node(&sources(
        vec![file],
        &["room.mtu=1280", "ports.lan.device=lp9", "node.name=other"],
    ))
    .unwrap();
    assert_eq!(node.room.mtu, 1280);
    assert_eq!(node.node.name, "other");
    let lan = node.ports["lan"].resolve(None, "ports.lan").unwrap();
    assert_eq!(lan.values["device"].as_str(), Some("lp9"));
}

#[test]
fn set_errors() {
    assert!(parse_set("novalue").is_err());
    assert!(parse_set("a..b=1").is_err());
    assert!(parse_set("=1").is_err());
    let (key, value) = parse_set("ports.relay.room=ROOM1").unwrap();
    assert_eq!(key, "ports.relay.room");
    assert_eq!(value.as_str(), Some("ROOM1"));
    let dir = TempDir::new("setbad");
    let file = dir.file("node.yaml", NODE);
    let text = load_node(&sources(vec![file], &["room.mtu=lots"]))
        .unwrap_err()
        .to_string();
    assert!(text.contains("room.mtu"), "{text}");
}

#[test]
fn later_files_override_earlier_ones() {
    let dir = TempDir::new("merge");
    let a = dir.file("a.yaml", NODE);
    let b = dir.file("b.yaml", "room: { mtu: 1300 }\n");
    let (_, node) = load_node(&sources(vec![a, b], &[])).unwrap();
    assert_eq!(node.room.mtu, 1300);
    assert_eq!(
        node.room.ingress.len(),
        1,
        "merge keeps keys the later file does not set"
    );
}

#[test]
fn bad_values_are_named() {
    let dir = TempDir::new("values");
    let file = dir.file(
        "node.yaml",
        "ports: { 'bad name': { type: tap } }\nroom: { mtu: 100 }\nruntime: { batch: 0 }\n",
    );
    let errors = load_node(&sources(vec![file.clone()], &[])).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"room.mtu"), "{keys:?}");
    for e in &errors.0 {
        assert_eq!(
            e.origin.as_deref(),
            Some(file.display().to_string().as_str()),
            "{e}"
        );
    }
    assert!(keys.contains(&"runtime.batch"), "{keys:?}");
    assert!(keys.contains(&"ports.bad name"), "{keys:?}");
}

#[test]
fn stage_entries_need_a_type_and_keep_their_file() {
    let dir = TempDir::new("stage");
    let file = dir.file(
        "node.yaml",
        "ports:\n  a: { device: x }\n  b: { type: tap, cert: certs/relay.der }\n",
    );
    let (figment, node) = load_node(&sources(vec![file.clone()], &[])).unwrap();
    let err = node.ports["a"]
        .resolve(Some(&figment), "ports.a")
        .unwrap_err();
    assert!(err.message.contains("no `type:`"), "{err}");
    assert_eq!(
        err.origin.as_deref(),
        Some(file.display().to_string().as_str())
    );
    let b = node.ports["b"].resolve(Some(&figment), "ports.b").unwrap();
    assert_eq!(b.kind, "tap");
    assert_eq!(b.file.as_deref(), Some(file.as_path()));
    let resolved = b.resolve_path("cert", std::path::Path::new("certs/relay.der"));
    assert_eq!(resolved, dir.0.join("certs/relay.der"));
    assert_eq!(
        b.resolve_path("cert", std::path::Path::new("/abs")),
        PathBuf::from("/abs")
    );
}

#[test]
fn stage_parse_errors_carry_the_stage_path() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        rate: u32,
    }
    let config = StageConfig::from_yaml("storm", "rate: 5\nburts: 3").unwrap();
    let errors = config.parse::<Settings>().unwrap_err();
    assert_eq!(errors[0].key, "storm.burts");
    let config = StageConfig::from_yaml("storm", "rate: lots").unwrap();
    let errors = config.parse::<Settings>().unwrap_err();
    assert_eq!(errors[0].key, "storm.rate");
    let config = StageConfig::from_yaml("storm", "").unwrap();
    let errors = config.parse::<Settings>().unwrap_err();
    assert_eq!(errors[0].key, "storm.rate");
    assert!(errors[0].message.contains("missing"));
}

#[test]
fn keys_join_with_indexes() {
    assert_eq!(
        join_key("room", &["ingress".into(), "0".into(), "rate".into()]),
        "room.ingress[0].rate"
    );
    assert_eq!(join_key("", &["a".into()]), "a");
}
