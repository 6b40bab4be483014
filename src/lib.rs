//! The `lanparty` command line: `run`, `check`, `stages` and `test`.
//!
//! A custom binary that links its own stage crates calls [`main`] after
//! naming them (`use my_filters as _;`), and gets the whole CLI.

mod admin_cli;
mod bench;
mod cli;
mod logging;
pub mod stages;
mod status_text;

pub use cli::{ExitCode, main, run_cli};
