//! Release trains: the hops a service takes from its installed release to
//! the target, computed from the releases its plugin knows. Pure: the plan
//! shows the hops, the run executes them, and an impossible path is
//! refused here with the plugin's own path in the message.

use serde::Serialize;

/// The releases a plugin can upgrade between (its `describe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ReleasePath {
    /// Every release it knows, oldest first; one release to the next is
    /// always a hop it can do.
    pub sequence: Vec<String>,
    /// Further direct jumps (from, to), both in `sequence`, from before to.
    pub jumps: Vec<(String, String)>,
    /// Whether an intermediate hop may be migrations only (a leapfrog).
    pub migrations_only: bool,
}

impl ReleasePath {
    /// Is the path well formed? Each release once; jumps between known
    /// releases, forward. The reason, when it is not.
    pub fn validate(&self) -> Result<(), String> {
        if self.sequence.is_empty() {
            return Err("its release path lists no release".into());
        }
        for (i, r) in self.sequence.iter().enumerate() {
            if self.sequence[..i].contains(r) {
                return Err(format!("its release path lists `{r}` twice"));
            }
        }
        for (from, to) in &self.jumps {
            match (self.index(from), self.index(to)) {
                (Some(a), Some(b)) if a < b => {}
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "its release path has a jump {from} -> {to} that does not go forward"
                    ));
                }
                _ => {
                    return Err(format!(
                        "its release path has a jump {from} -> {to} between releases it does not list"
                    ));
                }
            }
        }
        Ok(())
    }

    fn index(&self, release: &str) -> Option<usize> {
        self.sequence.iter().position(|r| r == release)
    }

    /// The path as the operator reads it: `liberty -> mitaka -> newton`,
    /// with the direct jumps allowed.
    pub fn describe(&self) -> String {
        let mut s = self.sequence.join(" -> ");
        if !self.jumps.is_empty() {
            let jumps: Vec<String> = self
                .jumps
                .iter()
                .map(|(a, b)| format!("{a} -> {b}"))
                .collect();
            s.push_str(&format!(" (direct jumps: {})", jumps.join(", ")));
        }
        s
    }
}

pub use crate::config::TrainStyle;
pub use crate::events::{Hop, HopKind};

/// Why a service's train cannot be planned.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TrainError {
    /// A release the plugin does not know.
    #[error(
        "service `{service}`: its plugin does not know release `{release}` (in {which}); it upgrades along {path}; fix the services file{hint}"
    )]
    Unknown {
        /// The service.
        service: String,
        /// The release.
        release: String,
        /// `from` or `to`.
        which: &'static str,
        /// The plugin's path.
        path: String,
        /// " (did you mean `x`?)" or empty.
        hint: String,
    },
    /// The operator asked for a hop the plugin cannot do.
    #[error(
        "service `{service}`: its plugin cannot upgrade {hop} in one hop (it allows one release at a time{jumps}); its path {allowed}; fix `via` in the services file or leave it out"
    )]
    NotAllowed {
        /// The service.
        service: String,
        /// The hop asked for: `a -> b`.
        hop: String,
        /// The direct jumps it allows, as ", and a -> b, …" or empty.
        jumps: String,
        /// The path it would take: `from A to B is A -> … -> B`.
        allowed: String,
    },
    /// The target is not after the installed release.
    #[error(
        "service `{service}`: {from} -> {to} does not go forward along its plugin's path {path}; a downgrade is a rollback, not an upgrade"
    )]
    Backwards {
        /// The service.
        service: String,
        /// Installed.
        from: String,
        /// Target.
        to: String,
        /// The plugin's path.
        path: String,
    },
}

/// The hops of one service from `from` to `to`. Without a release path
/// (a plugin that knows no releases, a minor update, versions not stated)
/// the run is one hop,
/// as it always was. With one, the train takes the longest allowed step
/// each time: a direct jump when the plugin allows one that does not pass
/// the target, else the next release. In a leapfrog every hop but the last
/// is migrations only when the plugin can do that.
pub fn hops(
    service: &str,
    path: Option<&ReleasePath>,
    from: &str,
    to: &str,
    style: TrainStyle,
) -> Result<Vec<Hop>, TrainError> {
    hops_via(service, path, from, to, None, style)
}

