//! Rollouts: how `upgrade(node)` is spread over a service's nodes, and how
//! many node failures a service tolerates.
//!
//! * `parallel`: one batch of every node (the run's `--forks` still bounds
//!   how many commands run at once).
//! * `serial: N`: batches of N nodes, in inventory order.
//! * `serial: "N%"`: batches of ceil(N% of the nodes), at least one.
//! * `one-at-a-time`: batches of one.
//!
//! `max_fail` (a count, or `"N%"` of the service's nodes, rounded down) is
//! the number of failed nodes a service tolerates. Batches run one after
//! another; when the failures so far exceed `max_fail`, no further batch
//! starts, the service fails and the run stops. While they stay within it,
//! the failed nodes are reported and the service carries on (post-upgrade
//! runs). The default is 0: the first failed node fails the service.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A rollout strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// Everything at once.
    Parallel,
    /// Batches of N.
    Serial(u32),
    /// Batches of N percent.
    SerialPercent(u8),
    /// Batches of one.
    OneAtATime,
}

impl Rollout {
    /// Split `n` nodes (by index) into batches.
    pub fn batches(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        let size = match *self {
            Rollout::Parallel => n.max(1),
            Rollout::Serial(k) => (k as usize).max(1),
            Rollout::SerialPercent(p) => (n * p as usize).div_ceil(100).max(1),
            Rollout::OneAtATime => 1,
        };
        (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect()
    }
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollout::Parallel => f.write_str("parallel"),
            Rollout::Serial(n) => write!(f, "serial: {n}"),
            Rollout::SerialPercent(p) => write!(f, "serial: {p}%"),
            Rollout::OneAtATime => f.write_str("one-at-a-time"),
        }
    }
}

fn percent(s: &str) -> Option<u8> {
    let p: u8 = s.strip_suffix('%')?.trim().parse().ok()?;
    (1..=100).contains(&p).then_some(p)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CountOrText {
    Count(u32),
    Text(String),
}

impl<'de> Deserialize<'de> for Rollout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Map(std::collections::BTreeMap<String, Value>),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Count(u32),
            Text(String),
            Other(de::IgnoredAny),
        }
        let bad = || {
            de::Error::custom(
                "expected `parallel`, `one-at-a-time`, `{serial: N}` or `{serial: \"N%\"}`",
            )
        };
        let mut map = match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Name(n) if n == "parallel" => return Ok(Rollout::Parallel),
            Raw::Name(n) if n == "one-at-a-time" => return Ok(Rollout::OneAtATime),
            Raw::Name(_) => return Err(bad()),
            Raw::Map(m) => m,
        };
        let serial = map.remove("serial");
        // A key beside `serial` would otherwise be dropped without a word
        // (`max_fail` and `canary` belong to the service, not its rollout).
        if let Some(k) = map.keys().next() {
            let beside = ["max_fail", "canary"].contains(&k.as_str());
            return Err(de::Error::custom(format!(
                "rollout has no key `{k}`{}",
                if beside {
                    format!(": `{k}` goes beside `rollout`, as a key of the service")
                } else {
                    "; expected `{serial: N}` or `{serial: \"N%\"}`".to_string()
                }
            )));
        }
        match serial.ok_or_else(bad)? {
            Value::Count(0) => Err(de::Error::custom("serial must be at least 1")),
            Value::Count(n) => Ok(Rollout::Serial(n)),
            Value::Other(_) => Err(bad()),
            Value::Text(t) => percent(&t).map(Rollout::SerialPercent).ok_or_else(|| {
                de::Error::custom(format!("serial `{t}`: expected a count or 1%..100%"))
            }),
        }
    }
}

impl Serialize for Rollout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Tolerated node failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxFail {
    /// At most this many nodes.
    #[default]
    Zero,
    /// A count.
    Count(u32),
    /// A percentage of the nodes, rounded down.
    Percent(u8),
}

