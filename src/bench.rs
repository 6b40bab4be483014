//! `lanparty bench`: the relay load generator, against a running relay or
//! one started in this process (on its own runtime) with the pipeline and
//! the runtime settings (`runtime.threads`) of the shipped
//! `configs/relay.yaml`.

use std::path::PathBuf;
use std::time::Duration;

use lanparty_core::config::{ConfigError, NodeConfig, RuntimeSettings, StageConfig, Yaml};
use lanparty_core::pipeline::PipelineTemplate;
use lanparty_core::registry::Registry;
use lanparty_core::runtime::Port;
use lanparty_core::runtime::{PortContext, Rooms, shutdown_pair};
use lanparty_transports::bench::{BenchOptions, BenchReport, run, run_direct};
use lanparty_transports::server::QuicServer;
use lanparty_transports::tls;

use crate::cli::ExitCode;

/// The shipped relay config, whose room pipeline the in-process relay uses.
const RELAY_CONFIG: &str = include_str!("../configs/relay.yaml");

/// `lanparty bench` arguments.
#[derive(Debug)]
pub struct Args {
    /// A running relay, or `None` for an in-process one.
    pub relay: Option<String>,
    /// Its certificate.
    pub pin: Option<PathBuf>,
    /// Its certificate name.
    pub server_name: String,
    /// Peers.
    pub peers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Frame size.
    pub size: usize,
    /// Offered rate; 0 = saturation.
    pub rate: u64,
    /// Seconds.
    pub seconds: f64,
    /// Pacing tick in microseconds.
    pub tick_us: u64,
    /// JSON output.
    pub json: bool,
    /// Direct peer-to-peer baseline, no relay.
    pub direct: bool,
}

/// The shipped relay's room pipeline and runtime settings.
fn relay_template() -> Result<(PipelineTemplate, RuntimeSettings), String> {
    use figment::providers::Format;
    let registry = Registry::global().map_err(|e| e.to_string())?;
    let figment = figment::Figment::from(Yaml::string(RELAY_CONFIG));
    let node: NodeConfig = figment.extract().map_err(|e| e.to_string())?;
    let template =
        PipelineTemplate::build(&node.room, Some(&figment), registry).map_err(|e| e.to_string())?;
    Ok((template, node.runtime))
}

/// Starts an in-process relay on its own runtime thread; returns its port,
/// certificate, and what stops it.
fn start_relay(
    dir: &std::path::Path,
) -> Result<(u16, PathBuf, lanparty_core::runtime::ShutdownTrigger), String> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nself_signed_dir: {}\nmax_peers_per_room: 1024\nmax_rooms: 1024",
        dir.display()
    );
    let config =
        StageConfig::from_yaml("quic-server", &yaml).map_err(|e: ConfigError| e.to_string())?;
    let server = QuicServer::from_config(&config).map_err(|e| format!("{e:?}"))?;
    let (template, settings) = relay_template()?;
    let (trigger, _) = shutdown_pair();
    let signal = trigger.signal();
    // The runtime the shipped relay runs on (`runtime.threads`).
    let runtime = crate::cli::runtime_builder(settings.threads, "relay")
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let rooms = Rooms::new(template, settings);
            let ctx = PortContext::new("relay", rooms, signal);
            if let Err(e) = Box::new(server).run(ctx).await {
                eprintln!("error: in-process relay: {e}");
            }
        });
    });
    let cert = dir.join("relay-cert.der");
    for _ in 0..200 {
        if cert.exists() {
            std::thread::sleep(Duration::from_millis(50));
            return Ok((port, cert, trigger));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("the in-process relay did not start".into())
}

fn print(report: &BenchReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
        return;
    }
    let offered = if report.offered_rate == 0 {
        "saturation".to_string()
    } else {
        format!("{} frames/s offered", report.offered_rate)
    };
    println!(
        "{} peers × {} rooms, {}-byte frames, {offered}\n  sent {}  (+{} refused by full send buffers)  received {}  loss {:.3} %\n  {:.0} frames/s  {:.3} Gbit/s\n  one-way latency p50 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
        report.peers,
        report.rooms,
        report.frame_size,
        report.sent,
        report.send_dropped,
        report.received,
        report.loss * 100.0,
        report.frames_per_second,
        report.gbit_per_second,
        report.latency_p50_us,
        report.latency_p99_us,
        report.latency_max_us
    );
}

/// Runs `lanparty bench`.
pub fn bench(args: Args) -> ExitCode {
    if let Err(e) = check_args(&args) {
        eprintln!("error: {e}");
        return ExitCode::ConfigError;
    }
    match bench_inner(&args) {
        Ok(report) => {
            print(&report, args.json);
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::RunFailed
        }
    }
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.size < 60 || args.size > 1412 {
        return Err(format!(
            "--size {} must be 60..=1412 (a frame in one 1414-byte datagram)",
            args.size
        ));
    }
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    Ok(())
}

fn bench_inner(args: &Args) -> Result<BenchReport, String> {
    let dir = std::env::temp_dir().join(format!("lanparty-bench-{}", std::process::id()));
    if args.direct {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("bench")
            .build()
            .map_err(|e| e.to_string())?;
        let options = BenchOptions {
            relay: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            server_name: args.server_name.clone(),
            trust: lanparty_transports::tls::Trust::Roots(Vec::new()),
            peers: 2,
            rooms: 1,
            frame_size: args.size,
            rate: args.rate,
            duration: Duration::from_secs_f64(args.seconds),
            tick: Duration::from_micros(args.tick_us),
        };
        return runtime.block_on(run_direct(options));
    }
    let (relay, trust, trigger) = match (&args.relay, &args.pin) {
        (Some(relay), Some(pin)) => {
            let addr = relay
                .parse()
                .map_err(|_| format!("--relay {relay}: give an address:port"))?;
            (
                addr,
                tls::load_pinned(pin).map_err(|e| e.to_string())?,
                None,
            )
        }
        (Some(_), None) => return Err("--relay needs --pin (the relay's relay-cert.der)".into()),
        (None, _) => {
            let (port, cert, trigger) = start_relay(&dir)?;
            (
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                tls::load_pinned(&cert).map_err(|e| e.to_string())?,
                Some(trigger),
            )
        }
    };
    let options = BenchOptions {
        relay,
        server_name: args.server_name.clone(),
        trust,
        peers: args.peers,
        rooms: args.rooms,
        frame_size: args.size,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.seconds),
        tick: Duration::from_micros(args.tick_us),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench")
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(run(options));
    if let Some(trigger) = trigger {
        trigger.trigger("bench done");
    }
    let _ = std::fs::remove_dir_all(&dir);
    report
}
