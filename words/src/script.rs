//! Scripted command responses: the model shared by native unit tests
//! ([`MockHost`](crate::testing::MockHost)) and `uphost test` scenarios.
//!
//! A rule matches a command by node (glob, optional), program and argument
//! patterns; it answers with its responses in order, repeating the last one.

use std::cell::Cell;

use crate::pattern;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A scripted command.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Node glob (`None`: any node).
    pub node: Option<String>,
    /// Program (literal).
    pub program: String,
    /// Argument patterns (see [`pattern`]).
    pub args: Vec<String>,
    /// Answers in order; the last repeats.
    pub responses: Vec<Response>,
    used: Cell<usize>,
}

impl Rule {
    /// A rule answering `status 0` with empty output.
    pub fn new(program: &str, args: &[&str]) -> Self {
        Rule {
            node: None,
            program: program.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            responses: Vec::new(),
            used: Cell::new(0),
        }
    }

    /// Build from owned parts (used by the scenario loader).
    pub fn from_parts(
        node: Option<String>,
        program: String,
        args: Vec<String>,
        responses: Vec<Response>,
    ) -> Self {
        Rule {
            node,
            program,
            args,
            responses,
            used: Cell::new(0),
        }
    }

    /// Only on nodes matching this glob.
    pub fn on(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// Answer with this status and stdout.
    pub fn then(mut self, status: i32, stdout: &str) -> Self {
        self.responses.push(Response {
            status,
            stdout: stdout.to_string(),
            stderr: String::new(),
        });
        self
    }

    /// Answer with this status and stderr.
    pub fn then_err(mut self, status: i32, stderr: &str) -> Self {
        self.responses.push(Response {
            status,
            stdout: String::new(),
            stderr: stderr.to_string(),
        });
        self
    }

    fn matches(&self, node: &str, program: &str, args: &[String]) -> bool {
        self.program == program
            && self
                .node
                .as_deref()
                .is_none_or(|n| pattern::element_matches(n, node))
            && pattern::args_match(&self.args, args)
    }

    fn next(&self) -> Response {
        let i = self.used.get();
        self.used.set(i + 1);
        match self.responses.len() {
            0 => Response::default(),
            n => self.responses[i.min(n - 1)].clone(),
        }
    }
}

/// An ordered list of rules; the first match answers.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The rules.
    pub rules: Vec<Rule>,
}

impl Script {
    /// Answer a command, or `None` when no rule matches.
    pub fn respond(&self, node: &str, program: &str, args: &[String]) -> Option<Response> {
        self.rules
            .iter()
            .find(|r| r.matches(node, program, args))
            .map(Rule::next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_repeat_the_last_answer() {
        let s = Script {
            rules: vec![
                Rule::new("mysql", &["-e", "..."])
                    .on("ctl1")
                    .then(1, "")
                    .then(0, "ok"),
                Rule::new("mysql", &["..."]).then(0, "other"),
            ],
        };
        let args = vec!["-e".to_string(), "SELECT 1".to_string()];
        assert_eq!(s.respond("ctl1", "mysql", &args).unwrap().status, 1);
        assert_eq!(s.respond("ctl1", "mysql", &args).unwrap().stdout, "ok");
        assert_eq!(s.respond("ctl1", "mysql", &args).unwrap().stdout, "ok");
        assert_eq!(s.respond("ctl2", "mysql", &args).unwrap().stdout, "other");
        assert!(s.respond("ctl2", "systemctl", &args).is_none());
    }
}
