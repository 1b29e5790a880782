//! The sandbox: wasmtime engines (pooling allocator, epoch interruption;
//! an optimizing and a quick compiler tier), a linker each that provides only the uphost imports and a WASI with nothing in
//! it, and hook calls with a memory cap and a deadline.

pub mod bindings;
pub mod call;
pub mod exec;
pub mod host;
pub mod pipe;
pub mod reboot;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

use bindings::{Contract, PluginPre, ServicePlugin, v0_1};
pub use call::{CallEnv, CallIo, Deferred, RebootMode, RunBudget, ServiceNodes};
pub use host::{HostState, wit_node};

use crate::events::Phase;

/// Epoch tick: deadlines are counted in these.
pub const TICK: Duration = Duration::from_millis(10);

/// Engine-level failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
}

/// The address space reserved per linear memory: the largest cap
/// (`memory_mb: 4096`).
const MEMORY_RESERVATION: u64 = 4 << 30;

/// Sizing of the engine.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    /// Concurrently live instances.
    pub max_instances: u32,
    /// Largest memory any plugin may have.
    pub max_memory_bytes: u64,
    /// Whether large plugins may be loaded by the quick tier first
    /// (`first_load: quick`).
    pub quick_tier: bool,
}

/// The engine and linker, shared by every plugin.
///
/// There are two compiler tiers, each an engine with its own linker: the
/// optimizing one (Cranelift), which every plugin's code ends up compiled
/// by, and a quick one (Winch, a single-pass compiler, on x86-64) for the
/// first load of a large plugin, whose Cranelift compile takes tens of
/// seconds (`loading::cache` decides, and compiles the optimized code in
/// the background for the next load). A plugin's stores and pre-instances
/// are of the engine it was compiled by.
pub struct Runtime {
    /// The optimizing engine.
    pub engine: Engine,
    /// Its linker, with the uphost imports and an empty WASI.
    pub linker: Linker<HostState>,
    /// The quick tier, where the platform has one.
    pub quick: Option<Tier>,
    ticker_stop: Arc<AtomicBool>,
    /// Bounds concurrently live instances to the pool's size.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// A compiler tier other than the optimizing one.
pub struct Tier {
    /// Its engine.
    pub engine: Engine,
    /// Its linker (the same imports).
    pub linker: Linker<HostState>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// The bytes of a pooled linear memory kept resident between instances
/// (zeroed by memset, never handed over with data in them).
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine's settings, for either compiler.
fn config(limits: &EngineLimits, strategy: wasmtime::Strategy) -> Config {
    let mut cfg = Config::new();
    cfg.strategy(strategy)
        .epoch_interruption(true)
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    let n = limits.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .total_stacks(n)
        .max_memory_size(limits.max_memory_bytes as usize)
        // A slot given back is reset with memset up to these sizes
        // instead of madvise: a fresh instance per hook call then
        // reuses resident pages rather than faulting them back in.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // One reservation for every cap (`memory_mb` is at most 4096): the
    // compiled code depends on it, so it must not follow the limits, or
    // changing a cap would recompile every plugin. The cap itself is
    // the pool's slot size and each store's limiter.
    cfg.memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0);
    cfg
}

/// An engine and its linker with every supported contract.
fn engine_and_linker(cfg: &Config) -> wasmtime::Result<(Engine, Linker<HostState>)> {
    let engine = Engine::new(cfg)?;
    let mut linker: Linker<HostState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    add_contracts(&mut linker)?;
    Ok((engine, linker))
}

impl Runtime {
    /// Build the engines, their linkers and the epoch ticker.
    pub fn new(limits: &EngineLimits) -> Result<Runtime, RuntimeError> {
        let err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let (engine, linker) =
            engine_and_linker(&config(limits, wasmtime::Strategy::Cranelift)).map_err(err)?;
        // Winch compiles x86-64 only; elsewhere every load is optimized.
        let quick = if limits.quick_tier && cfg!(target_arch = "x86_64") {
            let (engine, linker) =
                engine_and_linker(&config(limits, wasmtime::Strategy::Winch)).map_err(err)?;
            Some(Tier { engine, linker })
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut engines = vec![engine.clone()];
        engines.extend(quick.as_ref().map(|q| q.engine.clone()));
        let s2 = stop.clone();
        std::thread::Builder::new()
            .name("uphost-epoch".into())
            .spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    for e in &engines {
                        e.increment_epoch();
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let n = limits.max_instances.max(1);
        Ok(Runtime {
            engine,
            linker,
            quick,
            ticker_stop: stop,
            slots: Arc::new(tokio::sync::Semaphore::new(n as usize)),
        })
    }

    /// Whether `component` was compiled by the quick tier.
    pub fn is_quick(&self, component: &Component) -> bool {
        self.quick
            .as_ref()
            .is_some_and(|q| Engine::same(component.engine(), &q.engine))
    }

    /// Pre-instantiate a component built against `contract` (checks its
    /// imports against the linker of the engine that compiled it).
    pub fn pre(
        &self,
        component: &Component,
        contract: Contract,
    ) -> wasmtime::Result<PluginPre<HostState>> {
        let linker = match &self.quick {
            Some(q) if self.is_quick(component) => &q.linker,
            _ => &self.linker,
        };
        let pre = linker.instantiate_pre(component)?;
        Ok(match contract {
            Contract::V0_1 => PluginPre::V0_1(v0_1::ServicePluginPre::new(pre)?),
            Contract::V0_2 => PluginPre::V0_2(bindings::ServicePluginPre::new(pre)?),
        })
    }

    /// A store for one call of `pre`'s plugin.
    pub fn store(
        &self,
        pre: &PluginPre<HostState>,
        state: HostState,
        deadline: Duration,
    ) -> Store<HostState> {
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline((deadline.as_millis() / TICK.as_millis()).max(1) as u64);
        store.epoch_deadline_trap();
        store
    }
}

/// Every supported minor of the contract in one linker: 0.2's world as
/// generated, and 0.1's imports under their 0.1 names (its `types` of its
/// own, the unchanged interfaces served by 0.2's implementations).
fn add_contracts(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use bindings::latest::uphost::plugin::{log, node_exec, state};
    ServicePlugin::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v0_1::uphost::plugin::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    node_exec::add_to_linker_instance::<_, HasSelf<_>>(
        &mut linker.instance("uphost:plugin/node-exec@0.1.0")?,
        |s| s,
    )?;
    log::add_to_linker_instance::<_, HasSelf<_>>(
        &mut linker.instance("uphost:plugin/log@0.1.0")?,
        |s| s,
    )?;
    state::add_to_linker_instance::<_, HasSelf<_>>(
        &mut linker.instance("uphost:plugin/state@0.1.0")?,
        |s| s,
    )?;
    Ok(())
}

/// Which hook to call.
#[derive(Debug, Clone)]
pub enum Hook {
    /// Pre-flight.
    Check,
    /// Before nodes.
    PreUpgrade,
    /// On one node.
    Upgrade(bindings::uphost::plugin::types::Node),
    /// After nodes.
    PostUpgrade,
    /// Deployment-wide.
    Finalize,
    /// Restore.
    Rollback,
    /// A migrations-only hop.
    Migrate,
    /// The gate after a hop.
    Verify,
    /// A node guard takes the node out of its cluster.
    Leave(bindings::uphost::plugin::types::Node),
    /// A node guard brings it back.
    Rejoin(bindings::uphost::plugin::types::Node),
    /// May the node be stopped now?
    OkToStop(bindings::uphost::plugin::types::Node),
}

impl Hook {
    /// The phase this hook is.
    pub fn phase(&self) -> Phase {
        match self {
            Hook::Check => Phase::Check,
            Hook::PreUpgrade => Phase::PreUpgrade,
            Hook::Upgrade(_) => Phase::Upgrade,
            Hook::PostUpgrade => Phase::PostUpgrade,
            Hook::Finalize => Phase::Finalize,
            Hook::Rollback => Phase::Rollback,
            Hook::Migrate => Phase::Migrate,
            Hook::Verify => Phase::Verify,
            Hook::Leave(_) => Phase::Leave,
            Hook::Rejoin(_) => Phase::Rejoin,
            Hook::OkToStop(_) => Phase::OkToStop,
        }
    }

    /// The node it runs for, if it is a node's hook.
    pub fn node(&self) -> Option<&bindings::uphost::plugin::types::Node> {
        match self {
            Hook::Upgrade(n) | Hook::Leave(n) | Hook::Rejoin(n) | Hook::OkToStop(n) => Some(n),
            _ => None,
        }
    }
}

/// Why a hook call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum HookFailure {
    /// The plugin returned an error.
    #[error("{0}")]
    Plugin(String),
    /// The guest trapped (panic, memory exhausted, stack overflow, deadline).
    #[error("plugin `{plugin}` trapped in {hook}: {message}")]
    Trap {
        /// Plugin.
        plugin: String,
        /// Hook.
        hook: String,
        /// The trap, the guest's last stderr lines (a panic message) and a
        /// symbolized backtrace where available.
        message: String,
    },
    /// The hook ran past its deadline.
    #[error("plugin `{plugin}` exceeded its {secs}s deadline in {hook} and was stopped")]
    Deadline {
        /// Plugin.
        plugin: String,
        /// Hook.
        hook: String,
        /// Deadline.
        secs: u64,
    },
}

/// Is this the epoch interruption of an expired hook deadline?
fn is_deadline(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
}

/// A trap as the operator reads it: the trap or host error (a memory cap
/// reached is named, with where to raise it), the guest's error as it
/// printed it (a Rust panic, a Python traceback's last line, a JavaScript
/// exception) and its last stderr lines, and named backtrace frames.
fn trap_message(
    plugin: &str,
    hook: &str,
    err: &wasmtime::Error,
    stderr: &[u8],
    memory_cap: u64,
) -> HookFailure {
    let mut msg = match err.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => err.root_cause().to_string(),
    };
    if format!("{err:#}").contains("forcing trap when growing memory") {
        msg = format!(
            "{msg}: the plugin reached its memory cap of {} MiB; if it needs more, raise `limits: {{memory_mb: N}}` on its service in services.yaml (or in uphost.yaml for every plugin)",
            memory_cap >> 20
        );
    }
    let lines: Vec<&str> = std::str::from_utf8(stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE=1`"))
        .collect();
    let tail_from = lines.len().saturating_sub(4);
    // The guest's own error line, which a runtime's stack may push out of
    // the last lines (componentize-js prints the exception, then frames).
    if let Some(h) = headline(&lines)
        && h < tail_from
    {
        msg.push_str("\n  guest error: ");
        msg.push_str(lines[h]);
    }
    // componentize-js, given `throw "text"` where a hook-error belongs,
    // prints only that it found no `message` string.
    if lines
        .iter()
        .any(|l| l.starts_with("expected a string, received"))
        && lines.iter().any(|l| l.contains("_utf8AllocateAndEncode"))
    {
        msg.push_str("\n  the plugin threw a value with no `message` (a JavaScript `throw \"text\"`?): a hook fails with `throw new Error(\"text\")` or `throw { message: \"text\" }`");
    }
    let tail = &lines[tail_from..];
    if !tail.is_empty() {
        msg.push_str("\n  guest stderr: ");
        msg.push_str(&tail.join("\n                "));
    }
    if let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
        msg.push_str(&backtrace_lines(bt));
    }
    HookFailure::Trap {
        plugin: plugin.to_string(),
        hook: hook.to_string(),
        message: msg,
    }
}

