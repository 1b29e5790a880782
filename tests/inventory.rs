//! Inventories read exactly as Ansible reads them: a differential test
//! against `ansible-inventory --list` (ansible-core, installed in a venv
//! by `cargo xtask test`) on a corpus of real inventories
//! (tests/inventories/, sources in its README) and a synthetic case for
//! every rule; then uphost on kolla's and TripleO's files, unconverted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use uphost_tests::{root, uphost_bin, uphost_in, wasm};

/// What both tools must agree on for one host.
#[derive(Debug, PartialEq, Eq)]
struct Resolved {
    groups: BTreeSet<String>,
    address: String,
    port: Option<u64>,
    user: Option<String>,
    connection: String,
    become_user: Option<String>,
}

fn ansible_inventory() -> PathBuf {
    let p = std::env::var_os("UPHOST_ANSIBLE_INVENTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/ansible/bin/ansible-inventory"));
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask test` installs ansible-core in target/ansible (or set UPHOST_ANSIBLE_INVENTORY)",
        p.display()
    );
    p
}

/// The last of `names` set (not null): Ansible's rule for an option with
/// several variable names (`ansible_ssh_host` after `ansible_host`).
fn last<'a>(vars: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .rev()
        .find_map(|n| vars.get(*n).filter(|v| !v.is_null()))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn boolean(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() == Some(1.0),
        Value::String(s) => {
            ["y", "yes", "on", "1", "true", "t"].contains(&s.to_lowercase().as_str())
        }
        _ => false,
    }
}

/// Ansible's view: `ansible-inventory --list` from an empty directory
/// (no playbook-adjacent group_vars), failing on any unparsed source.
fn ansible(sources: &[PathBuf]) -> BTreeMap<String, Resolved> {
    let cwd = tempfile::tempdir().unwrap();
    let mut c = Command::new(ansible_inventory());
    c.current_dir(cwd.path())
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .env("ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED", "true")
        .env("ANSIBLE_HOME", cwd.path())
        .env("ANSIBLE_LOCAL_TEMP", cwd.path())
        .env_remove("ANSIBLE_CONFIG");
    for s in sources {
        c.arg("-i").arg(s);
    }
    let out = c.arg("--list").output().expect("run ansible-inventory");
    assert!(
        out.status.success(),
        "ansible-inventory failed on {sources:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = doc.as_object().unwrap();
    // Hosts of each group, transitively.
    fn members(doc: &serde_json::Map<String, Value>, g: &str, out: &mut BTreeSet<String>) {
        let Some(def) = doc.get(g) else { return };
        for h in def["hosts"].as_array().into_iter().flatten() {
            out.insert(h.as_str().unwrap().to_string());
        }
        for c in def["children"].as_array().into_iter().flatten() {
            members(doc, c.as_str().unwrap(), out);
        }
    }
    let mut groups_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in obj.keys().filter(|g| *g != "_meta") {
        let mut hs = BTreeSet::new();
        members(obj, g, &mut hs);
        for h in hs {
            let e = groups_of.entry(h).or_default();
            if g != "all" {
                e.insert(g.clone());
            }
        }
    }
    let empty = Value::Object(Default::default());
    groups_of
        .into_iter()
        .map(|(h, groups)| {
            let v = doc["_meta"]["hostvars"].get(&h).unwrap_or(&empty);
            let connection = match last(v, &["ansible_connection"]).map(text).as_deref() {
                None | Some("ssh") | Some("smart") | Some("paramiko") => "ssh".to_string(),
                Some(other) => other.to_string(),
            };
            let become_user = last(v, &["ansible_become"])
                .filter(|b| boolean(b))
                .map(|_| {
                    last(v, &["ansible_become_user", "ansible_sudo_user"])
                        .map(text)
                        .unwrap_or_else(|| "root".into())
                });
            let r = Resolved {
                groups,
                address: last(v, &["ansible_host", "ansible_ssh_host"])
                    .map(text)
                    .unwrap_or_else(|| h.clone()),
                port: last(v, &["ansible_port", "ansible_ssh_port"])
                    .map(|p| text(p).parse().expect("numeric port")),
                user: last(v, &["ansible_user", "ansible_ssh_user"]).map(text),
                connection,
                become_user,
            };
            (h, r)
        })
        .collect()
}

/// uphost's view: `uphost inventory -i … --format json`.
fn uphost(sources: &[PathBuf]) -> BTreeMap<String, Resolved> {
    let mut args: Vec<String> = Vec::new();
    for s in sources {
        args.push("-i".into());
        args.push(s.display().to_string());
    }
    args.extend(["inventory".into(), "--format".into(), "json".into()]);
    let cwd = tempfile::tempdir().unwrap();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = uphost_in(cwd.path(), &argv);
    assert_eq!(r.code, 0, "uphost inventory on {sources:?}: {}", r.all());
    let doc: Value = serde_json::from_str(&r.stdout).unwrap();
    doc["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let name = n["name"].as_str().unwrap().to_string();
            let r = Resolved {
                groups: n["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g.as_str().unwrap().to_string())
                    .collect(),
                address: n["address"].as_str().unwrap().to_string(),
                port: n["port"].as_u64(),
                user: n["user"].as_str().map(String::from),
                connection: n["connection"].as_str().unwrap().to_string(),
                become_user: n["become"].as_str().map(String::from),
            };
            (name, r)
        })
        .collect()
}

fn same(sources: &[PathBuf]) -> usize {
    let a = ansible(sources);
    let u = uphost(sources);
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        u.keys().collect::<Vec<_>>(),
        "hosts differ for {sources:?}"
    );
    for (h, ra) in &a {
        assert_eq!(
            ra, &u[h],
            "host {h} of {sources:?}: ansible (left) and uphost (right) differ"
        );
    }
    assert!(
        !a.is_empty(),
        "{sources:?} has no hosts: the comparison proves nothing"
    );
    a.len()
}

fn corpus(rel: &str) -> PathBuf {
    root().join("tests/inventories").join(rel)
}

/// A script that prints a saved `--list` JSON (how Ansible reads one).
fn script_for(json: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("inventory.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --list ]; then exec cat '{}'; fi\necho '{{}}'\n",
            json.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn real_inventories_read_as_ansible_reads_them() {
    for rel in [
        "kolla/multinode",
        "kolla/all-in-one",
        "ceph-ansible-all_daemons/hosts",
        "tripleo/tripleo-ansible-inventory.yaml",
    ] {
        let n = same(&[corpus(rel)]);
        eprintln!("{rel}: {n} hosts agree");
    }
    // OpenStack-Ansible's generated JSON: Ansible reads it through its
    // dynamic inventory script; uphost reads the file itself and the script.
    let json = corpus("openstack-ansible/openstack_inventory.json");
    let dir = tempfile::tempdir().unwrap();
    let script = script_for(&json, dir.path());
    let a = ansible(std::slice::from_ref(&script));
    assert_eq!(a, uphost(std::slice::from_ref(&json)));
    assert_eq!(a, uphost(&[script]));
    assert!(a.len() > 50, "{}", a.len());
}

/// Write `files` under a fresh directory; the sources are the given paths
/// in it.
fn case(files: &[(&str, &str)], sources: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        if text.starts_with("#!") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let srcs = sources.iter().map(|s| dir.path().join(s)).collect();
    (dir, srcs)
}

/// A synthetic case: its name, its files (path, text), its sources.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<&'static str>,
);

#[test]
fn every_rule_matches_ansible() {
    let cases: Vec<Case> = vec![
        (
            "ranges and host:port, INI",
            vec![(
                "hosts",
                "[compute]\ncompute[01:03] ansible_user=kolla\ndb-[a:c]:2200\nn[1:9:4]\nx[:1]\n10.0.0.5:2201\n[fe80::1]:2202\ncompute02:2222\n[edge]\nweird_:22\n",
            )],
            vec!["hosts"],
        ),
        (
            "ranges and host:port, YAML",
            vec![(
                "inv.yml",
                "all:\n  hosts:\n    lone:\n  children:\n    compute:\n      hosts:\n        compute[1:3]:2222:\n          ansible_user: x\n        \"[fe80::2]:2300\":\n",
            )],
            vec!["inv.yml"],
        ),
        (
            "precedence: depth, priority, name, all, host",
            vec![(
                "hosts",
                "[all:vars]\nansible_user=all\nansible_port=1\n[top:children]\nmid\n[mid:children]\nleaf\n[top:vars]\nansible_user=top\nansible_host=10.0.0.1\n[mid:vars]\nansible_user=mid\n[leaf]\nh1\nh2 ansible_user=host\n[zeta]\nh1\n[alpha]\nh1\n[zeta:vars]\nansible_port=26\n[alpha:vars]\nansible_port=25\n[prio]\nh2\n[prio:vars]\nansible_group_priority=10\nansible_port=30\n[other]\nh2\n[other:vars]\nansible_port=31\n",
            )],
            vec!["hosts"],
        ),
        (
            "group_vars and host_vars files and directories",
            vec![
                (
                    "inv/hosts",
                    "[ctl]\nc1\nc2\n[cmp]\nk1\n[all:vars]\nansible_user=inline\n[ctl:vars]\nansible_port=10\n",
                ),
                ("inv/group_vars/all.yml", "ansible_user: from_all_file\n"),
                (
                    "inv/group_vars/ctl/10-first.yml",
                    "ansible_port: 11\nansible_host: 10.1.0.1\n",
                ),
                ("inv/group_vars/ctl/20-second", "ansible_port: 12\n"),
                ("inv/group_vars/ctl/ignored.txt", "ansible_port: 99\n"),
                ("inv/group_vars/ctl/.hidden.yml", "ansible_port: 98\n"),
                (
                    "inv/group_vars/cmp.json",
                    "{\"ansible_connection\": \"local\"}",
                ),
                (
                    "inv/host_vars/c2.yaml",
                    "ansible_host: 10.1.0.2\nansible_user: c2user\n",
                ),
                ("inv/host_vars/k1/a.yml", "ansible_become: yes\n"),
                ("inv/host_vars/k1/b.yml", "ansible_become_user: svc\n"),
            ],
            vec!["inv/hosts"],
        ),
        (
            "the ansible_ssh_* aliases win over the plain names",
            vec![(
                "hosts",
                "[g]\na ansible_host=10.0.0.1 ansible_ssh_host=10.0.0.2 ansible_port=22 ansible_ssh_port=2222 ansible_user=u ansible_ssh_user=heat-admin\nb ansible_ssh_host=10.0.0.3\n[g:vars]\nansible_ssh_user=tripleo-admin\n",
            )],
            vec!["hosts"],
        ),
        (
            "become",
            vec![(
                "inv.yaml",
                "all:\n  vars:\n    ansible_become: true\n  hosts:\n    r1:\n    r2: {ansible_become_user: postgres}\n    r3: {ansible_become: 'no'}\n    r4: {ansible_become: 'yes', ansible_sudo_user: legacy}\n",
            )],
            vec!["inv.yaml"],
        ),
        (
            "several sources merged in order",
            vec![
                (
                    "a/hosts",
                    "[ctl]\nc1 ansible_host=10.0.0.1\n[ctl:vars]\nansible_user=a\n",
                ),
                (
                    "b/inv.yml",
                    "ctl:\n  hosts:\n    c1: {ansible_port: 2200}\n    c2:\n  vars:\n    ansible_user: b\n",
                ),
                ("a/group_vars/ctl.yml", "ansible_port: 2100\n"),
                ("b/group_vars/ctl.yml", "ansible_user: from_b_file\n"),
            ],
            vec!["a/hosts", "b/inv.yml"],
        ),
        (
            "a directory: files in name order, .ini and hidden skipped, group_vars beside",
            vec![
                ("dir/01-base", "[web]\nw1\nw2\n"),
                (
                    "dir/02-more.yml",
                    "web:\n  hosts:\n    w3:\n  vars:\n    ansible_user: deploy\n",
                ),
                ("dir/skipped.ini", "[web]\nw9\n"),
                ("dir/.hidden", "[web]\nw8\n"),
                ("dir/sub/03-nested", "[db]\nd1 ansible_port=5432\n"),
                ("dir/group_vars/web.yml", "ansible_port: 8022\n"),
            ],
            vec!["dir"],
        ),
        (
            "a dynamic inventory script without _meta (asked --host per host)",
            vec![(
                "dyn.py",
                "#!/bin/sh\ncase \"$1\" in\n--list) echo '{\"web\": [\"w1\", \"w2\"], \"db\": {\"hosts\": [\"d1\"], \"vars\": {\"ansible_user\": \"dba\"}, \"children\": [\"web\"]}}';;\n--host) if [ \"$2\" = w1 ]; then echo '{\"ansible_host\": \"10.9.0.1\", \"ansible_port\": 2022}'; else echo '{}'; fi;;\nesac\n",
            )],
            vec!["dyn.py"],
        ),
        (
            "INI values: quotes, comments, literals, ungrouped",
            vec![(
                "hosts",
                "# comment\nlone ansible_user=\"a b\" ansible_port=2022 # trailing\n; other comment\n[g]\nh1 ansible_host='10.0.0.1'\n[g:vars]\nansible_user = spaced\nansible_become = True\n",
            )],
            vec!["hosts"],
        ),
        (
            "YAML: hosts directly in all, a string section, empty groups",
            vec![(
                "inv.yaml",
                "all:\n  hosts:\n    top1:\n  children:\n    g1:\n      hosts: only1\n    empty:\n    g2:\n      children:\n        g1:\n      vars:\n        ansible_user: g2\n",
            )],
            vec!["inv.yaml"],
        ),
    ];
    for (name, files, sources) in cases {
        let (_dir, srcs) = case(&files, &sources);
        let n = same(&srcs);
        eprintln!("{name}: {n} hosts agree");
    }
}

#[test]
fn what_uphost_cannot_evaluate_is_an_error_naming_file_variable_and_workaround() {
    for (files, needles) in [
        (
            vec![(
                "hosts",
                "[g]\nh1 ansible_host=\"{{ lookup('env', 'IP') }}\"\n",
            )],
            vec!["hosts", "ansible_host", "Jinja", "ansible-inventory"],
        ),
        (
            vec![
                ("hosts", "[g]\nh1\n"),
                (
                    "group_vars/g/vault.yml",
                    "$ANSIBLE_VAULT;1.1;AES256\n6162636465\n",
                ),
            ],
            vec!["vault.yml", "Ansible Vault", "--vault-password-file"],
        ),
        (
            vec![(
                "hosts",
                "plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n",
            )],
            vec![
                "hosts",
                "amazon.aws.aws_ec2",
                "ansible-inventory -i THIS_FILE --list",
            ],
        ),
        (
            vec![(
                "hosts",
                "[g]\nh1 ansible_become=true ansible_become_method=su\n",
            )],
            vec!["hosts", "ansible_become_method", "`su`", "sudo"],
        ),
        (
            vec![(
                "hosts",
                "[g]\nh1 ansible_ssh_common_args='-o ProxyJump=bastion'\n",
            )],
            vec!["ansible_ssh_common_args", "ssh_config", "ssh.config"],
        ),
        (
            vec![("hosts", "[g:vars]\na=1\n")],
            vec!["hosts:1", "not defined: g"],
        ),
    ] {
        let (dir, srcs) = case(&files, &["hosts"]);
        let r = uphost_in(dir.path(), &["-i", srcs[0].to_str().unwrap(), "inventory"]);
        assert_eq!(r.code, 2, "{}", r.all());
        for n in needles {
            assert!(r.stderr.contains(n), "`{n}` not in {}", r.stderr);
        }
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}

/// The seed plugins, approved, beside `example`'s configuration.
fn example(name: &str, plugins: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("examples").join(name);
    let services = std::fs::read_to_string(src.join("services.yaml")).unwrap();
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    let cfg = std::fs::read_to_string(src.join("uphost.yaml"))
        .unwrap()
        .replace("../../tests/", &format!("{}/tests/", root().display()));
    std::fs::write(dir.path().join("uphost.yaml"), cfg).unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    for p in plugins {
        std::fs::copy(
            wasm(p),
            dir.path().join("plugins").join(format!("{p}.wasm")),
        )
        .unwrap();
    }
    let r = uphost_in(dir.path(), &["plugins", "approve", "--all", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.all());
    dir
}

fn plan_nodes(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let r = uphost_in(dir, &["plan", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn plan_on_kollas_multinode_unconverted_puts_the_ten_services_on_the_right_hosts() {
    let dir = example("kolla", uphost_tests::SEED_PLUGINS);
    let got = plan_nodes(dir.path());
    let ctl = ["control01", "control02", "control03"];
    let expect: &[(&str, &[&str])] = &[
        ("galera", &ctl),
        ("rabbitmq", &ctl),
        ("keystone", &ctl),
        ("placement", &ctl),
        ("nova", &ctl),
        ("neutron", &ctl),
        ("haproxy", &["network01", "network02"]),
        ("nova-compute", &["compute01"]),
        ("ceph-mon", &["storage01"]),
        ("ceph-osd", &["storage01"]),
    ];
    assert_eq!(got.len(), 10, "{got:?}");
    for (svc, nodes) in expect {
        assert_eq!(got[*svc], *nodes, "{svc}");
    }
}

#[test]
fn plan_on_a_tripleo_inventory_and_unknown_roles_reported_at_once() {
    let plugins: Vec<&str> = uphost_tests::SEED_PLUGINS
        .iter()
        .copied()
        .filter(|p| *p != "ceph-osd")
        .collect();
    let dir = example("tripleo", &plugins);
    let got = plan_nodes(dir.path());
    assert_eq!(got["galera"], ["rk-openstack-0-controller-0"]);
    assert_eq!(got["nova-compute"], ["rk-openstack-0-novacompute-0"]);
    let r = uphost_in(dir.path(), &["inventory", "--format", "json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let ctl = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "rk-openstack-0-controller-0")
        .unwrap();
    assert_eq!(ctl["user"], "tripleo-admin");
    assert_eq!(ctl["address"], "192.168.7.243");
    // Two typos: both named, each with the closest group names.
    let services = dir.path().join("services.yaml");
    let text = std::fs::read_to_string(&services).unwrap();
    std::fs::write(
        &services,
        text.replace("[mysql]", "[mysqll]")
            .replace("[nova_api]", "[nova]"),
    )
    .unwrap();
    let r = uphost_in(dir.path(), &["plan"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for n in [
        "2 role(s) are not groups",
        "services.galera.roles[0]: `mysqll` (closest groups: `mysql`",
        "services.nova.roles[0]: `nova`",
        "`nova_api`",
    ] {
        assert!(r.stderr.contains(n), "`{n}` not in {}", r.stderr);
    }
    let _ = uphost_bin();
}
