//! The structured inventory formats: Ansible's YAML inventory (its `yaml`
//! plugin, also for `.json` files of the same shape), and the JSON of
//! `ansible-inventory --list` and of dynamic inventory scripts (its
//! `script` plugin: groups with host lists, `_meta.hostvars`). YAML is
//! read into JSON values, `!vault` becoming `{"__ansible_vault": …}` as
//! `ansible-inventory` writes it.

use serde_json::{Map, Value};

use super::data::Data;
use super::pattern;

/// A YAML document as JSON values (tags: `!vault` kept recognisable,
/// `!unsafe` and others dropped to their value).
pub fn yaml_to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (key_text(k), yaml_to_json(v)))
                .collect(),
        ),
        Y::Tagged(t) => {
            if t.tag == "vault" {
                let mut m = Map::new();
                m.insert("__ansible_vault".into(), yaml_to_json(t.value));
                Value::Object(m)
            } else {
                yaml_to_json(t.value)
            }
        }
    }
}

/// A mapping key as text (YAML allows numbers and booleans as keys).
fn key_text(k: serde_yaml_ng::Value) -> String {
    match k {
        serde_yaml_ng::Value::String(s) => s,
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        serde_yaml_ng::Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
        serde_yaml_ng::Value::Null => "None".into(),
        other => format!("{other:?}"),
    }
}

/// Whether a JSON document is in the `--list` (script) shape rather than
/// the YAML-inventory shape: it has `_meta`, or a group whose `hosts` is a
/// list (or a group that is a list).
pub fn is_list_shape(doc: &Map<String, Value>) -> bool {
    doc.contains_key("_meta")
        || doc.values().any(|g| {
            g.is_array()
                || g.get("hosts").is_some_and(Value::is_array)
                || g.get("children").is_some_and(Value::is_array)
        })
}

/// A YAML-inventory document into `data`; problems name where.
pub fn parse_yaml_inventory(
    doc: &Map<String, Value>,
    data: &mut Data,
    source: usize,
) -> Result<(), (String, String)> {
    if doc
        .get("plugin")
        .is_some_and(|p| !p.is_null() && p != &Value::Bool(false))
    {
        return Err((
            "plugin".into(),
            format!(
                "this is the configuration of the Ansible inventory plugin `{}`, which uphost cannot run; write its result with `ansible-inventory -i THIS_FILE --list > inventory.json` and point uphost at inventory.json",
                doc["plugin"].as_str().unwrap_or("?")
            ),
        ));
    }
    for (name, def) in doc {
        group(name, def, data, source, name)?;
    }
    Ok(())
}

