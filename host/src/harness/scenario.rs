//! The scenario file of `uphost test`: simulated nodes, the context,
//! scripted command responses and expectations.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::config::services::Mode;
use crate::config::yaml;

/// One scripted answer.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Exit status.
    #[serde(default)]
    pub status: i32,
    /// Standard output.
    #[serde(default)]
    pub stdout: String,
    /// Standard error.
    #[serde(default)]
    pub stderr: String,
}

/// A scripted command: program + argument patterns (+ node glob) → answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripted {
    /// Program (literal).
    pub program: String,
    /// Argument patterns (same language as capabilities); default `[...]`.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Node glob.
    #[serde(default)]
    pub node: Option<String>,
    /// Answers in order; the last repeats. Default: one success.
    #[serde(default)]
    pub respond: Vec<Answer>,
}

/// What a hook should do.
#[derive(Debug, Clone, PartialEq)]
pub enum HookExpect {
    /// `ok` or `fails`.
    Word(String),
    /// `{fails_with: "substring"}`.
    FailsWith {
        /// A substring of the error.
        fails_with: String,
    },
}

impl<'de> Deserialize<'de> for HookExpect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny};
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Other(IgnoredAny),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Map(std::collections::BTreeMap<String, Value>),
            Other(IgnoredAny),
        }
        let expected = "expected `ok`, `fails` or `{fails_with: TEXT}`";
        match Raw::deserialize(d)? {
            Raw::Word(w) => Ok(HookExpect::Word(w)),
            Raw::Map(mut m) => {
                let fails_with = m.remove("fails_with");
                if let Some(k) = m.keys().next() {
                    return Err(D::Error::custom(format!(
                        "unknown key `{k}`{}: {expected}",
                        yaml::did_you_mean(k, ["fails_with"])
                    )));
                }
                match fails_with {
                    Some(Value::Text(fails_with)) => Ok(HookExpect::FailsWith { fails_with }),
                    Some(Value::Other(_)) => Err(D::Error::custom(
                        "fails_with: expected the text (a substring of the error) the hook fails with",
                    )),
                    None => Err(D::Error::custom(expected)),
                }
            }
            Raw::Other(_) => Err(D::Error::custom(expected)),
        }
    }
}

/// Expectations.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Hook name (or `upgrade NODE`) → outcome.
    #[serde(default)]
    pub hooks: IndexMap<String, HookExpect>,
    /// Globs over `node: argv` lines that must appear in this order
    /// (other commands may come between).
    #[serde(default)]
    pub commands_in_order: Vec<String>,
    /// Globs over `node: argv` lines that must never appear.
    #[serde(default)]
    pub never: Vec<String>,
    /// State keys after the run → glob of the value.
    #[serde(default)]
    pub state: BTreeMap<String, String>,
    /// Progress milestones, in order.
    #[serde(default)]
    pub progress: Option<Vec<String>>,
}

/// The context.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioContext {
    /// Current version.
    #[serde(default = "from_v")]
    pub from_version: String,
    /// Target version.
    #[serde(default = "to_v")]
    pub to_version: String,
    /// Mode.
    #[serde(default)]
    pub mode: Mode,
    /// Dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Plugin parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Where the hooks run in a release train (default: hop 1 of 1).
    #[serde(default)]
    pub hop: ScenarioHop,
}

/// A scenario's hop of a release train.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScenarioHop {
    /// 0-based position in the train.
    #[serde(default)]
    pub index: u32,
    /// Hops in the train (default: index + 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// `full` (default) or `migrations-only`.
    #[serde(default)]
    pub kind: Option<crate::events::HopKind>,
    /// The release installed when the train started (default: from_version).
    #[serde(default)]
    pub train_from: Option<String>,
    /// The train's target (default: to_version).
    #[serde(default)]
    pub train_to: Option<String>,
}

impl ScenarioHop {
    /// The hook context's hop.
    pub fn to_ctx(&self, from: &str, to: &str) -> crate::runtime::HopCtx {
        crate::runtime::HopCtx {
            index: self.index,
            count: self.count.unwrap_or(self.index + 1).max(self.index + 1),
            kind: self.kind.unwrap_or(crate::events::HopKind::Full),
            train_from: self.train_from.clone().unwrap_or_else(|| from.to_string()),
            train_to: self.train_to.clone().unwrap_or_else(|| to.to_string()),
        }
    }
}