/// [`hops`], landing on the releases `via` (the operator's choice, in
/// order) before the target: each of those hops must be one the plugin
/// allows, or the error names the path it would take.
pub fn hops_via(
    service: &str,
    path: Option<&ReleasePath>,
    from: &str,
    to: &str,
    via: Option<&[String]>,
    style: TrainStyle,
) -> Result<Vec<Hop>, TrainError> {
    let single = || {
        vec![Hop {
            stage: 0,
            from: from.to_string(),
            to: to.to_string(),
            kind: HopKind::Full,
        }]
    };
    // No path, or versions the services file does not state: one hop, the
    // hooks get the versions as they are (as before release trains).
    let Some(path) = path.filter(|_| !from.is_empty() && !to.is_empty()) else {
        return Ok(single());
    };
    let find = |release: &str, which: &'static str| {
        path.index(release).ok_or_else(|| TrainError::Unknown {
            service: service.to_string(),
            release: release.to_string(),
            which,
            path: path.describe(),
            hint: crate::config::yaml::did_you_mean(
                release,
                path.sequence.iter().map(String::as_str),
            ),
        })
    };
    let (a, b) = (find(from, "from_version")?, find(to, "to_version")?);
    if a == b {
        // Nothing between them: a run within one release (a minor update).
        return Ok(single());
    }
    if a > b {
        return Err(TrainError::Backwards {
            service: service.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            path: path.describe(),
        });
    }
    let mut out = Vec::new();
    let mut at = a;
    while at < b {
        let next = path
            .jumps
            .iter()
            .filter(|(f, _)| path.index(f) == Some(at))
            .filter_map(|(_, t)| path.index(t))
            .filter(|&t| t <= b)
            .max()
            .unwrap_or(at + 1);
        out.push(Hop {
            stage: out.len() as u32,
            from: path.sequence[at].clone(),
            to: path.sequence[next].clone(),
            kind: HopKind::Full,
        });
        at = next;
    }
    if let Some(via) = via {
        let allowed = std::iter::once(from.to_string())
            .chain(out.iter().map(|h| h.to.clone()))
            .collect::<Vec<_>>()
            .join(" -> ");
        let mut chosen = Vec::new();
        let mut at = a;
        for r in via.iter().map(String::as_str).chain([to]) {
            let next = find(r, "via")?;
            let allowed_hop = next == at + 1
                || path
                    .jumps
                    .iter()
                    .any(|(f, t)| path.index(f) == Some(at) && path.index(t) == Some(next));
            if next <= at || !allowed_hop {
                return Err(TrainError::NotAllowed {
                    service: service.to_string(),
                    hop: format!("{} -> {r}", path.sequence[at]),
                    jumps: if path.jumps.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", and {}",
                            path.jumps
                                .iter()
                                .map(|(f, t)| format!("{f} -> {t}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    allowed: format!("from {from} to {to} is {allowed}"),
                });
            }
            chosen.push(Hop {
                stage: chosen.len() as u32,
                from: path.sequence[at].clone(),
                to: r.to_string(),
                kind: HopKind::Full,
            });
            at = next;
        }
        out = chosen;
    }
    if style == TrainStyle::Leapfrog && path.migrations_only {
        let last = out.len() - 1;
        for h in &mut out[..last] {
            h.kind = HopKind::MigrationsOnly;
        }
    }
    Ok(out)
}

/// One service's versions, as the train planner reads them.
#[derive(Debug, Clone)]
pub struct TrainInput<'a> {
    /// The service.
    pub service: &'a str,
    /// Its plugin's releases.
    pub path: Option<&'a ReleasePath>,
    /// Installed.
    pub from: &'a str,
    /// Target.
    pub to: &'a str,
    /// Its versions are the services file's deployment-wide ones (no
    /// per-service override).
    pub deployment_wide: bool,
    /// The releases the operator wants it to land on before the target.
    pub via: Option<&'a [String]>,
}

