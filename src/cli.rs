//! Argument parsing and the subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lanparty_core::config::{ConfigErrors, ConfigSources, RoomPolicy};
use lanparty_core::registry::{Registry, StageBuild, StageRegistration, did_you_mean};
use lanparty_core::runtime::{Node, shutdown_pair};
use lanparty_core::testing::run_test_file;

use crate::logging::{self, LogFormat};

/// Exit codes of the `lanparty` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// A node ran and failed (a port could not open its device, …).
    RunFailed = 1,
    /// Bad command line or configuration.
    ConfigError = 2,
    /// `lanparty test`: at least one case failed.
    TestsFailed = 3,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 a running node failed; 2 bad command line or config; 3 pipeline tests failed.
Config overrides: files are merged in order, then LANPARTY_* environment variables
(LANPARTY_PORTS__RELAY__ROOM=ABC sets ports.relay.room), then --set key.path=value.";

/// Layer 2 over QUIC for LAN parties: relay, gateway and client in one binary.
#[derive(Debug, Parser)]
#[command(name = "lanparty", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or e.g. `info,lanparty_core=debug`.
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (relay, gateway or client) from one or more config files.
    Run {
        /// Config files, merged in order.
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<PathBuf>,
        /// Override a key, e.g. --set ports.relay.room=ROOM1 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Build everything `run` would, without opening devices or sockets; list every error.
    Check {
        /// Config files, merged in order.
        #[arg(required = true, value_name = "CONFIG")]
        configs: Vec<PathBuf>,
        /// Override a key, e.g. --set room.mtu=1280 (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        sets: Vec<String>,
    },
    /// List the registered stage kinds, or describe one.
    Stages {
        /// A stage kind to describe: its config keys, defaults and an example.
        name: Option<String>,
    },
    /// Relay certificates.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Load a relay with synthetic peers and report frames/s, Gbit/s, loss and latency.
    Bench(BenchArgs),
    /// Run YAML pipeline tests and report each case.
    Test {
        /// Test files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show a running node's rooms, peers and counters (like `wg show`).
    Status(crate::admin_cli::StatusArgs),
    /// Capture a running node's room to a pcapng file (or stdout with -w -).
    Capture(crate::admin_cli::CaptureArgs),
    /// Room policy helpers.
    Room {
        #[command(subcommand)]
        action: crate::admin_cli::RoomAction,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// A running relay (host:port); default: start one in this process with configs/relay.yaml's pipeline and runtime.
    #[arg(long)]
    relay: Option<String>,
    /// The running relay's DER certificate to pin (with --relay).
    #[arg(long)]
    pin: Option<PathBuf>,
    /// The relay's certificate name.
    #[arg(long, default_value = "lanparty-relay.local")]
    server_name: String,
    /// Synthetic peers.
    #[arg(long, default_value_t = 2)]
    peers: usize,
    /// Rooms the peers are spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Ethernet frame size in bytes.
    #[arg(long, default_value_t = 1400)]
    size: usize,
    /// Offered frames/s over all peers; 0 sends as fast as the relay takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// With --rate: each peer sends what is due every this many
    /// microseconds, from its own thread. Longer ticks send longer bursts,
    /// and a burst's queueing counts as latency.
    #[arg(long, default_value_t = 100)]
    tick_us: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No relay: two peers with a direct QUIC connection, the baseline that
    /// shows what the relay adds.
    #[arg(long, conflicts_with = "relay")]
    direct: bool,
}

#[derive(Debug, Subcommand)]
enum CertAction {
    /// Make a self-signed relay certificate (relay-cert.der, relay-key.der), as the relay does on first start.
    New {
        /// Directory to write into (the relay's `self_signed_dir`).
        #[arg(long, default_value = "tls")]
        dir: PathBuf,
        /// DNS name(s) in the certificate (clients' `server_name`).
        #[arg(long = "name", default_value = "lanparty-relay.local")]
        names: Vec<String>,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> std::process::ExitCode {
    run_cli(std::env::args_os()).into()
}

/// Parses `args` (program name first) and runs the command.
pub fn run_cli<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::ConfigError
            } else {
                ExitCode::Ok
            };
        }
    };
    if let Err(e) = logging::init(&cli.log_level, cli.log_format) {
        eprintln!("error: {e}");
        return ExitCode::ConfigError;
    }
    let registry = match Registry::global() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::ConfigError;
        }
    };
    match cli.command {
        Command::Run { configs, sets } => run(ConfigSources::new(configs, sets)),
        Command::Check { configs, sets } => check(ConfigSources::new(configs, sets)),
        Command::Stages { name } => stages(registry, name.as_deref()),
        Command::Test { files } => test(&files),
        Command::Cert {
            action: CertAction::New { dir, names },
        } => cert_new(&dir, &names),
        Command::Bench(args) => crate::bench::bench(args.into()),
        Command::Status(args) => crate::admin_cli::status(&args),
        Command::Capture(args) => crate::admin_cli::capture(&args),
        Command::Room { action } => crate::admin_cli::room(&action),
    }
}