fn group(
    name: &str,
    def: &Value,
    data: &mut Data,
    source: usize,
    at: &str,
) -> Result<(), (String, String)> {
    let obj = match def {
        Value::Null => {
            data.add_group(name);
            return Ok(());
        }
        Value::Object(o) => o,
        other => {
            return Err((
                at.to_string(),
                format!(
                    "`{name}` is not a group definition (a mapping with hosts, vars, children), it is {}; Ansible skips it with a warning, uphost refuses to guess",
                    kind(other)
                ),
            ));
        }
    };
    data.add_group(name);
    // A section given as a single name is a mapping of that name.
    let section = |key: &str| -> Result<Option<Map<String, Value>>, (String, String)> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let mut m = Map::new();
                m.insert(s.clone(), Value::Null);
                Ok(Some(m))
            }
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(other) => Err((
                format!("{at}.{key}"),
                format!(
                    "`{key}` of group `{name}` must be a mapping, it is {}",
                    kind(other)
                ),
            )),
        }
    };
    for key in obj.keys() {
        if !["vars", "children", "hosts"].contains(&key.as_str()) {
            return Err((
                format!("{at}.{key}"),
                format!(
                    "unexpected key `{key}` in group `{name}`: a group has only `hosts`, `vars` and `children` (Ansible skips it with a warning; uphost refuses, since a misspelt `hosts:` would drop hosts)"
                ),
            ));
        }
        match key.as_str() {
            "vars" => {
                for (k, v) in section("vars")?.unwrap_or_default() {
                    data.set_group_var(name, &k, v, source)
                        .map_err(|m| (format!("{at}.vars.{k}"), m))?;
                }
            }
            "children" => {
                for (child, cdef) in section("children")?.unwrap_or_default() {
                    let cat = format!("{at}.children.{child}");
                    group(&child, &cdef, data, source, &cat)?;
                    data.add_child(name, &child).map_err(|m| (cat, m))?;
                }
            }
            _ => {
                for (pat, hvars) in section("hosts")?.unwrap_or_default() {
                    let hat = format!("{at}.hosts.{pat}");
                    let (hosts, port) = pattern::expand(&pat).map_err(|m| (hat.clone(), m))?;
                    let vars = match hvars {
                        Value::Null => Map::new(),
                        Value::Object(m) => m,
                        other => {
                            return Err((
                                hat,
                                format!(
                                    "the variables of host `{pat}` must be a mapping, they are {}",
                                    kind(&other)
                                ),
                            ));
                        }
                    };
                    for h in hosts {
                        data.add_host(&h, Some(name), port, source)
                            .map_err(|m| (hat.clone(), m))?;
                        for (k, v) in &vars {
                            data.set_host_var(&h, k, v.clone(), source)
                                .map_err(|m| (hat.clone(), m))?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The JSON of `ansible-inventory --list` or of an inventory script into
/// `data`. `host_vars` answers `--host NAME` when there is no `_meta`
/// (a script is asked once per host, as Ansible asks it).
pub fn parse_list(
    doc: &Map<String, Value>,
    data: &mut Data,
    source: usize,
    mut host_vars: impl FnMut(&str) -> Result<Map<String, Value>, String>,
) -> Result<(), (String, String)> {
    let mut hosts: indexmap::IndexSet<String> = indexmap::IndexSet::new();
    let mut meta: Option<&Map<String, Value>> = None;
    for (name, gdata) in doc {
        if name == "_meta" {
            meta = gdata.get("hostvars").and_then(Value::as_object);
            continue;
        }
        data.add_group(name);
        let g: Map<String, Value> = match gdata {
            Value::Object(o)
                if ["hosts", "vars", "children"]
                    .iter()
                    .any(|k| o.contains_key(*k)) =>
            {
                o.clone()
            }
            // A mapping with none of them: the group's own vars, with the
            // group as its only host (the old script convention).
            Value::Object(o) => {
                let mut m = Map::new();
                m.insert(
                    "hosts".into(),
                    Value::Array(vec![Value::from(name.as_str())]),
                );
                m.insert("vars".into(), Value::Object(o.clone()));
                m
            }
            other => {
                let mut m = Map::new();
                m.insert("hosts".into(), other.clone());
                m
            }
        };
        if let Some(hs) = g.get("hosts") {
            let list = hs.as_array().ok_or_else(|| {
                (
                    format!("{name}.hosts"),
                    format!(
                        "the hosts of group `{name}` must be a list, they are {}",
                        kind(hs)
                    ),
                )
            })?;
            for h in list {
                let h = h.as_str().ok_or_else(|| {
                    (
                        format!("{name}.hosts"),
                        format!("host `{h}` is not a string"),
                    )
                })?;
                hosts.insert(h.to_string());
                data.add_host(h, Some(name), None, source)
                    .map_err(|m| (format!("{name}.hosts"), m))?;
            }
        }
        if let Some(vs) = g.get("vars") {
            let vs = vs.as_object().ok_or_else(|| {
                (
                    format!("{name}.vars"),
                    format!(
                        "the vars of group `{name}` must be a mapping, they are {}",
                        kind(vs)
                    ),
                )
            })?;
            for (k, v) in vs {
                data.set_group_var(name, k, v.clone(), source)
                    .map_err(|m| (format!("{name}.vars.{k}"), m))?;
            }
        }
        if let Some(cs) = g.get("children") {
            let cs = cs.as_array().ok_or_else(|| {
                (
                    format!("{name}.children"),
                    format!(
                        "the children of group `{name}` must be a list, they are {}",
                        kind(cs)
                    ),
                )
            })?;
            for c in cs {
                let c = c.as_str().ok_or_else(|| {
                    (
                        format!("{name}.children"),
                        format!("child `{c}` is not a string"),
                    )
                })?;
                data.add_group(c);
                data.add_child(name, c)
                    .map_err(|m| (format!("{name}.children"), m))?;
            }
        }
    }
    for h in hosts {
        let vars = match meta {
            Some(m) => match m.get(&h) {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(o)) => o.clone(),
                Some(other) => {
                    return Err((
                        format!("_meta.hostvars.{h}"),
                        format!(
                            "the variables of host `{h}` must be a mapping, they are {}",
                            kind(other)
                        ),
                    ));
                }
            },
            None => host_vars(&h).map_err(|m| (format!("--host {h}"), m))?,
        };
        for (k, v) in vars {
            data.set_host_var(&h, &k, v, source)
                .map_err(|m| (format!("_meta.hostvars.{h}"), m))?;
        }
    }
    Ok(())
}

/// "a list", "a string", … for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
