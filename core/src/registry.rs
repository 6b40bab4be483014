//! The stage registry: every stage kind registers itself once, and configs
//! name kinds by their `type:`.
//!
//! A stage kind is declared once, on its settings struct, with
//! [`crate::stage_kind`]: the fields are the keys (their doc comments the
//! key docs, `#[key(default = …)]` their defaults, their types the
//! [`KeyType`] names), the struct's doc comment is the summary, and the
//! attribute registers the kind with [`inventory`]:
//!
//! ```text
//! /// Drops what I do not like.
//! #[lanparty_core::stage_kind(filter(ingress), name = "my-filter",
//!     example = "ingress: [ { type: my-filter } ]", build = build)]
//! pub struct MyFilterSettings {}
//! ```
//!
//! A crate that the binary never names is not linked, and its
//! registrations silently vanish: a binary must reference every stage crate
//! (`use my_filters as _;`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::config::{ConfigError, StageConfig};
use crate::runtime::Port;
use crate::stage::{Filter, FilterSides, Router};

/// Makes a fresh filter instance for a new room.
pub type FilterFactory = Arc<dyn Fn() -> Box<dyn Filter> + Send + Sync>;
/// Makes a fresh router instance for a new room.
pub type RouterFactory = Arc<dyn Fn() -> Box<dyn Router> + Send + Sync>;

/// The result of building a stage from its config entry.
pub type BuildResult<T> = Result<T, Vec<ConfigError>>;

/// How a stage kind turns its config entry into something runnable.
#[derive(Clone, Copy)]
pub enum StageBuild {
    /// A filter kind.
    Filter {
        /// Where it may be placed.
        sides: FilterSides,
        /// Parses the entry; the factory makes one instance per room.
        build: fn(&StageConfig) -> BuildResult<FilterFactory>,
    },
    /// A router kind.
    Router {
        /// Parses the entry; the factory makes one instance per room.
        build: fn(&StageConfig) -> BuildResult<RouterFactory>,
    },
    /// A port kind. Building must not open devices or sockets, so that
    /// `lanparty check` can build every port.
    Port {
        /// Parses the entry into a port ready to run.
        build: fn(&StageConfig) -> BuildResult<Box<dyn Port>>,
    },
}

/// Makes a [`FilterFactory`] that builds `make(&settings)` for every room.
/// The settings are parsed once and shared by every room's instance.
pub fn filter_factory<S, F>(settings: S, make: fn(&S) -> F) -> FilterFactory
where
    S: Send + Sync + 'static,
    F: Filter + 'static,
{
    let settings = Arc::new(settings);
    Arc::new(move || Box::new(make(&settings)))
}

/// The kind of a stage, for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageKind {
    /// Owns links.
    Port,
    /// Judges frames.
    Filter,
    /// Chooses destinations.
    Router,
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StageKind::Port => "port",
            StageKind::Filter => "filter",
            StageKind::Router => "router",
        })
    }
}

/// The documentation of one config key of a stage kind.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key.
    pub name: &'static str,
    /// Its type, as a person would write it (`integer`, `duration`, …).
    pub ty: &'static str,
    /// Its default, or `required`.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// How a config key's type reads in `lanparty stages` (`integer`,
/// `duration`, …): `#[stage_kind]` documents each key with its field
/// type's name unless the key says `ty = "…"`.
pub trait KeyType {
    /// The type as a person would write it.
    const NAME: &'static str;
}

