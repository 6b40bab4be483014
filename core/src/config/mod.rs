//! Configuration: YAML files through figment, then `LANPARTY_…`
//! environment overrides, then `--set key.path=value`. Unknown keys are
//! errors everywhere; every error names the file, the key path and what was
//! expected.

mod duration;
mod error;
mod node;
mod password;
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
pub use password::{
    ARGON2_LANES, ARGON2_MAX_LANES, ARGON2_MAX_MEMORY_KIB, ARGON2_MAX_PASSES, ARGON2_MEMORY_KIB,
    ARGON2_MIN_MEMORY_KIB, ARGON2_MIN_WORK_KIB, ARGON2_PASSES, Argon2idHash, MIN_ITERATIONS,
    PBKDF2_SCHEME, PasswordHash, Pbkdf2Hash, check_argon2_costs,
};
pub use policy::{Credentials, GatewayRule, RoomPolicy, RoomsSection, policy_room_code};
pub use size::{ConfigSize, parse_size};
pub use stage_spec::{StageConfig, StageSpec};
pub use text::{optional_text_or_number, text_or_number};
pub use yaml::{Yaml, default_from_text};

#[cfg(test)]
mod tests;
