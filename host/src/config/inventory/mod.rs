//! Operators' Ansible inventories, read as Ansible reads them: INI, YAML,
//! the JSON of `ansible-inventory --list`, executable inventory scripts, a
//! directory of any of these, several sources merged in order,
//! `group_vars/` and `host_vars/` beside each source, Ansible's variable
//! precedence and the connection variables' aliases. Groups are roles
//! (`all` and `ungrouped` included). What uphost cannot evaluate (Jinja
//! templates, vaulted values, inventory plugins) is an error naming the
//! file, the variable and the workaround, never taken literally.

mod data;
mod ini;
pub mod pattern;
mod structured;
mod vars_files;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use super::yaml::{self, ConfigError};
use data::Data;

/// How the host reaches a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    /// Run on this machine.
    Local,
    /// The system OpenSSH client.
    Ssh,
    /// Execute nothing (rehearsals, scale benchmarks).
    DryRun,
}

/// A node from the inventory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeSpec {
    /// Inventory name.
    pub name: String,
    /// `ansible_host` (`ansible_ssh_host`), or the name.
    pub address: String,
    /// `ansible_port` (`ansible_ssh_port`).
    pub port: Option<u16>,
    /// `ansible_user` (`ansible_ssh_user`).
    pub user: Option<String>,
    /// `ansible_ssh_private_key_file` (`ansible_private_key_file`).
    pub key_file: Option<PathBuf>,
    /// `ansible_connection` (default ssh, as in Ansible).
    pub connection: Connection,
    /// The user commands run as through `sudo -n` (`ansible_become`,
    /// `ansible_become_user`), or none.
    #[serde(rename = "become")]
    pub become_user: Option<String>,
    /// Groups the node belongs to, directly or through `children`, sorted
    /// (Ansible's `group_names`: `ungrouped` included, `all` not).
    pub roles: Vec<String>,
    /// `uphost_node_root`: a directory whose `bin/` is put first on PATH for
    /// local commands and exported as `UPHOST_NODE_ROOT` (simulated nodes).
    pub node_root: Option<PathBuf>,
}

impl NodeSpec {
    /// A node that runs nothing (dry-run transport), with these roles:
    /// for tests and benchmarks.
    pub fn simulated(name: &str, roles: &[&str]) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            address: name.to_string(),
            port: None,
            user: None,
            key_file: None,
            connection: Connection::DryRun,
            become_user: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            node_root: None,
        }
    }
}

/// A parsed inventory.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Nodes in the order they first appear, shared (every service's node
    /// set and target list points at these: nothing is copied per service).
    pub nodes: Vec<Arc<NodeSpec>>,
    /// Every group name (`all` and `ungrouped` included).
    pub groups: BTreeSet<String>,
    /// The sources it was read from.
    pub sources: Vec<PathBuf>,
}

