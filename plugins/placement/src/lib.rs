//! Placement (new in Ocata): create its keystone user, role, service and
//! endpoints when missing, install and start the API on every controller.
//! Irreversible in the sense that the keystone records stay (harmless).
//!
//! Parameters: `url` (`http://vip:8778`), `region` (`RegionOne`).

use uphost_sdk::prelude::*;
use uphost_sdk::releases;

/// The plugin.
pub struct Placement;

/// Placement's endpoints, as requested in `describe` and run in pre-upgrade.
const ENDPOINT_LIST: [&str; 8] = [
    "endpoint",
    "list",
    "--service",
    "placement",
    "-f",
    "value",
    "-c",
    "URL",
];

impl Plugin for Placement {
    fn describe() -> Info {
        Info::new(
            "placement",
            "Placement API: keystone user, service, endpoints; install and start",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .depends_on(&["keystone"])
        .rollout(Rollout::Parallel)
        .reversible(false)
        // Its API appeared in Newton (within nova) and became mandatory in
        // Ocata: no release before Newton.
        .releases(&releases::OPENSTACK[3..])
        .jumps(releases::OPENSTACK_SLURP)
        .capabilities([
            Capability::mutating(
                "openstack",
                &[
                    "user",
                    "create",
                    "--domain",
                    "default",
                    "--or-show",
                    "placement",
                ],
            )
            .reason("the placement service user"),
            Capability::mutating(
                "openstack",
                &[
                    "role",
                    "add",
                    "--project",
                    "service",
                    "--user",
                    "placement",
                    "admin",
                ],
            )
            .reason("give it the admin role in the service project"),
            Capability::read_only("openstack", &["service", "show", "placement"])
                .reason("is it registered?"),
            Capability::mutating(
                "openstack",
                &["service", "create", "--name", "placement", "placement"],
            )
            .reason("register the service"),
            Capability::mutating(
                "openstack",
                &[
                    "endpoint",
                    "create",
                    "--region",
                    "RegionOne",
                    "placement",
                    "public|internal|admin",
                    "http*://*",
                ],
            )
            .reason("its endpoints"),
            Capability::read_only("openstack", &ENDPOINT_LIST).reason("are the endpoints there?"),
            Capability::mutating("apt-get", &["install", "-y", "placement-api=*"])
                .reason("install"),
            Capability::mutating("systemctl", &["restart", "placement-api"])
                .reason("start the API"),
            Capability::read_only("systemctl", &["is-active", "placement-api"]).reason("verify"),
        ])
    }

    fn verify(cx: &Cx) -> Result<()> {
        let p = cx.primary()?.name.clone();
        let have = cx.run(&p, "openstack", &ENDPOINT_LIST)?;
        if have.stdout_text().trim().is_empty() {
            bail!("placement answers no endpoints after the upgrade; run the hop again");
        }
        Ok(())
    }

    fn check(cx: &Cx) -> Result<()> {
        cx.require_every_node(
            "creates its service user and endpoints and migrates its database once for every API node",
        )
    }

    fn pre_upgrade(cx: &Cx) -> Result<()> {
        let p = cx.primary()?.name.clone();
        let url = cx.param_or("url", "http://vip:8778");
        cx.run(
            &p,
            "openstack",
            &[
                "user",
                "create",
                "--domain",
                "default",
                "--or-show",
                "placement",
            ],
        )?;
        cx.run(
            &p,
            "openstack",
            &[
                "role",
                "add",
                "--project",
                "service",
                "--user",
                "placement",
                "admin",
            ],
        )?;
        if !cx
            .output(&p, "openstack", &["service", "show", "placement"])?
            .success()
        {
            cx.run(
                &p,
                "openstack",
                &["service", "create", "--name", "placement", "placement"],
            )?;
        }
        let have = cx.run(&p, "openstack", &ENDPOINT_LIST)?;
        if have.stdout_text().trim().is_empty() {
            for iface in ["public", "internal", "admin"] {
                cx.run(
                    &p,
                    "openstack",
                    &[
                        "endpoint",
                        "create",
                        "--region",
                        "RegionOne",
                        "placement",
                        iface,
                        url,
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        cx.run(
            &node.name,
            "apt-get",
            &[
                "install",
                "-y",
                &format!("placement-api={}", cx.ctx.to_version),
            ],
        )?;
        cx.run(&node.name, "systemctl", &["restart", "placement-api"])?;
        cx.run(&node.name, "systemctl", &["is-active", "placement-api"])?;
        Ok(())
    }
}

export_plugin!(Placement);

#[cfg(test)]
mod tests {
    use super::*;
    use uphost_sdk::script::Rule;
    use uphost_sdk::testing::{MockHost, context};

    #[test]
    fn registers_only_what_is_missing() {
        let host = MockHost::for_plugin::<Placement>()
            .rule(
                Rule::new("openstack", &["service", "show", "placement"])
                    .then(0, "| name | placement |"),
            )
            .rule(Rule::new("openstack", &["endpoint", "list", "..."]).then(0, "http://vip:8778\n"))
            .rule(Rule::new("openstack", &["..."]));
        let cx = host.cx(context("placement", &["ctl1"]));
        Placement::pre_upgrade(&cx).unwrap();
        assert_eq!(
            host.count("service create") + host.count("endpoint create"),
            0
        );
    }
}