impl MaxFail {
    /// How many failed nodes out of `n` are tolerated.
    pub fn tolerated(&self, n: usize) -> usize {
        match *self {
            MaxFail::Zero => 0,
            MaxFail::Count(c) => c as usize,
            MaxFail::Percent(p) => n * p as usize / 100,
        }
    }
}

impl<'de> Deserialize<'de> for MaxFail {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match CountOrText::deserialize(d)
            .map_err(|_| de::Error::custom("max_fail: expected a count or \"N%\""))?
        {
            CountOrText::Count(0) => Ok(MaxFail::Zero),
            CountOrText::Count(c) => Ok(MaxFail::Count(c)),
            CountOrText::Text(t) => {
                let p: Option<u8> = t
                    .strip_suffix('%')
                    .and_then(|s| s.trim().parse().ok())
                    .filter(|p| *p <= 100);
                p.map(MaxFail::Percent).ok_or_else(|| {
                    de::Error::custom(format!("max_fail `{t}`: expected a count or 0%..100%"))
                })
            }
        }
    }
}

impl Serialize for MaxFail {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MaxFail::Zero => s.serialize_u32(0),
            MaxFail::Count(c) => s.serialize_u32(*c),
            MaxFail::Percent(p) => s.collect_str(&format_args!("{p}%")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(r: Rollout, n: usize) -> Vec<usize> {
        r.batches(n).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batch_sizes() {
        assert_eq!(sizes(Rollout::Parallel, 5), vec![5]);
        assert_eq!(sizes(Rollout::Serial(2), 5), vec![2, 2, 1]);
        assert_eq!(sizes(Rollout::OneAtATime, 3), vec![1, 1, 1]);
        assert_eq!(sizes(Rollout::SerialPercent(50), 5), vec![3, 2]);
        assert_eq!(sizes(Rollout::SerialPercent(10), 5), vec![1; 5]);
        assert_eq!(sizes(Rollout::SerialPercent(100), 4), vec![4]);
        assert!(Rollout::Serial(3).batches(0).is_empty());
        let b = Rollout::Serial(2).batches(5);
        assert_eq!(b, vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn max_fail_boundaries() {
        assert_eq!(MaxFail::Zero.tolerated(10), 0);
        assert_eq!(MaxFail::Count(2).tolerated(10), 2);
        assert_eq!(MaxFail::Percent(25).tolerated(10), 2);
        assert_eq!(MaxFail::Percent(25).tolerated(3), 0);
        assert_eq!(MaxFail::Percent(100).tolerated(3), 3);
    }

    #[test]
    fn parse_forms() {
        let p = |s: &str| serde_yaml_ng::from_str::<Rollout>(s);
        assert_eq!(p("parallel").unwrap(), Rollout::Parallel);
        assert_eq!(p("one-at-a-time").unwrap(), Rollout::OneAtATime);
        assert_eq!(p("{serial: 3}").unwrap(), Rollout::Serial(3));
        assert_eq!(p("{serial: \"30%\"}").unwrap(), Rollout::SerialPercent(30));
        assert!(p("{serial: 0}").is_err());
        assert!(p("{serial: \"300%\"}").is_err());
        assert!(p("sometimes").is_err());
        assert!(p("{}").is_err());
        let e = p("{serial: 2, max_fail: 1}").unwrap_err().to_string();
        assert!(
            e.contains("rollout has no key `max_fail`: `max_fail` goes beside `rollout`"),
            "{e}"
        );
        let e = p("{serial: 2, canary: true}").unwrap_err().to_string();
        assert!(e.contains("`canary` goes beside `rollout`"), "{e}");
        assert!(p("{serial: [1]}").is_err());
        let e = p("{serial: 2, batch: 1}").unwrap_err().to_string();
        assert!(e.contains("rollout has no key `batch`"), "{e}");
        let m = |s: &str| serde_yaml_ng::from_str::<MaxFail>(s);
        assert_eq!(m("0").unwrap(), MaxFail::Zero);
        assert_eq!(m("2").unwrap(), MaxFail::Count(2));
        assert_eq!(m("\"20%\"").unwrap(), MaxFail::Percent(20));
        assert!(m("lots").is_err());
    }
}
