//! Hook overhead: instantiate a plugin (pooling allocator, `InstancePre`)
//! and call a hook that does nothing, through the same `call_hook` path a
//! run uses (grant, sink, limits), with the binary's allocator (mimalloc).
//! Prints median and p99, then each part timed apart (host state, store,
//! instantiate, call, drop) and the parts before the drop as one interval
//! (up to the hook's result).
//!
//! `cargo bench -p uphost --bench hook_overhead` (needs
//! `cargo xtask build-fixtures` or `cargo xtask test` first for the
//! fixture component).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uphost::capabilities::Grant;
use uphost::config::Limits;
use uphost::events::{Phase, StepKey};
use uphost::journal::memory::MemorySink;
use uphost::loading::{self, cache::Cache};
use uphost::runtime::bindings::uphost::plugin::types;
use uphost::runtime::{CallEnv, EngineLimits, Hook, HookCtx, Runtime, call_hook};
use uphost::transport::dryrun::DryRun;

/// The allocator the `uphost` binary runs hooks with.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let wasm = std::env::var_os("UPHOST_BENCH_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip2/plugin/fixture_bench_true.wasm")
        });
    let iters: usize = std::env::var("UPHOST_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let runtime = Arc::new(
            Runtime::new(&EngineLimits {
                max_instances: 16,
                max_memory_bytes: 64 << 20,
                quick_tier: std::env::var_os("UPHOST_BENCH_QUICK").is_some(),
            })
            .unwrap(),
        );
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&runtime, cache_dir.path().to_path_buf());
        let plugin = loading::load_file(&runtime, &cache, &wasm, 64 << 20).await.unwrap_or_else(|e| {
            eprintln!("{e}\n(build the fixtures first: cargo xtask test, or cargo xtask bench)");
            std::process::exit(2)
        });
        let sink = Arc::new(MemorySink::new(None));
        let grant = Arc::new(Grant {
            commands: plugin.meta.capabilities.clone(),
        });
        let ctx = HookCtx {
            run_id: "bench".into(),
            service: plugin.name.clone(),
            from_version: "1".into(),
            to_version: "2".into(),
            hop: uphost::runtime::HopCtx::single("1", "2"),
            mode: types::Mode::MajorUpgrade,
            dry_run: false,
            params: vec![],
        };
        let mut samples = Vec::with_capacity(iters);
        for i in 0..iters + 500 {
            let env = CallEnv {
                plugin: plugin.name.clone(),
                step: StepKey::of(&plugin.name, Phase::Finalize),
                grant: grant.clone(),
                nodes: Arc::new(uphost::config::NodeSet::new(vec![])),
                targets: Arc::new(uphost::config::NodeSet::new(vec![])),
                read_only: false,
                limits: Limits::default(),
                transport: Arc::new(DryRun),
                sink: sink.clone(),
                record_dir: None,
                node_records: None,
                budget: Default::default(),
                reboot: Default::default(),
                deferred: Default::default(),
                reboot_mode: Default::default(),
            };
            let t = Instant::now();
            call_hook(&runtime, &plugin.pre, env, &ctx, Hook::Finalize)
                .await
                .unwrap();
            if i >= 500 {
                samples.push(t.elapsed());
            }
        }
        samples.sort();
        let median = pct(&samples, 0.5);
        let p99 = pct(&samples, 0.99);
        println!(
            "hook overhead (instantiate + no-op finalize, {iters} calls): median {:.1} µs, p99 {:.1} µs",
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
        println!(
            "RESULT hook_median_us={:.1} hook_p99_us={:.1}",
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
        // Each part of a call on its own (the same steps as `call_hook`,
        // timed apart): the host state (WASI context, pipes, limits), the
        // store, instantiation, the call with its context (the hook's
        // lookup and type check included), the store's drop
        // (the instance's slot given back to the pool).
        let uphost::runtime::bindings::PluginPre::V0_2(pre) = &plugin.pre else {
            return;
        };
        let mut parts = [const { Vec::new() }; 5];
        // The measure, as one interval: the store with its WASI
        // context, instantiation and the no-op call, up to the hook's
        // result (the drop, which gives the slot back, comes after it).
        let mut until_result = Vec::with_capacity(iters);
        for i in 0..iters + 500 {
            let t0 = Instant::now();
            let state = uphost::runtime::HostState::new(None, 64 << 20, 1 << 20);
            let t1 = Instant::now();
            let mut store = runtime.store(&plugin.pre, state, Duration::from_secs(60));
            let t2 = Instant::now();
            let inst = pre.instance_pre().instantiate_async(&mut store).await.unwrap();
            let t3 = Instant::now();
            let nodes = std::sync::Arc::new(uphost::config::NodeSet::new(vec![]));
            let cx = types::Context {
                run_id: ctx.run_id.clone(),
                service: ctx.service.clone(),
                from_version: ctx.from_version.clone(),
                to_version: ctx.to_version.clone(),
                hop: types::Hop {
                    index: 0,
                    count: 1,
                    kind: types::HopKind::Full,
                    train_from: "1".into(),
                    train_to: "2".into(),
                },
                mode: ctx.mode,
                dry_run: false,
                nodes: store.data_mut().node_list(nodes.clone()).unwrap(),
                targets: store.data_mut().node_list(nodes).unwrap(),
                params: vec![],
            };
            // As `call_hook` does: the one hook called looked up and
            // type-checked, then called.
            let index = pre
                .instance_pre()
                .component()
                .get_export_index(None, uphost::runtime::bindings::latest::PLUGIN_EXPORT)
                .and_then(|i| {
                    pre.instance_pre()
                        .component()
                        .get_export_index(Some(&i), "finalize")
                })
                .unwrap();
            let f = inst
                .get_typed_func::<(&types::Context,), (Result<(), types::HookError>,)>(
                    &mut store, &index,
                )
                .unwrap();
            let _ = f.call_async(&mut store, (&cx,)).await.unwrap();
            let t4 = Instant::now();
            drop(store);
            let t5 = Instant::now();
            if i >= 500 {
                for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]
                    .into_iter()
                    .enumerate()
                {
                    parts[k].push(b - a);
                }
                until_result.push(t4 - t0);
            }
        }
        until_result.sort();
        let (um, up) = (
            pct(&until_result, 0.5).as_secs_f64() * 1e6,
            pct(&until_result, 0.99).as_secs_f64() * 1e6,
        );
        println!(
            "store + WASI context + instantiate + no-op call, up to the result: median {um:.1} µs, p99 {up:.1} µs"
        );
        println!("RESULT hook_until_result_us={um:.1} hook_until_result_p99_us={up:.1}");
        let names = ["state", "store", "instantiate", "call", "drop"];
        let mut line = String::from("RESULT");
        for (k, v) in parts.iter_mut().enumerate() {
            v.sort();
            line.push_str(&format!(
                " hook_{}_us={:.2}",
                names[k],
                pct(v, 0.5).as_secs_f64() * 1e6
            ));
        }
        println!("{line}");
    });
}
