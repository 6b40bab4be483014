//! The pipeline test harness, frame builders, and YAML pipeline tests.
//!
//! - [`Harness`]: a room pipeline with named virtual links and a simulated
//!   clock, for Rust tests of filters and routers.
//! - [`frames`]: builders for real frame bytes.
//! - [`run_test_file`]: the YAML pipeline tests that `lanparty test` runs.

pub mod frames;
mod harness;
mod yaml_tests;

pub use harness::{Delivery, Harness, template_from_yaml};
pub use yaml_tests::{CaseResult, FileResult, run_test_file};
