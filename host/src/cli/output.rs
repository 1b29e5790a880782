//! What the operator sees while a run goes: timestamped lines on stderr
//! (steps, denials, confirmations, failures), or JSON events on stdout.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::events::Event;
use crate::journal::Observer;

use super::{Cli, OutputKind};

fn stamp(start: Instant) -> String {
    let ms = start.elapsed().as_millis() as u64;
    format!(
        "[{:>3}:{:02}.{}]",
        ms / 60_000,
        (ms / 1000) % 60,
        (ms / 100) % 10
    )
}

/// Live progress on a terminal: one bar of steps done / total, the steps in
/// flight, elapsed time; failures, denials and confirmations print above it.
fn terminal_progress(total_hint: u64) -> Observer {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = crate::terminal::BAR
        .get_or_init(|| {
            let b = ProgressBar::new(total_hint);
            b.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30.green/white}] {pos}/{len} steps  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        })
        .clone();
    let running: std::sync::Mutex<std::collections::BTreeSet<String>> = Default::default();
    Box::new(move |ev: &Event| {
        let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
        match ev {
            Event::RunStarted { plan, .. } => {
                let steps: usize = plan.iter().map(|s| s.nodes.len() + 4).sum();
                bar.set_length(steps as u64);
            }
            Event::StepStarted { step, .. } => {
                r.insert(step.to_string());
            }
            Event::StepFinished { step, error, .. } => {
                r.remove(&step.to_string());
                bar.inc(1);
                if let Some(e) = error {
                    bar.println(format!("FAILED {step}: {e}"));
                }
            }
            Event::Denied {
                plugin,
                node,
                argv,
                reason,
                ..
            } => bar.println(format!(
                "DENIED {plugin} on {node}: {} ({reason})",
                shell_join(argv)
            )),
            Event::Log {
                step,
                level,
                message,
                ..
            } if level == "warn" || level == "error" => {
                bar.println(format!("{} [{level}] {message}", step.service))
            }
            Event::RunFinished { outcome, .. } => {
                bar.finish_and_clear();
                errln!("run {outcome}");
            }
            _ => {}
        }
        let shown: Vec<&String> = r.iter().take(4).collect();
        bar.set_message(match shown.len() {
            0 => String::new(),
            _ => format!(
                "{}{}",
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
                if r.len() > 4 {
                    format!(" (+{})", r.len() - 4)
                } else {
                    String::new()
                }
            ),
        });
    })
}

/// The observers for a run, from the global flags.
pub fn observers(cli: &Cli) -> Vec<Observer> {
    let mut v: Vec<Observer> = Vec::new();
    if cli.output == OutputKind::Json {
        v.push(Box::new(|ev: &Event| {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer(&mut out, ev);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
        }));
    }
    use std::io::IsTerminal;
    if !cli.quiet
        && cli.verbose == 0
        && std::io::stderr().is_terminal()
        && std::env::var_os("UPHOST_NO_BAR").is_none()
    {
        v.push(terminal_progress(0));
    } else if !cli.quiet {
        let start = Instant::now();
        let verbose = cli.verbose;
        let steps_done = Arc::new(AtomicU64::new(0));
        v.push(Box::new(move |ev: &Event| {
            human(ev, start, verbose, &steps_done)
        }));
    }
    v
}

fn human(ev: &Event, start: Instant, verbose: u8, done: &AtomicU64) {
    let t = stamp(start);
    let line = match ev {
        Event::RunStarted {
            run_id,
            plan,
            options,
            ..
        } => Some(format!(
            "{t} run {run_id}: {} service(s){}",
            plan.len(),
            if options.dry_run { " (dry run)" } else { "" }
        )),
        Event::RunResumed { .. } => Some(format!("{t} resuming")),
        Event::StepStarted { step, .. } if verbose > 0 => Some(format!("{t} {step} ...")),
        Event::StepFinished {
            step,
            status,
            duration_ms,
            error,
            ..
        } => {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            Some(match error {
                None => format!("{t} {step}: {status} ({duration_ms} ms) [{n} steps]"),
                Some(e) => format!("{t} {step}: FAILED ({duration_ms} ms)\n      {e}"),
            })
        }
        Event::CommandFinished {
            node, argv, result, ..
        } if verbose > 0 || result.skipped => {
            let what = if result.skipped {
                "would run".to_string()
            } else {
                match (result.status, &result.error) {
                    (Some(s), _) => format!("exit {s}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => "?".into(),
                }
            };
            (verbose > 0 || result.skipped)
                .then(|| format!("{t}     {node}: {} -> {what}", shell_join(argv)))
        }
        Event::Denied {
            plugin,
            node,
            argv,
            reason,
            ..
        } => Some(format!(
            "{t} DENIED {plugin} on {node}: {} ({reason})",
            shell_join(argv)
        )),
        Event::Log {
            step,
            level,
            message,
            ..
        } if verbose > 0 || level == "warn" || level == "error" || level == "progress" => {
            Some(format!("{t}   {} [{level}] {message}", step.service))
        }
        Event::Confirmation {
            prompt,
            accepted,
            how,
        } => Some(format!(
            "{t} confirm: {} -> {} ({how})",
            prompt.lines().next().unwrap_or(""),
            if *accepted { "yes" } else { "no" }
        )),
        Event::RollbackStarted {
            services,
            irreversible,
        } => Some(format!(
            "{t} ROLLBACK of {} (reverse dependency order){}",
            services.join(", "),
            if irreversible.is_empty() {
                String::new()
            } else {
                format!("; cannot roll back: {}", irreversible.join(", "))
            }
        )),
        Event::RunFinished { outcome, .. } => Some(format!("{t} run {outcome}")),
        _ => None,
    };
    if let Some(l) = line {
        errln!("{l}");
    }
}

/// An argv as a shell-quoted line (for display only; never executed).
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| crate::transport::ssh::quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}
