//! Configuration: `uphost.yaml`, the inventory and the services file.

pub mod inventory;
pub mod rollout;
pub mod services;
pub mod store;
pub mod window;
pub mod yaml;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::hash::BuildHasher as _;
use std::sync::Arc;

pub use inventory::{Connection, Inventory, NodeSpec};
pub use services::{
    BatchGate, GateCommand, LimitsOverride, Mode, NodeMajorConfig, OnBudget, OnTimeout, Order,
    ProbeCommand, ProbeConfig, RebootWhen, ServiceConfig, ServicesFile, Survival, TrainConfig,
    TrainStyle,
};
pub use yaml::ConfigError;

/// A service's nodes in inventory order, indexed by name (an `exec` finds
/// its node in O(1), whatever the size of the service). The nodes are the
/// inventory's own, shared; the index holds positions, not names, so a
/// service of N nodes costs about 16 bytes per node.
#[derive(Debug, Clone, Default)]
pub struct NodeSet {
    list: Vec<Arc<NodeSpec>>,
    index: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl NodeSet {
    /// Index a list of nodes.
    pub fn new(list: Vec<Arc<NodeSpec>>) -> NodeSet {
        let hasher = std::hash::RandomState::new();
        let mut index = hashbrown::HashTable::with_capacity(list.len());
        for (i, n) in list.iter().enumerate() {
            let h = hasher.hash_one(n.name.as_str());
            index.insert_unique(h, i as u32, |&j| {
                hasher.hash_one(list[j as usize].name.as_str())
            });
        }
        NodeSet {
            list,
            index,
            hasher,
        }
    }

    /// A node by name, shared (a hook's `exec` keeps it for the command
    /// by cloning the pointer, not the node).
    pub fn by_name(&self, name: &str) -> Option<&Arc<NodeSpec>> {
        let h = self.hasher.hash_one(name);
        self.index
            .find(h, |&i| self.list[i as usize].name == name)
            .map(|&i| &self.list[i as usize])
    }
}

impl std::ops::Deref for NodeSet {
    type Target = [Arc<NodeSpec>];
    fn deref(&self) -> &[Arc<NodeSpec>] {
        &self.list
    }
}

/// Global limits (defaults shown in [`Limits::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Linear memory cap per instance, bytes.
    pub memory_bytes: u64,
    /// Deadline for one hook call.
    pub hook_timeout: std::time::Duration,
    /// Default timeout of one command.
    pub exec_timeout: std::time::Duration,
    /// Cap on captured stdout/stderr of one command, bytes.
    pub output_cap: usize,
    /// Cap on log lines per hook call.
    pub max_log_lines: u64,
    /// Cap on what one plugin writes to the journal in one run, bytes.
    pub journal_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            hook_timeout: std::time::Duration::from_secs(1800),
            exec_timeout: std::time::Duration::from_secs(600),
            output_cap: 1 << 20,
            max_log_lines: 10_000,
            journal_bytes: 1 << 30,
        }
    }
}

impl Limits {
    /// Apply an override.
    pub fn with(&self, o: &LimitsOverride) -> Limits {
        Limits {
            memory_bytes: o.memory_mb.map(|m| m << 20).unwrap_or(self.memory_bytes),
            hook_timeout: o
                .hook_timeout_s
                .map(std::time::Duration::from_secs)
                .unwrap_or(self.hook_timeout),
            exec_timeout: o
                .exec_timeout_s
                .map(std::time::Duration::from_secs)
                .unwrap_or(self.exec_timeout),
            output_cap: o
                .output_cap_kb
                .map(|k| (k as usize) << 10)
                .unwrap_or(self.output_cap),
            max_log_lines: o.max_log_lines.unwrap_or(self.max_log_lines),
            journal_bytes: o.journal_mb.map(|m| m << 20).unwrap_or(self.journal_bytes),
        }
    }
}

