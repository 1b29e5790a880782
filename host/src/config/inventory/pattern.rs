//! Host patterns as Ansible's inventory sources read them: an optional
//! `:port` (`host:2222`, `[fe80::1]:2222`), then ranges expanded
//! (`compute[01:50]`, `db-[a:f]`, `node[1:9:2]`, nested left to right).
//! A pattern that is not a valid address is taken whole, with no port,
//! as Ansible takes it.

/// The hosts a pattern names, and the port it gives them.
pub fn expand(pattern: &str) -> Result<(Vec<String>, Option<u16>), String> {
    let (name, port) = match parse_address(pattern) {
        Some((host, port)) => (host, port),
        None => (pattern.to_string(), None),
    };
    let hosts = if name.contains('[') {
        expand_range(&name)?
    } else {
        vec![name]
    };
    Ok((hosts, port))
}

/// Ansible's `parse_address(allow_ranges=True)`: the host and the port, or
/// `None` when the text is not a host identifier with an optional port.
fn parse_address(address: &str) -> Option<(String, Option<u16>)> {
    let mut host = address;
    let mut port = None;
    if let Some((h, p)) = bracketed_hostport(address).or_else(|| hostport(address)) {
        host = h;
        port = Some(p);
    }
    let valid = is_ipv4(host) || is_ipv6(host) || is_hostname(host);
    // A port over 65535 is not a port: Ansible's int() accepts it and ssh
    // refuses it later; here the pattern is not an address.
    let port = match port {
        Some(p) => Some(u16::try_from(p).ok()?),
        None => None,
    };
    valid.then(|| (host.to_string(), port))
}

/// `[host]:port`.
fn bracketed_hostport(s: &str) -> Option<(&str, u64)> {
    let rest = s.strip_prefix('[')?;
    let close = rest.rfind("]:")?;
    let (inner, port) = (&rest[..close], &rest[close + 2..]);
    if inner.is_empty() {
        return None;
    }
    Some((inner, digits(port)?))
}

/// `host:port`, where the host has no `:` outside complete `[...]`.
fn hostport(s: &str) -> Option<(&str, u64)> {
    let colon = s.rfind(':')?;
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    let port = digits(port)?;
    // host: (non-[]: char | [ non-] * ])*
    let mut chars = host.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' | ']' => return None,
            '[' => loop {
                match chars.next() {
                    Some(']') => break,
                    Some(_) => {}
                    None => return None,
                }
            },
            _ => {}
        }
    }
    Some((host, port))
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Python's int() of a long digit string never fails; a port that big
    // is refused by the caller.
    Some(s.parse().unwrap_or(u64::MAX))
}

