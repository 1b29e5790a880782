//! A session: configuration, engine, loaded plugins, their approvals and
//! the plan — everything `plan`, `check`, `run` and `resume` share.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::Error;
use crate::capabilities::Grant;
use crate::capabilities::lock::{LOCK_FILE, LockFile};
use crate::config::rollout::{MaxFail, Rollout};
use crate::config::{Config, NodeSpec};
use crate::loading::{self, LoadError, LoadedPlugin, cache::Cache};
use crate::planning::{self, Plan};
use crate::runtime::{EngineLimits, Runtime};

/// Loaded plugins and their plan.
pub struct Session {
    /// Configuration.
    pub cfg: Config,
    /// Engine.
    pub rt: Arc<Runtime>,
    /// Plugins by service name.
    pub plugins: BTreeMap<String, LoadedPlugin>,
    /// The full plan.
    pub plan: Plan,
}

/// Effective settings of one service in a run.
#[derive(Debug, Clone)]
pub struct ServiceRun {
    /// Name.
    pub name: String,
    /// All nodes hosting it (shared with every hook call).
    pub nodes: Arc<crate::config::NodeSet>,
    /// The nodes `upgrade` runs on (after `--limit`), the only ones a
    /// mutating command may change.
    pub targets: Arc<crate::config::NodeSet>,
    /// Rollout.
    pub rollout: Rollout,
    /// Tolerated failures.
    pub max_fail: MaxFail,
    /// Pause after the first batch.
    pub canary: bool,
    /// Can roll back.
    pub reversible: bool,
    /// Limits for its hook calls (global ones with its overrides).
    pub limits: crate::config::Limits,
    /// Its hops, each in its stage of the run: one hop in stage 0 unless
    /// the run is a release train.
    pub hops: Vec<crate::events::Hop>,
    /// The probes that must be healthy before each batch.
    pub gate: Option<crate::config::BatchGate>,
    /// Its resource-survival checks.
    pub survival: Vec<crate::config::Survival>,
    /// Its plugin guards its nodes' cluster membership (node-major runs).
    pub node_guard: bool,
    /// When its plugin's reboots happen.
    pub reboot: crate::config::RebootWhen,
    /// Its plugin has an ok-to-stop gate.
    pub ok_to_stop: bool,
}

impl ServiceRun {
    /// Its hop in stage `stage` of the run, with its index in its train.
    pub fn hop_at(&self, stage: u32) -> Option<(usize, &crate::events::Hop)> {
        self.hops.iter().enumerate().find(|(_, h)| h.stage == stage)
    }

    /// Its nodes as a hook call sees them: every one, and the targets.
    pub fn scope(&self) -> crate::runtime::ServiceNodes {
        crate::runtime::ServiceNodes {
            all: self.nodes.clone(),
            targets: self.targets.clone(),
        }
    }
}

/// The default compile cache directory.
pub use crate::loading::cache::user_cache_dir;

impl Session {
    /// The probes `services`' plugins declare, one per probe and target
    /// node (`SERVICE/NAME@NODE`), sampled beside a run like the
    /// operator's.
    pub fn plugin_probes(&self, services: &[ServiceRun]) -> Vec<crate::config::ProbeConfig> {
        let mut out = Vec::new();
        for s in services {
            let Some(p) = self.plugins.get(&s.name) else {
                continue;
            };
            for d in &p.meta.probes {
                for n in s.targets.iter() {
                    out.push(crate::config::ProbeConfig {
                        name: format!("{}/{}@{}", s.name, d.name, n.name),
                        service: Some(s.name.clone()),
                        tcp: d.tcp_port.map(|port| {
                            if n.address.contains(':') {
                                format!("[{}]:{port}", n.address)
                            } else {
                                format!("{}:{port}", n.address)
                            }
                        }),
                        http: None,
                        expect_status: None,
                        ca_file: None,
                        command: d.command.as_ref().map(|argv| crate::config::ProbeCommand {
                            node: n.name.clone(),
                            argv: argv.clone(),
                            expect: d.expect.clone(),
                        }),
                        interval_ms: Some(d.interval_ms as u64),
                        timeout_ms: None,
                        budget_s: None,
                        on_budget: Default::default(),
                    });
                }
            }
        }
        out
    }

