//! The command line: clap definitions and one function per command.

pub mod approve;
pub mod inventory_view;
pub mod new;
pub mod output;
pub mod plan_view;
pub mod run_cmd;
pub mod runs;
pub mod signals;
pub mod standby;
pub mod status;
pub mod test_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::Error;
use crate::config::Config;
use crate::execution::session::Session;

/// What signals mean to `run` and `resume` (the man page's last section).
const SIGNALS: &str = "\
Signals (run and resume):
  SIGINT (Ctrl-C), SIGTERM, SIGQUIT   the first stops the run after the steps in flight: no new step
                                      starts, the run ends `interrupted` (exit 130), `uphost resume`
                                      continues it; a second aborts at once (resume re-runs the steps
                                      that were in flight, without running a recorded command twice).
  SIGHUP                              ignored: the run goes on without its terminal; its progress is in
                                      the journal and in run.log in the run's directory, and
                                      `uphost watch` or `uphost status` from any terminal shows it.";

/// uphost: upgrade a multi-service cluster with sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "uphost", version, about, long_about = None, after_long_help = SIGNALS)]
pub struct Cli {
    /// Configuration file (default: ./uphost.yaml).
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An Ansible inventory source (INI, YAML or JSON file, executable
    /// script, or directory), replacing `inventory:` of uphost.yaml;
    /// repeat it to merge several, in order, as ansible -i does.
    #[arg(short = 'i', long = "inventory", global = true, value_name = "SOURCE")]
    pub inventory: Vec<PathBuf>,
    /// More detail (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Output: human text, or newline-delimited JSON events on stdout.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: OutputKind,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output kinds.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputKind {
    /// For people.
    Text,
    /// One JSON event per line on stdout.
    Json,
}

/// Plan formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    /// For people.
    Text,
    /// One JSON object.
    Json,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Status formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum StatusFormat {
    /// For people.
    Text,
    /// One JSON object.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plugins in the plugin directory.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Show the inventory as uphost resolved it: every host with its
    /// groups (roles), address, port, user, connection and become.
    Inventory {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
    },
    /// Show the execution order (levels run concurrently).
    Plan {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
    },
    /// Pre-flight: run every plugin's read-only check; changes nothing.
    Check {
        /// Only these services.
        #[arg(long, num_args = 1..)]
        only: Vec<String>,
        /// Only the services with nodes among these nodes or roles (the
        /// services a `run --limit` of the same nodes would upgrade).
        #[arg(long, num_args = 1..)]
        limit: Vec<String>,
    },
    /// Upgrade the cluster.
    Run(RunArgs),
    /// Every run in the state directory, oldest first: when it started,
    /// its options, how it ended; `*` marks the current one.
    Runs {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Continue the interrupted or failed run.
    Resume {
        /// Answer yes to every confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Parallelism bound.
        #[arg(long, value_parser = crate::config::parse_forks)]
        forks: Option<usize>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// On another machine than the one running the upgrade (with `etcd:`
    /// in uphost.yaml): wait until the run's holder dies (its lease on
    /// etcd expires), then take the run over and finish it as `resume`
    /// would (`etcd.takeover: operator`: say so and leave the go to the
    /// operator).
    Standby {
        /// Answer yes to every confirmation of the run taken over.
        #[arg(short, long)]
        yes: bool,
        /// Parallelism bound.
        #[arg(long, value_parser = crate::config::parse_forks)]
        forks: Option<usize>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Move runs between the local state directory and etcd.
    #[command(subcommand)]
    State(StateCmd),
    /// Where the last (or a given) run stands.
    Status {
        /// Run id (default: the latest).
        run: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: StatusFormat,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Follow a run's progress live from any terminal (from its journal),
    /// until it ends: a run started elsewhere, or whose terminal is gone.
    Watch {
        /// Run id (default: the current one).
        run: Option<String>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Pause a running run from any terminal: the steps in flight finish,
    /// nothing new starts, and the run ends interrupted; `uphost resume`
    /// continues it.
    Pause {
        /// Run id (default: the current one).
        run: Option<String>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run a plugin against simulated nodes: scenario files with scripted
    /// command responses and expectations. PATH is a .wasm (with
    /// --scenario), a plugin crate directory (its scenarios/*.yaml), or a
    /// directory of plugin crates.
    Test {
        /// The component, crate directory, or directory of crates.
        path: PathBuf,
        /// Scenario files (or directories of them) for a .wasm.
        #[arg(long = "scenario")]
        scenarios: Vec<PathBuf>,
        /// Where built components are (default: the nearest
        /// target/wasm32-wasip2/{plugin,release,debug}).
        #[arg(long)]
        wasm_dir: Option<PathBuf>,
    },
    /// Create something new.
    #[command(subcommand)]
    New(NewCmd),
    /// Write the HTML report of the last (or a given) run and print its path.
    Report {
        /// Run id (default: the latest).
        run: Option<String>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// Write the man page (roff) to stdout.
    #[command(hide = true)]
    Man,
}

/// `uphost run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Record mutating commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Answer yes to every confirmation.
    #[arg(short, long)]
    pub yes: bool,
    /// Only these services (their dependencies count as done).
    #[arg(long, num_args = 1..)]
    pub only: Vec<String>,
    /// Only these nodes or roles (a staged run).
    #[arg(long, num_args = 1..)]
    pub limit: Vec<String>,
    /// Parallelism bound (default: uphost.yaml's forks, else 10).
    #[arg(long, value_parser = crate::config::parse_forks)]
    pub forks: Option<usize>,
    /// State directory (default: from uphost.yaml).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// On failure, roll back the reversible services without asking.
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// Start over although the last run stopped half-way (failed or
    /// interrupted after changing something): that run is given up (its
    /// journal stays in the state directory) and can no longer be resumed.
    #[arg(long)]
    pub abandon_unfinished: bool,
    /// In a release train, ask before each hop after the first (once its
    /// gate passed): a point to look at the cluster before going on.
    #[arg(long)]
    pub pause_between_hops: bool,
    /// The unit of the rollout: `service-major` (each service across its
    /// nodes) or `node-major` (each node with all its services, between
    /// its node guards' leave and rejoin); default: the services file's
    /// `order:`.
    #[arg(long, value_parser = parse_order)]
    pub order: Option<crate::config::Order>,
}

fn parse_order(s: &str) -> Result<crate::config::Order, String> {
    match s {
        "service-major" => Ok(crate::config::Order::ServiceMajor),
        "node-major" => Ok(crate::config::Order::NodeMajor),
        _ => Err("expected `service-major` or `node-major`".into()),
    }
}

/// `uphost new …`.
#[derive(Debug, Subcommand)]
pub enum NewCmd {
    /// A plugin crate that builds, passes `cargo test` and one scenario.
    Plugin {
        /// Plugin (service) name.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to the uphost-sdk crate (default: the one this uphost was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// The plugin's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
    },
}

/// `uphost state …`.
#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Copy a run's journal from etcd into the local state directory (the
    /// current run by default), where `status`, `report` and `runs` read it.
    Export {
        /// Run id (default: the deployment's current run on etcd).
        #[arg(long)]
        run: Option<String>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Copy a run's journal from the local state directory to etcd and make
    /// it the deployment's current run, so that `resume` and `standby`
    /// continue it from any machine.
    Import {
        /// Run id (default: the local current run).
        #[arg(long)]
        run: Option<String>,
        /// State directory (default: from uphost.yaml).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

/// `uphost plugins …`.
#[derive(Debug, Subcommand)]
pub enum PluginsCmd {
    /// Name, version, file, approval of every plugin.
    List,
    /// Everything a plugin declares.
    Inspect {
        /// Plugin (service) name.
        name: String,
    },
    /// Record plugins and their requested capabilities in uphost.lock.
    Approve {
        /// Plugin names.
        names: Vec<String>,
        /// Every plugin in the directory.
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
    /// Trust a vendor key for a plugin: its new builds signed by that key
    /// whose requests the grant covers run without a new approval.
    Trust {
        /// Plugin (service) name; it must be approved as it stands.
        name: String,
        /// The vendor's public key: `ed25519:HEX` or the .pub file.
        #[arg(long)]
        key: String,
    },
    /// Download a plugin from an OCI registry into the plugin directory
    /// (its digest and vendor signature checked; approval is still yours).
    Pull {
        /// oci://REGISTRY[:PORT]/REPOSITORY:TAG
        reference: String,
        /// Require a signature by this key (`ed25519:HEX` or a .pub file;
        /// default: the key uphost.lock trusts for the plugin, else any).
        #[arg(long)]
        key: Option<String>,
        /// Accept an unsigned plugin (you review it when you approve it).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// For vendors: push a plugin file to an OCI registry as a Wasm
    /// artifact (sign it first).
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// oci://REGISTRY[:PORT]/REPOSITORY:TAG
        reference: String,
    },
    /// For vendors: make an Ed25519 key pair to sign plugins with.
    Keygen {
        /// Where to write the secret key (the public key goes to OUT.pub).
        #[arg(long)]
        out: PathBuf,
    },
    /// For vendors: sign a plugin file (an embedded signature section).
    Sign {
        /// The .wasm file.
        file: PathBuf,
        /// The secret key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Write the signed file here instead of in place.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The run failed.
    pub const FAILED: i32 = 1;
    /// Bad input (config, plugins, usage).
    pub const INPUT: i32 = 2;
    /// Interrupted by the operator; resumable.
    pub const INTERRUPTED: i32 = 130;
}

/// Run the CLI; returns the exit code.
pub async fn main(cli: Cli) -> Result<i32, Error> {
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "uphost", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Man => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(Cli::command());
            man.render(&mut std::io::stdout())
                .map_err(|source| Error::Io {
                    path: "stdout".into(),
                    source,
                })?;
            Ok(exit::OK)
        }
        Command::Test {
            path,
            scenarios,
            wasm_dir,
        } => test_cmd::test(path, scenarios, wasm_dir.as_deref(), cli.quiet).await,
        Command::New(NewCmd::Plugin {
            name,
            dir,
            sdk,
            lang,
        }) => new::plugin(name, dir, sdk.as_deref(), *lang),
        Command::Report { run, state_dir } => {
            let dir = state_dir_of(&cli, state_dir.as_ref())?;
            let run_id = crate::execution::inspect::run_or_current(&dir, run.as_deref())?;
            let path = crate::report::write(&dir, &run_id)?;
            outln!("{}", path.display());
            Ok(exit::OK)
        }
        Command::Runs { format, state_dir } => {
            let dir = state_dir_of(&cli, state_dir.as_ref())?;
            runs::list(&dir, *format)
        }
        Command::Watch { run, state_dir } => {
            let dir = state_dir_of(&cli, state_dir.as_ref())?;
            output::watch(&dir, run.as_deref(), cli.verbose)
        }
        Command::Pause { run, state_dir } => {
            let dir = state_dir_of(&cli, state_dir.as_ref())?;
            let id = crate::execution::lifecycle::request_pause(&dir, run.as_deref())?;
            outln!(
                "asked run {id} to pause: the steps in flight finish and nothing new starts; `uphost resume` continues it"
            );
            Ok(exit::OK)
        }
        Command::Status {
            run,
            format,
            state_dir,
        } => {
            let dir = state_dir_of(&cli, state_dir.as_ref())?;
            status::show(&dir, run.as_deref(), *format)
        }
        Command::Plugins(PluginsCmd::Keygen { out }) => approve::keygen(out),
        Command::Plugins(PluginsCmd::Push { file, reference }) => {
            let url = crate::distribution::push(file, reference).await?;
            outln!(
                "pushed {} to {}",
                file.display(),
                crate::untrusted::line(&url)
            );
            Ok(exit::OK)
        }
        Command::Plugins(PluginsCmd::Pull {
            reference,
            key,
            allow_unsigned,
        }) => {
            let cfg = Config::load(cli.config.as_deref(), &cli.inventory)?;
            approve::pull(&cfg, reference, key.as_deref(), *allow_unsigned).await
        }
        Command::Plugins(PluginsCmd::Sign { file, key, out }) => {
            approve::sign(file, key, out.as_deref())
        }
        Command::Plugins(p) => {
            let cfg = Config::load(cli.config.as_deref(), &cli.inventory)?;
            if let PluginsCmd::List = p {
                let (session, failed) = Session::open_listing(cfg).await?;
                return plugins_list(&session, &failed);
            }
            let session = Session::open(cfg).await?;
            match p {
                PluginsCmd::List => unreachable!("listed above"),
                PluginsCmd::Inspect { name } => plugins_inspect(&session, name),
                PluginsCmd::Approve { names, all, yes } => {
                    approve::approve(&session, names, *all, *yes)
                }
                PluginsCmd::Trust { name, key } => approve::trust(&session, name, key),
                PluginsCmd::Keygen { .. }
                | PluginsCmd::Sign { .. }
                | PluginsCmd::Pull { .. }
                | PluginsCmd::Push { .. } => {
                    unreachable!("need no configuration: handled above")
                }
            }
        }
        Command::Inventory { format } => {
            let inv = Config::load_inventory(cli.config.as_deref(), &cli.inventory)?;
            inventory_view::show(&inv, *format)
        }
        Command::Plan { format } => {
            let session =
                Session::open(Config::load(cli.config.as_deref(), &cli.inventory)?).await?;
            session.require_plugins()?;
            session.grants()?;
            plan_view::show(&session, *format)
        }
        Command::Check { only, limit } => {
            let session =
                Session::open(Config::load(cli.config.as_deref(), &cli.inventory)?).await?;
            run_cmd::check(session, only, limit, &cli).await
        }
        Command::Run(args) => {
            // Signals are listened for before the plugins load.
            let signals = signals::listen();
            let session = Session::open(config_with(&cli, args.state_dir.as_ref())?).await?;
            run_cmd::run(session, args, &cli, signals).await
        }
        Command::Resume {
            yes,
            forks,
            state_dir,
        } => {
            let signals = signals::listen();
            let session = Session::open(config_with(&cli, state_dir.as_ref())?).await?;
            run_cmd::resume(session, *yes, *forks, None, &cli, signals).await
        }
        Command::Standby {
            yes,
            forks,
            state_dir,
        } => {
            let signals = signals::listen();
            let session = Session::open(config_with(&cli, state_dir.as_ref())?).await?;
            standby::standby(session, *yes, *forks, &cli, signals).await
        }
        Command::State(StateCmd::Export { run, state_dir }) => {
            standby::export(&config_with(&cli, state_dir.as_ref())?, run.as_deref())
        }
        Command::State(StateCmd::Import { run, state_dir }) => {
            standby::import(&config_with(&cli, state_dir.as_ref())?, run.as_deref())
        }
    }
}

/// The configuration, with `--state-dir` (when given) in place of its
/// state directory.
fn config_with(cli: &Cli, state_dir: Option<&PathBuf>) -> Result<Config, Error> {
    let mut cfg = Config::load(cli.config.as_deref(), &cli.inventory)?;
    if let Some(d) = state_dir {
        cfg.state_dir = d.clone();
    }
    Ok(cfg)
}

/// The state directory: `--state-dir`, else the configuration's (the file
/// is read only when it is needed).
fn state_dir_of(cli: &Cli, state_dir: Option<&PathBuf>) -> Result<PathBuf, Error> {
    match state_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(Config::load(cli.config.as_deref(), &cli.inventory)?.state_dir),
    }
}

fn plugins_list(session: &Session, failed: &[crate::loading::LoadError]) -> Result<i32, Error> {
    let lock = crate::capabilities::lock::LockFile::load(&session.cfg.plugins_dir)?;
    outln!(
        "{:<14} {:<8} {:<8} {:<22} {:<10} DESCRIPTION",
        "NAME",
        "VERSION",
        "CONTRACT",
        "FILE",
        "APPROVAL"
    );
    for (name, p) in &session.plugins {
        use crate::capabilities::lock::{Unapproved, Verified};
        let approval = match lock.verify(name, &p.sha256, &p.meta.capabilities, &p.signature) {
            Ok(Verified::Approved(_)) => "approved",
            Ok(Verified::SignedBuild(_)) => "signed",
            Err(Unapproved::Missing) => "NOT APPROVED",
            Err(Unapproved::HashChanged { .. }) => "CHANGED",
            Err(Unapproved::NewRequests(_)) => "NEW REQUESTS",
            Err(Unapproved::NotSignedByTrusted { .. }) => "NOT SIGNED",
        };
        outln!(
            "{:<14} {:<8} {:<8} {:<22} {:<10} {}",
            name,
            crate::untrusted::line_max(&p.meta.version, 32),
            p.pre.contract().as_str(),
            crate::untrusted::line(&p.file_name()),
            approval,
            crate::untrusted::line_max(&p.meta.description, 160)
        );
    }
    // The others are listed; each that did not load is an error, named.
    for e in failed {
        errln!("error: {}", crate::untrusted::text(&e.to_string()));
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::INPUT
    })
}

fn plugins_inspect(session: &Session, name: &str) -> Result<i32, Error> {
    let p = session.plugins.get(name).ok_or_else(|| {
        Error::Usage(format!(
            "no plugin named `{name}`{}; `uphost plugins list` shows them",
            crate::config::yaml::did_you_mean(name, session.plugins.keys().map(String::as_str))
        ))
    })?;
    let m = &p.meta;
    use crate::untrusted::line as shown;
    outln!("name:        {}", m.name);
    outln!("version:     {}", shown(&m.version));
    outln!("file:        {}", shown(&p.path.display().to_string()));
    outln!("sha256:      {}", p.sha256);
    outln!(
        "contract:    uphost:plugin@{}{}",
        p.pre.contract().as_str(),
        if p.pre.contract().sees_targets() {
            ""
        } else {
            " (cannot see a --limit: runs only on every node of its service)"
        }
    );
    outln!("description: {}", shown(&m.description));
    outln!("depends on:  {}", m.depends_on.join(", "));
    outln!("rollout:     {}", m.rollout);
    outln!("reversible:  {}", m.reversible);
    match &m.releases {
        Some(r) => outln!(
            "releases:    {}{}",
            r.describe(),
            if r.migrations_only {
                "; an intermediate hop may be migrations only (leapfrog)"
            } else {
                ""
            }
        ),
        None => outln!("releases:    (none declared: every run is one hop)"),
    }
    if m.node_guard {
        outln!("node guard:  yes (leave before a node's steps, rejoin after, in a node-major run)");
    }
    if m.ok_to_stop {
        outln!("ok-to-stop:  yes (asked before each node's upgrade, retried)");
    }
    if !m.probes.is_empty() {
        outln!("probes:");
        for p in &m.probes {
            outln!("  {}", p.display());
        }
    }
    outln!("capabilities:");
    for c in &m.capabilities {
        outln!("  {}", c.display());
        if !c.reason.is_empty() {
            outln!("      why: {}", shown(&c.reason));
        }
        for d in c.dangers() {
            outln!("      ! DANGER: {d}");
        }
    }
    Ok(exit::OK)
}
