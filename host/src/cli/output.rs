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

/// The time since `start` as a line's stamp, read when the line is
/// formatted (most events make no line: they cost no clock read).
struct Stamp(Instant);

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.elapsed().as_millis() as u64;
        write!(
            f,
            "[{:>3}:{:02}.{}]",
            ms / 60_000,
            (ms / 1000) % 60,
            (ms / 100) % 10
        )
    }
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

/// The run's progress as lines in `run.log` in its directory, whatever
/// the terminal does (it may be gone: SIGHUP is ignored): the lines the
/// terminal shows without `-v`, in a 64 KiB buffer written out when it
/// fills, at a failure, a confirmation and the run's end (the journal is
/// the record, read by `watch`; this is for people, and costs no write per
/// step). The file is opened at the first event (the directory exists
/// by then).
fn run_log(dir: &std::path::Path) -> Observer {
    let path = dir.join("run.log");
    let file: std::sync::Mutex<Option<std::io::BufWriter<std::fs::File>>> = Default::default();
    let start = Instant::now();
    let steps_done = AtomicU64::new(0);
    Box::new(move |ev: &Event| {
        let Some(line) = human_line(ev, start, 0, &steps_done) else {
            return;
        };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok()
                .map(|file| std::io::BufWriter::with_capacity(64 << 10, file));
        }
        if let Some(f) = f.as_mut() {
            let _ = writeln!(f, "{line}");
            if matches!(
                ev,
                Event::StepFinished { error: Some(_), .. }
                    | Event::RunFinished { .. }
                    | Event::Confirmation { .. }
            ) {
                let _ = f.flush();
            }
        }
    })
}

/// The observers for a run, from the global flags; with its directory,
/// its `run.log` too.
pub fn observers(cli: &Cli, run_dir: Option<&std::path::Path>) -> Vec<Observer> {
    let mut v: Vec<Observer> = Vec::new();
    if let Some(dir) = run_dir {
        v.push(run_log(dir));
    }
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
    if let Some(l) = human_line(ev, start, verbose, done) {
        errln!("{l}");
    }
}

/// An event as a line for people (`None`: not shown at this verbosity).
fn human_line(ev: &Event, start: Instant, verbose: u8, done: &AtomicU64) -> Option<String> {
    let t = Stamp(start);
    match ev {
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
            let step = step.to_string();
            let step = shown(&step);
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
            ..
        } => Some(format!(
            "{t} ROLLBACK of {} (reverse dependency order){}",
            services.join(", "),
            if irreversible.is_empty() {
                String::new()
            } else {
                format!("; cannot roll back: {}", irreversible.join(", "))
            }
        )),
        Event::Paused { reason, .. } => Some(format!("{t} PAUSED: {}", shown(reason))),
        Event::RunFinished { outcome, .. } => Some(format!("{t} run {outcome}")),
        _ => None,
    }
}

/// An argv as a shell-quoted line for the terminal (never executed):
/// quoted, then with control characters made visible and its length capped
/// (a quoted escape sequence would still reach the terminal raw).
pub fn shell_join(argv: &[String]) -> String {
    shown(&uphost_words::shell::join(argv)).into_owned()
}

/// `uphost watch`: a run's progress as `run` shows it, read from its
/// journal, until it ends; exits as the run did (0 complete, 1 failed or
/// rolled back, 130 interrupted or stopped).
pub fn watch(
    state_dir: &std::path::Path,
    run: Option<&str>,
    verbose: u8,
) -> Result<i32, crate::Error> {
    use crate::events::Outcome;
    use crate::execution::inspect::{Followed, follow};
    let start = Instant::now();
    let done = AtomicU64::new(0);
    let end = follow(state_dir, run, |ev| human(ev, start, verbose, &done))?;
    Ok(match end {
        Followed::Finished(Outcome::Complete) => super::exit::OK,
        Followed::Finished(Outcome::Failed | Outcome::RolledBack) => super::exit::FAILED,
        Followed::Finished(Outcome::Interrupted) => super::exit::INTERRUPTED,
        Followed::Stopped => {
            errln!(
                "the run is not running (its uphost stopped before it finished): `uphost resume` continues it"
            );
            super::exit::INTERRUPTED
        }
    })
}
