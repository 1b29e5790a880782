//! RabbitMQ cluster upgrade (major or minor version), as in the Liberty→Ocata
//! procedure: stop every node first, remove the mnesia directory, bring the
//! new version up with its new configuration, set the `ha-all` mirroring
//! policy explicitly, and validate `rabbitmqctl cluster_status`: every member
//! running, no partitions.
//!
//! A minor update (`mode: minor-update`: a patch release of the same
//! series, which RabbitMQ supports rolling) keeps the cluster and its
//! Mnesia: each node in turn is stopped, updated, started, waited for
//! (`rabbitmqctl await_startup`) and the cluster verified before the next.
//!
//! In containers (`deploy: containers`, kolla's `rabbitmq` container), as
//! the journey ran it: the old containers and images removed, the mnesia
//! directory removed from the `rabbitmq` volume
//! (`/var/lib/docker/volumes/rabbitmq/_data/mnesia`), the new containers
//! brought up with their new configuration; `rabbitmqctl` runs inside the
//! container.
//!
//! Parameters (and `deploy`, `engine`, `registry`, `config_dir` of
//! `uphost_sdk::deploy`): `unit` (`rabbitmq-server`), `package`
//! (`rabbitmq-server`), `mnesia_dir` (`/var/lib/rabbitmq/mnesia`; in
//! containers the volume's), `node_name` (the
//! Erlang node name of an inventory node, `{node}` replaced by its name:
//! `rabbit@{node}`; e.g. `rabbit@{node}.example.com` with long names).
//!
//! `cluster_status` is read in both of its output formats: the Erlang terms
//! of RabbitMQ 3.6 (the seed's) and the sectioned text of 3.7 and later
//! ("Running Nodes", "Network Partitions"), colour codes or not.

use uphost_sdk::deploy::{self, Deploy, Unit};
use uphost_sdk::prelude::*;

/// The plugin.
pub struct Rabbitmq;

/// The mirroring policy the seed sets after the restart.
pub const HA_POLICY: &str = r#"{"ha-mode":"all","ha-sync-mode":"automatic"}"#;

/// Members listed as running, and whether no partition is reported, from
/// `rabbitmqctl cluster_status` of any version (see the module docs).
pub fn parse_cluster_status(out: &str) -> (Vec<String>, bool) {
    let text = strip_ansi(out);
    if text.contains("{running_nodes,") {
        return parse_erlang_terms(&text);
    }
    let running = section(&text, "Running Nodes");
    let partitions = section(&text, "Network Partitions");
    let no_partitions = partitions.iter().all(|l| l == "(none)")
        && text.lines().any(|l| l.trim() == "Network Partitions");
    (running, no_partitions)
}

/// The 3.6 format: `[{nodes,...},{running_nodes,['rabbit@a',...]},...]`.
fn parse_erlang_terms(text: &str) -> (Vec<String>, bool) {
    let flat: String = text.split_whitespace().collect();
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
    (running, flat.contains("{partitions,[]}"))
}

/// The lines of a 3.7+ section: after its title and a blank line, up to the
/// next blank line.
fn section(text: &str, title: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != title)
        .skip(1)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Remove terminal colour sequences (`ESC [ ... m`), which rabbitmqctl
/// prints even into a pipe.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The Erlang node name of an inventory node (`node_name` parameter).
fn member(cx: &Cx, node: &str) -> Result<String> {
    let template = cx.param_or("node_name", "rabbit@{node}");
    if !template.contains("{node}") || !template.contains('@') {
        bail!(
            "parameter `node_name` is `{template}`: it must name each node's Erlang node, NAME@HOST with `{{node}}` where the inventory name goes (default rabbit@{{node}})"
        );
    }
    Ok(template.replace("{node}", node))
}

/// RabbitMQ's unit, package and kolla container.
fn mq<'a>(cx: &'a Cx) -> Unit<'a> {
    Unit {
        unit: cx.param_or("unit", "rabbitmq-server"),
        package: cx.param_or("package", "rabbitmq-server"),
        container: "rabbitmq",
    }
}

/// `rabbitmqctl ARGS` where RabbitMQ runs.
fn rabbitmqctl(cx: &Cx, node: &str, args: &[&str]) -> Result<ExecOutput> {
    Deploy::of(cx)?.exec(cx, node, mq(cx), "rabbitmqctl", args)
}

/// The mnesia directory on the host.
fn mnesia(cx: &Cx, d: &Deploy) -> String {
    match d {
        Deploy::Packages => cx
            .param_or("mnesia_dir", "/var/lib/rabbitmq/mnesia")
            .to_string(),
        _ => format!("{}/mnesia", d.volume("rabbitmq", "")),
    }
}

fn rolling(cx: &Cx) -> bool {
    cx.ctx.mode == Mode::MinorUpdate
}

fn verify(cx: &Cx) -> Result<()> {
    let primary = cx.primary()?.name.clone();
    verify_from(cx, &primary)
}