/// `[0-9]+:[0-9]+(:[0-9]+)?` inside brackets (a numeric range).
fn numeric_range(inner: &str) -> bool {
    let parts: Vec<&str> = inner.split(':').collect();
    (parts.len() == 2 || parts.len() == 3)
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[a-z]:[a-z]` or a numeric range, with an optional numeric step
/// (case-insensitive, as Ansible compiles it).
fn alphanumeric_range(inner: &str) -> bool {
    let parts: Vec<&str> = inner.split(':').collect();
    if parts.len() != 2 && parts.len() != 3 {
        return false;
    }
    let letter = |p: &str| p.len() == 1 && p.as_bytes()[0].is_ascii_alphabetic();
    let num = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let step_ok = parts.len() == 2 || num(parts[2]);
    step_ok && ((letter(parts[0]) && letter(parts[1])) || (num(parts[0]) && num(parts[1])))
}

fn is_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            if let Some(inner) = p.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                return numeric_range(inner);
            }
            // [01]?[0-9]{1,2} | 2[0-4][0-9] | 25[0-5]
            let b = p.as_bytes();
            let all_digits = !b.is_empty() && b.iter().all(u8::is_ascii_digit);
            all_digits
                && match b.len() {
                    1 | 2 => true,
                    3 => b[0] == b'0' || b[0] == b'1' || (b[0] == b'2' && *p <= "255"),
                    _ => false,
                }
        })
}

fn is_ipv6(s: &str) -> bool {
    s.contains(':') && s.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Dot-separated labels: each starts with a word character or a range,
/// goes on with word characters, `-` or ranges, and does not end with `-`
/// or `_`.
fn is_hostname(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_label)
}

fn is_label(l: &str) -> bool {
    if l.is_empty() || l.ends_with('-') || l.ends_with('_') {
        return false;
    }
    let mut first = true;
    let mut rest = l;
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            let Some(close) = rest.find(']') else {
                return false;
            };
            if !alphanumeric_range(&rest[1..close]) {
                return false;
            }
            rest = &rest[close + 1..];
        } else {
            let ok = c.is_alphanumeric() || c == '_' || (!first && c == '-');
            if !ok {
                return false;
            }
            rest = &rest[c.len_utf8()..];
        }
        first = false;
    }
    true
}

const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Ansible's `expand_hostname_range`: the first `[begin:end(:step)]` is
/// expanded, then what follows, recursively.
fn expand_range(line: &str) -> Result<Vec<String>, String> {
    let open = line.find('[').ok_or("no range")?;
    let close = line[open..]
        .find(']')
        .map(|i| open + i)
        .ok_or_else(|| format!("host range in `{line}` has no closing `]`"))?;
    let (head, range, tail) = (&line[..open], &line[open + 1..close], &line[close + 1..]);
    let bounds: Vec<&str> = range.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(format!(
            "host range `[{range}]` in `{line}` must be begin:end or begin:end:step"
        ));
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    if end.is_empty() {
        return Err(format!(
            "host range `[{range}]` in `{line}` must specify an end value"
        ));
    }
    let step: i64 = match bounds.get(2) {
        None => 1,
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("host range step `{s}` in `{line}` is not a number"))?,
    };
    let width = if beg.starts_with('0') && beg.len() > 1 {
        if beg.len() != end.len() {
            return Err(format!(
                "host range `[{range}]` in `{line}` must have begin and end of equal length"
            ));
        }
        Some(beg.len())
    } else {
        None
    };
    let fill = |x: String| match width {
        Some(w) if x.len() < w => format!("{}{x}", "0".repeat(w - x.len())),
        _ => x,
    };
    let seq: Vec<String> = match (LETTERS.find(beg), LETTERS.find(end)) {
        (Some(b), Some(e)) => {
            if b > e {
                return Err(format!(
                    "host range `[{range}]` in `{line}` must have begin <= end"
                ));
            }
            if step <= 0 {
                return Err(format!("host range step in `{line}` must be positive"));
            }
            LETTERS[b..=e]
                .chars()
                .step_by(step as usize)
                .map(|c| c.to_string())
                .collect()
        }
        _ => {
            let num = |s: &str| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("host range bound `{s}` in `{line}` is not a number"))
            };
            let (b, e) = (num(beg)?, num(end)?);
            if step == 0 {
                return Err(format!("host range step in `{line}` must not be zero"));
            }
            let mut v = Vec::new();
            let mut i = b;
            while (step > 0 && i <= e) || (step < 0 && i > e + 1) {
                v.push(i.to_string());
                if v.len() > MAX_RANGE {
                    return Err(format!(
                        "host range `[{range}]` in `{line}` names more than {MAX_RANGE} hosts"
                    ));
                }
                i += step;
            }
            v
        }
    };
    let mut out = Vec::new();
    for s in seq {
        let name = format!("{head}{}{tail}", fill(s));
        if name.contains('[') {
            out.extend(expand_range(&name)?);
        } else {
            out.push(name);
        }
        if out.len() > MAX_RANGE {
            return Err(format!(
                "host pattern `{line}` names more than {MAX_RANGE} hosts"
            ));
        }
    }
    Ok(out)
}

/// Most hosts one pattern may name (a typo like `[0:9999999]` must not
/// take the host's memory).
pub const MAX_RANGE: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &str) -> Vec<String> {
        expand(p).unwrap().0
    }

    #[test]
    fn ranges_as_ansible_expands_them() {
        assert_eq!(
            names("compute[01:03]"),
            ["compute01", "compute02", "compute03"]
        );
        assert_eq!(names("db-[a:c]"), ["db-a", "db-b", "db-c"]);
        assert_eq!(names("n[1:9:4]"), ["n1", "n5", "n9"]);
        assert_eq!(names("r[1:2]-[a:b]"), ["r1-a", "r1-b", "r2-a", "r2-b"]);
        assert_eq!(names("x[:1]"), ["x0", "x1"]);
        assert!(expand("c[01:100]").unwrap_err().contains("equal length"));
        assert!(expand("c[1]").unwrap_err().contains("begin:end"));
    }

    #[test]
    fn ports_as_ansible_parses_them() {
        assert_eq!(
            expand("compute01:2222").unwrap(),
            (vec!["compute01".into()], Some(2222))
        );
        assert_eq!(
            expand("10.0.0.5:22").unwrap(),
            (vec!["10.0.0.5".into()], Some(22))
        );
        assert_eq!(
            expand("[fe80::1]:2200").unwrap(),
            (vec!["fe80::1".into()], Some(2200))
        );
        assert_eq!(expand("fe80::1").unwrap(), (vec!["fe80::1".into()], None));
        assert_eq!(
            expand("c[1:2]:2222").unwrap(),
            (vec!["c1".into(), "c2".into()], Some(2222))
        );
        // Not an address: taken whole, no port.
        assert_eq!(expand("bad_:22").unwrap(), (vec!["bad_:22".into()], None));
    }
}