    /// The installed and target versions of `service` (its own in the
    /// services file, else the file's), and whether they are the file's.
    fn versions(&self, service: &str) -> (String, String, bool) {
        let conf = self.cfg.service(service);
        let sf = &self.cfg.services;
        let wide = conf.from_version.is_none() && conf.to_version.is_none();
        (
            conf.from_version.unwrap_or_else(|| sf.from_version.clone()),
            conf.to_version.unwrap_or_else(|| sf.to_version.clone()),
            wide,
        )
    }

    /// The contexts of `svc`'s hooks in run `run_id`, one per hop of its
    /// train, in order.
    pub fn hook_ctxs(
        &self,
        svc: &ServiceRun,
        run_id: &str,
        dry_run: bool,
    ) -> Vec<crate::runtime::HookCtx> {
        use crate::runtime::bindings::uphost::plugin::types;
        let conf = self.cfg.service(&svc.name);
        let (from, to, _) = self.versions(&svc.name);
        let params: Vec<(String, String)> = conf.params.into_iter().collect();
        svc.hops
            .iter()
            .enumerate()
            .map(|(i, h)| crate::runtime::HookCtx {
                run_id: run_id.to_string(),
                service: svc.name.clone(),
                from_version: h.from.clone(),
                to_version: h.to.clone(),
                hop: crate::runtime::HopCtx {
                    index: i as u32,
                    count: svc.hops.len() as u32,
                    kind: h.kind,
                    train_from: from.clone(),
                    train_to: to.clone(),
                },
                mode: match self.cfg.services.mode {
                    crate::config::Mode::MajorUpgrade => types::Mode::MajorUpgrade,
                    crate::config::Mode::MinorUpdate => types::Mode::MinorUpdate,
                },
                dry_run,
                params: params.clone(),
            })
            .collect()
    }

    /// Place every service's hops in the stages of the run (a release
    /// train when a plugin knows releases and the versions are several
    /// apart); an impossible path is the error, naming the plugin's path.
    fn place_hops(&self, services: &mut [ServiceRun]) -> Result<(), Error> {
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        let hops = self.train(&names)?;
        for (s, h) in services.iter_mut().zip(hops) {
            s.hops = h;
        }
        Ok(())
    }

    /// The hops of the services `names` (planned ones), each placed in its
    /// stage: one hop in stage 0 each unless the run is a release train.
    pub fn train(&self, names: &[&str]) -> Result<Vec<Vec<crate::events::Hop>>, Error> {
        use crate::planning::train::{TrainInput, plan_train};
        let versions: Vec<(String, String, bool)> =
            names.iter().map(|s| self.versions(s)).collect();
        let train = &self.cfg.services.train;
        let via: Vec<Option<&[String]>> = names
            .iter()
            .zip(&versions)
            .map(|(s, (_, _, wide))| {
                let own = self
                    .cfg
                    .services
                    .services
                    .get(*s)
                    .and_then(|c| c.via.as_deref());
                own.or(if *wide { train.via.as_deref() } else { None })
            })
            .collect();
        let minor = self.cfg.services.mode == crate::config::Mode::MinorUpdate;
        let inputs: Vec<TrainInput<'_>> = names
            .iter()
            .zip(&versions)
            .zip(via)
            .map(|((s, (from, to, wide)), via)| TrainInput {
                service: s,
                path: if minor {
                    None
                } else {
                    self.plugins[*s].meta.releases.as_ref()
                },
                from,
                to,
                deployment_wide: *wide,
                via,
            })
            .collect();
        let (_, hops) = plan_train(&inputs, self.cfg.services.train.style).map_err(|errors| {
            Error::Usage(format!(
                "the release train cannot be planned ({}):\n  {}\nnothing was executed",
                self.cfg.services_path.display(),
                errors.join("\n  ")
            ))
        })?;
        Ok(hops)
    }

