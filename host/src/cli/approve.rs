//! `uphost plugins approve`: show what each plugin requests (and what
//! changed since its last approval), then record it in uphost.lock.

use crate::Error;
use crate::capabilities::lock::{Approval, LOCK_FILE, LockFile, Unapproved, Verified};
use crate::capabilities::signing::{self, Signature};
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
        let status = lock.verify(name, &p.sha256, &p.meta.capabilities, &p.signature);
        if let Ok(Verified::Approved(_)) = status {
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
        match &status {
            Err(u @ (Unapproved::HashChanged { .. } | Unapproved::NotSignedByTrusted { .. })) => {
                outln!("  {}", u.describe(name, &p.file_name()));
            }
            Ok(Verified::SignedBuild(a)) => outln!(
                "  a new build signed by its trusted vendor key (id {}); its requests are covered",
                signing::key_id(a.key.as_deref().unwrap_or_default())
            ),
            _ => {}
        }
        // A trusted key stays pinned: later builds must be signed by it.
        let key = lock.plugins.get(name).and_then(|a| a.key.clone());
        if let Some(k) = &key {
            outln!(
                "  trusted vendor key: {k} (id {}); this file is {}",
                signing::key_id(k),
                match &p.signature {
                    Signature::Valid { key } if key == k => "signed by it".to_string(),
                    Signature::Valid { key } =>
                        format!("signed by another key (id {})", signing::key_id(key)),
                    Signature::Unsigned => "unsigned".to_string(),
                    Signature::Invalid(why) => shown(why).to_string(),
                }
            );
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
                key,
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

/// `uphost plugins trust NAME --key KEY`: approve the builds of `name`
/// signed by `key` whose requests its grant covers. The plugin must be
/// approved as it stands, and signed by that key.
pub fn trust(session: &Session, name: &str, key: &str) -> Result<i32, Error> {
    let dir = &session.cfg.plugins_dir;
    let p = session.plugins.get(name).ok_or_else(|| {
        Error::Usage(format!(
            "no plugin named `{name}` in {}{}",
            dir.display(),
            crate::config::yaml::did_you_mean(name, session.plugins.keys().map(String::as_str))
        ))
    })?;
    let key = read_public(key)?;
    let mut lock = LockFile::load(dir)?;
    match lock.verify(name, &p.sha256, &p.meta.capabilities, &p.signature) {
        Ok(Verified::Approved(_)) => {}
        Ok(Verified::SignedBuild(_)) | Err(_) => {
            return Err(Error::Usage(format!(
                "`{name}` is not approved as it stands: review and approve it first (`uphost plugins approve {name}`), then trust its vendor's key"
            )));
        }
    }
    match &p.signature {
        Signature::Valid { key: k } if *k == key => {}
        other => {
            return Err(Error::Usage(format!(
                "{} is not signed by {key} ({}): trust the key that signed the build you approved",
                p.file_name(),
                match other {
                    Signature::Unsigned => "it is unsigned".to_string(),
                    Signature::Valid { key } => format!("it is signed by {key}"),
                    Signature::Invalid(why) => shown(why).to_string(),
                }
            )));
        }
    }
    let a = lock.plugins.get_mut(name).expect("verified above");
    a.key = Some(key.clone());
    lock.save(dir)?;
    outln!(
        "{name}: builds signed by {key} (id {}) whose requests its grant covers now run without a new approval; others stop for one",
        signing::key_id(&key)
    );
    Ok(exit::OK)
}

/// A public key given as `ed25519:HEX`, or the file holding it.
fn read_public(arg: &str) -> Result<String, Error> {
    let text = if arg.starts_with("ed25519:") {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).map_err(|source| Error::Io {
            path: arg.into(),
            source,
        })?
    };
    signing::parse_public(&text).map_err(|e| Error::Usage(format!("{arg}: {e}")))
}

/// `uphost plugins keygen --out PATH`: a vendor's key pair, the secret in
/// PATH (owner-only, never overwritten) and the public key in PATH.pub.
pub fn keygen(out: &std::path::Path) -> Result<i32, Error> {
    let (secret, public) = signing::keygen().map_err(|e| Error::Usage(e.to_string()))?;
    let pub_path = {
        let mut p = out.as_os_str().to_owned();
        p.push(".pub");
        std::path::PathBuf::from(p)
    };
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} exists: a key is never overwritten; choose another --out",
                    out.display()
                ))
            } else {
                io(out)(e)
            }
        })?;
    f.write_all(secret.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(out))?;
    std::fs::write(&pub_path, format!("{public}\n")).map_err(io(&pub_path))?;
    outln!("secret key: {} (keep it private)", out.display());
    outln!(
        "public key: {} ({public}, id {})",
        pub_path.display(),
        signing::key_id(&public)
    );
    Ok(exit::OK)
}

/// `uphost plugins sign FILE --key SECRET [--out OUT]`: embed a signature
/// (replacing an earlier one); in place unless `out`.
pub fn sign(
    file: &std::path::Path,
    key: &std::path::Path,
    out: Option<&std::path::Path>,
) -> Result<i32, Error> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let secret = std::fs::read_to_string(key).map_err(io(key))?;
    let bytes = std::fs::read(file).map_err(io(file))?;
    let signed = signing::sign(&bytes, &secret)
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    let dst = out.unwrap_or(file);
    let tmp = {
        let mut p = dst.as_os_str().to_owned();
        p.push(".signing");
        std::path::PathBuf::from(p)
    };
    std::fs::write(&tmp, &signed)
        .and_then(|()| std::fs::rename(&tmp, dst))
        .map_err(io(dst))?;
    let public = signing::public_of_secret(&secret).map_err(|e| Error::Usage(e.to_string()))?;
    outln!(
        "signed {} with {public} (id {})",
        dst.display(),
        signing::key_id(&public)
    );
    Ok(exit::OK)
}

/// `uphost plugins pull oci://…`: the plugin written into the plugin
/// directory once its digest and signature check out. The signature must
/// be `key`'s, else the key uphost.lock trusts for that plugin, else any
/// (shown), or none with `allow_unsigned`.
pub async fn pull(
    cfg: &crate::config::Config,
    reference: &str,
    key: Option<&str>,
    allow_unsigned: bool,
) -> Result<i32, Error> {
    use crate::distribution::SignaturePolicy;
    let required = key.map(read_public).transpose()?;
    let lock = LockFile::load(&cfg.plugins_dir)?;
    let pulled = crate::distribution::pull(
        reference,
        &cfg.plugins_dir,
        cfg.plugin_max_bytes,
        |name| match (required, lock.plugins.get(name).and_then(|a| a.key.clone())) {
            (Some(k), _) | (None, Some(k)) => SignaturePolicy::Key(k),
            (None, None) if allow_unsigned => SignaturePolicy::Unsigned,
            (None, None) => SignaturePolicy::AnyKey,
        },
    )
    .await?;
    outln!(
        "pulled {} ({}) into {}",
        crate::untrusted::line(reference),
        pulled.digest,
        pulled.path.display()
    );
    match &pulled.signer {
        Some(k) => outln!("  signed by {k} (id {})", signing::key_id(k)),
        None => outln!("  UNSIGNED (--allow-unsigned): review it before you approve it"),
    }
    outln!(
        "  next: uphost plugins approve (or it runs under its trusted key, if its requests are covered)"
    );
    Ok(exit::OK)
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
