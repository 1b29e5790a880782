//! eDeploy role upgrade, after Spinal Stack's procedure: a node's role is
//! a tree on the install server, and an upgrade brings the node to the new
//! tree, keeping its data.
//!
//! Per node (one at a time):
//! 1. `rsync` the role's tree of the target version from the install
//!    server onto `/`, with the role's exclude file (what must survive:
//!    databases, logs, keys) — `--delete` removes what the new tree no
//!    longer has, never what the exclude file names;
//! 2. run the generated `post` script of this upgrade
//!    (`/var/lib/edeploy/FROM-TO/post`);
//! 3. when SELinux is enforcing (`getenforce`), re-apply the file contexts
//!    (`setfiles`), since rsync copied files without theirs;
//! 4. the configuration-management steps the operator names
//!    (`cm_steps`, Puppet's steps: `puppet agent --test --tags stepN`,
//!    exit 0 or 2 — no change or changes — is success);
//! 5. the serverspec checks of the role (`rake spec` in
//!    `/etc/serverspec`), then, once every node is done, the sanity stage
//!    (`sanity`, a read-only script on the first node).
//!
//! Parameters: `server` (the install server, `rsync://HOST/install`),
//! `role`, `exclude` (`/etc/edeploy/ROLE.exclude`), `cm_steps` (`0,5`),
//! `serverspec` (`true`), `sanity` (`true`).

use uphost_sdk::prelude::*;

/// The plugin.
pub struct Edeploy;

fn role<'a>(cx: &'a Cx) -> Result<&'a str> {
    match cx.param("role") {
        Some(r)
            if !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(r)
        }
        Some(r) => bail!("parameter role: `{r}` is not a role name (letters, digits, `-_.`)"),
        None => bail!("parameter role: the node's eDeploy role is not set (e.g. openstack-full)"),
    }
}

fn server<'a>(cx: &'a Cx) -> Result<&'a str> {
    match cx.param("server") {
        Some(s) if s.starts_with("rsync://") && s.ends_with("/install") => Ok(s),
        Some(s) => bail!("parameter server: `{s}` is not rsync://HOST/install"),
        None => bail!("parameter server: the install server is not set (rsync://HOST/install)"),
    }
}

fn steps(cx: &Cx) -> Result<Vec<u8>> {
    cx.param_or("cm_steps", "0,5")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u8>()
                .ok()
                .filter(|n| *n <= 9)
                .ok_or_else(|| Error::msg(format!("parameter cm_steps: `{s}` is not a step 0-9")))
        })
        .collect()
}

fn flag(cx: &Cx, key: &str) -> Result<bool> {
    cx.param_parse(key, true)
}

impl Plugin for Edeploy {
    fn describe() -> Info {
        Info::new(
            "edeploy",
            "eDeploy role upgrade: rsync of the role's tree (exclude file kept), post script, SELinux relabel, Puppet steps, serverspec",
        )
        .version(env!("CARGO_PKG_VERSION"))
        .rollout(Rollout::OneAtATime)
        .capabilities([
            Capability::mutating(
                "rsync",
                &[
                    "-a",
                    "--delete",
                    "--numeric-ids",
                    "--exclude-from=/etc/edeploy/*.exclude",
                    "rsync://*/install/*/*/",
                    "/",
                ],
            )
            .reason("bring the node to the role's tree of the target version, keeping what the exclude file names"),
            Capability::read_only("test", &["-s", "/etc/edeploy/*.exclude"])
                .reason("refuse to rsync without the exclude file (it keeps the data)"),
            Capability::mutating("/bin/sh", &["-e", "/var/lib/edeploy/*-*/post"])
                .reason("the upgrade's generated post script"),
            Capability::read_only("getenforce", &[]).reason("is SELinux enforcing?"),
            Capability::mutating(
                "setfiles",
                &["-r", "/", "/etc/selinux/targeted/contexts/files/file_contexts", "/"],
            )
            .reason("re-apply the SELinux contexts rsync did not copy"),
            Capability::mutating(
                "puppet",
                &["agent", "--test", "--detailed-exitcodes", "--tags", "step?"],
            )
            .reason("the configuration-management steps"),
            Capability::read_only("rake", &["-f", "/etc/serverspec/Rakefile", "spec"])
                .reason("the role's serverspec checks"),
            Capability::read_only("/usr/local/bin/edeploy-sanity", &[])
                .reason("the sanity stage after the last node"),
        ])
    }

    fn check(cx: &Cx) -> Result<()> {
        let role = role(cx)?;
        server(cx)?;
        steps(cx)?;
        flag(cx, "serverspec")?;
        flag(cx, "sanity")?;
        let exclude = cx.param_or("exclude", "").to_string();
        let exclude = if exclude.is_empty() {
            format!("/etc/edeploy/{role}.exclude")
        } else {
            exclude
        };
        for n in cx.targets() {
            cx.run(&n.name, "test", &["-s", &exclude]).map_err(|e| {
                e.context(format!(
                    "{}: no exclude file {exclude}; without it rsync --delete would remove the node's data",
                    n.name
                ))
            })?;
        }
        Ok(())
    }

    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let n = node.name.as_str();
        let role = role(cx)?;
        let exclude = match cx.param("exclude") {
            Some(e) if !e.is_empty() => e.to_string(),
            _ => format!("/etc/edeploy/{role}.exclude"),
        };
        let tree = format!("{}/{}/{role}/", server(cx)?, cx.ctx.to_version);
        cx.run(
            n,
            "rsync",
            &[
                "-a",
                "--delete",
                "--numeric-ids",
                &format!("--exclude-from={exclude}"),
                &tree,
                "/",
            ],
        )?;
        let post = format!(
            "/var/lib/edeploy/{}-{}/post",
            cx.ctx.from_version, cx.ctx.to_version
        );
        cx.run(n, "/bin/sh", &["-e", &post])
            .map_err(|e| e.context(format!("the post script {post} failed")))?;
        let selinux = cx.run(n, "getenforce", &[])?.stdout_text();
        if selinux.trim() == "Enforcing" {
            cx.run(
                n,
                "setfiles",
                &[
                    "-r",
                    "/",
                    "/etc/selinux/targeted/contexts/files/file_contexts",
                    "/",
                ],
            )?;
        }
        for s in steps(cx)? {
            let tag = format!("step{s}");
            let out = cx.output(
                n,
                "puppet",
                &["agent", "--test", "--detailed-exitcodes", "--tags", &tag],
            )?;
            if !out.skipped && out.status != 0 && out.status != 2 {
                bail!(
                    "puppet {tag} on {n} failed (exit {}: {}): fix the manifests, then `uphost resume` runs this node again",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
            }
        }
        if flag(cx, "serverspec")? {
            cx.run(n, "rake", &["-f", "/etc/serverspec/Rakefile", "spec"])
                .map_err(|e| e.context(format!("the serverspec checks of {role} fail on {n}")))?;
        }
        Ok(())
    }

    fn post_upgrade(cx: &Cx) -> Result<()> {
        if flag(cx, "sanity")? {
            let first = cx.primary()?.name.clone();
            cx.run(&first, "/usr/local/bin/edeploy-sanity", &[])
                .map_err(|e| e.context("the sanity stage failed"))?;
        }
        Ok(())
    }
}

export_plugin!(Edeploy);