impl Inventory {
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name).map(|n| &**n)
    }

    /// The sources, for messages: `a.ini, b/`.
    pub fn label(&self) -> String {
        self.sources
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Files in an inventory directory that Ansible skips: hidden ones,
/// `group_vars`, `host_vars`, `vars_plugins`, and these endings
/// (`INVENTORY_IGNORE_EXTS`).
const IGNORED_ENDINGS: &[&str] = &[
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".ini", ".cfg",
    ".retry",
];

/// Most files one inventory directory tree may hold.
const MAX_FILES: usize = 10_000;

/// Read every source, in order, into one inventory.
pub fn load(sources: &[PathBuf]) -> Result<Inventory, ConfigError> {
    let mut data = Data::default();
    for src in sources {
        let before = data.files.len();
        parse_source(src, &mut data, 0)?;
        if data.files.len() == before {
            return Err(ConfigError::Invalid {
                path: src.clone(),
                at: "the directory".into(),
                message: "holds no inventory file (Ansible skips hidden files, group_vars/, host_vars/ and names ending in .ini, .cfg, .txt, .md, …, in a directory): put the inventory files there or point at a file".into(),
            });
        }
    }
    data.reconcile();
    let vars = vars_files::VarsFiles::load(
        sources,
        data.groups.keys().map(String::as_str),
        data.hosts.keys().map(String::as_str),
    )?;
    resolve(&data, &vars, sources)
}

fn parse_source(path: &Path, data: &mut Data, depth: usize) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        if depth > 16 {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                at: "the directory".into(),
                message: "inventory directories nest more than 16 deep (a symlink loop?)".into(),
            });
        }
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(path)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let n = name.to_string_lossy();
            if n.starts_with('.')
                || ["group_vars", "host_vars", "vars_plugins"].contains(&n.as_ref())
                || IGNORED_ENDINGS.iter().any(|e| n.ends_with(e))
            {
                continue;
            }
            if data.files.len() >= MAX_FILES {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    at: "the directory".into(),
                    message: format!("holds more than {MAX_FILES} inventory files"),
                });
            }
            parse_source(&path.join(&name), data, depth + 1)?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        // A FIFO would hang, a device never ends: named as what it is.
        yaml::read_text(path)?;
    }
    let file = data.files.len();
    data.files.push(path.to_path_buf());
    if is_script(path, &meta) {
        return parse_script(path, data, file);
    }
    let text = yaml::read_text(path)?;
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let invalid = |at: String, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        at,
        message,
    };
    if ext == ".toml" {
        return Err(invalid(
            "the file".into(),
            "a TOML inventory, which uphost does not read: write it out with `ansible-inventory -i FILE --list > inventory.json` and use that".into(),
        ));
    }
    if ["", ".yaml", ".yml", ".json"].contains(&ext.as_str()) {
        // No extension: YAML first, then INI, as Ansible tries them.
        let parsed = yaml::parse::<serde_yaml_ng::Value>(path, &text);
        match parsed {
            Ok(doc) => match structured::yaml_to_json(doc) {
                Value::Object(doc) => {
                    let r = if doc.contains_key("plugin") {
                        structured::parse_yaml_inventory(&doc, data, file)
                    } else if structured::is_list_shape(&doc) {
                        structured::parse_list(&doc, data, file, |h| {
                            Err(format!(
                                "host `{h}` is in no `_meta.hostvars`: in a saved `--list` output every host has an entry"
                            ))
                        })
                    } else {
                        structured::parse_yaml_inventory(&doc, data, file)
                    };
                    return r.map_err(|(at, m)| invalid(at, m));
                }
                other if !ext.is_empty() => {
                    return Err(invalid(
                        "the file".into(),
                        format!(
                            "an inventory is a mapping of groups, this file is {}",
                            structured::kind(&other)
                        ),
                    ));
                }
                _ => {}
            },
            Err(e) if !ext.is_empty() => return Err(e),
            Err(_) => {}
        }
    }
    ini::parse(&text, data, file).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line,
        column: 1,
        message: format!("{} (read as an INI inventory)", e.message),
    })
}

/// Ansible runs a file as an inventory script when it is executable or
/// starts with `#!`.
fn is_script(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o111 != 0 {
        return true;
    }
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"#!"
}

/// How long an inventory script may run.
const SCRIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn parse_script(path: &Path, data: &mut Data, file: usize) -> Result<(), ConfigError> {
    let invalid = |at: String, message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        at,
        message,
    };
    let run = |args: &[&str]| -> Result<Value, ConfigError> {
        let shown = format!("{} {}", path.display(), args.join(" "));
        let out = run_script(path, args).map_err(|m| {
            invalid(
                "the script".into(),
                format!("`{shown}` (an executable inventory is run, as Ansible runs it): {m}"),
            )
        })?;
        serde_json::from_slice(&out).map_err(|e| {
            invalid(
                "the script's output".into(),
                format!("`{shown}` did not print JSON: {e}"),
            )
        })
    };
    let doc = match run(&["--list"])? {
        Value::Object(o) => o,
        other => {
            return Err(invalid(
                "the script's output".into(),
                format!(
                    "`--list` printed {}, not a mapping of groups",
                    structured::kind(&other)
                ),
            ));
        }
    };
    structured::parse_list(&doc, data, file, |h| match run(&["--host", h]) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(Value::Null) => Ok(Default::default()),
        Ok(other) => Err(format!(
            "`--host {h}` printed {}, not a mapping",
            structured::kind(&other)
        )),
        Err(e) => Err(e.to_string()),
    })
    .map_err(|(at, m)| invalid(at, m))
}

/// Run an inventory script: its stdout (at most the config file cap), or
/// why it failed (its stderr's end).
fn run_script(path: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let cap = yaml::MAX_FILE_BYTES;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut out).take(cap + 1).read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut err).take(64 << 10).read_to_end(&mut buf);
        buf
    });
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > SCRIPT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it ran for more than {} s and was killed",
                    SCRIPT_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        let tail = String::from_utf8_lossy(&err);
        return Err(format!(
            "it exited with {status}: {}",
            crate::untrusted::line_max(tail.trim(), 1024)
        ));
    }
    if out.len() as u64 > cap {
        return Err(format!("it printed more than {cap} bytes"));
    }
    Ok(out)
}

/// A variable's value and where it was set, for messages.
struct Set<'a> {
    value: &'a Value,
    file: PathBuf,
    at: String,
}

