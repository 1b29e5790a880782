//! Argument patterns: the language capabilities and scripted responses use.
//!
//! A pattern list matches an argv (without the program) element by element.
//! Each element is one or more alternatives separated by `|`; an alternative
//! is a glob where `*` matches any run of characters and `?` exactly one
//! (`\` escapes the next character, so `\|` and `\*` are literal). A final
//! element `...` matches any number (zero or more) of remaining arguments.

/// The pattern element that matches every remaining argument.
pub const REST: &str = "...";

/// Does one argument match one pattern element (with `|` alternatives)?
pub fn element_matches(pattern: &str, arg: &str) -> bool {
    split_alternatives(pattern)
        .iter()
        .any(|alt| glob_matches(alt, arg))
}

/// Does the whole argv match the pattern list?
pub fn args_match(patterns: &[String], args: &[String]) -> bool {
    first_mismatch(patterns, args).is_none()
}

/// Where an argv stops matching a pattern list: `Some(index)` names the first
/// argument that does not match (or `args.len()` when arguments are missing),
/// `None` when it matches.
pub fn first_mismatch(patterns: &[String], args: &[String]) -> Option<usize> {
    let rest = patterns.last().is_some_and(|p| p == REST);
    let fixed = if rest {
        &patterns[..patterns.len() - 1]
    } else {
        patterns
    };
    for (i, pat) in fixed.iter().enumerate() {
        match args.get(i) {
            Some(arg) if element_matches(pat, arg) => {}
            _ => return Some(i.min(args.len())),
        }
    }
    if !rest && args.len() > fixed.len() {
        return Some(fixed.len());
    }
    None
}

/// Is `inner` (a requested pattern element) covered by `outer` (a granted
/// one)? Exact for literals and identical globs; a requested glob is covered
/// only by a granted element that contains it verbatim or by `*`.
pub fn element_covers(outer: &str, inner: &str) -> bool {
    let outer_alts = split_alternatives(outer);
    split_alternatives(inner).iter().all(|ia| {
        outer_alts.iter().any(|oa| {
            oa == ia || oa == "*" || (!has_wildcard(ia) && glob_matches(oa, &unescape(ia)))
        })
    })
}

/// Is a requested pattern list covered by a granted one?
pub fn list_covers(outer: &[String], inner: &[String]) -> bool {
    outer.len() == inner.len()
        && outer.iter().zip(inner).all(|(o, i)| {
            if o == REST || i == REST {
                o == i
            } else {
                element_covers(o, i)
            }
        })
}

fn has_wildcard(alt: &str) -> bool {
    let mut escaped = false;
    for c in alt.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '*' || c == '?' {
            return true;
        }
    }
    false
}

fn unescape(alt: &str) -> String {
    let mut out = String::with_capacity(alt.len());
    let mut escaped = false;
    for c in alt.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

fn split_alternatives(pattern: &str) -> Vec<String> {
    let mut alts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in pattern.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '|' {
            alts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    alts.push(cur);
    alts
}

#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    Any,
    One,
}

fn tokens(alt: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut escaped = false;
    for c in alt.chars() {
        if escaped {
            out.push(Tok::Lit(c));
            escaped = false;
        } else {
            match c {
                '\\' => escaped = true,
                '*' => out.push(Tok::Any),
                '?' => out.push(Tok::One),
                c => out.push(Tok::Lit(c)),
            }
        }
    }
    if escaped {
        out.push(Tok::Lit('\\'));
    }
    out
}

/// Glob match with `*` and `?`, linear backtracking (no exponential blowup).
pub fn glob_matches(alt: &str, text: &str) -> bool {
    let pat = tokens(alt);
    let txt: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < txt.len() {
        match pat.get(p) {
            Some(Tok::Lit(c)) if *c == txt[t] => {
                p += 1;
                t += 1;
            }
            Some(Tok::One) => {
                p += 1;
                t += 1;
            }
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| *t == Tok::Any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs_and_alternatives() {
        assert!(element_matches("start|stop|restart", "stop"));
        assert!(!element_matches("start|stop|restart", "disable"));
        assert!(element_matches("nova-*", "nova-api"));
        assert!(!element_matches("nova-*", "neutron-server"));
        assert!(element_matches("ceph-osd@?", "ceph-osd@3"));
        assert!(!element_matches("ceph-osd@?", "ceph-osd@12"));
        assert!(element_matches("a\\|b", "a|b"));
        assert!(!element_matches("a\\|b", "a"));
        assert!(element_matches("\\*", "*"));
        assert!(!element_matches("\\*", "x"));
        assert!(element_matches("*", ""));
    }

    #[test]
    fn argv_lists() {
        let pats = v(&["restart|stop", "nova-*"]);
        assert!(args_match(&pats, &v(&["stop", "nova-api"])));
        assert_eq!(first_mismatch(&pats, &v(&["disable", "nova-api"])), Some(0));
        assert_eq!(first_mismatch(&pats, &v(&["stop"])), Some(1));
        assert_eq!(
            first_mismatch(&pats, &v(&["stop", "nova-api", "x"])),
            Some(2)
        );
        let rest = v(&["-e", "..."]);
        assert!(args_match(&rest, &v(&["-e"])));
        assert!(args_match(&rest, &v(&["-e", "a", "b"])));
        assert!(!args_match(&rest, &v(&["-x"])));
    }

    #[test]
    fn shell_syntax_is_just_text() {
        // A glob may match text that holds shell syntax: that is harmless
        // because argv never reaches a shell; literals never match it.
        assert!(element_matches("nova-*", "nova-api; touch /tmp/pwned"));
        assert!(!element_matches("restart", "restart; touch pwned"));
        assert!(!element_matches("restart", "restart\n"));
    }

    #[test]
    fn coverage() {
        assert!(element_covers("start|stop|restart", "stop|start"));
        assert!(!element_covers("start|stop", "stop|disable"));
        assert!(element_covers("nova-*", "nova-api"));
        assert!(!element_covers("nova-api", "nova-*"));
        assert!(element_covers("*", "anything*"));
        assert!(list_covers(&v(&["a", "..."]), &v(&["a", "..."])));
        assert!(!list_covers(&v(&["a"]), &v(&["a", "..."])));
    }

    #[test]
    fn pathological_glob_is_fast() {
        let pat = "*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(5000);
        assert!(!glob_matches(pat, &text));
    }
}