/// `first_load:`: how a large plugin (4 MiB and more) whose optimized
/// code is not in the compile cache yet is compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstLoad {
    /// By the quick compiler (Winch, seconds) for this load, and by the
    /// optimizing one in the background for the next.
    #[default]
    Quick,
    /// By the optimizing compiler (Cranelift) before the command goes on:
    /// slower to load, faster hooks from the first call.
    Optimized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    plugins: PathBuf,
    inventory: Sources,
    services: PathBuf,
    #[serde(default = "default_state")]
    state_dir: PathBuf,
    #[serde(default)]
    forks: Option<usize>,
    #[serde(default)]
    limits: LimitsOverride,
    #[serde(default)]
    max_instances: Option<u32>,
    #[serde(default)]
    ssh: SshSettings,
    #[serde(default)]
    plugin_max_mb: Option<u64>,
    #[serde(default)]
    plugin_compile_s: Option<u64>,
    #[serde(default)]
    window: Option<window::RawWindow>,
    #[serde(default)]
    reboot: RebootSettings,
    #[serde(default)]
    update_identifier: Option<UpdateIdentifier>,
    #[serde(default)]
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    cache_max_mb: Option<u64>,
    #[serde(default)]
    first_load: FirstLoad,
    #[serde(default)]
    etcd: Option<store::EtcdSettings>,
}

/// `inventory:` is one source or a list of them (merged in order, as
/// Ansible merges several `-i`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Sources {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

fn default_state() -> PathBuf {
    PathBuf::from("state")
}

/// The default cap on a plugin file's size (`plugin_max_mb:`): a service
/// plugin is kilobytes to a few tens of megabytes (a Python component);
/// compiling a larger file could take minutes and gigabytes before anyone
/// approved it.
pub const DEFAULT_PLUGIN_MAX_BYTES: u64 = 64 << 20;

/// A name the journal keeps for a gate or a probe: 1-64 of a-z, 0-9, `-`,
/// `_` (so it never looks like a service's `(gate)`).
fn journal_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// An `http://HOST[:PORT]/PATH` URL as (host, port, path).
pub fn probe_url(u: &str) -> Option<ProbeUrl> {
    let (tls, rest) = match (u.strip_prefix("http://"), u.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty()
        || host.chars().any(|c| c.is_control() || c == ' ')
        || path.chars().any(|c| c.is_control() || c == ' ')
    {
        return None;
    }
    Some(ProbeUrl {
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// An HTTP(S) probe's URL, read.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeUrl {
    /// `https://`.
    pub tls: bool,
    /// The host (a name or an address): connected to, sent as `Host:`,
    /// and the name the server's certificate must carry.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path.
    pub path: String,
}

/// The certificates of a PEM file of CAs (a probe's `ca_file`), or why
/// not: at most 1 MiB, at least one certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return Err(format!(
            "{} is not a PEM file of at most 1 MiB",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The largest parallelism bound accepted (`forks:` or `--forks`).
pub const MAX_FORKS: usize = 10_000;

/// Check a parallelism bound: a count from 1 to [`MAX_FORKS`].
fn check_forks(n: usize) -> Result<usize, String> {
    if (1..=MAX_FORKS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is out of range: use a count from 1 to {MAX_FORKS}"
        ))
    }
}

/// Parse a `--forks` value (see [`check_forks`]).
pub fn parse_forks(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .and_then(|n| check_forks(n).ok())
        .ok_or_else(|| {
            format!("`{s}` is not a parallelism bound: use a count from 1 to {MAX_FORKS}")
        })
}

/// Everything a command needs, with paths resolved against the directory
/// of `uphost.yaml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file.
    pub path: PathBuf,
    /// The plugin directory.
    pub plugins_dir: PathBuf,
    /// The inventory sources (files, directories, scripts), in order.
    pub inventory_sources: Vec<PathBuf>,
    /// The services file.
    pub services_path: PathBuf,
    /// The state directory (journal, cache, reports).
    pub state_dir: PathBuf,
    /// Parsed inventory.
    pub inventory: Inventory,
    /// Parsed services file.
    pub services: ServicesFile,
    /// Default parallelism.
    pub forks: usize,
    /// Global limits.
    pub limits: Limits,
    /// Bound on concurrently live plugin instances.
    pub max_instances: u32,
    /// The ssh transport's settings (`ssh:` in uphost.yaml).
    pub ssh: SshSettings,
    /// The cap on a plugin file's size (`plugin_max_mb:`).
    pub plugin_max_bytes: u64,
    /// How long compiling one plugin may take (`plugin_compile_s:`).
    pub plugin_compile: std::time::Duration,
    /// The maintenance window (`window:`): none, always open.
    pub window: Option<window::Window>,
    /// How the host reboots a node and sees it back (`reboot:`).
    pub reboot: RebootSettings,
    /// The marker a run stamps on every node it changes
    /// (`update_identifier:`): none, no marker.
    pub update_identifier: Option<UpdateIdentifier>,
    /// Where compiled plugins are kept (`cache_dir:`; the user's cache
    /// directory by default, shared with `uphost test`).
    pub cache_dir: PathBuf,
    /// The cap on the compile cache's size (`cache_max_mb:`), bytes.
    pub cache_max_bytes: u64,
    /// How a large plugin whose optimized code is not cached yet is
    /// compiled (`first_load:`).
    pub first_load: FirstLoad,
    /// The replicated state store (`etcd:`): none, the state directory
    /// alone.
    pub etcd: Option<store::EtcdSettings>,
}

