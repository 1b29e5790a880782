//! YAML reading with errors that name the file, line and column.
//!
//! We use `serde_yaml_ng`, the maintained continuation of the archived
//! `serde_yaml` (same data model, same `Location` on errors); see
//! ARCHITECTURE.md.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration problem, always naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML did not parse or did not have the expected shape.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The YAML parsed but says something impossible.
    #[error("{path}: {at}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in the document (a key path).
        at: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// No configuration file was found.
    #[error("no uphost.yaml in {dir}: run uphost in the directory that holds it, or pass -c FILE")]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
    },
}

/// Deepest nesting of YAML collections accepted: far above any real
/// configuration, far below what makes the parser slow (100 000 levels took
/// it minutes).
pub const MAX_DEPTH: usize = 64;

/// Refuse nesting deeper than [`MAX_DEPTH`] before the parser sees it:
/// flow collections (`[`, `{` outside quotes and comments) and block
/// indentation (a line indented more than 4 × [`MAX_DEPTH`] columns).
pub fn check_nesting(path: &Path, text: &str) -> Result<(), ConfigError> {
    let deep = |line: usize, column: usize, what: &str| ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message: format!(
            "{what} nests deeper than {MAX_DEPTH} levels, the cap on a configuration file's nesting"
        ),
    };
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if quote.is_none() && depth == 0 && indent > 4 * MAX_DEPTH {
            return Err(deep(i + 1, indent + 1, "indentation"));
        }
        let mut prev = ' ';
        let mut chars = line.char_indices().peekable();
        while let Some((j, c)) = chars.next() {
            match quote {
                Some('\'') if c == '\'' => {
                    if chars.peek().map(|(_, n)| *n) == Some('\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some('"') if c == '"' => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev.is_whitespace() => break,
                    '\'' | '"' if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err(deep(i + 1, j + 1, "a flow collection"));
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
    }
    Ok(())
}

/// Parse `text` (read from `path`) as `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    check_nesting(path, text)?;
    serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = e.to_string();
        // serde_yaml_ng appends " at line L column C"; we put it in front.
        let mut message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        if message.contains("repetition limit exceeded") {
            message.push_str(
                ": its aliases (`*name`) expand to more nodes than the parser's cap on alias expansion (an alias bomb?); write the repeated values out, or nest fewer aliases",
            );
        }
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

/// The largest configuration file read (uphost.yaml, an inventory, a
/// services file, a scenario): far above any real one, far below what
/// would exhaust the host.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Read a configuration file's text: a regular file (a FIFO would hang, a
/// device such as /dev/zero never ends), at most [`MAX_FILE_BYTES`], UTF-8.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        at: "the file".into(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        // A read error: the configuration names the setting that points
        // here.
        return Err(err(std::io::Error::other(format!(
            "it is {what}, not a regular file"
        ))));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "{} bytes, over the {MAX_FILE_BYTES} byte cap on a configuration file",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "over the {MAX_FILE_BYTES} byte cap on a configuration file (it grew while read)"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        invalid(format!(
            "not UTF-8 text (byte {} is not): save it as UTF-8",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if let Some(at) = text.find('\0') {
        let line = text[..at].matches('\n').count() + 1;
        let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
        return Err(ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: "a NUL byte: a configuration file is text (was it saved by a binary tool, or truncated on a full disk?)".into(),
        });
    }
    Ok(text)
}

/// Read and parse a YAML file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = read_text(path)?;
    parse(path, &text)
}

/// The closest of `candidates` to `name`, if reasonably close.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 2).max(2))
        .min()
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or "".
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}
