//! Configuration: YAML files through figment, then `LANPARTY_…`
//! environment overrides, then `--set key.path=value`. Unknown keys are
//! errors everywhere; every error names the file, the key path and what was
//! expected.

mod duration;
mod error;
mod node;
mod policy;
mod size;
mod stage_spec;
mod text;
mod yaml;

pub use duration::{ConfigDuration, parse_duration};
pub use error::{ConfigError, ConfigErrors, join_key};
pub use node::{
    ADMIN_SOCKET_DIR, AdminSection, ConfigSources, DEFAULT_MTU, ENV_PREFIX, ENV_SEPARATOR,
    MetricsSection, NodeConfig, NodeSection, RoomSpec, RuntimeSettings, check_admin_socket,
    default_admin_socket, load_node, origin_of, parse_set,
};
pub use policy::{
    Credentials, GatewayRule, MIN_ITERATIONS, PASSWORD_SCHEME, PasswordHash, RoomPolicy,
    RoomsSection, policy_room_code,
};
pub use size::{ConfigSize, parse_size};
pub use stage_spec::{StageConfig, StageSpec};
pub use text::{optional_text_or_number, text_or_number};
pub use yaml::Yaml;

#[cfg(test)]
mod tests;
