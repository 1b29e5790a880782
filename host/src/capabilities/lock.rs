//! `uphost.lock`: the operator's approvals, next to the plugins. Per plugin:
//! name, version, file, sha256, the granted capabilities and, when the
//! operator trusts its vendor, the vendor's key. A plugin runs only if
//! every capability it requests is covered by its grant and it is the
//! approved file (its hash), or, with a trusted key, a build signed by
//! that key (whose hash is then recorded).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CommandCap;
use super::signing::{self, Signature};
use crate::config::yaml::{self, ConfigError};

/// The lock file's name in the plugin directory.
pub const LOCK_FILE: &str = "uphost.lock";

/// One approved plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The `.wasm` file name.
    pub file: String,
    /// Plugin version when approved.
    pub version: String,
    /// sha256 of the file.
    pub sha256: String,
    /// When, and by what.
    #[serde(default)]
    pub approved: String,
    /// Granted capabilities.
    #[serde(default)]
    pub grant: Vec<CommandCap>,
    /// The vendor key (`ed25519:HEX`) whose signed builds are approved
    /// with this grant (`uphost plugins trust`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Format version.
    #[serde(default = "one")]
    pub version: u32,
    /// Approvals by plugin (service) name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Approval>,
}

fn one() -> u32 {
    1
}

/// Problems with the lock file itself.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Bad YAML.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Could not write.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why one plugin is not approved as it stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Unapproved {
    /// Not in the lock file.
    Missing,
    /// Its file changed.
    HashChanged {
        /// Approved hash.
        approved: String,
        /// Current hash.
        current: String,
    },
    /// It requests capabilities the grant does not cover.
    NewRequests(Vec<CommandCap>),
    /// Its file changed and is not signed by the trusted key.
    NotSignedByTrusted {
        /// The trusted key.
        trusted: String,
        /// What the file's signature says.
        found: Signature,
        /// Current hash.
        current: String,
    },
}

/// How a plugin is approved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verified<'a> {
    /// It is the approved file.
    Approved(&'a Approval),
    /// A new build signed by the trusted key, its requests covered: it
    /// runs, and its hash is to be recorded.
    SignedBuild(&'a Approval),
}

impl<'a> Verified<'a> {
    /// The approval it runs under.
    pub fn approval(&self) -> &'a Approval {
        match self {
            Verified::Approved(a) | Verified::SignedBuild(a) => a,
        }
    }
}

impl LockFile {
    /// Read `dir/uphost.lock` (empty when absent).
    pub fn load(dir: &Path) -> Result<LockFile, LockError> {
        let path = dir.join(LOCK_FILE);
        if !path.exists() {
            return Ok(LockFile::default());
        }
        let lock: LockFile = yaml::read(&path)?;
        // 0 (what uphost 0.1 wrote) and 1 are this format; anything else
        // was written by another uphost and may not mean what it says here.
        if lock.version > 1 {
            return Err(ConfigError::Invalid {
                path,
                at: "version".into(),
                message: format!(
                    "{} is a lock file format this uphost does not know (it reads 0 and 1): it was written by another uphost; use that uphost, or move the file aside and approve the plugins again",
                    lock.version
                ),
            }
            .into());
        }
        Ok(lock)
    }

    /// Write `dir/uphost.lock` atomically (through a capability handle on
    /// the plugin directory, so the name cannot escape it).
    pub fn save(&self, dir: &Path) -> Result<(), LockError> {
        let path = dir.join(LOCK_FILE);
        let werr = |source| LockError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_yaml_ng::to_string(self).expect("lock file serializes");
        let text = format!(
            "# uphost.lock: the operator's approval of each plugin (hash and granted capabilities).\n\
             # Change it with `uphost plugins approve NAME`; review diffs like code.\n{body}"
        );
        let d =
            cap_std::fs::Dir::open_ambient_dir(dir, cap_std::ambient_authority()).map_err(werr)?;
        // Written aside, made durable, then renamed over the old one: a crash
        // or a full disk leaves the previous approvals, never half of them.
        let tmp = format!("{LOCK_FILE}.tmp");
        let written = d.create(&tmp).and_then(|f| {
            use std::io::Write;
            let mut f = f.into_std();
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| d.rename(&tmp, &d, LOCK_FILE)) {
            let _ = d.remove_file(&tmp);
            return Err(werr(e));
        }
        Ok(())
    }

    /// Check one plugin against its approval: `sha256` is its file's
    /// hash, `signature` what its file's signature says.
    pub fn verify(
        &self,
        name: &str,
        sha256: &str,
        requested: &[CommandCap],
        signature: &Signature,
    ) -> Result<Verified<'_>, Unapproved> {
        let a = self.plugins.get(name).ok_or(Unapproved::Missing)?;
        let signed_build = a.sha256 != sha256;
        if signed_build {
            match (&a.key, signature) {
                (None, _) => {
                    return Err(Unapproved::HashChanged {
                        approved: a.sha256.clone(),
                        current: sha256.to_string(),
                    });
                }
                (Some(k), Signature::Valid { key }) if key == k => {}
                (Some(k), found) => {
                    return Err(Unapproved::NotSignedByTrusted {
                        trusted: k.clone(),
                        found: found.clone(),
                        current: sha256.to_string(),
                    });
                }
            }
        }
        let new: Vec<CommandCap> = requested
            .iter()
            .filter(|r| !a.grant.iter().any(|g| r.covered_by(g)))
            .cloned()
            .collect();
        if !new.is_empty() {
            return Err(Unapproved::NewRequests(new));
        }
        Ok(if signed_build {
            Verified::SignedBuild(a)
        } else {
            Verified::Approved(a)
        })
    }
}

impl Unapproved {
    /// A human-readable explanation (without the fix).
    pub fn describe(&self, name: &str, file: &str) -> String {
        match self {
            Unapproved::Missing => format!("plugin `{name}` ({file}) is not approved"),
            Unapproved::HashChanged { approved, current } => format!(
                "plugin `{name}` ({file}) changed since it was approved:\n    approved sha256 {approved}\n    current  sha256 {current}"
            ),
            Unapproved::NotSignedByTrusted {
                trusted,
                found,
                current,
            } => format!(
                "plugin `{name}` ({file}) changed since it was approved (sha256 now {current}) and is not signed by the vendor key its approval trusts ({trusted}, id {}): {}; get the vendor's signed build, or review this one and approve it with `uphost plugins approve {name}`",
                signing::key_id(trusted),
                match found {
                    Signature::Unsigned => "it is unsigned".to_string(),
                    Signature::Valid { key } => format!(
                        "it is signed by another key, {key} (id {})",
                        signing::key_id(key)
                    ),
                    Signature::Invalid(why) => crate::untrusted::line(why).to_string(),
                }
            ),
            Unapproved::NewRequests(caps) => {
                let mut s = format!(
                    "plugin `{name}` ({file}) requests capabilities its grant does not cover:"
                );
                for c in caps {
                    s.push_str(&format!("\n  + {}", c.display()));
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_format_version_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "version: 999\nplugins: {}\n").unwrap();
        let e = LockFile::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("uphost.lock: version: 999 is a lock file format"),
            "{e}"
        );
        for ok in ["version: 0\n", "version: 1\n", "plugins: {}\n"] {
            std::fs::write(dir.path().join(LOCK_FILE), ok).unwrap();
            assert!(LockFile::load(dir.path()).is_ok(), "{ok}");
        }
    }
}
