//! Nova compute: rolling, in serial batches by default (computes have no
//! database access and stay RPC-pinned until nova's finalize): stop,
//! install, start, verify. Rollback reinstalls the previous version.
//!
//! In a release train: OpenStack's releases, every hop a rolling upgrade
//! (computes follow the control plane one release at a time, RPC allows
//! N-1 only). In a leapfrog the intermediate hops do nothing here (computes
//! have no database): the last hop deploys the target once.
//!
//! Parameters: `deploy`, `engine`, `registry`, `config_dir` of
//! `uphost_sdk::deploy` (packages, or kolla's `nova_compute` container).

use uphost_sdk::deploy::{self, Deploy, Unit};
use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// The plugin.
pub struct NovaCompute;

/// The unit, package and kolla container of nova-compute.
const COMPUTE: Unit = Unit {
    unit: "nova-compute",
    package: "nova-compute",
    container: "nova_compute",
};

fn cycle(cx: &Cx, node: &str, from: &str, v: &str) -> Result<()> {
    let d = Deploy::of(cx)?;
    d.stop(cx, node, COMPUTE)?;
    d.install(cx, node, COMPUTE, from, v)?;
    d.start(cx, node, COMPUTE)?;
    d.is_active(cx, node, COMPUTE)
        .map_err(|e| e.context(format!("nova-compute did not come back on {node}")))?;
    Ok(())
}

impl Plugin for NovaCompute {
    fn describe() -> Info {
        Info::new(
            "nova-compute",
            "Nova compute: rolling upgrade in serial batches",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .depends_on(&["nova"])
        .rollout(Rollout::Serial(2))
        .reversible(true)
        .releases(releases::OPENSTACK)
        .jumps(releases::OPENSTACK_SLURP)
        .migrations_only(true)
        .capabilities(deploy::capabilities(
            "nova-compute",
            "nova-compute",
            "nova_compute",
        ))
    }

    fn verify(cx: &Cx) -> Result<()> {
        Self::check(cx)
    }

    fn migrate(cx: &Cx) -> Result<()> {
        cx.info(format!(
            "{}: computes have no database; the last hop deploys {}",
            cx.ctx.to_version, cx.ctx.hop.train_to
        ));
        Ok(())
    }

    fn check(cx: &Cx) -> Result<()> {
        let d = Deploy::of(cx)?;
        for n in cx.nodes() {
            d.is_active(cx, &n.name, COMPUTE)?;
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        cycle(cx, &node.name, &cx.ctx.from_version, &cx.ctx.to_version)
    }

    fn rollback(cx: &Cx) -> Result<()> {
        for n in cx.targets() {
            cycle(cx, &n.name, &cx.ctx.to_version, &cx.ctx.from_version)?;
        }
        Ok(())
    }
}

export_plugin!(NovaCompute);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn a_compute_that_does_not_come_back_is_named() {
        let host = MockHost::for_plugin::<NovaCompute>()
            .rule(Rule::new("systemctl", &["is-active", "nova-compute"]).then(3, "failed\n"))
            .rule(Rule::new("systemctl", &["..."]))
            .rule(Rule::new("apt-get", &["..."]));
        let cx = host.cx(context("nova-compute", &["cmp1"]));
        let n = cx.nodes()[0].clone();
        let e = NovaCompute::upgrade(&cx, &n).unwrap_err().to_string();
        assert!(e.contains("did not come back on cmp1"), "{e}");
    }
}
