//! How a service runs on its nodes: distribution packages and systemd
//! units, or containers (Docker or Podman, kolla-ansible's container names
//! and images), chosen by the operator's parameters. A plugin calls
//! [`Deploy::stop`], [`Deploy::start`], [`Deploy::install`], … and gets the
//! right commands for either; it requests [`capabilities`] for both.
//!
//! In containers, as the Liberty→Ocata journey does it: "stop old service,
//! remove old container, remove old image, bring up new container with new
//! configuration, check service health". [`Deploy::install`] replaces the
//! container (stop, remove, remove the old image, pull the new one, create
//! the container from it with its configuration directory) without
//! starting it: [`Deploy::start`] does, so a plugin that must start a
//! service in a given order (a Galera bootstrap) keeps that order.
//!
//! Parameters: `deploy` (`packages` or `containers`), `engine` (`docker`
//! or `podman`), `registry` (`kolla`: images are `REGISTRY/NAME:TAG`),
//! `config_dir` (`/etc/kolla`: a container's configuration is
//! `CONFIG_DIR/NAME`, mounted read-only at `/var/lib/kolla/config_files`).

use crate::{Capability, Cx, Error, Result};

/// One of the service's processes: its systemd unit, its package, its
/// container.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The systemd unit (packages).
    pub unit: &'a str,
    /// The package that carries it.
    pub package: &'a str,
    /// The container's name (kolla's: `mariadb`, `rabbitmq`,
    /// `nova_compute`, …).
    pub container: &'a str,
}

/// How the service is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deploy {
    /// Packages and systemd units.
    Packages,
    /// Containers of `engine` (`docker`, `podman`), images from `registry`.
    Containers {
        /// `docker` or `podman`.
        engine: String,
        /// The image prefix: `REGISTRY/NAME:TAG`.
        registry: String,
        /// Where each container's configuration directory is.
        config_dir: String,
    },
}

fn plain(what: &str, v: &str) -> Result<()> {
    if v.is_empty()
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b))
        || v.contains("..")
    {
        return Err(Error::msg(format!(
            "parameter {what}: `{v}` is not a plain name (letters, digits, `-_./:`)"
        )));
    }
    Ok(())
}

impl Deploy {
    /// From the operator's parameters.
    pub fn of(cx: &Cx) -> Result<Deploy> {
        match cx.param_or("deploy", "packages") {
            "packages" => Ok(Deploy::Packages),
            "containers" => {
                let engine = cx.param_or("engine", "docker");
                if engine != "docker" && engine != "podman" {
                    return Err(Error::msg(format!(
                        "parameter engine: `{engine}` is neither `docker` nor `podman`"
                    )));
                }
                let registry = cx.param_or("registry", "kolla");
                plain("registry", registry)?;
                let config_dir = cx.param_or("config_dir", "/etc/kolla");
                if !config_dir.starts_with('/') {
                    return Err(Error::msg(format!(
                        "parameter config_dir: `{config_dir}` is not an absolute path"
                    )));
                }
                plain("config_dir", config_dir)?;
                Ok(Deploy::Containers {
                    engine: engine.to_string(),
                    registry: registry.to_string(),
                    config_dir: config_dir.to_string(),
                })
            }
            other => Err(Error::msg(format!(
                "parameter deploy: `{other}` is neither `packages` nor `containers`"
            ))),
        }
    }

    /// Stop it.
    pub fn stop(&self, cx: &Cx, node: &str, u: Unit) -> Result<()> {
        match self {
            Deploy::Packages => cx.run(node, "systemctl", &["stop", u.unit]),
            Deploy::Containers { engine, .. } => cx.run(node, engine, &["stop", u.container]),
        }
        .map(drop)
    }

    /// Start it.
    pub fn start(&self, cx: &Cx, node: &str, u: Unit) -> Result<()> {
        match self {
            Deploy::Packages => cx.run(node, "systemctl", &["start", u.unit]),
            Deploy::Containers { engine, .. } => cx.run(node, engine, &["start", u.container]),
        }
        .map(drop)
    }

    /// Restart it.
    pub fn restart(&self, cx: &Cx, node: &str, u: Unit) -> Result<()> {
        match self {
            Deploy::Packages => cx.run(node, "systemctl", &["restart", u.unit]),
            Deploy::Containers { engine, .. } => cx.run(node, engine, &["restart", u.container]),
        }
        .map(drop)
    }

