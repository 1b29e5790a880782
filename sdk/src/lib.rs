//! # uphost-sdk: write uphost service-upgrade plugins in Rust
//!
//! Implement [`Plugin`] for a unit struct and export it with
//! [`export_plugin!`]; build with `cargo build --target wasm32-wasip2
//! --profile plugin`. Hooks receive a [`Cx`]: the run's context plus the
//! host's services (run a command on a node, log, persisted state). The same
//! code runs natively in `cargo test` against [`testing::MockHost`], so a
//! plugin's logic is tested in seconds without building wasm.
//!
//! ```ignore
//! use uphost_sdk::prelude::*;
//!
//! struct Memcached;
//!
//! impl Plugin for Memcached {
//!     fn describe() -> Info {
//!         Info::new("memcached", "Restart memcached on every controller")
//!             .capability(Capability::mutating("systemctl", &["restart", "memcached"]))
//!     }
//!     fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
//!         cx.run(&node.name, "systemctl", &["restart", "memcached"])?;
//!         Ok(())
//!     }
//! }
//! export_plugin!(Memcached);
//! ```

pub mod testing;

/// The argument pattern language of capabilities (shared with the host).
pub use uphost_words::pattern;
/// Scripted command responses (shared with `uphost test`).
pub use uphost_words::script;

mod cx;
pub mod deploy;
mod error;
mod info;
pub mod releases;

#[doc(hidden)]
pub mod guest;

pub use cx::{
    Command, Context, Cx, ExecError, ExecOutput, ExecRequest, Hop, HopKind, Host, Level, Mode, Node,
};
pub use error::{CommandFailed, Error, Result, ResultExt};
pub use info::{Access, Capability, Info, Probe, ProbeCheck, Releases, Rollout};

/// The WIT version this SDK builds plugins against.
pub const WIT_VERSION: &str = "0.2.0";

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::{
        Access, Capability, Cx, Error, ExecOutput, HopKind, Info, Mode, Node, Plugin, Result,
        ResultExt, Rollout, bail, export_plugin,
    };
}

/// Generated bindings for the `uphost:plugin` WIT world (used by
/// [`export_plugin!`]; plugin code does not need them).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "service-plugin",
        pub_export_macro: true,
        default_bindings_module: "uphost_sdk::bindings",
        export_macro_name: "__export_world",
    });
}

/// A service-upgrade plugin. Only `describe` and `upgrade` are required;
/// every other hook defaults to doing nothing (`rollback` defaults to an
/// error saying the plugin cannot roll back).
pub trait Plugin {
    /// Name, version, dependencies, capabilities, rollout. Runs with no
    /// capabilities: it must not call the host.
    fn describe() -> Info;

    /// Pre-flight validation (read-only: mutating commands are recorded,
    /// not executed).
    fn check(_cx: &Cx) -> Result<()> {
        Ok(())
    }

    /// Once per service before any node is upgraded.
    fn pre_upgrade(_cx: &Cx) -> Result<()> {
        Ok(())
    }

    /// Once per node that hosts the service, following the rollout.
    fn upgrade(cx: &Cx, node: &Node) -> Result<()>;

    /// Once per service after every node is upgraded.
    fn post_upgrade(_cx: &Cx) -> Result<()> {
        Ok(())
    }

    /// Deployment-wide work once every service of the run is upgraded.
    fn finalize(_cx: &Cx) -> Result<()> {
        Ok(())
    }

    /// Restore the pre-upgrade state (of the hop in `cx.ctx.hop`).
    fn rollback(_cx: &Cx) -> Result<()> {
        Err(Error::msg(
            "this plugin cannot roll back (describe() says reversible: false)",
        ))
    }

    /// A migrations-only hop of a leapfrog: run the database migrations of
    /// `cx.ctx.to_version`, nothing else. Called once per service, only for
    /// a plugin whose `describe` says `migrations_only(true)`.
    fn migrate(_cx: &Cx) -> Result<()> {
        Err(Error::msg(
            "this plugin has no migrations-only hop (describe() does not say migrations_only)",
        ))
    }

    /// The gate after a hop of a release train: is the service healthy at
    /// `cx.ctx.to_version`? Read-only, like `check`.
    fn verify(_cx: &Cx) -> Result<()> {
        Ok(())
    }

    /// A node-major run, for a plugin that declares
    /// [`Info::node_guard`]: take `node` out of the cluster before its
    /// steps.
    fn leave(_cx: &Cx, _node: &Node) -> Result<()> {
        Ok(())
    }

    /// A node-major run: bring `node` back into the cluster after its
    /// steps and verify the cluster (an error stops the run before the
    /// next node).
    fn rejoin(_cx: &Cx, _node: &Node) -> Result<()> {
        Ok(())
    }

    /// For a plugin that declares [`Info::ok_to_stop`]: may `node` be
    /// stopped now without losing the service? `Ok` if so, an error saying
    /// why not yet (the host retries). Read-only, like `check`.
    fn ok_to_stop(_cx: &Cx, _node: &Node) -> Result<()> {
        Ok(())
    }
}

/// Return early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// Export a [`Plugin`] implementation as the component's `uphost:plugin`
/// world. Use it once, at the crate root, with the type implementing
/// [`Plugin`]. On non-wasm targets it expands to nothing, so the crate's
/// native unit tests build.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct UphostExport;
            impl $crate::bindings::exports::uphost::plugin::plugin::Guest for UphostExport {
                fn describe() -> $crate::bindings::uphost::plugin::types::PluginInfo {
                    $crate::guest::describe::<$plugin>()
                }
                fn depends_on() -> ::std::vec::Vec<::std::string::String> {
                    <$plugin as $crate::Plugin>::describe().depends_on
                }
                fn check(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::check(cx))
                }
                fn pre_upgrade(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::pre_upgrade(cx))
                }
                fn upgrade(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                    node: $crate::bindings::uphost::plugin::types::Node,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    let node = $crate::guest::node(node);
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::upgrade(cx, &node))
                }
                fn post_upgrade(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::post_upgrade(cx))
                }
                fn finalize(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::finalize(cx))
                }
                fn rollback(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::rollback(cx))
                }
                fn migrate(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::migrate(cx))
                }
                fn verify(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::verify(cx))
                }
                fn leave(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                    node: $crate::bindings::uphost::plugin::types::Node,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    let node = $crate::guest::node(node);
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::leave(cx, &node))
                }
                fn rejoin(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                    node: $crate::bindings::uphost::plugin::types::Node,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    let node = $crate::guest::node(node);
                    $crate::guest::hook(ctx, |cx| <$plugin as $crate::Plugin>::rejoin(cx, &node))
                }
                fn ok_to_stop(
                    ctx: $crate::bindings::uphost::plugin::types::Context,
                    node: $crate::bindings::uphost::plugin::types::Node,
                ) -> ::core::result::Result<(), $crate::bindings::uphost::plugin::types::HookError>
                {
                    let node = $crate::guest::node(node);
                    $crate::guest::hook(ctx, |cx| {
                        <$plugin as $crate::Plugin>::ok_to_stop(cx, &node)
                    })
                }
            }
    $crate::bindings::__export_world!(UphostExport with_types_in $crate::bindings);
        };
    };
}
