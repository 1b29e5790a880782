//! Ansible's INI inventory format (its `ini` plugin): `[group]` host lines
//! with inline `key=value` variables, `[group:vars]`, `[group:children]`,
//! lines before any section in `ungrouped`, `#` and `;` comments. Values
//! are read as Python literals where they are one (`2222` is a number,
//! `'a b'` a string, `True` a boolean), else as text, as Ansible reads them.

use serde_json::Value;

use super::data::Data;
use super::pattern;

/// A problem at a line.
pub struct IniError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(PartialEq, Clone, Copy)]
enum State {
    Hosts,
    Vars,
    Children,
}

struct Pending {
    line: usize,
    vars: bool,
    parents: Vec<String>,
}

/// Parse `text` into `data`.
pub fn parse(text: &str, data: &mut Data, source: usize) -> Result<(), IniError> {
    let mut group = "ungrouped".to_string();
    let mut state = State::Hosts;
    let mut pending: indexmap::IndexMap<String, Pending> = indexmap::IndexMap::new();
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let err = |message: String| IniError {
            line: lineno,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((name, tag)) = section(line) {
            state = match tag {
                None | Some("hosts") => State::Hosts,
                Some("vars") => State::Vars,
                Some("children") => State::Children,
                Some(other) => {
                    return Err(err(format!(
                        "section [{name}:{other}] has unknown type `{other}`: use [{name}], [{name}:vars] or [{name}:children]"
                    )));
                }
            };
            group = name.to_string();
            if !data.groups.contains_key(&group) {
                if state == State::Vars && !pending.contains_key(&group) {
                    pending.insert(
                        group.clone(),
                        Pending {
                            line: lineno,
                            vars: true,
                            parents: vec![],
                        },
                    );
                }
                data.add_group(&group);
            }
            if state != State::Vars
                && let Some(p) = pending.get(&group)
            {
                if p.vars {
                    pending.shift_remove(&group);
                } else {
                    add_pending_children(&group, &mut pending, data).map_err(err)?;
                }
            }
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err(err(format!(
                "invalid section `{line}`: a section is [group], [group:vars] or [group:children], with no spaces"
            )));
        }
        match state {
            State::Hosts => {
                let tokens = shlex::split(strip_comment(line)).ok_or_else(|| {
                    err(format!(
                        "cannot split `{line}` into words (an unclosed quote?)"
                    ))
                })?;
                let Some(first) = tokens.first() else {
                    continue;
                };
                let (hosts, port) = pattern::expand(first).map_err(err)?;
                if first.trim().ends_with(':') && port.is_none() {
                    return Err(err(format!(
                        "invalid host pattern `{first}`: it ends in `:`, which is reserved for a port"
                    )));
                }
                if hosts.iter().any(|h| h.trim() == "---") {
                    return Err(err(
                        "`---` is not a host: this looks like a YAML file; name it .yaml".into(),
                    ));
                }
                let mut vars = Vec::new();
                for t in &tokens[1..] {
                    let Some((k, v)) = t.split_once('=') else {
                        return Err(err(format!(
                            "expected a key=value host variable, got `{t}`"
                        )));
                    };
                    vars.push((k.to_string(), literal(v)));
                }
                for h in hosts {
                    data.add_host(&h, Some(&group), port, source).map_err(err)?;
                    for (k, v) in &vars {
                        data.set_host_var(&h, k, v.clone(), source).map_err(err)?;
                    }
                }
            }
            State::Vars => {
                let Some((k, v)) = line.split_once('=') else {
                    return Err(err(format!("expected key=value, got `{line}`")));
                };
                data.set_group_var(&group, k.trim(), literal(v.trim()), source)
                    .map_err(err)?;
            }
            State::Children => {
                let child = group_name(line)
                    .ok_or_else(|| err(format!("expected a group name, got `{line}`")))?;
                if data.groups.contains_key(child) {
                    data.add_child(&group, child).map_err(err)?;
                } else {
                    pending
                        .entry(child.to_string())
                        .or_insert(Pending {
                            line: lineno,
                            vars: false,
                            parents: vec![],
                        })
                        .parents
                        .push(group.clone());
                }
            }
        }
    }
    if let Some((name, p)) = pending.iter().next() {
        let message = if p.vars {
            format!("section [{name}:vars] is for a group that is not defined: {name}")
        } else {
            format!(
                "section [{}:children] includes a group that is not defined: {name}",
                p.parents.last().map(String::as_str).unwrap_or("?")
            )
        };
        return Err(IniError {
            line: p.line,
            message,
        });
    }
    Ok(())
}

fn add_pending_children(
    group: &str,
    pending: &mut indexmap::IndexMap<String, Pending>,
    data: &mut Data,
) -> Result<(), String> {
    let Some(p) = pending.shift_remove(group) else {
        return Ok(());
    };
    for parent in p.parents {
        data.add_child(&parent, group)?;
        if pending.get(&parent).is_some_and(|pp| !pp.vars) {
            add_pending_children(&parent, pending, data)?;
        }
    }
    Ok(())
}