fn print_config_errors(errors: &ConfigErrors) {
    let n = errors.0.len();
    eprintln!(
        "error: {n} problem{} in the configuration:",
        if n == 1 { "" } else { "s" }
    );
    for e in &errors.0 {
        eprintln!("  {e}");
    }
}

/// A config that does not build: when one of the files is a room policy
/// (given where a node config belongs), says so instead of listing its keys
/// as unknown.
fn config_failed(sources: &ConfigSources, errors: &ConfigErrors) -> ExitCode {
    let policies: Vec<&PathBuf> = sources
        .files
        .iter()
        .filter(|f| RoomPolicy::load(f).is_ok())
        .collect();
    if policies.is_empty() {
        print_config_errors(errors);
    } else {
        for file in policies {
            eprintln!(
                "error: {} is a room policy (a ROOM.yaml in a relay's `rooms.policy_dir`), not a node config; check it with the relay config whose `rooms.policy_dir` is its folder: `lanparty check RELAY.yaml --set rooms.policy_dir={}`",
                file.display(),
                file.parent()
                    .map_or(".".into(), |d| d.display().to_string())
            );
        }
    }
    ExitCode::ConfigError
}

/// The async runtime for `runtime.threads`: one thread is a current-thread
/// runtime, so no frame ever waits for a wake-up on another thread (lowest
/// latency for a client, gateway or shipped relay); more, or the default,
/// a multi-threaded one.
pub(crate) fn runtime_builder(threads: Option<usize>, name: &str) -> tokio::runtime::Builder {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name(name);
    builder
}

fn run(sources: ConfigSources) -> ExitCode {
    let node = match Node::build(&sources) {
        Ok(node) => node,
        Err(errors) => return config_failed(&sources, &errors),
    };
    let runtime = match runtime_builder(node.settings.threads, "lanparty").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::RunFailed;
        }
    };
    let (trigger, _signal) = shutdown_pair();
    match runtime.block_on(node.run(trigger)) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::RunFailed
        }
    }
}

fn check(sources: ConfigSources) -> ExitCode {
    let files: Vec<String> = sources
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    match Node::build(&sources) {
        Ok(node) if !node.policy_report.errors.is_empty() => {
            let mut errors = ConfigErrors::default();
            for (_, e) in &node.policy_report.errors {
                errors.extend(e.0.clone());
            }
            print_config_errors(&errors);
            ExitCode::ConfigError
        }
        Ok(node) => {
            let ports: Vec<&str> = node.ports.iter().map(|(n, _)| n.as_str()).collect();
            let policies = match node.policies.dir() {
                Some(dir) => format!(
                    ", {} room polic{} in {}",
                    node.policies.rooms().len(),
                    if node.policies.rooms().len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    dir.display()
                ),
                None => String::new(),
            };
            let admin = node
                .admin_socket
                .as_ref()
                .map(|p| format!(", admin socket {}", p.display()))
                .unwrap_or_default();
            println!(
                "ok: {} — node `{}`, ports [{}], room MTU {}{policies}{admin}",
                files.join(" + "),
                node.name,
                ports.join(", "),
                node.template.mtu()
            );
            ExitCode::Ok
        }
        Err(errors) => config_failed(&sources, &errors),
    }
}

