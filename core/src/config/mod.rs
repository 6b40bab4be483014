//! Configuration: YAML files through figment, then `LANPARTY_…`
//! environment overrides, then `--set key.path=value`. Unknown keys are
//! errors everywhere; every error names the file, the key path and what was
//! expected.

mod duration;
mod error;
mod node;
mod stage_spec;
mod yaml;

pub use duration::{parse_duration, ConfigDuration};
pub use error::{join_key, ConfigError, ConfigErrors};
pub use node::{
    load_node, parse_set, ConfigSources, NodeConfig, NodeSection, RoomSpec, RuntimeSettings,
    DEFAULT_MTU, ENV_PREFIX, ENV_SEPARATOR,
};
pub use stage_spec::{StageConfig, StageSpec};
pub use yaml::Yaml;

#[cfg(test)]
mod tests;