/// Every variable of `host`, merged in Ansible's order: `all`'s inline
/// vars, the host's groups' inline vars (by depth, priority, name), then
/// `group_vars/all`, `group_vars/<group>` (per source, then per group),
/// the host's inline vars, `host_vars/<host>`.
fn merged<'a>(
    data: &'a Data,
    files: &'a vars_files::VarsFiles,
    host: &str,
    sorted_groups: &[String],
) -> IndexMap<String, Set<'a>> {
    let mut m: IndexMap<String, Set<'a>> = IndexMap::new();
    let group_inline = |g: &str, m: &mut IndexMap<String, Set<'a>>| {
        let grp = &data.groups[g];
        for (k, v) in &grp.vars {
            m.insert(
                k.clone(),
                Set {
                    value: v,
                    file: data.files[grp.origin[k]].clone(),
                    at: format!("vars of group {g}"),
                },
            );
        }
    };
    group_inline("all", &mut m);
    for g in sorted_groups {
        group_inline(g, &mut m);
    }
    // A file's variable is named by its key in the file.
    let from_files = |sets: Vec<vars_files::FileVar<'a>>, m: &mut IndexMap<String, Set<'a>>| {
        for (key, value, file) in sets {
            let at = key.clone();
            m.insert(key, Set { value, file, at });
        }
    };
    from_files(files.group_vars(&["all".to_string()]), &mut m);
    from_files(files.group_vars(sorted_groups), &mut m);
    let h = &data.hosts[host];
    for (k, v) in &h.vars {
        m.insert(
            k.clone(),
            Set {
                value: v,
                file: data.files[h.origin[k]].clone(),
                at: format!("host {host}"),
            },
        );
    }
    from_files(files.host_vars(host), &mut m);
    m
}

fn resolve(
    data: &Data,
    files: &vars_files::VarsFiles,
    sources: &[PathBuf],
) -> Result<Inventory, ConfigError> {
    let depths = data.depths();
    let base = sources
        .first()
        .map(|s| {
            if s.is_dir() {
                s.clone()
            } else {
                s.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        })
        .unwrap_or_default();
    let ancestors = data.all_ancestors();
    let mut nodes = Vec::with_capacity(data.hosts.len());
    for host in data.hosts.keys() {
        let groups: Vec<String> = data
            .host_groups(host, &ancestors)
            .into_iter()
            .filter(|g| g != "all")
            .collect();
        let sorted = data.sorted(&groups, &depths);
        let vars = merged(data, files, host, &sorted);
        nodes.push(Arc::new(node(host, &vars, groups, &base)?));
    }
    Ok(Inventory {
        nodes,
        groups: data.groups.keys().cloned().collect(),
        sources: sources.to_vec(),
    })
}

/// The last of `names` that is set (not null): Ansible's rule when a
/// connection option has several variable names.
fn last<'a, 'b>(
    vars: &'b IndexMap<String, Set<'a>>,
    names: &[&'static str],
) -> Option<(&'static str, &'b Set<'a>)> {
    names
        .iter()
        .rev()
        .find_map(|n| vars.get(*n).filter(|s| !s.value.is_null()).map(|s| (*n, s)))
}

fn node(
    host: &str,
    vars: &IndexMap<String, Set<'_>>,
    mut roles: Vec<String>,
    base: &Path,
) -> Result<NodeSpec, ConfigError> {
    let bad = |key: &str, set: &Set<'_>, message: String| ConfigError::Invalid {
        path: set.file.clone(),
        at: format!("{}, {key} (for host {host})", set.at),
        message,
    };
    // A value uphost uses: a scalar, not a template, not vaulted.
    let text = |key: &'static str, set: &Set<'_>| -> Result<String, ConfigError> {
        let s = match set.value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
            Value::Object(o) if o.contains_key("__ansible_vault") => {
                return Err(bad(
                    key,
                    set,
                    "is vaulted, and uphost does not decrypt Ansible Vault: give uphost the output of `ansible-inventory -i INVENTORY --list --vault-password-file FILE` instead (it holds the decrypted values), or set it in clear".into(),
                ));
            }
            other => {
                return Err(bad(
                    key,
                    set,
                    format!("is {}, not a single value", structured::kind(other)),
                ));
            }
        };
        if s.contains("{{") || s.contains("{%") {
            return Err(bad(
                key,
                set,
                format!(
                    "is the Jinja template `{}`, which uphost does not evaluate (it would be taken literally): give uphost the output of `ansible-inventory -i INVENTORY --list` (templates in inventory variables stay as they are there too, so set the value itself), or write the value here",
                    crate::untrusted::line_max(&s, 200)
                ),
            ));
        }
        Ok(s)
    };
    let get = |names: &[&'static str]| -> Result<Option<(String, &'static str)>, ConfigError> {
        match last(vars, names) {
            None => Ok(None),
            Some((k, set)) => Ok(Some((text(k, set)?, k))),
        }
    };
    let connection = match get(&["ansible_connection"])? {
        None => Connection::Ssh,
        Some((c, k)) => match c.as_str() {
            "ssh" | "smart" | "paramiko" | "paramiko_ssh" => Connection::Ssh,
            "local" => Connection::Local,
            "dry-run" => Connection::DryRun,
            other => {
                return Err(bad(
                    k,
                    &vars[k],
                    format!(
                        "connection `{other}` is not one uphost has: use `ssh`, `local` or `dry-run`"
                    ),
                ));
            }
        },
    };
    let port = match get(&["ansible_port", "ansible_ssh_port"])? {
        None => None,
        Some((p, k)) => Some(
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(k, &vars[k], format!("`{p}` is not a TCP port (1-65535)")))?,
        ),
    };
    if connection == Connection::Ssh {
        refuse_any(vars, &bad, NOT_OVER_SSH)?;
    }
    let become_on = match last(vars, &["ansible_become"]) {
        None => false,
        Some((k, set)) => boolean(set.value)
            .ok_or_else(|| bad(k, set, format!("`{}` is not a boolean", set.value)))?,
    };
    let become_user = if become_on {
        if let Some((m, k)) = get(&["ansible_become_method"])?
            && m != "sudo"
        {
            return Err(bad(
                k,
                &vars[k],
                format!(
                    "become method `{m}` is not one uphost has: it runs commands through `sudo -n`; use sudo"
                ),
            ));
        }
        refuse_any(vars, &bad, NOT_WITH_BECOME)?;
        Some(
            get(&["ansible_become_user", "ansible_sudo_user"])?
                .map(|(u, _)| u)
                .unwrap_or_else(|| "root".into()),
        )
    } else {
        None
    };
    let expand = |p: String| -> PathBuf {
        match p.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(rest))
                .unwrap_or_else(|| PathBuf::from(&p)),
            None => base.join(p),
        }
    };
    roles.sort();
    Ok(NodeSpec {
        name: host.to_string(),
        address: get(&["ansible_host", "ansible_ssh_host"])?
            .map(|(a, _)| a)
            .unwrap_or_else(|| host.to_string()),
        port,
        user: get(&["ansible_user", "ansible_ssh_user"])?.map(|(u, _)| u),
        key_file: get(&["ansible_private_key_file", "ansible_ssh_private_key_file"])?
            .map(|(p, _)| expand(p)),
        connection,
        become_user,
        roles,
        node_root: get(&["uphost_node_root"])?.map(|(p, _)| base.join(p)),
    })
}

