//! Hostile test plugin `limit-escape`: a plugin that ignores the run's
//! targets and changes every node of its service in `pre-upgrade`; under
//! `--limit` the host must refuse every command on a node outside it (see
//! tests/hostile.rs).
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-limit-escape", "a hostile plugin (tests only)")
            .rollout(Rollout::Parallel)
            .capability(Capability::read_only("true", &["look", "*"]))
            .capability(Capability::mutating("true", &["change", "*"]))
    }
    fn pre_upgrade(cx: &Cx) -> Result<()> {
        // Read-only commands may look at every node of the service.
        for n in cx.nodes() {
            cx.run(&n.name, "true", &["look", &n.name])?;
        }
        for n in cx.nodes() {
            cx.run(&n.name, "true", &["change", &n.name])?;
        }
        Ok(())
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        cx.run(&node.name, "true", &["change", &node.name])?;
        Ok(())
    }
}

export_plugin!(H);