fn from_v() -> String {
    "1.0".into()
}
fn to_v() -> String {
    "2.0".into()
}

impl Default for ScenarioContext {
    fn default() -> Self {
        ScenarioContext {
            from_version: from_v(),
            to_version: to_v(),
            mode: Mode::default(),
            dry_run: false,
            params: BTreeMap::new(),
            hop: ScenarioHop::default(),
        }
    }
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it shows.
    #[serde(default)]
    pub name: String,
    /// Node name → roles.
    pub nodes: IndexMap<String, Vec<String>>,
    /// The context.
    #[serde(default)]
    pub context: ScenarioContext,
    /// Preset plugin state.
    #[serde(default)]
    pub state: BTreeMap<String, String>,
    /// Hooks to call, in order (`upgrade` runs on every node). Default:
    /// check, pre-upgrade, upgrade, post-upgrade, finalize.
    #[serde(default)]
    pub hooks: Option<Vec<String>>,
    /// Scripted commands; first match answers.
    #[serde(default)]
    pub commands: Vec<Scripted>,
    /// Let unscripted commands succeed with empty output (default: they are
    /// an error, so surprises are caught).
    #[serde(default)]
    pub allow_unscripted: bool,
    /// Expectations.
    #[serde(default)]
    pub expect: Expect,
}

/// Read a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
    let s: Scenario = yaml::read(path)?;
    let hooks = [
        "check",
        "pre-upgrade",
        "upgrade",
        "post-upgrade",
        "finalize",
        "rollback",
        "migrate",
        "verify",
        "leave",
        "rejoin",
        "ok-to-stop",
    ];
    for h in s.hooks.iter().flatten() {
        if !hooks.contains(&h.as_str()) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                at: "hooks".into(),
                message: format!("unknown hook `{h}`{}", yaml::did_you_mean(h, hooks)),
            });
        }
    }
    for (i, c) in s.commands.iter().enumerate() {
        if let Some(args) = &c.args
            && let Some(pos) = args.iter().position(|a| a == "...")
            && pos + 1 != args.len()
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                at: format!("commands[{i}].args[{pos}]"),
                message: "`...` matches the remaining arguments, so it may only be last".into(),
            });
        }
    }
    for (k, v) in &s.expect.hooks {
        let base = k.split_whitespace().next().unwrap_or("");
        if !hooks.contains(&base) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                at: format!("expect.hooks.{k}"),
                message: format!("unknown hook `{base}`{}", yaml::did_you_mean(base, hooks)),
            });
        }
        if let HookExpect::Word(w) = v
            && w != "ok"
            && w != "fails"
        {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                at: format!("expect.hooks.{k}"),
                message: format!("`{w}`: expected `ok`, `fails` or `{{fails_with: TEXT}}`"),
            });
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::HookExpect;

    fn parse(s: &str) -> Result<HookExpect, String> {
        serde_yaml_ng::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn hook_expectations_parse_or_say_what_is_wrong() {
        assert_eq!(parse("ok").unwrap(), HookExpect::Word("ok".into()));
        assert_eq!(
            parse("{fails_with: \"no quorum\"}").unwrap(),
            HookExpect::FailsWith {
                fails_with: "no quorum".into()
            }
        );
        let e = parse("{fail_with: x}").unwrap_err();
        assert!(
            e.contains("unknown key `fail_with` (did you mean `fails_with`?)"),
            "{e}"
        );
        let e = parse("{fails_with: x, extra: 1}").unwrap_err();
        assert!(e.contains("unknown key `extra`"), "{e}");
        let e = parse("{fails_with: [a]}").unwrap_err();
        assert!(e.contains("fails_with: expected the text"), "{e}");
        let e = parse("[ok]").unwrap_err();
        assert!(
            e.contains("expected `ok`, `fails` or `{fails_with: TEXT}`"),
            "{e}"
        );
    }
}