/// Variables uphost cannot honour, each group with why: the first one set
/// is the error.
type Refused = &'static [(&'static [&'static str], &'static str)];

/// What an ssh node may not set.
const NOT_OVER_SSH: Refused = &[
    (
        &[
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_ssh_password",
        ],
        "uphost's ssh authenticates with keys only (the ssh agent, ansible_ssh_private_key_file, or an ssh_config given as `ssh.config:` in uphost.yaml): remove the password and install a key",
    ),
    (
        &[
            "ansible_ssh_common_args",
            "ansible_ssh_extra_args",
            "ansible_ssh_args",
        ],
        "uphost does not pass extra ssh arguments: put these options (a ProxyJump, say) in an ssh_config file and point `ssh.config:` in uphost.yaml at it",
    ),
];

/// What a node with become may not set.
const NOT_WITH_BECOME: Refused = &[
    (
        &[
            "ansible_become_password",
            "ansible_become_pass",
            "ansible_sudo_pass",
        ],
        "uphost runs sudo non-interactively (`sudo -n`) and never types a password: allow the user passwordless sudo (NOPASSWD) for the upgrade's commands, and remove the password",
    ),
    (
        &[
            "ansible_become_exe",
            "ansible_sudo_exe",
            "ansible_become_flags",
            "ansible_sudo_flags",
        ],
        "uphost runs `sudo -n -u USER`, with no other executable or flags: remove it",
    ),
];

fn refuse_any(
    vars: &IndexMap<String, Set<'_>>,
    bad: &dyn Fn(&str, &Set<'_>, String) -> ConfigError,
    refused: Refused,
) -> Result<(), ConfigError> {
    for (names, why) in refused {
        if let Some((k, set)) = last(vars, names) {
            return Err(bad(k, set, format!("is set, but {why}")));
        }
    }
    Ok(())
}

/// Ansible's `boolean()`: yes/no, true/false, on/off, 1/0, y/n, t/f.
fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => {
            let x = n.as_f64()?;
            (x == 1.0 || x == 0.0).then_some(x == 1.0)
        }
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" | "1.0" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" | "0.0" => Some(false),
            _ => None,
        },
        Value::Null => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
