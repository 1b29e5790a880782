//! Confirmation points (like the leapfrog's): before the first mutating
//! step, at a canary pause, before finalize, before a rollback. `--yes`
//! answers yes; with no terminal and no `--yes` the run refuses.

use std::io::{BufRead, IsTerminal, Write};

/// How questions are answered.
#[derive(Debug, Clone)]
pub enum Confirm {
    /// `--yes`: every confirmation is accepted.
    Yes,
    /// Ask on the terminal.
    Ask,
    /// Answers given in advance, in order (then no): a run driven by a
    /// program rather than a person, and the runner's unit tests.
    Scripted(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<bool>>>),
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

    /// Answers `answers` in order, then no.
    pub fn scripted(answers: &[bool]) -> Confirm {
        Confirm::Scripted(std::sync::Arc::new(std::sync::Mutex::new(
            answers.iter().copied().collect(),
        )))
    }

    /// Whether asking is possible at all.
    pub fn can_ask(&self) -> bool {
        match self {
            Confirm::Yes | Confirm::Scripted(_) => true,
            Confirm::Ask => std::io::stdin().is_terminal(),
        }
    }

    /// Whether a person is asked (an optional question, such as a
    /// rollback after a failure, is put only to a person).
    pub fn asks_a_person(&self) -> bool {
        matches!(self, Confirm::Ask)
    }

    /// Ask `prompt` (on stderr) and read y/N from the terminal.
    pub fn ask(&self, prompt: &str) -> Answer {
        match self {
            Confirm::Yes => {
                return Answer {
                    accepted: true,
                    how: "--yes",
                };
            }
            Confirm::Scripted(answers) => {
                let next = answers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                return Answer {
                    accepted: next.unwrap_or(false),
                    how: "scripted",
                };
            }
            Confirm::Ask => {}
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