/// Every service's hops, placed in stages, and how many stages.
///
/// The deployment-wide train (the services file's `from_version` →
/// `to_version`, as the services without their own versions take it)
/// makes the stages: a hop landing on one of its releases belongs to that
/// release's stage, so a service that starts later in the train (placement
/// in Ocata) joins the right stage. A service with a chain of its own
/// (RabbitMQ, MariaDB, Ceph) starts with the first stage. Every problem is
/// reported at once.
pub fn plan_train(
    inputs: &[TrainInput<'_>],
    style: TrainStyle,
) -> Result<(u32, Vec<Vec<Hop>>), Vec<String>> {
    let mut errors = Vec::new();
    let mut all: Vec<Vec<Hop>> = Vec::new();
    for i in inputs {
        match hops_via(i.service, i.path, i.from, i.to, i.via, style) {
            Ok(h) => all.push(h),
            Err(e) => {
                errors.push(e.to_string());
                all.push(Vec::new());
            }
        }
    }
    // The deployment-wide stages: the landing releases of the services
    // that take the file's versions; they must agree.
    let mut stages: Option<(&str, Vec<String>)> = None;
    for (i, h) in inputs.iter().zip(&all) {
        if !i.deployment_wide || h.len() < 2 {
            continue;
        }
        let lands: Vec<String> = h.iter().map(|h| h.to.clone()).collect();
        match &stages {
            None => stages = Some((i.service, lands)),
            Some((other, theirs)) if *theirs != lands => errors.push(format!(
                "services `{other}` and `{}` take different hops from {} to {} ({} and {}): the deployment's release train must be the same for both; give one of them its own from_version/to_version in the services file",
                i.service,
                i.from,
                i.to,
                theirs.join(" -> "),
                lands.join(" -> ")
            )),
            Some(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let stage_of: Vec<String> = stages.map(|(_, l)| l).unwrap_or_default();
    let mut count = 1u32;
    for h in &mut all {
        let aligned: Option<Vec<u32>> = h
            .iter()
            .map(|h| stage_of.iter().position(|r| *r == h.to).map(|p| p as u32))
            .collect();
        match aligned {
            Some(st) if h.len() > 1 || !stage_of.is_empty() => {
                for (hop, s) in h.iter_mut().zip(st) {
                    hop.stage = s;
                }
            }
            _ => {
                for (k, hop) in h.iter_mut().enumerate() {
                    hop.stage = k as u32;
                }
            }
        }
        if let Some(last) = h.last() {
            count = count.max(last.stage + 1);
        }
    }
    Ok((count, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openstack() -> ReleasePath {
        ReleasePath {
            sequence: ["kilo", "liberty", "mitaka", "newton", "ocata"]
                .map(String::from)
                .to_vec(),
            jumps: Vec::new(),
            migrations_only: true,
        }
    }

    fn names(h: &[Hop]) -> Vec<String> {
        h.iter()
            .map(|h| format!("{}->{}:{}", h.from, h.to, h.kind.as_str()))
            .collect()
    }

    #[test]
    fn in_sequence_goes_one_release_at_a_time() {
        let h = hops(
            "nova",
            Some(&openstack()),
            "liberty",
            "ocata",
            TrainStyle::InSequence,
        )
        .unwrap();
        assert_eq!(
            names(&h),
            [
                "liberty->mitaka:full",
                "mitaka->newton:full",
                "newton->ocata:full"
            ]
        );
    }

    #[test]
    fn leapfrog_migrates_the_intermediate_releases_and_deploys_once() {
        let h = hops(
            "nova",
            Some(&openstack()),
            "kilo",
            "newton",
            TrainStyle::Leapfrog,
        )
        .unwrap();
        assert_eq!(
            names(&h),
            [
                "kilo->liberty:migrations-only",
                "liberty->mitaka:migrations-only",
                "mitaka->newton:full"
            ]
        );
        let mut p = openstack();
        p.migrations_only = false;
        let h = hops("rabbitmq", Some(&p), "kilo", "newton", TrainStyle::Leapfrog).unwrap();
        assert!(h.iter().all(|h| h.kind == HopKind::Full));
    }

    #[test]
    fn a_direct_jump_is_taken_when_it_does_not_pass_the_target() {
        let p = ReleasePath {
            sequence: ["2023.1", "2023.2", "2024.1", "2024.2", "2025.1"]
                .map(String::from)
                .to_vec(),
            jumps: vec![
                ("2023.1".into(), "2024.1".into()),
                ("2024.1".into(), "2025.1".into()),
            ],
            migrations_only: false,
        };
        let h = hops("nova", Some(&p), "2023.1", "2025.1", TrainStyle::InSequence).unwrap();
        assert_eq!(names(&h), ["2023.1->2024.1:full", "2024.1->2025.1:full"]);
        let h = hops("nova", Some(&p), "2023.1", "2024.2", TrainStyle::InSequence).unwrap();
        assert_eq!(names(&h), ["2023.1->2024.1:full", "2024.1->2024.2:full"]);
        let h = hops("nova", Some(&p), "2023.2", "2025.1", TrainStyle::InSequence).unwrap();
        assert_eq!(names(&h), ["2023.2->2024.1:full", "2024.1->2025.1:full"]);
    }

    #[test]
    fn impossible_paths_name_the_plugins_path() {
        let e = hops(
            "nova",
            Some(&openstack()),
            "liberty",
            "pike",
            TrainStyle::InSequence,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("release `pike` (in to_version)"), "{e}");
        assert!(
            e.contains("kilo -> liberty -> mitaka -> newton -> ocata"),
            "{e}"
        );
        let e = hops(
            "nova",
            Some(&openstack()),
            "libery",
            "ocata",
            TrainStyle::InSequence,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean `liberty`"), "{e}");
        let e = hops(
            "nova",
            Some(&openstack()),
            "ocata",
            "liberty",
            TrainStyle::InSequence,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not go forward"), "{e}");
    }

    #[test]
    fn no_path_or_same_release_is_one_hop() {
        assert_eq!(
            names(&hops("x", None, "1.0", "2.0", TrainStyle::Leapfrog).unwrap()),
            ["1.0->2.0:full"]
        );
        assert_eq!(
            names(
                &hops(
                    "x",
                    Some(&openstack()),
                    "newton",
                    "newton",
                    TrainStyle::InSequence
                )
                .unwrap()
            ),
            ["newton->newton:full"]
        );
    }

    #[test]
    fn services_join_the_stage_of_the_release_they_land_on() {
        let os = openstack();
        let rabbit = ReleasePath {
            sequence: ["3.5", "3.6", "3.7"].map(String::from).to_vec(),
            ..Default::default()
        };
        let input = |service, path, from, to, deployment_wide| TrainInput {
            service,
            path,
            from,
            to,
            deployment_wide,
            via: None,
        };
        let inputs = [
            input("rabbitmq", Some(&rabbit), "3.5", "3.7", false),
            input("haproxy", None, "1.5", "1.8", false),
            input("keystone", Some(&os), "liberty", "ocata", true),
            input("placement", Some(&os), "newton", "ocata", false),
            input("nova", Some(&os), "liberty", "ocata", true),
        ];
        let (n, hops) = plan_train(&inputs, TrainStyle::InSequence).unwrap();
        assert_eq!(n, 3);
        let stages: Vec<Vec<u32>> = hops
            .iter()
            .map(|h| h.iter().map(|h| h.stage).collect())
            .collect();
        assert_eq!(
            stages,
            [vec![0, 1], vec![0], vec![0, 1, 2], vec![2], vec![0, 1, 2]]
        );
        let mut jumpy = os.clone();
        jumpy.jumps.push(("liberty".into(), "newton".into()));
        let inputs = [
            input("keystone", Some(&os), "liberty", "ocata", true),
            input("nova", Some(&jumpy), "liberty", "ocata", true),
        ];
        let e = plan_train(&inputs, TrainStyle::InSequence).unwrap_err();
        assert!(e[0].contains("take different hops"), "{e:?}");
    }

    #[test]
    fn the_operator_may_choose_the_hops_the_plugin_allows() {
        let mut p = openstack();
        p.jumps.push(("liberty".into(), "newton".into()));
        let via = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The default takes the jump; `via` may go one release at a time.
        let h = hops("nova", Some(&p), "liberty", "ocata", TrainStyle::InSequence).unwrap();
        assert_eq!(names(&h), ["liberty->newton:full", "newton->ocata:full"]);
        let v = via(&["mitaka", "newton"]);
        let h = hops_via(
            "nova",
            Some(&p),
            "liberty",
            "ocata",
            Some(&v),
            TrainStyle::InSequence,
        )
        .unwrap();
        assert_eq!(
            names(&h),
            [
                "liberty->mitaka:full",
                "mitaka->newton:full",
                "newton->ocata:full"
            ]
        );
        // A jump it does not allow is refused with the path it would take.
        let v = via(&["mitaka"]);
        let e = hops_via(
            "nova",
            Some(&p),
            "liberty",
            "ocata",
            Some(&v),
            TrainStyle::InSequence,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cannot upgrade mitaka -> ocata in one hop"),
            "{e}"
        );
        assert!(e.contains("and liberty -> newton"), "{e}");
        assert!(e.contains("liberty -> newton -> ocata"), "{e}");
        let v = via(&["pike"]);
        let e = hops_via(
            "nova",
            Some(&p),
            "liberty",
            "ocata",
            Some(&v),
            TrainStyle::InSequence,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not know release `pike` (in via)"), "{e}");
    }

    #[test]
    fn malformed_paths_are_named() {
        let mut p = openstack();
        p.jumps.push(("ocata".into(), "kilo".into()));
        assert!(p.validate().unwrap_err().contains("does not go forward"));
        let mut p = openstack();
        p.sequence.push("kilo".into());
        assert!(p.validate().unwrap_err().contains("twice"));
        let mut p = openstack();
        p.jumps.push(("kilo".into(), "pike".into()));
        assert!(p.validate().unwrap_err().contains("does not list"));
    }
}
