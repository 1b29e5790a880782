//! RabbitMQ cluster upgrade (major or minor version), as in the Liberty→Ocata
//! procedure: stop every node first, remove the mnesia directory, bring the
//! new version up with its new configuration, set the `ha-all` mirroring
//! policy explicitly, and validate `rabbitmqctl cluster_status`: every member
//! running, no partitions.
//!
//! Parameters: `unit` (`rabbitmq-server`), `package` (`rabbitmq-server`),
//! `mnesia_dir` (`/var/lib/rabbitmq/mnesia`; containerised deployments use
//! `/var/lib/docker/volumes/rabbitmq/_data/mnesia`).

use uphost_sdk::prelude::*;

/// The plugin.
pub struct Rabbitmq;

/// The mirroring policy the seed sets after the restart.
pub const HA_POLICY: &str = r#"{"ha-mode":"all","ha-sync-mode":"automatic"}"#;

/// Members listed in `running_nodes`, and whether `partitions` is empty.
pub fn parse_cluster_status(out: &str) -> (Vec<String>, bool) {
    let flat: String = out.split_whitespace().collect();
    let running = flat
        .split("{running_nodes,[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .map(|r| {
            r.split(',')
                .map(|n| n.trim_matches('\'').to_string())
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let no_partitions = flat.contains("{partitions,[]}");
    (running, no_partitions)
}

fn verify(cx: &Cx) -> Result<()> {
    let primary = cx.primary()?.name.clone();
    let out = cx.run(&primary, "rabbitmqctl", &["cluster_status"])?;
    let (running, no_partitions) = parse_cluster_status(&out.stdout_text());
    let missing: Vec<String> = cx
        .nodes()
        .iter()
        .map(|n| format!("rabbit@{}", n.name))
        .filter(|m| !running.contains(m))
        .collect();
    if !missing.is_empty() {
        bail!(
            "rabbitmq cluster is missing members {} (running: {})",
            missing.join(", "),
            running.join(", ")
        );
    }
    if !no_partitions {
        bail!(
            "rabbitmq cluster reports network partitions: {}",
            out.stdout_text().trim()
        );
    }
    Ok(())
}

impl Plugin for Rabbitmq {
    fn describe() -> Info {
        Info::new(
            "rabbitmq",
            "RabbitMQ cluster: stop all, reset mnesia, start new version, ha-all policy, verify",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .rollout(Rollout::Parallel)
        .reversible(false)
        .capabilities([
            Capability::read_only("rabbitmqctl", &["cluster_status"])
                .reason("verify members running and no partitions"),
            Capability::mutating("rabbitmqctl", &["set_policy", "ha-all", "", HA_POLICY])
                .reason("mirror every queue (ha-all)"),
            Capability::mutating("systemctl", &["start|stop", "rabbitmq-server"])
                .reason("stop every node before the upgrade, start after"),
            Capability::mutating(
                "rm",
                &[
                    "-rf",
                    "/var/lib/rabbitmq/mnesia|/var/lib/docker/volumes/rabbitmq/_data/mnesia",
                ],
            )
            .reason("remove the old mnesia database"),
            Capability::mutating("apt-get", &["install", "-y", "rabbitmq-server=*"])
                .reason("install the new version"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        verify(cx)
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let unit = cx.param_or("unit", "rabbitmq-server");
        for n in cx.nodes() {
            cx.run(&n.name, "systemctl", &["stop", unit])?;
        }
        cx.progress("service-down");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let mnesia = cx.param_or("mnesia_dir", "/var/lib/rabbitmq/mnesia");
        let pkg = cx.param_or("package", "rabbitmq-server");
        cx.run(&node.name, "rm", &["-rf", mnesia])?;
        cx.run(
            &node.name,
            "apt-get",
            &["install", "-y", &format!("{pkg}={}", cx.ctx.to_version)],
        )?;
        Ok(())
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        let unit = cx.param_or("unit", "rabbitmq-server");
        for n in cx.nodes() {
            cx.run(&n.name, "systemctl", &["start", unit])?;
        }
        let primary = cx.primary()?.name.clone();
        cx.run(
            &primary,
            "rabbitmqctl",
            &["set_policy", "ha-all", "", HA_POLICY],
        )?;
        verify(cx)?;
        cx.progress("service-up");
        Ok(())
    }
}

export_plugin!(Rabbitmq);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    const STATUS: &str = "[{nodes,[{disc,['rabbit@ctl1','rabbit@ctl2',                'rabbit@ctl3']}]},\n{running_nodes,['rabbit@ctl2','rabbit@ctl1',                 'rabbit@ctl3']},\n{cluster_name,<<\"rabbit@ctl3\">>}, {partitions,[]}]...done.";

    #[test]
    fn parses_the_seed_output() {
        let (running, ok) = parse_cluster_status(STATUS);
        assert_eq!(running, vec!["rabbit@ctl2", "rabbit@ctl1", "rabbit@ctl3"]);
        assert!(ok);
    }

    #[test]
    fn post_upgrade_sets_ha_all_and_fails_on_a_missing_member() {
        let host = MockHost::for_plugin::<Rabbitmq>()
            .rule(Rule::new("systemctl", &["..."]))
            .rule(Rule::new("rabbitmqctl", &["set_policy", "..."]))
            .rule(Rule::new("rabbitmqctl", &["cluster_status"]).then(
                0,
                "[{nodes,[{disc,['rabbit@ctl1','rabbit@ctl2','rabbit@ctl3']}]},{running_nodes,['rabbit@ctl1']},{partitions,[]}]",
            ));
        let cx = host.cx(context("rabbitmq", &["ctl1", "ctl2", "ctl3"]));
        let e = Rabbitmq::post_upgrade(&cx).unwrap_err().to_string();
        assert!(
            e.contains("rabbit@ctl2") && e.contains("rabbit@ctl3"),
            "{e}"
        );
        assert!(
            host.commands()
                .iter()
                .any(|c| c.contains("set_policy ha-all"))
        );
    }
}
