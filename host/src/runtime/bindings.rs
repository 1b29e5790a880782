//! Host-side bindings of the `uphost:plugin` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "service-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "uphost:plugin/types.node-list": crate::runtime::host::NodeList },
});
