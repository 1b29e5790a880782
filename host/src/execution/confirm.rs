//! Confirmation points (like the leapfrog's): before the first mutating
//! step, at a canary pause, before finalize, before a rollback. `--yes`
//! answers yes; with no terminal and no `--yes` the run refuses.

use std::io::{BufRead, IsTerminal, Write};

/// How questions are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// `--yes`: every confirmation is accepted.
    Yes,
    /// Ask on the terminal.
    Ask,
}

/// The answer and how it was given.
pub struct Answer {
    /// Accepted.
    pub accepted: bool,
    /// `--yes` or `terminal`.
    pub how: &'static str,
}

impl Confirm {
    /// From the flag.
    pub fn from_flag(yes: bool) -> Confirm {
        if yes { Confirm::Yes } else { Confirm::Ask }
    }

    /// Whether asking is possible at all.
    pub fn can_ask(&self) -> bool {
        *self == Confirm::Yes || std::io::stdin().is_terminal()
    }

    /// Ask `prompt` (on stderr) and read y/N from the terminal.
    pub fn ask(&self, prompt: &str) -> Answer {
        if *self == Confirm::Yes {
            return Answer {
                accepted: true,
                how: "--yes",
            };
        }
        if !std::io::stdin().is_terminal() {
            return Answer {
                accepted: false,
                how: "no-terminal",
            };
        }
        let line = crate::terminal::suspend(|| {
            err!("{prompt} [y/N] ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            line
        });
        let a = line.trim().to_ascii_lowercase();
        Answer {
            accepted: a == "y" || a == "yes",
            how: "terminal",
        }
    }
}
