//! Journal cost per recorded step (step-started + step-finished, the
//! latter fsync'd), from one writer and from several concurrent writers
//! (whose fsyncs are shared by group commit).
//!
//! `cargo bench -p uphost --bench journal`

use std::sync::Arc;
use std::time::Instant;

use uphost::events::{Event, Phase, Sink, StepKey};
use uphost::journal::Journal;

fn step(i: usize, phase: Phase) -> StepKey {
    StepKey {
        hop: None,
        service: format!("svc{i}"),
        phase,
        node: (phase == Phase::Upgrade).then(|| format!("node{i}")),
    }
}

/// A service-level step: its end is fsync'd on its own.
fn record(j: &Journal, i: usize) {
    record_phase(j, i, Phase::PostUpgrade);
}

fn record_phase(j: &Journal, i: usize, phase: Phase) {
    j.emit(Event::StepStarted {
        step: step(i, phase),
        at_ms: 0,
    });
    j.emit(Event::StepFinished {
        step: step(i, phase),
        at_ms: 1,
        status: uphost::events::StepResult::Ok,
        duration_ms: 1,
        error: None,
    });
}

fn main() {
    let n: usize = std::env::var("UPHOST_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    // Inside target/ (a real disk), not /tmp (possibly tmpfs: no real fsync).
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let j = Journal::create(dir.path(), "seq", vec![]).unwrap();
    let t = Instant::now();
    for i in 0..n {
        record(&j, i);
    }
    let seq_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let j = Arc::new(Journal::create(dir.path(), "par", vec![]).unwrap());
    let threads = 8;
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|k| {
            let j = j.clone();
            std::thread::spawn(move || {
                for i in 0..n / threads {
                    record(&j, k * n + i);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let par_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    // Node steps: ends made durable by one barrier per batch of 10.
    let j = Journal::create(dir.path(), "batch", vec![]).unwrap();
    let t = Instant::now();
    for i in 0..n {
        record_phase(&j, i, Phase::Upgrade);
        if i % 10 == 9 {
            j.barrier();
        }
    }
    let batch_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "journal: {seq_us:.1} µs per step from one writer, {par_us:.1} µs per step from {threads} concurrent writers (fsync per finished step, group commit); {batch_us:.1} µs per node step with one barrier per batch of 10"
    );
    println!(
        "RESULT journal_step_us={seq_us:.1} journal_step_concurrent_us={par_us:.1} journal_node_step_batched_us={batch_us:.1}"
    );
}
