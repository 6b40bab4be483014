//! The core of lanparty: everything every stage and every role leans on.
//!
//! - [`wire`]: MAC addresses, Ethernet/VLAN headers, the per-frame view,
//!   MTU arithmetic and the overlay datagram header.
//! - [`control`]: the QUIC control-plane messages and their framing codec.
//! - [`stage`]: the filter, router and port contracts, links and counters.
//! - [`registry`]: the `inventory`-filled table of stage kinds.
//! - [`config`]: YAML + environment + `--set` configuration.
//! - [`pipeline`]: the sans-IO room pipeline (filters, router, counters).
//! - [`room`]: a sans-IO room: its pipeline, the links' outputs, captures
//!   and the frame log (commands and frames in with the time).
//! - [`queue`]: the sans-IO egress scheduler in front of a QUIC connection
//!   (FQ-CoDel or FIFO) and the feeder that keeps quinn's buffer short.
//! - [`keyed_hash`]: the fast keyed hasher of per-frame tables (MAC
//!   addresses, link ids).
//! - [`routers`]: the built-in `switch` and `hub` routers.
//! - [`runtime`]: the tokio runtime that drives ports and rooms.
//! - [`testing`]: the pipeline harness and YAML pipeline tests.

pub mod chunks;
pub mod config;
pub mod control;
pub mod keyed_hash;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod room;
pub mod routers;
pub mod runtime;
pub mod stage;
pub mod testing;
pub mod time;
pub mod wire;

pub use bytes::Bytes;
pub use inventory;
/// Declares a stage kind on its settings struct: keys, types, defaults,
/// docs and the registration in one place (see [`registry`]).
pub use lanparty_macros::stage_kind;
pub use serde;

// `#[stage_kind]` names `lanparty_core::…` paths, also inside this crate.
extern crate self as lanparty_core;
