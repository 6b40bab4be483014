//! `lanparty status`, `lanparty capture` and `lanparty room`: talking to a
//! running node over its admin socket, and making password hashes.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use lanparty_core::config::{ADMIN_SOCKET_DIR, ConfigSources};
use lanparty_core::config::{ARGON2_LANES, ARGON2_MEMORY_KIB, ARGON2_PASSES, check_argon2_costs};
use lanparty_core::runtime::Node;
#[cfg(unix)]
use lanparty_core::runtime::admin;
use lanparty_transports::credentials::{Argon2Cost, hash_password};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::cli::ExitCode;

/// Where to find a node's admin socket.
#[derive(Debug, clap::Args)]
pub struct SocketArgs {
    /// The node's config files: its `admin.socket` is used (default
    /// /run/lanparty/NODE_NAME.sock, NODE_NAME-MAC.sock for a client).
    /// Without configs or --socket: the one node running here.
    #[arg(value_name = "CONFIG")]
    configs: Vec<PathBuf>,
    /// The overrides the node was started with, if they change its name or
    /// MAC (repeatable).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// The admin socket, instead of reading it from the config.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl SocketArgs {
    fn path(&self) -> Result<PathBuf, String> {
        if let Some(path) = &self.socket {
            return Ok(path.clone());
        }
        if self.configs.is_empty() {
            return only_socket_in(std::path::Path::new(ADMIN_SOCKET_DIR));
        }
        let node = Node::build(&ConfigSources::new(self.configs.clone(), self.sets.clone()))
            .map_err(|e| e.to_string())?;
        node.admin_socket.ok_or_else(|| {
            "the config turns the admin socket off (`admin.socket: off`)".to_string()
        })
    }
}

