//! Host-side bindings of the `uphost:plugin` world, one module per
//! supported minor of the contract (`wit/v0.1`, `wit/v0.2`), like Zed's
//! `since_vX`: the newest is what the host is written against; an older
//! minor reuses the newest's interfaces where they did not change (the
//! imports `node-exec`, `log`, `state`), and has its own `types` and export
//! where they did, converted at the edge ([`PluginPre`]).

pub use latest::*;

/// `uphost:plugin@0.2.0`, the contract the host is written against.
pub mod latest {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "service-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "uphost:plugin/types.node-list": super::NodeList },
    });

    /// The interface a 0.2 plugin exports its hooks in; each hook is named
    /// as its phase (`Phase::as_str`).
    pub const PLUGIN_EXPORT: &str = "uphost:plugin/plugin@0.2.0";
}

/// `uphost:plugin@0.1.0`: its own `types` (the context has no `targets`)
/// and `plugin` export; the imports are 0.2's, unchanged.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "service-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "uphost:plugin/types.node-list": super::NodeList,
            "uphost:plugin/node-exec": super::latest::uphost::plugin::node_exec,
            "uphost:plugin/log": super::latest::uphost::plugin::log,
            "uphost:plugin/state": super::latest::uphost::plugin::state,
        },
    });

    /// The interface a 0.1 plugin exports its hooks in.
    pub const PLUGIN_EXPORT: &str = "uphost:plugin/plugin@0.1.0";
}

use latest::uphost::plugin::types;

/// The host side of a `node-list` handle: nodes of the service, shared.
pub struct NodeList(pub std::sync::Arc<crate::config::NodeSet>);

/// A minor of the contract the host loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Contract {
    /// `uphost:plugin@0.1.x`: no `targets` in the context.
    #[serde(rename = "0.1")]
    V0_1,
    /// `uphost:plugin@0.2.x`.
    #[serde(rename = "0.2")]
    V0_2,
}

impl Contract {
    /// Every minor this host loads, oldest first.
    pub const SUPPORTED: [Contract; 2] = [Contract::V0_1, Contract::V0_2];

    /// The minor of an exported interface version (`0.2.0` → 0.2).
    pub fn of_version(version: &str) -> Option<Contract> {
        let mut parts = version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("1")) => Some(Contract::V0_1),
            (Some("0"), Some("2")) => Some(Contract::V0_2),
            _ => None,
        }
    }

    /// `0.1`, `0.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1",
            Contract::V0_2 => "0.2",
        }
    }

    /// Whether a plugin of this minor can see a run's targets. A 0.1
    /// plugin cannot: it would act on every node of its service.
    pub fn sees_targets(self) -> bool {
        self >= Contract::V0_2
    }
}

/// A plugin pre-instantiated against the minor it was built for.
pub enum PluginPre<T: 'static> {
    /// Built against 0.1.
    V0_1(v0_1::ServicePluginPre<T>),
    /// Built against 0.2.
    V0_2(latest::ServicePluginPre<T>),
}

impl<T: 'static> Clone for PluginPre<T> {
    fn clone(&self) -> Self {
        match self {
            PluginPre::V0_1(p) => PluginPre::V0_1(p.clone()),
            PluginPre::V0_2(p) => PluginPre::V0_2(p.clone()),
        }
    }
}

impl<T: 'static> PluginPre<T> {
    /// The engine (compiler tier) the plugin was compiled for: its stores
    /// must be of the same one.
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            PluginPre::V0_1(p) => p.engine(),
            PluginPre::V0_2(p) => p.engine(),
        }
    }

    /// Which minor.
    pub fn contract(&self) -> Contract {
        match self {
            PluginPre::V0_1(_) => Contract::V0_1,
            PluginPre::V0_2(_) => Contract::V0_2,
        }
    }
}

/// 0.1's view of a node (the same record).
pub fn node_v0_1(n: types::Node) -> v0_1::uphost::plugin::types::Node {
    v0_1::uphost::plugin::types::Node {
        name: n.name,
        address: n.address,
        roles: n.roles,
    }
}

/// A 0.1 description in the host's (0.2) types: the same records.
pub fn plugin_info_from_v0_1(i: v0_1::uphost::plugin::types::PluginInfo) -> types::PluginInfo {
    use v0_1::uphost::plugin::types as old;
    types::PluginInfo {
        name: i.name,
        version: i.version,
        description: i.description,
        depends_on: i.depends_on,
        capabilities: i
            .capabilities
            .into_iter()
            .map(|c| types::CommandCapability {
                program: c.program,
                args: c.args,
                access: match c.access {
                    old::Access::ReadOnly => types::Access::ReadOnly,
                    old::Access::Mutating => types::Access::Mutating,
                },
                env: c.env,
                reason: c.reason,
            })
            .collect(),
        rollout: match i.rollout {
            old::Rollout::Parallel => types::Rollout::Parallel,
            old::Rollout::Serial(n) => types::Rollout::Serial(n),
            old::Rollout::SerialPercent(p) => types::Rollout::SerialPercent(p),
            old::Rollout::OneAtATime => types::Rollout::OneAtATime,
        },
        reversible: i.reversible,
        releases: None,
        node_guard: false,
        reboots: false,
        ok_to_stop: false,
        probes: Vec::new(),
    }
}

/// The run mode in 0.1's types.
pub fn mode_v0_1(m: types::Mode) -> v0_1::uphost::plugin::types::Mode {
    match m {
        types::Mode::MajorUpgrade => v0_1::uphost::plugin::types::Mode::MajorUpgrade,
        types::Mode::MinorUpdate => v0_1::uphost::plugin::types::Mode::MinorUpdate,
    }
}