fn describe(r: &StageRegistration) -> String {
    let mut out = format!("{} ({})\n  {}\n", r.name, r.kind(), r.summary);
    if let StageBuild::Filter { sides, .. } = r.build {
        let place = match (sides.ingress(), sides.egress()) {
            (true, true) => "room.ingress or room.egress",
            (true, false) => "room.ingress",
            _ => "room.egress",
        };
        out.push_str(&format!("  placed under: {place}\n"));
    }
    if r.keys.is_empty() {
        out.push_str("\nkeys: none besides `type`\n");
    } else {
        out.push_str("\nkeys:\n");
        let width = r.keys.iter().map(|k| k.name.len()).max().unwrap_or(0);
        for k in r.keys {
            out.push_str(&format!(
                "  {:width$}  {} (default: {})\n  {:width$}    {}\n",
                k.name, k.ty, k.default, "", k.doc
            ));
        }
    }
    out.push_str(&format!(
        "\nexample:\n  {}\n",
        r.example.trim().replace('\n', "\n  ")
    ));
    out
}

fn stages(registry: &Registry, name: Option<&str>) -> ExitCode {
    match name {
        None => {
            let width = registry.iter().map(|r| r.name.len()).max().unwrap_or(0);
            for r in registry.iter() {
                println!(
                    "{:width$}  {:6}  {}",
                    r.name,
                    r.kind().to_string(),
                    r.summary
                );
            }
            ExitCode::Ok
        }
        Some(name) => match registry.get(name) {
            Some(r) => {
                print!("{}", describe(r));
                ExitCode::Ok
            }
            None => {
                let hint = did_you_mean(name, registry.iter().map(|r| r.name))
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                eprintln!(
                    "error: no stage kind `{name}`{hint} (run `lanparty stages` for the list)"
                );
                ExitCode::ConfigError
            }
        },
    }
}

impl From<BenchArgs> for crate::bench::Args {
    fn from(a: BenchArgs) -> Self {
        crate::bench::Args {
            relay: a.relay,
            pin: a.pin,
            server_name: a.server_name,
            peers: a.peers,
            rooms: a.rooms,
            size: a.size,
            rate: a.rate,
            seconds: a.seconds,
            tick_us: a.tick_us,
            json: a.json,
            direct: a.direct,
        }
    }
}

fn cert_new(dir: &std::path::Path, names: &[String]) -> ExitCode {
    let files = lanparty_transports::tls::SelfSignedFiles::in_dir(dir);
    match lanparty_transports::tls::generate_self_signed(&files, names) {
        Ok(_) => {
            println!(
                "wrote {} (give this to players to pin) and {} (keep private)",
                files.cert_der.display(),
                files.key_der.display()
            );
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::ConfigError
        }
    }
}

fn test(files: &[PathBuf]) -> ExitCode {
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in files {
        match run_test_file(file) {
            Ok(result) => {
                let about = result
                    .description
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default();
                println!("{}{about}", file.display());
                for case in result.cases {
                    match case.failure {
                        None => {
                            passed += 1;
                            println!("  ok      {}", case.name);
                        }
                        Some(why) => {
                            failed += 1;
                            println!("  FAILED  {}\n          {why}", case.name);
                        }
                    }
                }
            }
            Err(errors) => {
                failed += 1;
                println!("{}", file.display());
                println!("  FAILED  (file could not be loaded)");
                for e in &errors.0 {
                    println!("          {e}");
                }
            }
        }
    }
    println!("pipeline-tests: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::TestsFailed
    }
}