/// The line of a guest's stderr that states its error: the last line that
/// opens one (a Rust panic, a Python exception, a JavaScript error), not a
/// stack frame under it.
fn headline(lines: &[&str]) -> Option<usize> {
    let frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("at ") || t.starts_with("File \"") || t.starts_with('^') || l.starts_with(' ')
    };
    // StarlingMonkey (componentize-js): the message, then `Stack:`.
    if let Some(s) = lines.iter().position(|l| *l == "Stack:")
        && s > 0
    {
        return Some(s - 1);
    }
    let opens = |l: &str| {
        l.contains("panicked at")
            || l.starts_with("Traceback")
            || l.starts_with("Uncaught")
            || l.starts_with("Error")
            || l.contains("Error: ")
            || l.contains("Exception")
    };
    let i = lines.iter().rposition(|l| !frame(l) && opens(l))?;
    // A Python traceback states its error on its last line that is not a
    // frame (`ValueError: bad input`), after the frames.
    if lines[i].starts_with("Traceback") {
        return lines[i..].iter().rposition(|l| !frame(l)).map(|j| i + j);
    }
    Some(i)
}

/// How many of the plugin's own frames a trap message shows.
const BACKTRACE_FRAMES: usize = 8;

/// The backtrace part of a trap message: demangled frame names with file and
/// line where the component carries DWARF, the panic and runtime machinery
/// (std, core, alloc, the panic runtime, `abort`) left out so that the first
/// frame shown is the plugin's own code. Empty when the component has no
/// names (a stripped release build).
fn backtrace_lines(bt: &wasmtime::WasmBacktrace) -> String {
    let mut hidden = 0usize;
    let mut frames = Vec::new();
    for f in bt.frames() {
        let Some(raw) = f.func_name() else {
            hidden += 1;
            continue;
        };
        let name = format!("{:#}", rustc_demangle::demangle(raw));
        let loc = f
            .symbols()
            .first()
            .and_then(|s| Some((s.file()?.to_string(), s.line()?)));
        if is_runtime_frame(&name, loc.as_ref().map(|(f, _)| f.as_str())) {
            hidden += 1;
            continue;
        }
        if frames.len() == BACKTRACE_FRAMES {
            hidden += 1;
            continue;
        }
        frames.push(match loc {
            Some((file, line)) => format!("{name} ({file}:{line})"),
            None => name,
        });
    }
    if frames.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n  backtrace (innermost first):\n    ");
    out.push_str(&frames.join("\n    "));
    if hidden > 0 {
        out.push_str(&format!(
            "\n    ({hidden} runtime or further frame(s) not shown)"
        ));
    }
    out
}