/// The one admin socket in `dir`, or an error listing what is there.
fn only_socket_in(dir: &std::path::Path) -> Result<PathBuf, String> {
    let mut sockets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    sockets.sort();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no lanparty node runs here (no socket in {}); name the node's config or give --socket",
            dir.display()
        )),
        many => Err(format!(
            "several nodes run here; name one's config or give --socket: {}",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `lanparty status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Print the whole report as JSON (for scripts).
    #[arg(long)]
    json: bool,
}

/// `lanparty capture` arguments.
#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// The room to capture (`default` on a client or gateway).
    room: String,
    #[command(flatten)]
    socket: SocketArgs,
    /// The pcapng file to write; `-` writes to stdout (pipe into tshark or
    /// wireshark -k -i -).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: PathBuf,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    seconds: Option<Duration>,
    /// Bytes kept per frame.
    #[arg(long, default_value_t = 65535)]
    snaplen: u32,
}

/// `lanparty room` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RoomAction {
    /// Read a password or token on stdin and print the Argon2id hash to put
    /// in a room policy's `credentials` (never the password itself).
    HashPassword {
        /// Argon2id memory per check, KiB (at least 7168, with memory ×
        /// passes at least 35840; at most 262144).
        #[arg(long, default_value_t = ARGON2_MEMORY_KIB)]
        memory_kib: u32,
        /// Argon2id passes (at most 16).
        #[arg(long, default_value_t = ARGON2_PASSES)]
        passes: u32,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn fail(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::RunFailed
}

/// The admin socket is a Unix socket; Windows nodes serve status through
/// the metrics endpoint only.
#[cfg(not(unix))]
mod admin {
    /// Always an error on this platform.
    pub async fn request(
        _: &std::path::Path,
        _: &serde_json::Value,
    ) -> Result<tokio::io::Empty, String> {
        Err("the admin socket is Unix-only; on Windows use `metrics.listen` (Prometheus) for live counters".into())
    }
}

async fn fetch_status(path: &std::path::Path) -> Result<Value, String> {
    let mut stream = admin::request(path, &json!({"command": "status"})).await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .map_err(|_| "the node did not answer within 10s".to_string())?
        .map_err(|e| e.to_string())?;
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("the node answered something that is not JSON: {e}"))?;
    match value.get("error").and_then(Value::as_str) {
        Some(e) => Err(e.to_string()),
        None => Ok(value),
    }
}

/// Runs `lanparty status`.
pub fn status(args: &StatusArgs) -> ExitCode {
    let result = args
        .socket
        .path()
        .and_then(|path| runtime()?.block_on(fetch_status(&path)));
    match result {
        Ok(report) if args.json => {
            println!("{report:#}");
            ExitCode::Ok
        }
        Ok(report) => match crate::status_text::render(&report) {
            Ok(text) => {
                print!("{text}");
                ExitCode::Ok
            }
            Err(e) => fail(&e),
        },
        Err(e) => fail(&e),
    }
}

/// Runs `lanparty capture`.
pub fn capture(args: &CaptureArgs) -> ExitCode {
    let result = args
        .socket
        .path()
        .and_then(|path| runtime()?.block_on(capture_inner(args, &path)));
    match result {
        Ok(frames) => {
            eprintln!("captured {frames} frames from room {}", args.room);
            ExitCode::Ok
        }
        Err(e) => fail(&e),
    }
}

async fn capture_inner(args: &CaptureArgs, path: &std::path::Path) -> Result<u64, String> {
    let stream = admin::request(
        path,
        &json!({"command": "capture", "room": args.room, "snaplen": args.snaplen}),
    )
    .await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| format!("no answer from the node: {e}"))?;
    let answer: Value = serde_json::from_str(line.trim())
        .map_err(|_| format!("unexpected answer from the node: {}", line.trim()))?;
    if let Some(e) = answer.get("error").and_then(Value::as_str) {
        return Err(e.to_string());
    }
    let mut out: Box<dyn std::io::Write> = if args.write.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.write)
                .map_err(|e| format!("cannot create {}: {e}", args.write.display()))?,
        ))
    };
    let deadline = args.seconds.map(|d| tokio::time::Instant::now() + d);
    let mut blocks = BlockCounter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if args.count.is_some_and(|c| blocks.packets >= c) {
            break;
        }
        let read = reader.read(&mut buf);
        let n = tokio::select! {
            n = read => n.map_err(|e| format!("capture stream: {e}"))?,
            _ = tokio::signal::ctrl_c() => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
        };
        if n == 0 {
            break;
        }
        // Write whole blocks only, so a capture cut by --count or Ctrl-C
        // is still a valid file.
        let whole = blocks.feed(&buf[..n], args.count);
        out.write_all(&whole)
            .map_err(|e| format!("cannot write {}: {e}", args.write.display()))?;
    }
    out.flush()
        .map_err(|e| format!("cannot write {}: {e}", args.write.display()))?;
    Ok(blocks.packets)
}

/// Splits a pcapng stream into whole blocks and counts packet blocks.
#[derive(Default)]
struct BlockCounter {
    pending: Vec<u8>,
    packets: u64,
}

impl BlockCounter {
    /// Takes more stream bytes; returns the whole blocks among them, up to
    /// `limit` packets.
    fn feed(&mut self, bytes: &[u8], limit: Option<u64>) -> Vec<u8> {
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while self.pending.len() >= at + 8 {
            let kind = u32::from_le_bytes([
                self.pending[at],
                self.pending[at + 1],
                self.pending[at + 2],
                self.pending[at + 3],
            ]);
            let len = u32::from_le_bytes([
                self.pending[at + 4],
                self.pending[at + 5],
                self.pending[at + 6],
                self.pending[at + 7],
            ]) as usize;
            if len < 12 || self.pending.len() < at + len {
                break;
            }
            if kind == 6 {
                if limit.is_some_and(|l| self.packets >= l) {
                    break;
                }
                self.packets += 1;
            }
            at += len;
        }
        self.pending.drain(..at).collect()
    }
}

/// Parses a number of seconds (`--seconds 2.5`): positive, at most a day.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0 && *s <= 86_400.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{text}` is not a number of seconds in (0, 86400]"))
}

/// Runs `lanparty room …`.
pub fn room(action: &RoomAction) -> ExitCode {
    match action {
        RoomAction::HashPassword { memory_kib, passes } => {
            // Say so before asking for a password the costs would refuse.
            if let Err(e) = check_argon2_costs(*memory_kib, *passes, ARGON2_LANES) {
                eprintln!("error: {e}");
                return ExitCode::ConfigError;
            }
            let password = match read_password() {
                Ok(p) => p,
                Err(e) => return fail(&e),
            };
            let cost = Argon2Cost {
                memory_kib: *memory_kib,
                passes: *passes,
            };
            match hash_password(&password, cost) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::Ok
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::ConfigError
                }
            }
        }
    }
}

/// Reads one line from stdin; on a terminal, prompts and turns echo off.
fn read_password() -> Result<String, String> {
    use std::io::IsTerminal;
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprint!("password (not shown): ");
    }
    let _echo = if tty { EchoOff::new() } else { None };
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if tty {
        eprintln!();
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Terminal echo off until dropped.
struct EchoOff {
    #[cfg(unix)]
    saved: libc::termios,
}

impl EchoOff {
    #[cfg(unix)]
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0, and
        // we only call tcsetattr with a value tcgetattr produced.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return None;
            }
            Some(EchoOff { saved })
        }
    }

    #[cfg(not(unix))]
    fn new() -> Option<EchoOff> {
        None
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the settings tcgetattr returned.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_counter_passes_whole_blocks_and_stops_at_the_count() {
        let mut stream = Vec::new();
        lanparty_core::wire::pcapng::section_header(&mut stream);
        lanparty_core::wire::pcapng::interface(&mut stream, "x", 100);
        for _ in 0..3 {
            lanparty_core::wire::pcapng::packet(
                &mut stream,
                0,
                std::time::SystemTime::now(),
                &[1; 60],
                100,
            );
        }
        let mut c = BlockCounter::default();
        let first = c.feed(&stream[..30], Some(2));
        assert_eq!(first.len(), 28, "only the section header is whole");
        let rest = c.feed(&stream[30..], Some(2));
        assert_eq!(c.packets, 2);
        assert_eq!(first.len() + rest.len(), stream.len() - (28 + 60 + 4));
    }
}
