//! The error a hook returns; its `Display` is what the operator reads.

use std::fmt;

/// A hook's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A free-form message (from [`bail!`](crate::bail) or [`Error::msg`]).
    Message(String),
    /// A command ran and exited with a non-zero status.
    Command(Box<CommandFailed>),
    /// The host refused or could not run a command.
    Exec {
        /// The node the command was for.
        node: String,
        /// The argv, program first.
        argv: Vec<String>,
        /// What the host said.
        error: crate::ExecError,
    },
}

/// A command that exited with a non-zero status.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandFailed {
    /// The node it ran on.
    pub node: String,
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its exit status.
    pub status: i32,
    /// Its standard error (lossy UTF-8, trimmed).
    pub stderr: String,
    /// Its standard output (lossy UTF-8, trimmed).
    pub stdout: String,
}

impl Error {
    /// An error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Message(message.into())
    }

    /// Prefix the message with what was being done.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error::Message(format!("{what}: {self}"))
    }
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Message(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error::Message(s.to_string())
    }
}

fn shell_words(argv: &[String]) -> String {
    uphost_words::shell::join(argv)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Message(m) => f.write_str(m),
            Error::Command(c) => {
                let mut argv = vec![c.program.clone()];
                argv.extend(c.args.iter().cloned());
                write!(
                    f,
                    "`{}` on {} exited with status {}",
                    shell_words(&argv),
                    c.node,
                    c.status
                )?;
                let detail = if c.stderr.is_empty() {
                    &c.stdout
                } else {
                    &c.stderr
                };
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Error::Exec { node, argv, error } => {
                write!(f, "`{}` on {}: {error}", shell_words(argv), node)
            }
        }
    }
}

impl std::error::Error for Error {}

/// Attach context to a [`Result`].
pub trait ResultExt<T> {
    /// Prefix an error with what was being done.
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_error_names_everything() {
        let e = Error::Command(Box::new(CommandFailed {
            node: "ctl1".into(),
            program: "systemctl".into(),
            args: vec!["stop".into(), "maria db".into()],
            status: 5,
            stderr: "Unit not found".into(),
            stdout: String::new(),
        }));
        assert_eq!(
            e.to_string(),
            "`systemctl stop 'maria db'` on ctl1 exited with status 5: Unit not found"
        );
    }
}