/// A frame of the Rust runtime rather than of the plugin: the panic
/// machinery, the standard library, or the export glue that the SDK and
/// wit-bindgen generate around each hook.
fn is_runtime_frame(name: &str, file: Option<&str>) -> bool {
    const PREFIXES: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "__rust",
        "rust_panic",
        "panic_abort::",
        "<std::",
        "<core::",
        "<alloc::",
        "wit_bindgen",
        "<wit_bindgen",
    ];
    name == "abort"
        || name.starts_with("uphost:plugin/")
        || name.contains("uphost_sdk::bindings::")
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || file.is_some_and(|f| f.starts_with("/rustc/"))
}

/// A hook's context, but for the node list (which becomes a `node-list`
/// handle on the service's nodes in each call's store).
#[derive(Debug, Clone)]
pub struct HookCtx {
    /// Run id.
    pub run_id: String,
    /// Service.
    pub service: String,
    /// Current version.
    pub from_version: String,
    /// Target version.
    pub to_version: String,
    /// Where the hook is in its service's release train.
    pub hop: HopCtx,
    /// Upgrade or update.
    pub mode: bindings::uphost::plugin::types::Mode,
    /// Nothing may change.
    pub dry_run: bool,
    /// Operator parameters.
    pub params: Vec<(String, String)>,
}

