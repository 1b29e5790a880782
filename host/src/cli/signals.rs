//! What signals mean to `uphost run` and `resume`, from the moment the
//! command starts (while plugins load, too):
//!
//! * SIGINT (Ctrl-C), SIGTERM (systemd stopping a unit, `timeout`, a
//!   container stop) and SIGQUIT: the first stops the run after the steps
//!   in flight (no new step starts; the run ends `interrupted` and
//!   `uphost resume` continues it); a second of any of them aborts at once
//!   (ssh masters closed; `resume` replays the steps that were in flight).
//! * SIGHUP (the terminal closed, the ssh session to this machine
//!   dropped): ignored. The run goes on with its terminal gone; its
//!   progress is in the journal and in `run.log` beside it, and `uphost
//!   status` or `uphost watch` from a new session shows it.

use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{SignalKind, signal};

use super::exit;
use crate::execution::run::Interrupt;
use crate::transport::Transports;

/// Where the run's transports are, once it has them (to close the ssh
/// masters on an abort).
pub type TransportsSlot = Arc<OnceLock<Arc<Transports>>>;

/// Listen for the signals above for as long as the process runs; the
/// interrupt they request and the slot for the transports.
pub fn listen() -> (Arc<Interrupt>, TransportsSlot) {
    let interrupt = Arc::new(Interrupt::default());
    let slot: TransportsSlot = Arc::default();
    let (i, t) = (interrupt.clone(), slot.clone());
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut int), Ok(mut term), Ok(mut quit), Ok(mut hup)) = streams else {
        tracing::warn!("cannot listen for signals: Ctrl-C and SIGTERM stop uphost at once");
        return (interrupt, slot);
    };
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let which = tokio::select! {
                _ = int.recv() => "interrupt",
                _ = term.recv() => "SIGTERM",
                _ = quit.recv() => "SIGQUIT",
                _ = hup.recv() => {
                    errln!(
                        "SIGHUP: the terminal went away; the run goes on (its progress is in the journal and run.log; `uphost status` or `uphost watch` shows it)"
                    );
                    continue;
                }
            };
            seen += 1;
            if seen == 1 {
                errln!(
                    "{which}: no new steps start; in-flight steps finish, then the run stops (resume with `uphost resume`). Ctrl-C again aborts at once."
                );
                i.request();
                continue;
            }
            errln!("aborted; `uphost resume` re-runs the steps that were in flight");
            if let Some(t) = t.get() {
                t.close();
            }
            std::process::exit(exit::INTERRUPTED);
        }
    });
    (interrupt, slot)
}
