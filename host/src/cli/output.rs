//! What the operator sees while a run goes: timestamped lines on stderr
//! (steps, denials, confirmations, failures), or JSON events on stdout.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::events::{Event, LogLevel};
use crate::journal::Observer;
use crate::untrusted::{line as shown, text as shown_text};

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
                r.insert(shown(&step.to_string()).into_owned());
            }
            Event::StepFinished { step, error, .. } => {
                r.remove(shown(&step.to_string()).as_ref());
                bar.inc(1);
                if let Some(e) = error {
                    bar.println(format!(
                        "FAILED {}: {}",
                        shown(&step.to_string()),
                        shown_text(e)
                    ));
                }
            }
            Event::Denied {
                plugin,
                node,
                argv,
                reason,
                ..
            } => bar.println(format!(
                "DENIED {plugin} on {}: {} ({})",
                shown(node),
                shell_join(argv),
                shown(reason)
            )),
            Event::Log {
                step,
                level,
                message,
                ..
            } if matches!(level, LogLevel::Warn | LogLevel::Error) => {
                bar.println(format!("{} [{level}] {}", step.service, shown(message)))
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
        Event::StepStarted { step, .. } if verbose > 0 => {
            Some(format!("{t} {} ...", shown(&step.to_string())))
        }
        Event::StepFinished {
            step,
            status,
            duration_ms,
            error,
            ..
        } => {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            let step = shown(&step.to_string()).into_owned();
            Some(match error {
                None => format!("{t} {step}: {status} ({duration_ms} ms) [{n} steps]"),
                Some(e) => format!(
                    "{t} {step}: FAILED ({duration_ms} ms)\n      {}",
                    shown_text(e)
                ),
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
                    (None, Some(e)) => shown(e).into_owned(),
                    (None, None) => "?".into(),
                }
            };
            (verbose > 0 || result.skipped)
                .then(|| format!("{t}     {}: {} -> {what}", shown(node), shell_join(argv)))
        }
        Event::Denied {
            plugin,
            node,
            argv,
            reason,
            ..
        } => Some(format!(
            "{t} DENIED {plugin} on {}: {} ({})",
            shown(node),
            shell_join(argv),
            shown(reason)
        )),
        Event::Log {
            step,
            level,
            message,
            ..
        } if verbose > 0 || level.is_notable() => Some(format!(
            "{t}   {} [{level}] {}",
            step.service,
            shown(message)
        )),
        Event::Confirmation {
            prompt,
            accepted,
            how,
        } => Some(format!(
            "{t} confirm: {} -> {} ({how})",
            shown(prompt.lines().next().unwrap_or("")),
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

/// An argv as a shell-quoted line for the terminal (never executed):
/// quoted, then with control characters made visible and its length capped
/// (a quoted escape sequence would still reach the terminal raw).
pub fn shell_join(argv: &[String]) -> String {
    shown(&uphost_words::shell::join(argv)).into_owned()
}