/// The hop of a hook's context (the contract's `hop`).
#[derive(Debug, Clone)]
pub struct HopCtx {
    /// 0-based position in the service's train.
    pub index: u32,
    /// Hops in the train.
    pub count: u32,
    /// Full or migrations only.
    pub kind: crate::events::HopKind,
    /// Installed when the train started.
    pub train_from: String,
    /// The train's target.
    pub train_to: String,
}

impl HopCtx {
    /// A run of one hop.
    pub fn single(from: &str, to: &str) -> HopCtx {
        HopCtx {
            index: 0,
            count: 1,
            kind: crate::events::HopKind::Full,
            train_from: from.to_string(),
            train_to: to.to_string(),
        }
    }
}

/// What a hook returns, as lifted from the guest.
type HookOut<E> = (Result<(), E>,);

/// Instantiate `pre` and call the one function `func` of its export
/// `iface`. Only that function is looked up and type-checked: the
/// bindings' instantiation checks every hook a plugin exports for each
/// instance, which was 8 % of a large dry run's time.
async fn call_one<P, R>(
    store: &mut Store<HostState>,
    pre: &wasmtime::component::InstancePre<HostState>,
    iface: &str,
    func: &str,
    params: P,
) -> wasmtime::Result<R>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + Send + Sync + 'static,
{
    let component = pre.component();
    let index = component
        .get_export_index(None, iface)
        .and_then(|i| component.get_export_index(Some(&i), func))
        .ok_or_else(|| wasmtime::format_err!("the plugin does not export `{iface}#{func}`"))?;
    let instance = pre.instantiate_async(&mut *store).await?;
    let f = instance.get_typed_func::<P, R>(&mut *store, &index)?;
    f.call_async(&mut *store, params).await
}

