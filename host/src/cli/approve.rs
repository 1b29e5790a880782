//! `uphost plugins approve`: show what each plugin requests (and what
//! changed since its last approval), then record it in uphost.lock.

use crate::Error;
use crate::capabilities::lock::{Approval, LOCK_FILE, LockFile, Unapproved};
use crate::execution::confirm::Confirm;
use crate::execution::session::Session;

use super::exit;
use crate::untrusted::line as shown;

/// Approve `names` (or every plugin with `all`).
pub fn approve(session: &Session, names: &[String], all: bool, yes: bool) -> Result<i32, Error> {
    let dir = &session.cfg.plugins_dir;
    let mut lock = LockFile::load(dir)?;
    let chosen: Vec<String> = if all {
        session.plugins.keys().cloned().collect()
    } else if names.is_empty() {
        return Err(Error::Usage(
            "name the plugins to approve, or pass --all".to_string(),
        ));
    } else {
        for n in names {
            if !session.plugins.contains_key(n) {
                return Err(Error::Usage(format!(
                    "no plugin named `{n}` in {}{}",
                    dir.display(),
                    crate::config::yaml::did_you_mean(
                        n,
                        session.plugins.keys().map(String::as_str)
                    )
                )));
            }
        }
        names.to_vec()
    };
    let confirm = Confirm::from_flag(yes);
    if !confirm.can_ask() {
        return Err(Error::Usage(
            "approval needs a terminal to confirm on, or --yes".to_string(),
        ));
    }
    let mut changed = 0;
    // Approvals of plugins no longer in the directory go.
    let gone: Vec<String> = lock
        .plugins
        .keys()
        .filter(|n| !session.plugins.contains_key(*n))
        .cloned()
        .collect();
    for name in gone {
        if let Some(a) = lock.plugins.remove(&name) {
            outln!(
                "{name}: approval removed ({} is no longer in the plugin directory)",
                shown(&a.file)
            );
            changed += 1;
        }
    }
    for name in &chosen {
        let p = &session.plugins[name];
        let status = lock.verify(name, &p.sha256, &p.meta.capabilities);
        if status.is_ok() {
            if let Some(a) = lock.plugins.get_mut(name)
                && a.file != p.file_name()
            {
                // The same bytes under another name: the file is recorded.
                outln!(
                    "{name}: already approved ({}); its file is now {}",
                    &p.sha256[..12],
                    shown(&p.file_name())
                );
                a.file = p.file_name();
                changed += 1;
                continue;
            }
            outln!("{name}: already approved ({})", &p.sha256[..12]);
            continue;
        }
        outln!(
            "{name} {} ({}, sha256 {})",
            shown(&p.meta.version),
            shown(&p.file_name()),
            p.sha256
        );
        if let Err(u @ Unapproved::HashChanged { .. }) = &status {
            outln!("  {}", u.describe(name, &p.file_name()));
        }
        // Against an earlier approval, what is new (+) and what is no
        // longer asked for (-): the part of the review that matters.
        let before = lock.plugins.get(name).map(|a| &a.grant);
        let mark = |c| match before {
            Some(g) if !g.contains(c) => "+ ",
            _ => "  ",
        };
        outln!(
            "  requests{}:",
            if before.is_some() {
                " (+ not in its current approval)"
            } else {
                ""
            }
        );
        for c in &p.meta.capabilities {
            outln!("  {}{}", mark(c), c.display());
            if !c.reason.is_empty() {
                outln!("        why: {}", shown(&c.reason));
            }
            for d in c.dangers() {
                outln!("        ! DANGER: {d}");
            }
        }
        if !p.meta.probes.is_empty() {
            outln!("  probes (sampled on each of its nodes during a run):");
            for pr in &p.meta.probes {
                outln!("    {}", pr.display());
            }
        }
        if let Some(g) = before {
            for c in g.iter().filter(|c| !p.meta.capabilities.contains(c)) {
                outln!("  - {} (approved before, no longer requested)", c.display());
            }
        }
        let answer = confirm.ask(&format!("approve {name} with these capabilities?"));
        if !answer.accepted {
            outln!("  not approved");
            continue;
        }
        lock.plugins.insert(
            name.clone(),
            Approval {
                file: p.file_name(),
                version: p.meta.version.clone(),
                sha256: p.sha256.clone(),
                approved: format!(
                    "{} by {} ({})",
                    crate::events::now_rfc3339(),
                    approver(),
                    answer.how
                ),
                grant: p.meta.capabilities.clone(),
            },
        );
        changed += 1;
    }
    if changed > 0 {
        lock.save(dir)?;
        outln!(
            "recorded {changed} approval(s) in {}",
            dir.join(LOCK_FILE).display()
        );
    }
    Ok(exit::OK)
}

/// Who approves: `$USER` or `$LOGNAME`, else the user name of this
/// process's uid in /etc/passwd, else the uid itself.
fn approver() -> String {
    let env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty());
    env.unwrap_or_else(|| {
        let uid = rustix::process::getuid().as_raw();
        std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|p| user_of(&p, uid))
            .unwrap_or_else(|| format!("uid {uid}"))
    })
}

/// The name of `uid` in a passwd file's text.
fn user_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_of_finds_the_uid_in_passwd() {
        let p = "root:x:0:0:root:/root:/bin/bash\nop:x:1000:1000::/home/op:/bin/sh\nbroken\n";
        assert_eq!(super::user_of(p, 1000).as_deref(), Some("op"));
        assert_eq!(super::user_of(p, 0).as_deref(), Some("root"));
        assert_eq!(super::user_of(p, 7), None);
    }
}