macro_rules! key_types {
    ($($name:literal: $($ty:ty),+;)*) => {
        $($(impl KeyType for $ty { const NAME: &'static str = $name; })+)*
    };
}

key_types! {
    "integer": u8, u16, u32, u64, usize;
    "bool": bool;
    "string": String;
    "path": std::path::PathBuf;
    "IPv4": std::net::Ipv4Addr;
    "list of strings": Vec<String>;
    "list of integers": Vec<u16>, Vec<u32>;
    "duration": crate::config::ConfigDuration;
    "size": crate::config::ConfigSize;
    "MAC": crate::wire::MacAddr;
    "client | gateway | lan | host": crate::stage::LinkRole;
    "list of client | gateway | lan | host": Vec<crate::stage::LinkRole>;
    "client | gateway": crate::control::PeerRole;
}

/// An optional key reads as its value's type.
impl<T: KeyType> KeyType for Option<T> {
    const NAME: &'static str = T::NAME;
}

/// One stage kind's registration.
pub struct StageRegistration {
    /// The `type:` name, kebab-case.
    pub name: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Its config keys.
    pub keys: &'static [KeyDoc],
    /// An example YAML entry.
    pub example: &'static str,
    /// How to build it.
    pub build: StageBuild,
}

impl StageRegistration {
    /// Whether this is a port, filter or router.
    pub fn kind(&self) -> StageKind {
        match self.build {
            StageBuild::Filter { .. } => StageKind::Filter,
            StageBuild::Router { .. } => StageKind::Router,
            StageBuild::Port { .. } => StageKind::Port,
        }
    }
}

impl fmt::Debug for StageRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageRegistration")
            .field("name", &self.name)
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

inventory::collect!(StageRegistration);

/// Why the registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two registrations share a name.
    #[error("stage kind `{0}` is registered twice; every stage kind needs a unique name")]
    Duplicate(&'static str),
}

/// All registered stage kinds, by name.
#[derive(Debug)]
pub struct Registry {
    stages: BTreeMap<&'static str, &'static StageRegistration>,
}

impl Registry {
    /// Builds a registry from registrations, failing on duplicate names.
    pub fn build(
        registrations: impl IntoIterator<Item = &'static StageRegistration>,
    ) -> Result<Registry, RegistryError> {
        let mut stages = BTreeMap::new();
        for registration in registrations {
            if stages.insert(registration.name, registration).is_some() {
                return Err(RegistryError::Duplicate(registration.name));
            }
        }
        Ok(Registry { stages })
    }

    /// The registry of everything linked into this binary, built once.
    pub fn global() -> Result<&'static Registry, RegistryError> {
        static GLOBAL: OnceLock<Result<Registry, RegistryError>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Registry::build(inventory::iter::<StageRegistration>))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Every registration, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &'static StageRegistration> + '_ {
        self.stages.values().copied()
    }

    /// The registration named `name`.
    pub fn get(&self, name: &str) -> Option<&'static StageRegistration> {
        self.stages.get(name).copied()
    }

    /// The registration for a config entry, checking that it is of the
    /// expected kind; the error suggests near names.
    pub fn lookup(
        &self,
        config: &StageConfig,
        want: StageKind,
    ) -> Result<&'static StageRegistration, ConfigError> {
        let Some(registration) = self.get(&config.kind) else {
            let mut message = format!("unknown {want} type `{}`", config.kind);
            let candidates = self.iter().filter(|r| r.kind() == want).map(|r| r.name);
            if let Some(near) = did_you_mean(&config.kind, candidates) {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            message.push_str(
                " (run `lanparty stages` for the list; a stage from a custom crate is only there \
                 if the binary references that crate, e.g. `use my_filters as _;`)",
            );
            return Err(config.error("type", message));
        };
        if registration.kind() != want {
            return Err(config.error(
                "type",
                format!(
                    "`{}` is a {}, but a {want} is expected here",
                    config.kind,
                    registration.kind()
                ),
            ));
        }
        Ok(registration)
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be
/// a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance between two strings, by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("switch", "switch"), 0);
        assert_eq!(edit_distance("swtich", "switch"), 2);
        assert_eq!(edit_distance("", "hub"), 3);
        assert_eq!(did_you_mean("swich", ["switch", "hub"]), Some("switch"));
        assert_eq!(did_you_mean("hbu", ["switch", "hub"]), Some("hub"));
        assert_eq!(did_you_mean("firewall", ["switch", "hub"]), None);
    }

    #[test]
    fn duplicates_fail_loudly() {
        fn refuse(_: &StageConfig) -> BuildResult<RouterFactory> {
            Err(vec![])
        }
        const fn router(name: &'static str) -> StageRegistration {
            StageRegistration {
                name,
                summary: "",
                keys: &[],
                example: "",
                build: StageBuild::Router { build: refuse },
            }
        }
        static A: StageRegistration = router("same");
        static B: StageRegistration = router("same");
        assert_eq!(
            Registry::build([&A, &B]).unwrap_err(),
            RegistryError::Duplicate("same")
        );
        assert!(Registry::build([&A]).is_ok());
    }

    #[test]
    fn global_registry_has_the_builtin_routers() {
        let registry = Registry::global().unwrap();
        assert_eq!(registry.get("switch").unwrap().kind(), StageKind::Router);
        assert_eq!(registry.get("hub").unwrap().kind(), StageKind::Router);
        let config = StageConfig::from_yaml("swich", "").unwrap();
        let err = registry.lookup(&config, StageKind::Router).unwrap_err();
        assert!(err.message.contains("did you mean `switch`"), "{err}");
        assert!(err.message.contains("use my_filters as _"), "{err}");
        let config = StageConfig::from_yaml("switch", "").unwrap();
        let err = registry.lookup(&config, StageKind::Filter).unwrap_err();
        assert!(err.message.contains("is a router"), "{err}");
    }
}