/// Call one hook of a plugin in a fresh instance.
pub async fn call_hook(
    rt: &Runtime,
    pre: &PluginPre<HostState>,
    env: CallEnv,
    hctx: &HookCtx,
    hook: Hook,
) -> Result<(), HookFailure> {
    let plugin = env.plugin.clone();
    let limits = env.limits.clone();
    let hook_name = hook.phase().as_str();
    let (nodes, targets) = (env.nodes.clone(), env.targets.clone());
    let _slot = rt.slots.acquire().await.expect("semaphore never closed");
    let state = HostState::new(Some(env), limits.memory_bytes, limits.output_cap);
    let mut store = rt.store(pre, state, limits.hook_timeout);
    let params = || -> Vec<bindings::uphost::plugin::types::Pair> {
        hctx.params
            .iter()
            .map(|(k, v)| bindings::uphost::plugin::types::Pair {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    };
    let work = async {
        match pre {
            PluginPre::V0_2(pre) => {
                let ctx = bindings::uphost::plugin::types::Context {
                    run_id: hctx.run_id.clone(),
                    service: hctx.service.clone(),
                    from_version: hctx.from_version.clone(),
                    to_version: hctx.to_version.clone(),
                    hop: bindings::uphost::plugin::types::Hop {
                        index: hctx.hop.index,
                        count: hctx.hop.count,
                        kind: match hctx.hop.kind {
                            crate::events::HopKind::Full => {
                                bindings::uphost::plugin::types::HopKind::Full
                            }
                            crate::events::HopKind::MigrationsOnly => {
                                bindings::uphost::plugin::types::HopKind::MigrationsOnly
                            }
                        },
                        train_from: hctx.hop.train_from.clone(),
                        train_to: hctx.hop.train_to.clone(),
                    },
                    mode: hctx.mode,
                    dry_run: hctx.dry_run,
                    nodes: store.data_mut().node_list(nodes)?,
                    targets: store.data_mut().node_list(targets)?,
                    params: params(),
                };
                // A hook's export is named as its phase.
                let (pre, i) = (pre.instance_pre(), bindings::latest::PLUGIN_EXPORT);
                let st = &mut store;
                let (r,): HookOut<bindings::uphost::plugin::types::HookError> = match hook.node() {
                    None => call_one(st, pre, i, hook_name, (&ctx,)).await,
                    Some(node) => call_one(st, pre, i, hook_name, (&ctx, node)).await,
                }?;
                Ok(r.map_err(|e| e.message))
            }
            PluginPre::V0_1(pre) => {
                // A 0.1 plugin sees every node of its service; it runs on a
                // limited run only when the limit covers them all
                // (`Session::services` refuses the rest).
                let ctx = v0_1::uphost::plugin::types::Context {
                    run_id: hctx.run_id.clone(),
                    service: hctx.service.clone(),
                    from_version: hctx.from_version.clone(),
                    to_version: hctx.to_version.clone(),
                    mode: bindings::mode_v0_1(hctx.mode),
                    dry_run: hctx.dry_run,
                    nodes: store.data_mut().node_list(nodes)?,
                    params: params()
                        .into_iter()
                        .map(|p| v0_1::uphost::plugin::types::Pair {
                            key: p.key,
                            value: p.value,
                        })
                        .collect(),
                };
                let (pre, i) = (pre.instance_pre(), v0_1::PLUGIN_EXPORT);
                let st = &mut store;
                let (r,): HookOut<v0_1::uphost::plugin::types::HookError> = match hook {
                    Hook::Check
                    | Hook::PreUpgrade
                    | Hook::PostUpgrade
                    | Hook::Finalize
                    | Hook::Rollback => call_one(st, pre, i, hook_name, (&ctx,)).await,
                    Hook::Upgrade(node) => {
                        let node = bindings::node_v0_1(node);
                        call_one(st, pre, i, hook_name, (&ctx, &node)).await
                    }
                    // A 0.1 plugin knows no releases, so it never has a
                    // migrations-only hop, and has no health check of its
                    // own for a gate: it passes.
                    Hook::Migrate => Ok((Err(v0_1::uphost::plugin::types::HookError {
                        message:
                            "a plugin built against uphost:plugin@0.1 has no migrations-only hop"
                                .into(),
                    }),)),
                    // Nor does it guard nodes (its description cannot say
                    // so): never called.
                    Hook::Verify | Hook::Leave(_) | Hook::Rejoin(_) | Hook::OkToStop(_) => {
                        Ok((Ok(()),))
                    }
                }?;
                Ok(r.map_err(|e| e.message))
            }
        }
    };
    // The epoch deadline traps a guest that computes; this timeout also
    // covers a guest blocked in a host call.
    let res = tokio::time::timeout(limits.hook_timeout + TICK * 10, work).await;
    let (stderr_bytes, stderr_truncated) = store.data().stderr.take();
    let deadline = || HookFailure::Deadline {
        plugin: plugin.clone(),
        hook: hook_name.to_string(),
        secs: limits.hook_timeout.as_secs(),
    };
    let out = match res {
        Err(_) => Err(deadline()),
        Ok(Err(e)) if is_deadline(&e) => Err(deadline()),
        Ok(Err(e)) => Err(trap_message(
            &plugin,
            hook_name,
            &e,
            &stderr_bytes,
            limits.memory_bytes,
        )),
        Ok(Ok(Err(message))) => Err(HookFailure::Plugin(capped_error(message))),
        Ok(Ok(Ok(()))) => Ok(()),
    };
    let st = store.data_mut();
    st.flush_guest_output();
    st.guest_output(
        crate::events::LogLevel::Stderr,
        &stderr_bytes,
        stderr_truncated,
    );
    out
}

/// Call `describe` with no capabilities at all.
pub async fn describe(
    rt: &Runtime,
    pre: &PluginPre<HostState>,
) -> wasmtime::Result<bindings::uphost::plugin::types::PluginInfo> {
    let _slot = rt.slots.acquire().await.expect("semaphore never closed");
    let state = HostState::new(None, 64 << 20, 64 << 10);
    let mut store = rt.store(pre, state, Duration::from_secs(10));
    let looped = || {
        wasmtime::format_err!(
            "describe did not return within 10 s: the plugin loops at load; remove its file from the plugin directory and report it to its vendor"
        )
    };
    let work = async {
        match pre {
            PluginPre::V0_2(pre) => {
                let inst = pre.instantiate_async(&mut store).await?;
                inst.uphost_plugin_plugin().call_describe(&mut store).await
            }
            PluginPre::V0_1(pre) => {
                let inst = pre.instantiate_async(&mut store).await?;
                let info = inst
                    .uphost_plugin_plugin()
                    .call_describe(&mut store)
                    .await?;
                Ok(bindings::plugin_info_from_v0_1(info))
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(11), work).await {
        Err(_) => Err(looped()),
        Ok(Err(e)) if is_deadline(&e) => Err(looped()),
        Ok(r) => r,
    }
}

/// Longest hook error kept (journal, report, terminal): a plugin's error
/// is untrusted and could be megabytes.
pub const MAX_HOOK_ERROR: usize = 4096;

/// A plugin's error, capped at [`MAX_HOOK_ERROR`] bytes.
fn capped_error(mut message: String) -> String {
    if message.len() > MAX_HOOK_ERROR {
        let total = message.len();
        let mut end = MAX_HOOK_ERROR;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!("… [error of {total} bytes cut]"));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::{HookFailure, headline, trap_message};

    #[test]
    fn a_javascript_string_thrown_is_told_what_to_throw_and_a_memory_trap_names_its_cap() {
        let stderr = b"expected a string, received [undefined]\nStack:\n  _utf8AllocateAndEncode@initializer.js:84:11\n  export_plugin_0_2_0$upgrade@initializer.js:1433:45\n\nRedirecting call to abort() to mozalloc_abort\n";
        let e = wasmtime::Error::msg("wasm trap: wasm `unreachable` instruction executed");
        let HookFailure::Trap { message, .. } =
            trap_message("horizon", "upgrade", &e, stderr, 64 << 20)
        else {
            panic!("not a trap");
        };
        assert!(
            message.contains("guest error: expected a string, received [undefined]"),
            "{message}"
        );
        assert!(message.contains("throw new Error"), "{message}");
        let e = wasmtime::Error::msg("forcing trap when growing memory to 70000000 bytes");
        let HookFailure::Trap { message, .. } = trap_message("p", "check", &e, b"", 64 << 20)
        else {
            panic!("not a trap");
        };
        assert!(
            message.contains("memory cap of 64 MiB") && message.contains("memory_mb"),
            "{message}"
        );
    }

    #[test]
    fn the_guests_own_error_line_is_found_under_a_runtime_stack() {
        // componentize-js: the exception, then the engine's frames.
        let js = [
            "Error: rabbitmq is partitioned",
            "    at upgrade (plugin.js:12:11)",
            "    at call (internal:1:1)",
            "    at run (internal:2:1)",
            "    at main (internal:3:1)",
            "    at start (internal:4:1)",
        ];
        assert_eq!(headline(&js), Some(0));
        // componentize-py: the traceback's last line.
        let py = [
            "Traceback (most recent call last):",
            "  File \"app.py\", line 9, in upgrade",
            "    raise ValueError(\"no quorum\")",
            "ValueError: no quorum",
        ];
        assert_eq!(headline(&py), Some(3));
        // A Rust panic.
        let rs = ["thread '<unnamed>' panicked at src/lib.rs:3:5:", "boom"];
        assert_eq!(headline(&rs), Some(0));
        assert_eq!(headline(&["just output", "more"]), None);
        // componentize-js's runtime: the message, then its stack.
        let sm = [
            "expected a string, received [undefined]",
            "Stack:",
            "  _utf8AllocateAndEncode@initializer.js:84:11",
            "  export_plugin_0_2_0$upgrade@initializer.js:1433:45",
            "Redirecting call to abort() to mozalloc_abort",
        ];
        assert_eq!(headline(&sm), Some(0));
    }
}
