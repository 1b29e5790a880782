//! uphost.yaml's `etcd:`: the replicated state store, opt-in. Without it
//! the run's journal, lock and plugin state live in the local state
//! directory only (the default, unchanged).

use serde::Deserialize;

/// What a standby does once the run's holder is gone.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Takeover {
    /// Take the lock and go on with the run at once.
    #[default]
    Auto,
    /// Say so and wait for the operator's `uphost resume` on that machine.
    Operator,
}

/// `etcd:` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// Client URLs of the members (`http://host:port`).
    pub endpoints: Vec<String>,
    /// The deployment's key prefix: one run lock, one journal history per
    /// prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The run lock's lease: how long after its holder stops answering a
    /// standby may take over (and a frozen holder is fenced).
    #[serde(default = "default_lease")]
    pub lease_s: u64,
    /// What `uphost standby` does when the holder is gone.
    #[serde(default)]
    pub takeover: Takeover,
    /// How long to wait for the members at start.
    #[serde(default = "default_connect")]
    pub connect_timeout_s: u64,
}

fn default_prefix() -> String {
    "/uphost/default".into()
}
fn default_lease() -> u64 {
    5
}
fn default_connect() -> u64 {
    5
}

impl EtcdSettings {
    /// What is wrong, as (key, message).
    pub(super) fn check(&self) -> Option<(&'static str, String)> {
        if self.endpoints.is_empty() {
            return Some((
                "endpoints",
                "list the members' client URLs, e.g. [http://10.0.0.1:2379, http://10.0.0.2:2379, http://10.0.0.3:2379]".into(),
            ));
        }
        for e in &self.endpoints {
            let Some(rest) = e.strip_prefix("http://") else {
                return Some((
                    "endpoints",
                    format!(
                        "`{}`: give each member as http://HOST:PORT (TLS to etcd is not supported: reach it on a trusted network or through a local TLS proxy)",
                        e.escape_debug()
                    ),
                ));
            };
            let port_ok = rest
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok || rest.contains('/') {
                return Some((
                    "endpoints",
                    format!(
                        "`{}`: give each member as http://HOST:PORT",
                        e.escape_debug()
                    ),
                ));
            }
        }
        let p = &self.prefix;
        if !p.starts_with('/')
            || p.ends_with('/')
            || p.len() > 200
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c))
        {
            return Some((
                "prefix",
                format!(
                    "`{}` is not a key prefix like /uphost/site-a (starts with /, no / at the end, letters, digits, / - _ .)",
                    p.escape_debug()
                ),
            ));
        }
        if !(2..=60).contains(&self.lease_s) {
            return Some((
                "lease_s",
                format!(
                    "{} is outside 2..=60 (seconds before a standby may take over from a holder that stopped answering)",
                    self.lease_s
                ),
            ));
        }
        if !(1..=120).contains(&self.connect_timeout_s) {
            return Some((
                "connect_timeout_s",
                format!("{} is outside 1..=120", self.connect_timeout_s),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(endpoints: &[&str], prefix: &str, lease_s: u64) -> EtcdSettings {
        EtcdSettings {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.into(),
            lease_s,
            takeover: Takeover::Auto,
            connect_timeout_s: 5,
        }
    }

    #[test]
    fn settings_are_checked_where_written() {
        assert_eq!(s(&["http://127.0.0.1:2379"], "/uphost/a", 5).check(), None);
        for (bad, key) in [
            (s(&[], "/uphost/a", 5), "endpoints"),
            (s(&["https://e:2379"], "/uphost/a", 5), "endpoints"),
            (s(&["http://e"], "/uphost/a", 5), "endpoints"),
            (s(&["http://e:2379/x"], "/uphost/a", 5), "endpoints"),
            (s(&["http://e:2379"], "uphost", 5), "prefix"),
            (s(&["http://e:2379"], "/uphost/", 5), "prefix"),
            (s(&["http://e:2379"], "/up host", 5), "prefix"),
            (s(&["http://e:2379"], "/uphost", 1), "lease_s"),
        ] {
            assert_eq!(bad.check().map(|(k, _)| k), Some(key), "{bad:?}");
        }
    }
}