    /// Load the plugins of `cfg` and plan: any plugin that fails to load is
    /// the error.
    pub async fn open(cfg: Config) -> Result<Session, Error> {
        let (session, mut failed) = Self::open_all(cfg).await?;
        if !failed.is_empty() {
            return Err(failed.swap_remove(0).into());
        }
        let deps = session.deps();
        Ok(Session {
            plan: planning::plan(&deps)?,
            ..session
        })
    }

    /// Load what loads (`plugins list` shows the rest beside it): the
    /// session of the plugins that loaded (planned when they plan) and the
    /// problem of each one that did not.
    pub async fn open_listing(cfg: Config) -> Result<(Session, Vec<LoadError>), Error> {
        let (session, failed) = Self::open_all(cfg).await?;
        let deps = session.deps();
        let plan = planning::plan(&deps).unwrap_or_default();
        Ok((Session { plan, ..session }, failed))
    }

    fn deps(&self) -> BTreeMap<String, Vec<String>> {
        self.plugins
            .iter()
            .map(|(n, p)| (n.clone(), p.meta.depends_on.clone()))
            .collect()
    }

    async fn open_all(cfg: Config) -> Result<(Session, Vec<LoadError>), Error> {
        if cfg.state_dir.exists() && !cfg.state_dir.is_dir() {
            return Err(Error::Usage(format!(
                "the state directory {} is a file, not a directory: point `state_dir:` in {} (or --state-dir) at a directory",
                cfg.state_dir.display(),
                cfg.path.display()
            )));
        }
        let max_mem = cfg
            .services
            .services
            .values()
            .filter_map(|s| s.limits.memory_mb.map(|m| m << 20))
            .chain([cfg.limits.memory_bytes])
            .max()
            .unwrap_or(cfg.limits.memory_bytes);
        let rt = Arc::new(Runtime::new(&EngineLimits {
            max_instances: cfg.max_instances,
            max_memory_bytes: max_mem,
            quick_tier: cfg.first_load == crate::config::FirstLoad::Quick,
        })?);
        let cache = Arc::new(Cache::new(&rt, cfg.cache_dir.clone()));
        let (loaded, failed) = loading::load_dir_all(
            &rt,
            &cache,
            &cfg.plugins_dir,
            loading::LoadLimits {
                max_bytes: cfg.plugin_max_bytes,
                compile: cfg.plugin_compile,
                memory_bytes: max_mem,
            },
        )
        .await?;
        cache.evict(cfg.cache_max_bytes);
        let plugins: BTreeMap<String, LoadedPlugin> =
            loaded.into_iter().map(|p| (p.name.clone(), p)).collect();
        Ok((
            Session {
                cfg,
                rt,
                plugins,
                plan: Plan::default(),
            },
            failed,
        ))
    }

