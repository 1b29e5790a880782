//! Release sequences the seed plugins share, for [`Info::releases`]
//! (crate::Info::releases): a plugin of an OpenStack service upgrades along
//! OpenStack's releases, one at a time or by a SLURP jump.

/// OpenStack's releases, oldest first (named until Zed, then by date).
pub const OPENSTACK: &[&str] = &[
    "kilo", "liberty", "mitaka", "newton", "ocata", "pike", "queens", "rocky", "stein", "train",
    "ussuri", "victoria", "wallaby", "xena", "yoga", "zed", "2023.1", "2023.2", "2024.1", "2024.2",
    "2025.1", "2025.2",
];

/// OpenStack's skip-level upgrades (SLURP): a direct jump between two
/// consecutive SLURP releases.
pub const OPENSTACK_SLURP: &[(&str, &str)] = &[("2023.1", "2024.1"), ("2024.1", "2025.1")];

/// Ceph's major releases, oldest first.
pub const CEPH: &[&str] = &[
    "hammer", "jewel", "kraken", "luminous", "mimic", "nautilus", "octopus", "pacific", "quincy",
    "reef", "squid",
];

/// Ceph's upgrades that skip one release (it allows N-2; Kraken was not a
/// long-term release).
pub const CEPH_JUMPS: &[(&str, &str)] = &[
    ("jewel", "luminous"),
    ("luminous", "nautilus"),
    ("mimic", "octopus"),
    ("nautilus", "pacific"),
    ("octopus", "quincy"),
    ("pacific", "reef"),
    ("quincy", "squid"),
];

/// Is `version` at or after `release` in `sequence`? False when either is
/// not in it.
pub fn at_least(sequence: &[&str], version: &str, release: &str) -> bool {
    let pos = |v: &str| sequence.iter().position(|r| *r == v);
    matches!((pos(version), pos(release)), (Some(a), Some(b)) if a >= b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_follows_the_sequence() {
        assert!(at_least(OPENSTACK, "ocata", "ocata"));
        assert!(at_least(OPENSTACK, "2024.1", "ocata"));
        assert!(!at_least(OPENSTACK, "newton", "ocata"));
        assert!(!at_least(OPENSTACK, "unknown", "ocata"));
    }
}
