//! Building a room's pipeline from configuration: the `room:` section (or
//! a room policy merged over it) is checked stage by stage into a
//! [`PipelineTemplate`], which every new room instantiates. Configuration
//! in, a template out; nothing per frame happens here.

use std::sync::Arc;

use figment::Figment;

use super::{FilterSlot, Pipeline};
use crate::config::{ConfigError, ConfigErrors, RoomPolicy, RoomSpec, StageSpec};
use crate::registry::{FilterFactory, Registry, RouterFactory, StageBuild, StageKind};
use crate::stage::StageCounters;

/// One filter of a template: its kind, its label in the pipeline
/// (`ingress[0]:jumbo`) and how to make an instance.
#[derive(Clone)]
pub(super) struct FilterTemplate {
    pub(super) kind: &'static str,
    pub(super) label: Arc<str>,
    pub(super) factory: FilterFactory,
}

/// A checked pipeline description: what every new room is built from.
#[derive(Clone)]
pub struct PipelineTemplate {
    pub(super) ingress: Vec<FilterTemplate>,
    router_kind: &'static str,
    router: RouterFactory,
    pub(super) egress: Vec<FilterTemplate>,
    mtu: u16,
}

impl std::fmt::Debug for PipelineTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineTemplate")
            .field(
                "ingress",
                &self.ingress.iter().map(|t| t.kind).collect::<Vec<_>>(),
            )
            .field("router", &self.router_kind)
            .field(
                "egress",
                &self.egress.iter().map(|t| t.kind).collect::<Vec<_>>(),
            )
            .field("mtu", &self.mtu)
            .finish()
    }
}

fn build_filters(
    specs: &[StageSpec],
    list: &str,
    prefix: &str,
    figment: Option<&Figment>,
    registry: &Registry,
    errors: &mut ConfigErrors,
) -> Vec<FilterTemplate> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("{prefix}{list}[{i}]");
        let config = match spec.resolve(figment, &path) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let registration = match registry.lookup(&config, StageKind::Filter) {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let StageBuild::Filter { sides, build } = registration.build else {
            continue;
        };
        let allowed = if list == "ingress" {
            sides.ingress()
        } else {
            sides.egress()
        };
        if !allowed {
            let other = if list == "ingress" {
                "egress"
            } else {
                "ingress"
            };
            errors.push(config.error(
                "type",
                format!(
                    "`{}` is an {other} filter; move it under `{prefix}{other}`",
                    registration.name
                ),
            ));
            continue;
        }
        match build(&config) {
            Ok(factory) => out.push(FilterTemplate {
                kind: registration.name,
                label: format!("{list}[{i}]:{}", registration.name).into(),
                factory,
            }),
            Err(e) => errors.extend(e),
        }
    }
    out
}

impl PipelineTemplate {
    /// Builds a template from a `room:` section, collecting every error.
    /// `figment` (when the section came from files) lets errors name files.
    pub fn build(
        room: &RoomSpec,
        figment: Option<&Figment>,
        registry: &Registry,
    ) -> Result<PipelineTemplate, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let ingress = build_filters(
            &room.ingress,
            "ingress",
            "room.",
            figment,
            registry,
            &mut errors,
        );
        let egress = build_filters(
            &room.egress,
            "egress",
            "room.",
            figment,
            registry,
            &mut errors,
        );
        let router = room
            .router
            .resolve(figment, "room.router")
            .map_err(|e| vec![e])
            .and_then(|config| {
                let registration = registry
                    .lookup(&config, StageKind::Router)
                    .map_err(|e| vec![e])?;
                match registration.build {
                    StageBuild::Router { build } => build(&config).map(|f| (registration.name, f)),
                    _ => Err(vec![ConfigError::new(None, "room.router", "not a router")]),
                }
            });
        match router {
            Ok((router_kind, router)) => errors.into_result(PipelineTemplate {
                ingress,
                router_kind,
                router,
                egress,
                mtu: room.mtu,
            }),
            Err(e) => {
                errors.extend(e);
                Err(errors)
            }
        }
    }

    /// The template for a room with a policy: `base` (the relay's `room:`
    /// section) with the policy's MTU, its filters of a kind the base has
    /// replacing (retuning) the base's, and its others appended. Errors in
    /// the policy's own entries name the policy file (`policy_figment`).
    pub fn with_policy(
        base: &RoomSpec,
        policy: &RoomPolicy,
        policy_figment: Option<&Figment>,
        registry: &Registry,
    ) -> Result<PipelineTemplate, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        build_filters(
            &policy.ingress,
            "ingress",
            "",
            policy_figment,
            registry,
            &mut errors,
        );
        build_filters(
            &policy.egress,
            "egress",
            "",
            policy_figment,
            registry,
            &mut errors,
        );
        if !errors.0.is_empty() {
            return Err(errors);
        }
        let merge = |base: &[StageSpec], over: &[StageSpec]| {
            let mut merged = base.to_vec();
            for spec in over {
                match merged.iter().position(|b| b.kind() == spec.kind()) {
                    Some(i) => merged[i] = spec.clone(),
                    None => merged.push(spec.clone()),
                }
            }
            merged
        };
        let room = RoomSpec {
            mtu: policy.mtu.unwrap_or(base.mtu),
            ingress: merge(&base.ingress, &policy.ingress),
            router: base.router.clone(),
            egress: merge(&base.egress, &policy.egress),
        };
        PipelineTemplate::build(&room, None, registry)
    }

    /// The room MTU the template was written with.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The filter kinds, ingress then egress, for logs.
    pub fn filter_kinds(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        (
            self.ingress.iter().map(|t| t.kind).collect(),
            self.egress.iter().map(|t| t.kind).collect(),
        )
    }

    /// A fresh pipeline for the new room `room`.
    pub fn instantiate(&self, room: &str) -> Pipeline {
        let slot = |t: &FilterTemplate| FilterSlot {
            kind: t.kind,
            label: t.label.clone(),
            filter: (t.factory)(),
            counters: StageCounters::default(),
        };
        Pipeline {
            room: room.into(),
            mtu: self.mtu,
            links: Vec::new(),
            ingress: self.ingress.iter().map(slot).collect(),
            router_kind: self.router_kind,
            router: (self.router)(),
            router_counters: StageCounters::default(),
            egress: self.egress.iter().map(slot).collect(),
            pipeline_counters: StageCounters::default(),
            destinations: Vec::new(),
            delivered: 0,
            last_tick: None,
            owners: crate::keyed_hash::keyed_map(),
            egress_drops: Vec::new(),
        }
    }
}