/// The default compile cache directory: `$XDG_CACHE_HOME/uphost`, else
/// `~/.cache/uphost`.
pub fn user_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("uphost")
}

/// The compile cache's default size cap.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;

impl Config {
    /// Find and load the configuration: `explicit` or `./uphost.yaml`;
    /// `inventory`, when not empty, replaces its `inventory:` (`-i`, as
    /// paths from the current directory).
    pub fn load(explicit: Option<&Path>, inventory: &[PathBuf]) -> Result<Config, ConfigError> {
        let (path, base, raw) = Self::raw(explicit)?;
        let inventory_sources = Self::sources(&path, &base, &raw, inventory)?;
        let services_path = base.join(&raw.services);
        // A file that cannot be read is reported against the key naming it.
        let named = |key: &str, what: &str| {
            let (key, what, cfg) = (key.to_string(), what.to_string(), path.clone());
            move |e: ConfigError| match e {
                ConfigError::Read { path: p, source } => ConfigError::Invalid {
                    path: cfg,
                    at: key.clone(),
                    message: format!(
                        "cannot read {}: {source}; point `{key}:` at {what}",
                        p.display()
                    ),
                },
                other => other,
            }
        };
        let inventory = inventory::load(&inventory_sources).map_err(named(
            "inventory",
            "the Ansible inventory (an INI, YAML or JSON file, a script, or a directory of them)",
        ))?;
        let services = services::load(&services_path).map_err(named(
            "services",
            "the services file (service → roles, rollout, params)",
        ))?;
        let mut services = services;
        // A probe's CA file is relative to the services file.
        let services_dir = services_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for p in &mut services.probes {
            if let Some(f) = &mut p.ca_file {
                *f = services_dir.join(&*f);
            }
        }
        let cfg = Config {
            path: path.clone(),
            plugins_dir: base.join(&raw.plugins),
            inventory_sources,
            services_path,
            state_dir: base.join(&raw.state_dir),
            inventory,
            services,
            forks: check_forks(raw.forks.unwrap_or(10)).map_err(|message| {
                ConfigError::Invalid {
                    path: path.clone(),
                    at: "forks".into(),
                    message,
                }
            })?,
            limits: match raw.limits.out_of_range() {
                None => Limits::default().with(&raw.limits),
                Some((key, message)) => {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: format!("limits.{key}"),
                        message,
                    });
                }
            },
            max_instances: match raw.max_instances {
                None => 64,
                Some(n) if (1..=4096).contains(&n) => n,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: "max_instances".into(),
                        message: format!(
                            "{} is outside 1..=4096 (the number of plugin instances alive at once)",
                            raw.max_instances.unwrap_or_default()
                        ),
                    });
                }
            },
            ssh: SshSettings {
                config: raw.ssh.config.map(|p| base.join(p)),
                ..raw.ssh
            },
            window: raw.window.as_ref().map(|w| w.check()).transpose().map_err(
                |(key, message)| ConfigError::Invalid {
                    path: path.clone(),
                    at: format!("window.{key}"),
                    message,
                },
            )?,
            reboot: match raw.reboot.check() {
                None => raw.reboot.clone(),
                Some((key, message)) => {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: format!("reboot.{key}"),
                        message,
                    });
                }
            },
            update_identifier: match &raw.update_identifier {
                Some(u)
                    if !u.path.starts_with('/')
                        || u.path.contains("/../")
                        || u.path.ends_with('/')
                        || u.path.chars().any(char::is_control) =>
                {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: "update_identifier.path".into(),
                        message: format!(
                            "`{}` is not an absolute file path on the nodes (e.g. /var/lib/uphost/update-identifier)",
                            u.path.escape_debug()
                        ),
                    });
                }
                other => other.clone(),
            },
            plugin_max_bytes: match raw.plugin_max_mb {
                None => DEFAULT_PLUGIN_MAX_BYTES,
                Some(mb) if (1..=4096).contains(&mb) => mb << 20,
                Some(mb) => {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: "plugin_max_mb".into(),
                        message: format!(
                            "{mb} is outside 1..=4096 (MiB: the largest plugin file loaded)"
                        ),
                    });
                }
            },
            cache_dir: raw
                .cache_dir
                .as_ref()
                .map(|d| base.join(d))
                .unwrap_or_else(user_cache_dir),
            first_load: raw.first_load,
            cache_max_bytes: match raw.cache_max_mb {
                None => DEFAULT_CACHE_MAX_BYTES,
                Some(m) if (16..=1 << 20).contains(&m) => m << 20,
                Some(m) => {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: "cache_max_mb".into(),
                        message: format!(
                            "{m} is outside 16..=1048576 (MiB the compile cache may hold; the least recently used plugins are dropped past it)"
                        ),
                    });
                }
            },
            etcd: match &raw.etcd {
                None => None,
                Some(e) => match e.check() {
                    None => Some(e.clone()),
                    Some((key, message)) => {
                        return Err(ConfigError::Invalid {
                            path: path.clone(),
                            at: format!("etcd.{key}"),
                            message,
                        });
                    }
                },
            },
            plugin_compile: match raw.plugin_compile_s {
                None => std::time::Duration::from_secs(120),
                Some(s) if (1..=3600).contains(&s) => std::time::Duration::from_secs(s),
                Some(s) => {
                    return Err(ConfigError::Invalid {
                        path: path.clone(),
                        at: "plugin_compile_s".into(),
                        message: format!(
                            "{s} is outside 1..=3600 (seconds compiling one plugin may take)"
                        ),
                    });
                }
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration file as written, and the directory its paths
    /// are relative to.
    fn raw(explicit: Option<&Path>) -> Result<(PathBuf, PathBuf, RawConfig), ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from("uphost.yaml");
                if let Err(e) = std::fs::metadata(&p) {
                    // Absent: not found; there but unreadable (a symlink
                    // loop, a dangling link, no permission): said as such.
                    if std::fs::symlink_metadata(&p).is_err() {
                        return Err(ConfigError::NotFound {
                            dir: std::env::current_dir().unwrap_or_default(),
                        });
                    }
                    return Err(ConfigError::Read { path: p, source: e });
                }
                p
            }
        };
        let raw: RawConfig = yaml::read(&path)?;
        if raw.plugins.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                path: path.clone(),
                at: "plugins".into(),
                message: "is empty: name the directory that holds the service plugins (*.wasm), e.g. `plugins: plugins/`".into(),
            });
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok((path, base, raw))
    }

    /// The inventory sources: `-i` ones when given, else `inventory:`.
    fn sources(
        path: &Path,
        base: &Path,
        raw: &RawConfig,
        inventory: &[PathBuf],
    ) -> Result<Vec<PathBuf>, ConfigError> {
        if !inventory.is_empty() {
            return Ok(inventory.to_vec());
        }
        match &raw.inventory {
            Sources::One(p) => Ok(vec![base.join(p)]),
            Sources::Many(v) if !v.is_empty() => Ok(v.iter().map(|p| base.join(p)).collect()),
            Sources::Many(_) => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                at: "inventory".into(),
                message: "an empty list: name at least one inventory file or directory".into(),
            }),
        }
    }

    /// Only the inventory: `-i` sources when given (no uphost.yaml
    /// needed), else `inventory:` of the configuration. `uphost inventory`
    /// shows it even when the services file does not match it yet.
    pub fn load_inventory(
        explicit: Option<&Path>,
        inventory: &[PathBuf],
    ) -> Result<Inventory, ConfigError> {
        if !inventory.is_empty() {
            return inventory::load(inventory);
        }
        let (path, base, raw) = Self::raw(explicit)?;
        let sources = Self::sources(&path, &base, &raw, inventory)?;
        inventory::load(&sources)
    }

    /// Cross-file checks: every role a service names exists (every
    /// unknown one reported at once, with the closest group names);
    /// per-service limits are within range.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_gates()?;
        self.validate_probes()?;
        self.validate_survival()?;
        let mut unknown = Vec::new();
        for (name, svc) in &self.services.services {
            if let Some((key, message)) = svc.limits.out_of_range() {
                return Err(ConfigError::Invalid {
                    path: self.services_path.clone(),
                    at: format!("services.{name}.limits.{key}"),
                    message,
                });
            }
            for (i, role) in svc.roles.iter().enumerate() {
                if !self.inventory.groups.contains(role) {
                    let close = closest_groups(role, &self.inventory.groups);
                    unknown.push(format!(
                        "services.{name}.roles[{i}]: `{role}`{}",
                        if close.is_empty() {
                            String::new()
                        } else {
                            format!(" (closest groups: {})", close.join(", "))
                        }
                    ));
                }
            }
        }
        if !unknown.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.services_path.clone(),
                at: "services".into(),
                message: format!(
                    "{} role(s) are not groups of the inventory ({}):\n  {}\nuse the inventory's group names (`uphost inventory` lists them)",
                    unknown.len(),
                    self.inventory.label(),
                    unknown.join("\n  ")
                ),
            });
        }
        Ok(())
    }

    /// The train's gate commands: each named once, with a name the journal
    /// can hold, a program, a timeout in range.
    fn validate_gates(&self) -> Result<(), ConfigError> {
        let invalid = |i: usize, key: &str, message: String| ConfigError::Invalid {
            path: self.services_path.clone(),
            at: format!("train.gates[{i}]{key}"),
            message,
        };
        let gates = &self.services.train.gates;
        for (i, g) in gates.iter().enumerate() {
            if !journal_name(&g.name) {
                return Err(invalid(
                    i,
                    ".name",
                    format!(
                        "`{}` is not a gate name: use 1-64 of a-z, 0-9, `-`, `_`",
                        g.name.escape_debug()
                    ),
                ));
            }
            if gates[..i].iter().any(|o| o.name == g.name) {
                return Err(invalid(
                    i,
                    ".name",
                    format!(
                        "a second gate named `{}`: give each gate its own name",
                        g.name
                    ),
                ));
            }
            if g.command.first().is_none_or(|p| p.is_empty()) {
                return Err(invalid(
                    i,
                    ".command",
                    "no program: write the program and its arguments as a list, e.g. [tempest, run, --smoke]".into(),
                ));
            }
            if let Some(t) = g.timeout_s
                && !(1..=7 * 86400).contains(&t)
            {
                return Err(invalid(
                    i,
                    ".timeout_s",
                    format!(
                        "{t} is outside 1..={} (seconds the gate may take)",
                        7 * 86400
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every probe: a name of its own, one target of a form it can sample,
    /// its node and service known, its timings in range.
    fn validate_probes(&self) -> Result<(), ConfigError> {
        let invalid = |i: usize, key: &str, message: String| ConfigError::Invalid {
            path: self.services_path.clone(),
            at: format!("probes[{i}]{key}"),
            message,
        };
        let probes = &self.services.probes;
        for (i, p) in probes.iter().enumerate() {
            if !journal_name(&p.name) {
                return Err(invalid(
                    i,
                    ".name",
                    format!(
                        "`{}` is not a probe name: use 1-64 of a-z, 0-9, `-`, `_`",
                        p.name.escape_debug()
                    ),
                ));
            }
            if probes[..i].iter().any(|o| o.name == p.name) {
                return Err(invalid(
                    i,
                    ".name",
                    format!("a second probe named `{}`", p.name),
                ));
            }
            let kinds = [p.tcp.is_some(), p.http.is_some(), p.command.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(invalid(
                    i,
                    "",
                    "a probe has exactly one of `tcp: HOST:PORT`, `http: http://HOST:PORT/PATH`, `command: {node, argv}`".into(),
                ));
            }
            if let Some(t) = &p.tcp
                && t.rsplit_once(':')
                    .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(invalid(i, ".tcp", format!("`{t}` is not HOST:PORT")));
            }
            if let Some(u) = &p.http {
                let Some(url) = crate::config::probe_url(u) else {
                    return Err(invalid(
                        i,
                        ".http",
                        format!("`{u}` is not http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH"),
                    ));
                };
                if let Some(f) = &p.ca_file {
                    if !url.tls {
                        return Err(invalid(
                            i,
                            ".ca_file",
                            "a CA file is for an https:// probe".into(),
                        ));
                    }
                    if let Err(why) = crate::config::read_ca_file(f) {
                        return Err(invalid(i, ".ca_file", why));
                    }
                }
            } else if p.ca_file.is_some() {
                return Err(invalid(
                    i,
                    ".ca_file",
                    "a CA file is for an https:// probe".into(),
                ));
            }
            if let Some(c) = &p.command {
                if self.inventory.node(&c.node).is_none() {
                    return Err(invalid(
                        i,
                        ".command.node",
                        format!("`{}` is not a node of {}", c.node, self.inventory.label()),
                    ));
                }
                if c.argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(invalid(
                        i,
                        ".command.argv",
                        "no program: write [program, args…]".into(),
                    ));
                }
            }
            if let Some(s) = &p.service
                && !self.services.services.contains_key(s)
            {
                return Err(invalid(
                    i,
                    ".service",
                    format!(
                        "`{s}` is not a service of this file{}",
                        yaml::did_you_mean(s, self.services.services.keys().map(String::as_str))
                    ),
                ));
            }
            if p.interval_ms
                .is_some_and(|v| !(10..=3_600_000).contains(&v))
            {
                return Err(invalid(
                    i,
                    ".interval_ms",
                    "outside 10..=3600000 (milliseconds between samples)".into(),
                ));
            }
            if p.timeout_ms.is_some_and(|v| !(10..=600_000).contains(&v)) {
                return Err(invalid(
                    i,
                    ".timeout_ms",
                    "outside 10..=600000 (milliseconds a sample may take)".into(),
                ));
            }
            if p.budget_s.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
                return Err(invalid(
                    i,
                    ".budget_s",
                    "not a number of seconds (0 or more)".into(),
                ));
            }
        }
        let gates = self
            .services
            .services
            .iter()
            .filter_map(|(name, svc)| {
                svc.gate
                    .as_ref()
                    .map(|g| (format!("services.{name}.gate"), g))
            })
            .chain(
                self.services
                    .train
                    .probes
                    .as_ref()
                    .map(|g| ("train.probes".to_string(), g)),
            );
        for (at, g) in gates {
            let invalid = |key: &str, message: String| ConfigError::Invalid {
                path: self.services_path.clone(),
                at: format!("{at}{key}"),
                message,
            };
            if g.probes.is_empty() && at == "train.probes" {
                return Err(invalid(
                    ".probes",
                    "name the probes that must be healthy".into(),
                ));
            }
            for p in &g.probes {
                if !probes.iter().any(|x| &x.name == p) {
                    return Err(invalid(
                        ".probes",
                        format!(
                            "`{p}` is not a probe of this file{}",
                            yaml::did_you_mean(p, probes.iter().map(|x| x.name.as_str()))
                        ),
                    ));
                }
            }
            if g.samples.is_some_and(|n| !(1..=10_000).contains(&n)) {
                return Err(invalid(".samples", "outside 1..=10000".into()));
            }
            if g.deadline_s.is_some_and(|d| !(1..=7 * 86400).contains(&d)) {
                return Err(invalid(
                    ".deadline_s",
                    "outside 1..=604800 (seconds)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Every survival check: named once per service, with programs.
    fn validate_survival(&self) -> Result<(), ConfigError> {
        for (name, svc) in &self.services.services {
            for (i, s) in svc.survival.iter().enumerate() {
                let invalid = |key: &str, message: String| ConfigError::Invalid {
                    path: self.services_path.clone(),
                    at: format!("services.{name}.survival[{i}]{key}"),
                    message,
                };
                if !journal_name(&s.name) {
                    return Err(invalid(
                        ".name",
                        format!(
                            "`{}` is not a name: use 1-64 of a-z, 0-9, `-`, `_`",
                            s.name.escape_debug()
                        ),
                    ));
                }
                if svc.survival[..i].iter().any(|o| o.name == s.name) {
                    return Err(invalid(
                        ".name",
                        format!("a second survival check named `{}`", s.name),
                    ));
                }
                let empty = |c: &[String]| c.first().is_none_or(|p| p.is_empty());
                if empty(&s.check) || s.create.as_deref().is_some_and(empty) {
                    return Err(invalid("", "`create` and `check` are a program and its arguments, e.g. [sh, survival/check-vm.sh]".into()));
                }
                if s.timeout_s.is_some_and(|t| !(1..=86400).contains(&t)) {
                    return Err(invalid(".timeout_s", "outside 1..=86400 (seconds)".into()));
                }
            }
        }
        Ok(())
    }

    /// The nodes hosting `service`, in inventory order.
    pub fn service_nodes(&self, service: &str) -> Vec<&Arc<NodeSpec>> {
        let Some(svc) = self.services.services.get(service) else {
            return Vec::new();
        };
        self.inventory
            .nodes
            .iter()
            .filter(|n| {
                svc.roles.iter().any(|r| r == "all")
                    || n.roles.iter().any(|r| svc.roles.contains(r))
            })
            .collect()
    }

    /// Settings for `service` (defaults when the services file omits it).
    pub fn service(&self, service: &str) -> ServiceConfig {
        self.services
            .services
            .get(service)
            .cloned()
            .unwrap_or_default()
    }
}

/// Up to three group names closest to `role` (by edit distance, or
/// containing it, or contained in it): `nova` finds `nova-compute`,
/// `nova-api`.
fn closest_groups(role: &str, groups: &std::collections::BTreeSet<String>) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = groups
        .iter()
        .filter(|g| *g != "all" && *g != "ungrouped")
        .filter_map(|g| {
            let d = strsim::levenshtein(role, g);
            let related = g.contains(role) || role.contains(g.as_str());
            (related || d <= (role.len().max(g.len()) / 2).max(2))
                .then_some((if related { d.min(1) } else { d }, g))
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, g)| format!("`{g}`"))
        .collect()
}

/// uphost.yaml's `reboot:`: how the host reboots a node for a plugin
/// (`node-control.reboot`) and knows it is back.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebootSettings {
    /// The command of a normal reboot.
    #[serde(default = "default_reboot")]
    pub command: Vec<String>,
    /// The command of a kexec reboot.
    #[serde(default = "default_kexec")]
    pub kexec_command: Vec<String>,
    /// A read-only command printing the node's boot identity; the node is
    /// back when it answers with another one.
    #[serde(default = "default_boot_id")]
    pub boot_id: Vec<String>,
    /// How long a node may take to come back.
    #[serde(default = "default_reboot_timeout")]
    pub timeout_s: u64,
    /// How often the host looks.
    #[serde(default = "default_reboot_poll")]
    pub poll_ms: u64,
}

fn default_reboot() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}
fn default_kexec() -> Vec<String> {
    vec!["systemctl".into(), "kexec".into()]
}
fn default_boot_id() -> Vec<String> {
    vec!["cat".into(), "/proc/sys/kernel/random/boot_id".into()]
}
fn default_reboot_timeout() -> u64 {
    900
}
fn default_reboot_poll() -> u64 {
    1000
}

impl Default for RebootSettings {
    fn default() -> Self {
        RebootSettings {
            command: default_reboot(),
            kexec_command: default_kexec(),
            boot_id: default_boot_id(),
            timeout_s: default_reboot_timeout(),
            poll_ms: default_reboot_poll(),
        }
    }
}

impl RebootSettings {
    /// What is wrong, as (key, message).
    fn check(&self) -> Option<(&'static str, String)> {
        for (key, argv) in [
            ("command", &self.command),
            ("kexec_command", &self.kexec_command),
            ("boot_id", &self.boot_id),
        ] {
            if argv.is_empty() || argv[0].is_empty() {
                return Some((
                    key,
                    "give the command as a list: [program, arg, ...]".into(),
                ));
            }
        }
        if !(1..=86_400).contains(&self.timeout_s) {
            return Some((
                "timeout_s",
                format!("{} is outside 1..=86400", self.timeout_s),
            ));
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            return Some(("poll_ms", format!("{} is outside 10..=60000", self.poll_ms)));
        }
        None
    }
}

/// uphost.yaml's `update_identifier:`: the file on each node that holds
/// the id of the run changing it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentifier {
    /// An absolute path on the nodes.
    pub path: String,
}

/// Settings from uphost.yaml's `ssh:` section.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// An ssh_config file passed with `-F` (default: the user's).
    pub config: Option<std::path::PathBuf>,
    /// Accept and record unknown host keys (`StrictHostKeyChecking=accept-new`);
    /// changed keys are always refused.
    #[serde(default)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for a connection.
    pub connect_timeout_s: Option<u64>,
}
