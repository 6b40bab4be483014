//! The one place that names every stage crate, so that the linker keeps
//! their `inventory` registrations. A crate that nothing names is dropped
//! from the binary silently; add new stage crates here.

use lanparty_filters as _;
use lanparty_ports as _;
use lanparty_transports as _;

/// The stage crates linked into this binary, for `lanparty --version`.
pub const STAGE_CRATES: &[&str] = &[
    "lanparty-core",
    "lanparty-filters",
    "lanparty-ports",
    "lanparty-transports",
];