/// `[name]` or `[name:tag]`, optionally followed by a comment.
fn section(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    let after = rest[close + 1..].trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let inner = &rest[..close];
    let (name, tag) = match inner.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (inner, None),
    };
    let name_ok = !name.is_empty()
        && !name
            .chars()
            .any(|c| c == ':' || c == ']' || c.is_whitespace());
    let tag_ok =
        tag.is_none_or(|t| !t.is_empty() && t.chars().all(|c| c.is_alphanumeric() || c == '_'));
    (name_ok && tag_ok).then_some((name, tag))
}

/// A `[group:children]` line: a name, optionally followed by a comment.
fn group_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '#')
        .unwrap_or(line.len());
    let (name, after) = line.split_at(end);
    let after = after.trim_start();
    let ok = !name.is_empty()
        && !name.contains(':')
        && !name.contains(']')
        && (after.is_empty() || after.starts_with('#'));
    ok.then_some(name)
}

/// A host line without its comment: Python's shlex (comments=True) drops
/// everything from a `#` that starts a word, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            prev_space = false;
            continue;
        }
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                }
            }
            None => match c {
                '\\' => escaped = true,
                '\'' | '"' => quote = Some(c),
                '#' if prev_space => return &line[..i],
                _ => {}
            },
        }
        prev_space = quote.is_none() && c.is_whitespace();
    }
    line
}

/// A value as Ansible's `_parse_value` reads it: a Python literal where it
/// is one (numbers, quoted strings, `True`/`False`/`None`), else the text.
pub fn literal(v: &str) -> Value {
    let t = v.trim();
    match t {
        "True" => return Value::Bool(true),
        "False" => return Value::Bool(false),
        "None" => return Value::Null,
        _ => {}
    }
    if let Some(n) = python_int(t) {
        return Value::from(n);
    }
    if t.contains(['.', 'e', 'E'])
        && !t.contains("__")
        && t.chars()
            .all(|c| c.is_ascii_digit() || "+-.eE_".contains(c))
        && let Ok(f) = t.replace('_', "").parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    if let Some(s) = python_string(t) {
        return Value::String(s);
    }
    Value::String(v.to_string())
}

/// A Python integer literal (decimal without leading zeros, `0x`, `0o`,
/// `0b`, `_` separators, a sign).
fn python_int(t: &str) -> Option<i64> {
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') || body.contains("__") {
        return None;
    }
    let clean = body.replace('_', "");
    let n = if let Some(h) = clean.strip_prefix("0x").or(clean.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = clean.strip_prefix("0o").or(clean.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = clean.strip_prefix("0b").or(clean.strip_prefix("0B")) {
        i64::from_str_radix(b, 2).ok()?
    } else {
        if !clean.bytes().all(|b| b.is_ascii_digit())
            || (clean.len() > 1 && clean.starts_with('0') && clean.bytes().any(|b| b != b'0'))
        {
            return None;
        }
        clean.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

/// A quoted Python string literal (one pair of quotes, simple escapes).
fn python_string(t: &str) -> Option<String> {
    let q = t.chars().next()?;
    if (q != '\'' && q != '"') || t.len() < 2 || !t.ends_with(q) {
        return None;
    }
    let inner = &t[1..t.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c if c == q => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_as_python_reads_them() {
        assert_eq!(literal("2222"), Value::from(2222));
        assert_eq!(literal("'a b'"), Value::from("a b"));
        assert_eq!(literal("True"), Value::Bool(true));
        assert_eq!(literal("yes"), Value::from("yes"));
        assert_eq!(literal("010"), Value::from("010"));
        assert_eq!(literal("bar # no comment"), Value::from("bar # no comment"));
    }

    #[test]
    fn sections_children_and_pending_groups() {
        let mut d = Data::default();
        parse(
            "lone ansible_port=22\n[top:children]\nmid\n[mid:children]\nleaf\n[leaf]\nh[1:2] ansible_user=\"x y\" # c\n[leaf:vars]\nk=v\n",
            &mut d,
            0,
        )
        .map_err(|e| e.message)
        .unwrap();
        d.reconcile();
        assert!(d.groups["leaf"].hosts.iter().eq(["h1", "h2"]));
        assert_eq!(d.hosts["h1"].vars["ansible_user"], Value::from("x y"));
        assert!(d.groups["ungrouped"].hosts.iter().eq(["lone"]));
        assert!(d.ancestors("leaf").contains(&"top".to_string()));
        let mut d = Data::default();
        let e = parse("[x:vars]\na=1\n", &mut d, 0).err().unwrap();
        assert!(
            e.message.contains("not defined: x") && e.line == 1,
            "{}",
            e.message
        );
    }
}