    /// Check every plugin against `uphost.lock`; the effective grants, or
    /// an error listing every problem and the command that fixes it.
    pub fn grants(&self) -> Result<BTreeMap<String, Arc<Grant>>, Error> {
        let mut lock = LockFile::load(&self.cfg.plugins_dir)?;
        let mut grants = BTreeMap::new();
        let mut problems = Vec::new();
        let mut signed_builds = Vec::new();
        for (name, p) in &self.plugins {
            match lock.verify(name, &p.sha256, &p.meta.capabilities, &p.signature) {
                Ok(v) => {
                    grants.insert(
                        name.clone(),
                        Arc::new(Grant::effective(&p.meta.capabilities, &v.approval().grant)),
                    );
                    if let crate::capabilities::lock::Verified::SignedBuild(_) = v {
                        signed_builds.push(name.clone());
                    }
                }
                Err(u) => problems.push((name.clone(), u.describe(name, &p.file_name()))),
            }
            if let Some(a) = lock.plugins.get(name)
                && a.file != p.file_name()
            {
                problems.push((
                    name.clone(),
                    format!(
                        "plugin `{name}` was approved as file {}, but is loaded from {}: approve it again so that uphost.lock says which file it trusts",
                        crate::untrusted::line(&a.file),
                        p.file_name()
                    ),
                ));
            }
        }
        for (name, a) in &lock.plugins {
            if !self.plugins.contains_key(name) {
                problems.push((
                    name.clone(),
                    format!(
                        "uphost.lock approves `{name}` ({}), which is not in the plugin directory: approving removes the entries of plugins that are gone",
                        crate::untrusted::line(&a.file)
                    ),
                ));
            }
        }
        if problems.is_empty() {
            self.record_signed_builds(&mut lock, &signed_builds)?;
            return Ok(grants);
        }
        let names: Vec<&str> = problems.iter().map(|(n, _)| n.as_str()).collect();
        let mut msg = String::new();
        for (_, p) in &problems {
            msg.push_str(p);
            msg.push('\n');
        }
        msg.push_str(&format!(
            "nothing was executed. Review what they request, then approve with:\n    uphost -c {} plugins approve {}",
            self.cfg.path.display(),
            {
                let loaded: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| self.plugins.contains_key(*n))
                    .collect();
                if loaded.is_empty() {
                    "--all".to_string()
                } else {
                    loaded.join(" ")
                }
            }
        ));
        Err(Error::Unapproved {
            lock: self.cfg.plugins_dir.join(LOCK_FILE),
            message: msg,
        })
    }

    /// New builds signed by their trusted vendor key, their requests
    /// covered: each runs under its approval, which now records its hash
    /// (said on stderr and in the lock, like any approval).
    fn record_signed_builds(&self, lock: &mut LockFile, names: &[String]) -> Result<(), Error> {
        for name in names {
            let p = &self.plugins[name];
            let Some(a) = lock.plugins.get_mut(name) else {
                continue;
            };
            let key = a.key.clone().unwrap_or_default();
            errln!(
                "{name}: new build {} ({}) signed by its trusted vendor key {} (id {}), every request covered by its grant: approved, uphost.lock records its hash",
                crate::untrusted::line_max(&p.meta.version, 32),
                &p.sha256[..12],
                key,
                crate::capabilities::signing::key_id(&key),
            );
            a.sha256 = p.sha256.clone();
            a.version = p.meta.version.clone();
            a.approved = format!(
                "{} as a build signed by {}",
                crate::events::now_rfc3339(),
                crate::capabilities::signing::key_id(&key)
            );
        }
        if !names.is_empty() {
            lock.save(&self.cfg.plugins_dir)?;
        }
        Ok(())
    }

    /// Services with their effective settings, in plan order, restricted
    /// to `only` (services) and `limit` (node names or roles).
    pub fn services(&self, only: &[String], limit: &[String]) -> Result<Vec<ServiceRun>, Error> {
        self.check_selection(only, limit)?;
        let keep: BTreeSet<String> = if only.is_empty() {
            self.plugins.keys().cloned().collect()
        } else {
            only.iter().cloned().collect()
        };
        let mut out = Vec::new();
        let mut unmapped = Vec::new();
        let mut partial_v0_1 = Vec::new();
        for planned in self.plan.restrict(&keep).services {
            let p = &self.plugins[&planned.name];
            let svc = self.cfg.service(&planned.name);
            let nodes: Vec<Arc<NodeSpec>> = self
                .cfg
                .service_nodes(&planned.name)
                .into_iter()
                .cloned()
                .collect();
            if nodes.is_empty() {
                unmapped.push(planned.name.clone());
                continue;
            }
            let targets: Vec<Arc<NodeSpec>> = nodes
                .iter()
                .filter(|n| {
                    limit.is_empty() || limit.iter().any(|l| &n.name == l || n.roles.contains(l))
                })
                .cloned()
                .collect();
            if targets.is_empty() {
                continue; // a staged run: this service's nodes are for later
            }
            if targets.len() < nodes.len() && !p.pre.contract().sees_targets() {
                partial_v0_1.push(format!(
                    "`{}` ({} of its {} nodes: {})",
                    planned.name,
                    targets.len(),
                    nodes.len(),
                    targets
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            let limits = self.cfg.limits.with(&svc.limits);
            if p.min_memory_bytes > limits.memory_bytes {
                let need = loading::mib_up(p.min_memory_bytes);
                return Err(Error::Usage(format!(
                    "the plugin for `{}` ({}) needs {need} MiB of memory at start, above the service's {} MiB cap. Nothing was executed. Raise it for this service in {}: `{}: {{limits: {{memory_mb: {need}}}}}` (or `limits: {{memory_mb: {need}}}` in {} for every plugin)",
                    planned.name,
                    p.path.display(),
                    limits.memory_bytes >> 20,
                    self.cfg.services_path.display(),
                    planned.name,
                    self.cfg.path.display(),
                )));
            }
            out.push(ServiceRun {
                name: planned.name.clone(),
                nodes: Arc::new(crate::config::NodeSet::new(nodes)),
                targets: Arc::new(crate::config::NodeSet::new(targets)),
                rollout: svc.rollout.unwrap_or(p.meta.rollout),
                max_fail: svc.max_fail.unwrap_or_default(),
                canary: svc.canary,
                reversible: p.meta.reversible,
                limits,
                hops: Vec::new(),
                gate: svc.gate.clone(),
                survival: svc.survival.clone(),
                node_guard: p.meta.node_guard,
                reboot: svc.reboot,
                ok_to_stop: p.meta.ok_to_stop,
            });
        }
        if !unmapped.is_empty() {
            return Err(self.unmapped(&unmapped));
        }
        if !partial_v0_1.is_empty() {
            return Err(Error::Usage(format!(
                "--limit leaves out some nodes of {}, whose plugin is built against uphost:plugin@0.1, which cannot see a limit: its hooks would act on every node of the service. Nothing was executed. Run it on all of its nodes (widen --limit, or leave it out with --only), or use a build of the plugin for uphost:plugin@0.2",
                partial_v0_1.join(", ")
            )));
        }
        self.place_hops(&mut out)?;
        Ok(out)
    }

    /// `--only` names plugins, `--limit` names nodes or groups, and there
    /// are plugins at all.
    fn check_selection(&self, only: &[String], limit: &[String]) -> Result<(), Error> {
        for o in only {
            if !self.plugins.contains_key(o) {
                return Err(Error::Usage(format!(
                    "--only {o}: no plugin provides service `{o}`{}",
                    crate::config::yaml::did_you_mean(o, self.plugins.keys().map(String::as_str))
                )));
            }
        }
        for l in limit {
            if self.cfg.inventory.node(l).is_none() && !self.cfg.inventory.groups.contains(l) {
                let inv = &self.cfg.inventory;
                let names = inv
                    .groups
                    .iter()
                    .map(String::as_str)
                    .chain(inv.nodes.iter().map(|n| n.name.as_str()));
                let groups: Vec<&str> = inv.groups.iter().map(String::as_str).collect();
                return Err(Error::Usage(format!(
                    "--limit {l}: neither a node nor a group of {}{}; its groups are: {}",
                    self.cfg.inventory.label(),
                    crate::config::yaml::did_you_mean(l, names),
                    groups.join(", ")
                )));
            }
        }
        self.require_plugins()
    }

    /// There are plugins at all (`plan`, `check` and `run` need them).
    pub fn require_plugins(&self) -> Result<(), Error> {
        if self.plugins.is_empty() {
            return Err(Error::Usage(format!(
                "no plugins (*.wasm) in {}: put the service plugins there, or fix `plugins:` in {}",
                self.cfg.plugins_dir.display(),
                self.cfg.path.display()
            )));
        }
        Ok(())
    }

    /// Services no node hosts: the error, with the services file's likely
    /// misspellings.
    fn unmapped(&self, unmapped: &[String]) -> Error {
        // An entry of the services file that no plugin claims, close to
        // an unmapped service, is most likely its misspelling.
        let unclaimed: Vec<&str> = self
            .cfg
            .services
            .services
            .keys()
            .map(String::as_str)
            .filter(|k| !self.plugins.contains_key(*k))
            .collect();
        let hints: String = unmapped
            .iter()
            .filter_map(|s| {
                let typo = crate::config::yaml::closest(s, unclaimed.iter().copied())?;
                Some(format!(
                    "; `services.{typo}` names no plugin: did you mean `{s}`?"
                ))
            })
            .collect();
        Error::Usage(format!(
            "no nodes host {}: map each to inventory groups under `services:` in {} (or leave it out with --only){hints}",
            unmapped
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.cfg.services_path.display()
        ))
    }
}