fn verify_from(cx: &Cx, primary: &str) -> Result<()> {
    member(cx, primary)?;
    let out = rabbitmqctl(cx, primary, &["cluster_status"])?;
    let (running, no_partitions) = parse_cluster_status(&out.stdout_text());
    let mut missing = Vec::new();
    for n in cx.nodes().iter() {
        let m = member(cx, &n.name)?;
        if !running.contains(&m) {
            missing.push(m);
        }
    }
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
        // One node at a time: a minor update is rolling (a major one only
        // removes Mnesia and installs on the stopped nodes).
        .rollout(Rollout::OneAtATime)
        .reversible(false)
        // Every minor release of RabbitMQ must be passed (3.11 -> 3.12 -> 3.13).
        .releases(&[
            "3.5", "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "4.0", "4.1",
        ])
        .capabilities(deploy::in_container(
            "rabbitmq",
            [
                Capability::read_only("rabbitmqctl", &["cluster_status"])
                    .reason("verify members running and no partitions"),
                Capability::read_only("rabbitmqctl", &["await_startup"])
                    .reason("minor update: wait until the node is up again"),
                Capability::mutating("rabbitmqctl", &["set_policy", "ha-all", "", HA_POLICY])
                    .reason("mirror every queue (ha-all)"),
            ],
        ))
        .capabilities(deploy::capabilities(
            "rabbitmq-server",
            "rabbitmq-server",
            "rabbitmq",
        ))
        .capabilities([Capability::mutating(
            "rm",
            &[
                "-rf",
                "/var/lib/rabbitmq/mnesia|/var/lib/docker/volumes/rabbitmq/_data/mnesia|/var/lib/containers/storage/volumes/rabbitmq/_data/mnesia",
            ],
        )
        .reason("remove the old mnesia database")])
    }

    fn verify(cx: &Cx) -> Result<()> {
        verify(cx)
    }

    fn check(cx: &Cx) -> Result<()> {
        Deploy::of(cx)?;
        if !rolling(cx) {
            cx.require_every_node(
                "stops every node and resets its Mnesia database (RabbitMQ nodes of two versions cannot form one cluster)",
            )?;
        }
        verify(cx)
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        if rolling(cx) {
            return Ok(());
        }
        let d = Deploy::of(cx)?;
        for n in cx.nodes() {
            d.stop(cx, &n.name, mq(cx))?;
        }
        cx.progress("service-down");
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let d = Deploy::of(cx)?;
        let (from, to) = (&cx.ctx.from_version, &cx.ctx.to_version);
        if rolling(cx) {
            // A patch release: the node keeps its Mnesia and rejoins.
            d.stop(cx, &node.name, mq(cx))?;
            d.install(cx, &node.name, mq(cx), from, to)?;
            d.start(cx, &node.name, mq(cx))?;
            rabbitmqctl(cx, &node.name, &["await_startup"])?;
            return verify_from(cx, &node.name);
        }
        cx.run(&node.name, "rm", &["-rf", &mnesia(cx, &d)])?;
        d.install(cx, &node.name, mq(cx), from, to)
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        if rolling(cx) {
            return verify(cx);
        }
        let d = Deploy::of(cx)?;
        for n in cx.nodes() {
            d.start(cx, &n.name, mq(cx))?;
        }
        let primary = cx.primary()?.name.clone();
        rabbitmqctl(cx, &primary, &["set_policy", "ha-all", "", HA_POLICY])?;
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

    /// `rabbitmqctl cluster_status` of RabbitMQ 3.10, as printed into a pipe.
    const STATUS_3_10: &str = "Cluster status of node rabbit-ctl1@localhost ...\n\u{1b}[1mBasics\u{1b}[0m\n\nCluster name: rabbit-ctl1@vm\n\n\u{1b}[1mDisk Nodes\u{1b}[0m\n\nrabbit-ctl1@localhost\nrabbit-ctl2@localhost\nrabbit-ctl3@localhost\n\n\u{1b}[1mRunning Nodes\u{1b}[0m\n\nrabbit-ctl1@localhost\nrabbit-ctl3@localhost\n\n\u{1b}[1mVersions\u{1b}[0m\n\nrabbit-ctl1@localhost: RabbitMQ 3.10.8 on Erlang 25.2.3\n\n\u{1b}[1mNetwork Partitions\u{1b}[0m\n\n(none)\n\n\u{1b}[1mListeners\u{1b}[0m\n\nNode: rabbit-ctl1@localhost, interface: 127.0.0.11, port: 5672\n";

    #[test]
    fn parses_the_3_10_output() {
        let (running, ok) = parse_cluster_status(STATUS_3_10);
        assert_eq!(
            running,
            vec!["rabbit-ctl1@localhost", "rabbit-ctl3@localhost"]
        );
        assert!(ok);
        let split = STATUS_3_10.replace(
            "(none)",
            "Node rabbit-ctl1@localhost cannot communicate with rabbit-ctl2@localhost",
        );
        assert!(!parse_cluster_status(&split).1);
        // No partitions section at all is not "no partitions".
        assert!(!parse_cluster_status("Running Nodes\n\nrabbit@a\n").1);
    }

    #[test]
    fn node_names_follow_the_parameter() {
        let host = MockHost::for_plugin::<Rabbitmq>()
            .rule(Rule::new("rabbitmqctl", &["cluster_status"]).then(0, STATUS_3_10));
        let mut ctx = context("rabbitmq", &["ctl1", "ctl2", "ctl3"]);
        ctx.params
            .push(("node_name".into(), "rabbit-{node}@localhost".into()));
        let cx = host.cx(ctx);
        let e = Rabbitmq::check(&cx).unwrap_err().to_string();
        assert!(e.contains("missing members rabbit-ctl2@localhost"), "{e}");

        let mut ctx = context("rabbitmq", &["ctl1", "ctl2", "ctl3"]);
        ctx.params
            .push(("node_name".into(), "rabbit@localhost".into()));
        let e = Rabbitmq::check(&host.cx(ctx)).unwrap_err().to_string();
        assert!(
            e.contains("parameter `node_name` is `rabbit@localhost`"),
            "{e}"
        );
    }

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
        assert!(host.count("set_policy ha-all") > 0);
    }
}