    /// Fail unless it runs.
    pub fn is_active(&self, cx: &Cx, node: &str, u: Unit) -> Result<()> {
        match self {
            Deploy::Packages => cx.run(node, "systemctl", &["is-active", u.unit]).map(drop),
            Deploy::Containers { engine, .. } => {
                let out = cx.run(
                    node,
                    engine,
                    &["inspect", "-f", "{{.State.Running}}", u.container],
                )?;
                if out.skipped || out.stdout_text().trim() == "true" {
                    Ok(())
                } else {
                    Err(Error::msg(format!(
                        "container {} is not running on {node} ({engine} inspect says `{}`)",
                        u.container,
                        out.stdout_text().trim()
                    )))
                }
            }
        }
    }

    /// A configuration file of `u`: `packages` (its path on the node), or
    /// `CONFIG_DIR/CONTAINER/FILE` (what kolla copies into the container
    /// when it starts), `FILE` being `packages`' file name.
    pub fn config_file(&self, u: Unit, packages: &str) -> String {
        match self {
            Deploy::Packages => packages.to_string(),
            Deploy::Containers { config_dir, .. } => {
                let file = packages.rsplit('/').next().unwrap_or(packages);
                format!("{config_dir}/{}/{file}", u.container)
            }
        }
    }

    /// The engine (`docker`, `podman`), or `None` for packages.
    pub fn engine(&self) -> Option<&str> {
        match self {
            Deploy::Packages => None,
            Deploy::Containers { engine, .. } => Some(engine),
        }
    }

    /// Where a named volume's data is on the host: kolla keeps
    /// `mariadb`'s datadir and `rabbitmq`'s mnesia in named volumes
    /// (`/var/lib/docker/volumes/NAME/_data`, Podman's
    /// `/var/lib/containers/storage/volumes/NAME/_data`). For packages,
    /// `packages` (the service's own directory).
    pub fn volume(&self, name: &str, packages: &str) -> String {
        match self.engine() {
            None => packages.to_string(),
            Some("podman") => format!("/var/lib/containers/storage/volumes/{name}/_data"),
            Some(_) => format!("/var/lib/docker/volumes/{name}/_data"),
        }
    }

    /// Run `program args` where the service runs: on the node, or inside
    /// its (running) container with `ENGINE exec CONTAINER`.
    pub fn exec(
        &self,
        cx: &Cx,
        node: &str,
        u: Unit,
        program: &str,
        args: &[&str],
    ) -> Result<crate::ExecOutput> {
        match self.engine() {
            None => cx.run(node, program, args),
            Some(engine) => {
                let mut argv = vec!["exec", u.container, program];
                argv.extend_from_slice(args);
                cx.run(node, engine, &argv)
            }
        }
    }

    /// Run `program args` once in a throw-away container of the image
    /// tagged `version` with the service's volumes (`ENGINE run --rm
    /// --volumes-from CONTAINER IMAGE program args`): what runs against a
    /// stopped service's data (`galera_recovery`). On the node itself for
    /// packages.
    pub fn run_once(
        &self,
        cx: &Cx,
        node: &str,
        u: Unit,
        version: &str,
        program: &str,
        args: &[&str],
    ) -> Result<crate::ExecOutput> {
        match self {
            Deploy::Packages => cx.run(node, program, args),
            Deploy::Containers {
                engine, registry, ..
            } => {
                plain("the version", version)?;
                let image = format!("{registry}/{}:{version}", u.container);
                let mut argv = vec![
                    "run",
                    "--rm",
                    "--volumes-from",
                    u.container,
                    &image,
                    program,
                ];
                argv.extend_from_slice(args);
                cx.run(node, engine, &argv)
            }
        }
    }

    /// [`Deploy::install`] of several of the service's processes: one
    /// `apt-get install` of their packages, or each container replaced.
    pub fn install_all(
        &self,
        cx: &Cx,
        node: &str,
        units: &[Unit],
        from: &str,
        version: &str,
    ) -> Result<()> {
        match self {
            Deploy::Packages => {
                let pkgs: Vec<String> = units
                    .iter()
                    .map(|u| format!("{}={version}", u.package))
                    .collect();
                let mut argv = vec!["install", "-y"];
                argv.extend(pkgs.iter().map(String::as_str));
                cx.run(node, "apt-get", &argv).map(drop)
            }
            Deploy::Containers { .. } => units
                .iter()
                .try_for_each(|u| self.install(cx, node, *u, from, version)),
        }
    }

    /// Bring the node to `version`, stopped: the package, or a new
    /// container from the image tagged `version` (the old container and
    /// its image, tagged `from`, removed first).
    pub fn install(&self, cx: &Cx, node: &str, u: Unit, from: &str, version: &str) -> Result<()> {
        self.replace(cx, node, u, from, version, &[])
    }

