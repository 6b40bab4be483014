//! The `lanparty` binary: relay, gateway and client in one.

#![warn(unused_crate_dependencies)]

use clap as _;
use figment as _;
use lanparty_core as _;
use lanparty_filters as _;
use lanparty_ports as _;
use lanparty_transports as _;
#[cfg(unix)]
use libc as _;
use serde_json as _;
use tokio as _;
use tracing as _;
use tracing_subscriber as _;

fn main() -> std::process::ExitCode {
    lanparty::main()
}
