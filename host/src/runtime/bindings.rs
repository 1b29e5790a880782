//! Host-side bindings of the `uphost:plugin` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "service-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "uphost:plugin/types.node-list": NodeList },
});

/// The host side of a `node-list` handle: the service's nodes, shared.
pub struct NodeList(pub std::sync::Arc<crate::config::NodeSet>);
