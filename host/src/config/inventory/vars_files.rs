//! `group_vars/` and `host_vars/` beside each inventory source, found as
//! Ansible's `host_group_vars` plugin finds them: for a name, the first of
//! `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json` that exists; a directory is
//! every file under it (sorted, recursively; hidden files, backups `~` and
//! other extensions skipped). Each file is read once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::structured;
use crate::config::yaml::{self, ConfigError};

/// A variable from a file: name, value, file.
pub type FileVar<'a> = (String, &'a Value, PathBuf);

/// One source's vars: by (subdirectory, name), each file's in order.
type Found = std::collections::HashMap<(&'static str, String), Vec<(PathBuf, Map<String, Value>)>>;

/// The vars files of every source, read once.
pub struct VarsFiles {
    /// Per source: `group_vars/<name>` and `host_vars/<name>` variables,
    /// by (subdirectory, name), each file's in order.
    bases: Vec<Found>,
}

const EXTENSIONS: [&str; 3] = [".yml", ".yaml", ".json"];

impl VarsFiles {
    /// Read the vars files of these groups and hosts beside each source (a
    /// directory is its own base, a file's base is its directory). Only
    /// names present in `group_vars/` and `host_vars/` are looked at, so a
    /// hundred thousand hosts cost one directory listing.
    pub fn load<'n>(
        sources: &[PathBuf],
        groups: impl Iterator<Item = &'n str> + Clone,
        hosts: impl Iterator<Item = &'n str> + Clone,
    ) -> Result<VarsFiles, ConfigError> {
        let mut bases = Vec::new();
        for s in sources {
            let base = if s.is_dir() {
                s.clone()
            } else {
                s.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            let mut found = std::collections::HashMap::new();
            for (sub, names) in [
                ("group_vars", groups.clone().collect::<Vec<_>>()),
                ("host_vars", hosts.clone().collect::<Vec<_>>()),
            ] {
                let dir = base.join(sub);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let present: HashSet<String> = entries
                    .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect();
                for name in names {
                    if name.contains('/') {
                        continue;
                    }
                    let Some(entry) = std::iter::once("")
                        .chain(EXTENSIONS)
                        .map(|ext| format!("{name}{ext}"))
                        .find(|f| present.contains(f))
                    else {
                        continue;
                    };
                    let files = find(&dir.join(entry))?
                        .into_iter()
                        .map(|f| load(&f).map(|m| (f, m)))
                        .collect::<Result<Vec<_>, _>>()?;
                    found.insert((sub, name.to_string()), files);
                }
            }
            bases.push(found);
        }
        Ok(VarsFiles { bases })
    }

    /// The variables of `group_vars/<g>` for each group, per source then
    /// per group (Ansible's order), later ones winning.
    pub fn group_vars(&self, groups: &[String]) -> Vec<FileVar<'_>> {
        let mut out = Vec::new();
        for base in &self.bases {
            for g in groups {
                Self::entity(base, "group_vars", g, &mut out);
            }
        }
        out
    }

    /// The variables of `host_vars/<host>`, per source.
    pub fn host_vars(&self, host: &str) -> Vec<FileVar<'_>> {
        let mut out = Vec::new();
        for base in &self.bases {
            Self::entity(base, "host_vars", host, &mut out);
        }
        out
    }

    fn entity<'a>(base: &'a Found, sub: &'static str, name: &str, out: &mut Vec<FileVar<'a>>) {
        for (file, vars) in base.get(&(sub, name.to_string())).into_iter().flatten() {
            for (k, v) in vars {
                out.push((k.clone(), v, file.clone()));
            }
        }
    }
}

/// The files of an entry of `group_vars/` or `host_vars/`: itself, or
/// every file under it when it is a directory (loader.find_vars_files).
fn find(p: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if p.is_dir() {
        let mut found = Vec::new();
        dir_files(p, &mut found, 0)?;
        return Ok(found);
    }
    Ok(vec![p.to_path_buf()])
}

fn dir_files(dir: &Path, found: &mut Vec<PathBuf>, depth: usize) -> Result<(), ConfigError> {
    if depth > 16 || found.len() > 10_000 {
        return Err(ConfigError::Invalid {
            path: dir.to_path_buf(),
            at: "the directory".into(),
            message: "vars directories nest more than 16 deep or hold more than 10 000 files (a symlink loop?)".into(),
        });
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| ConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for n in names {
        if n.starts_with('.') || n.ends_with('~') {
            continue;
        }
        let p = dir.join(&n);
        let ext = Path::new(&n)
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        if p.is_dir() && ext.is_empty() {
            dir_files(&p, found, depth + 1)?;
        } else if p.is_file() && (ext.is_empty() || EXTENSIONS.contains(&ext.as_str())) {
            found.push(p);
        }
    }
    Ok(())
}

/// A vars file: a mapping (empty is none).
fn load(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text = yaml::read_text(path)?;
    if text.trim_start().starts_with("$ANSIBLE_VAULT") {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            at: "the file".into(),
            message: "is encrypted with Ansible Vault, which uphost does not decrypt (and it may set connection variables): give uphost the output of `ansible-inventory -i INVENTORY --list --vault-password-file FILE` instead".into(),
        });
    }
    let doc: serde_yaml_ng::Value = yaml::parse(path, &text)?;
    match structured::yaml_to_json(doc) {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        other => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            at: "the file".into(),
            message: format!(
                "a vars file is a mapping of variables, this one is {}",
                structured::kind(&other)
            ),
        }),
    }
}
