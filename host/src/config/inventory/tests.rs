use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn parse(text: &str) -> Result<Inventory, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "inventory.yaml", text);
    load(&[p])
}

#[test]
fn groups_children_and_vars() {
    let inv = parse(
        r#"
all:
  vars:
    ansible_user: ops
  children:
    controller:
      vars:
        ansible_connection: local
      hosts:
        ctl1: {ansible_host: 10.0.0.1}
        ctl2:
    compute:
      hosts:
        cmp1: {ansible_port: 2222, ansible_user: root}
    openstack:
      children:
        controller:
        compute:
"#,
    )
    .unwrap();
    assert_eq!(inv.nodes.len(), 3);
    let ctl1 = inv.node("ctl1").unwrap();
    assert_eq!(ctl1.address, "10.0.0.1");
    assert_eq!(ctl1.connection, Connection::Local);
    assert_eq!(ctl1.user.as_deref(), Some("ops"));
    assert_eq!(ctl1.roles, ["controller", "openstack"]);
    let cmp1 = inv.node("cmp1").unwrap();
    assert_eq!(cmp1.port, Some(2222));
    assert_eq!(cmp1.user.as_deref(), Some("root"));
    assert_eq!(cmp1.connection, Connection::Ssh);
    assert_eq!(cmp1.address, "cmp1");
    assert!(inv.groups.contains("all") && inv.groups.contains("ungrouped"));
}

#[test]
fn precedence_is_ansibles() {
    // A child group's var beats its parent's (depth), whatever the order
    // in the file; a host var beats every group var; group_vars files beat
    // inline group vars; host_vars files beat inline host vars.
    let dir = tempfile::tempdir().unwrap();
    let inv = write(
        dir.path(),
        "hosts",
        "[parent:children]\nchild\n[parent:vars]\nansible_user=parent\nansible_port=1\n[child]\nh1 ansible_host=10.0.0.1\nh2\n[child:vars]\nansible_user=child\n[all:vars]\nansible_user=all\n",
    );
    write(dir.path(), "group_vars/all.yml", "ansible_port: 2\n");
    write(dir.path(), "group_vars/child/a.yml", "ansible_port: 3\n");
    write(dir.path(), "group_vars/child/b.yaml", "ansible_port: 4\n");
    write(
        dir.path(),
        "host_vars/h2",
        "ansible_host: 10.0.0.2\nansible_ssh_host: 10.9.9.9\n",
    );
    let i = load(&[inv]).unwrap();
    let h1 = i.node("h1").unwrap();
    assert_eq!(h1.user.as_deref(), Some("child"));
    assert_eq!(h1.port, Some(4));
    assert_eq!(h1.address, "10.0.0.1");
    // ansible_ssh_host is the later name of the same option: it wins.
    assert_eq!(i.node("h2").unwrap().address, "10.9.9.9");
}

#[test]
fn templates_and_vault_are_errors_naming_the_variable() {
    let e = parse("all:\n  hosts:\n    h1: {ansible_host: \"{{ lookup('env','X') }}\"}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ansible_host") && e.contains("Jinja") && e.contains("ansible-inventory"),
        "{e}"
    );
    let e = parse("all:\n  hosts:\n    h1:\n      ansible_user: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n        6162\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("ansible_user") && e.contains("vaulted"), "{e}");
    // A template in a variable uphost does not use is not its business.
    assert!(parse("all:\n  hosts:\n    h1: {motd: \"{{ x }}\"}\n").is_ok());
}

#[test]
fn become_is_read_and_what_uphost_cannot_honour_is_refused() {
    let i = parse("all:\n  vars: {ansible_become: 'yes'}\n  hosts:\n    h1:\n    h2: {ansible_become_user: svc}\n    h3: {ansible_become: false}\n").unwrap();
    assert_eq!(i.node("h1").unwrap().become_user.as_deref(), Some("root"));
    assert_eq!(i.node("h2").unwrap().become_user.as_deref(), Some("svc"));
    assert_eq!(i.node("h3").unwrap().become_user, None);
    let e = parse("all:\n  hosts:\n    h1: {ansible_become: true, ansible_become_method: su}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`su`") && e.contains("sudo"), "{e}");
    let e = parse("all:\n  hosts:\n    h1: {ansible_become: true, ansible_become_pass: x}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("NOPASSWD"), "{e}");
}

#[test]
fn ranges_ports_and_ungrouped() {
    let i = parse("all:\n  hosts:\n    lone:\n  children:\n    compute:\n      hosts:\n        compute[01:03]:2222:\n").unwrap();
    let names: Vec<&str> = i.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["lone", "compute01", "compute02", "compute03"]);
    assert_eq!(i.node("compute02").unwrap().port, Some(2222));
    assert_eq!(i.node("lone").unwrap().roles, ["ungrouped"]);
}

#[test]
fn list_json_and_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"_meta": {"hostvars": {"a": {"ansible_host": "10.1.1.1"}}},
        "all": {"children": ["ungrouped", "g"]}, "g": {"hosts": ["a"], "vars": {"ansible_user": "u"}}}"#;
    let p = write(dir.path(), "inv.json", json);
    let i = load(std::slice::from_ref(&p)).unwrap();
    let a = i.node("a").unwrap();
    assert_eq!(
        (a.address.as_str(), a.user.as_deref()),
        ("10.1.1.1", Some("u"))
    );
    let script = write(
        dir.path(),
        "dyn.sh",
        &format!("#!/bin/sh\nif [ \"$1\" = --list ]; then cat <<'E'\n{json}\nE\nfi\n"),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let i = load(&[script]).unwrap();
    assert_eq!(i.node("a").unwrap().address, "10.1.1.1");
    let bad = write(dir.path(), "fail.sh", "#!/bin/sh\necho boom >&2\nexit 3\n");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = load(&[bad]).unwrap_err().to_string();
    assert!(e.contains("boom") && e.contains("exit"), "{e}");
}

#[test]
fn bad_port_names_host_and_key() {
    let e = parse("all:\n  hosts:\n    h1: {ansible_port: 99999}\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("ansible_port (for host h1)"), "{s}");
    assert!(s.contains("99999"), "{s}");
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = parse("all:\n  hosts:\n    h1: {ansible_port: 1\n").unwrap_err();
    match e {
        ConfigError::Syntax { line, .. } => assert!(line >= 3, "{line}"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn group_cycles_are_named() {
    let e = parse("all:\n  children:\n    a:\n      children:\n        b:\n    b:\n      children:\n        a:\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("the groups form a cycle: a -> b -> a"), "{e}");
    let e = parse("all:\n  children:\n    a:\n      children:\n        a:\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot be a child of itself"), "{e}");
}

#[test]
fn unknown_group_key_is_rejected() {
    let e = parse("all:\n  hostz:\n    h1:\n").unwrap_err();
    assert!(e.to_string().contains("hostz"), "{e}");
}
