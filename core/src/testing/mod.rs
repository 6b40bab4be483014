//! The pipeline test harness, frame builders, and YAML pipeline tests.