    /// [`Deploy::install`], with `extra` options for the container's
    /// `create` (before the image: `-e BOOTSTRAP_ARGS=--wsrep-new-cluster`
    /// for kolla's Galera bootstrap). `extra` changes nothing for packages.
    pub fn replace(
        &self,
        cx: &Cx,
        node: &str,
        u: Unit,
        from: &str,
        version: &str,
        extra: &[&str],
    ) -> Result<()> {
        match self {
            Deploy::Packages => cx
                .run(
                    node,
                    "apt-get",
                    &["install", "-y", &format!("{}={version}", u.package)],
                )
                .map(drop),
            Deploy::Containers {
                engine,
                registry,
                config_dir,
            } => {
                plain("the version", version)?;
                let image = |tag: &str| format!("{registry}/{}:{tag}", u.container);
                // The old container may be gone already (a resumed step).
                let _ = cx.output(node, engine, &["stop", u.container])?;
                let _ = cx.output(node, engine, &["rm", u.container])?;
                if !from.is_empty() && from != version && plain("the version", from).is_ok() {
                    let _ = cx.output(node, engine, &["rmi", &image(from)])?;
                }
                cx.run(node, engine, &["pull", &image(version)])?;
                let config = format!(
                    "{config_dir}/{}:/var/lib/kolla/config_files:ro",
                    u.container
                );
                let new = image(version);
                let mut argv = vec![
                    "create",
                    "--name",
                    u.container,
                    "--net=host",
                    "--restart=unless-stopped",
                    "-v",
                    &config,
                ];
                argv.extend_from_slice(extra);
                argv.push(&new);
                cx.run(node, engine, &argv)?;
                Ok(())
            }
        }
    }
}

/// The capabilities [`Deploy`] needs: the systemd `units` and the
/// `packages` (packages), the `containers` under Docker and under Podman
/// (containers). Each is a pattern of alternatives (`mariadb`,
/// `nova-api|nova-conductor`).
pub fn capabilities(units: &str, packages: &str, containers: &str) -> Vec<Capability> {
    let mut caps = vec![
        Capability::mutating("systemctl", &["stop|start|restart", units])
            .reason("stop, start, restart the service (packages)"),
        Capability::read_only("systemctl", &["is-active", units]).reason("is it running?"),
    ];
    // An alternative holds no `*` of its own: one capability per package.
    for p in packages.split('|') {
        caps.push(
            Capability::mutating("apt-get", &["install", "-y", &format!("{p}=*")])
                .reason("install the new (or, on rollback, the previous) version (packages)"),
        );
    }
    for engine in ["docker", "podman"] {
        caps.extend([
            Capability::mutating(engine, &["stop|start|restart|rm", containers])
                .reason("stop, start, remove the service's container (containers)"),
            Capability::read_only(engine, &["inspect", "-f", "{{.State.Running}}", containers])
                .reason("is the container running?"),
            Capability::mutating(engine, &["rmi|pull", "*/*:*"])
                .reason("remove the old image, pull the new one"),
            Capability::mutating(
                engine,
                &[
                    "create",
                    "--name",
                    containers,
                    "--net=host",
                    "--restart=unless-stopped",
                    "-v",
                    "/*:/var/lib/kolla/config_files:ro",
                    "*/*:*",
                ],
            )
            .reason("the new container, from the new image, with its configuration"),
        ]);
    }
    caps
}

/// `caps`, each also as the same command run by Docker and by Podman:
/// `ENGINE PREFIX… PROGRAM ARGS…`, with the same access and reason.
fn through_engines(
    caps: impl IntoIterator<Item = Capability>,
    prefix: &[String],
) -> Vec<Capability> {
    let mut out = Vec::new();
    for c in caps {
        for engine in ["docker", "podman"] {
            let mut args = prefix.to_vec();
            args.push(c.program.clone());
            args.extend(c.args.iter().cloned());
            out.push(Capability {
                program: engine.to_string(),
                args,
                ..c.clone()
            });
        }
        out.push(c);
    }
    out
}

/// `caps`, and the same commands inside `container` under Docker and
/// Podman (`ENGINE exec CONTAINER PROGRAM ARGS`, as [`Deploy::exec`] runs
/// them), with the same access and reason.
pub fn in_container(
    container: &str,
    caps: impl IntoIterator<Item = Capability>,
) -> Vec<Capability> {
    through_engines(caps, &["exec".to_string(), container.to_string()])
}

/// `caps` as [`Deploy::run_once`] runs them in containers: in a throw-away
/// container of `container`'s image with its volumes, under Docker and
/// Podman (`ENGINE run --rm --volumes-from CONTAINER REGISTRY/CONTAINER:TAG
/// PROGRAM ARGS`), and `caps` themselves for packages.
pub fn in_throwaway(
    container: &str,
    caps: impl IntoIterator<Item = Capability>,
) -> Vec<Capability> {
    let prefix: Vec<String> = ["run", "--rm", "--volumes-from", container]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("*/{container}:*")])
        .collect();
    through_engines(caps, &prefix)
}
