//! Signed releases through the real binary: a vendor makes a key and signs
//! its plugin; the operator approves it once and trusts the key; the
//! vendor's next build, signed and asking for nothing more, runs without a
//! new approval (the lock records its hash); one that asks for more stops
//! with the difference; one unsigned, signed by another key or altered
//! after signing is refused. Without a trusted key, the hash is the
//! approval, as always. Signed plugins travel through a real OCI registry
//! (Debian's docker-registry on loopback): pulled only when the layer's
//! digest and the signature check out.

use std::path::{Path, PathBuf};
use std::process::Command;

use uphost_tests::{Ran, sha256, wasm};

/// The `good` fixture on one local node, not yet approved.
struct Site(uphost_tests::site::Site);

impl Site {
    fn new() -> Site {
        let s = uphost_tests::site::Site::new();
        s.config("")
            .write(
                "inventory.yaml",
                "all:\n  vars:\n    ansible_connection: local\n  children:\n    app:\n      hosts:\n        n1:\n",
            )
            .write("services.yaml", "services:\n  good:\n    roles: [app]\n");
        Site(s)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn uphost(&self, args: &[&str]) -> Ran {
        self.0.uphost(args)
    }

    fn ok(&self, args: &[&str]) -> Ran {
        let r = self.uphost(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.all());
        r
    }

    /// Install `bytes` as the plugin file.
    fn install(&self, bytes: &[u8]) {
        std::fs::write(self.path().join("plugins/good.wasm"), bytes).unwrap();
    }

    /// A file signed with `key` (the plugin file is left alone).
    fn signed(&self, bytes: &[u8], key: &str) -> Vec<u8> {
        let f = self.path().join("to-sign.wasm");
        std::fs::write(&f, bytes).unwrap();
        self.ok(&["plugins", "sign", f.to_str().unwrap(), "--key", key]);
        std::fs::read(&f).unwrap()
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.path().join("plugins/uphost.lock")).unwrap()
    }
}

/// Another build of the same code: a custom section with its build
/// number appended (what a toolchain that does not build reproducibly
/// changes), so a new hash and the same behaviour.
fn rebuilt(bytes: &[u8], build: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b.extend_from_slice(&[0, 7, 5, b'b', b'u', b'i', b'l', b'd', build]);
    b
}

fn good() -> Vec<u8> {
    std::fs::read(wasm("fixture-good")).unwrap()
}

fn keygen(site: &Site, name: &str) -> (String, PathBuf) {
    let secret = site.path().join(name);
    site.ok(&["plugins", "keygen", "--out", secret.to_str().unwrap()]);
    let mut public = secret.clone().into_os_string();
    public.push(".pub");
    (secret.to_str().unwrap().to_string(), PathBuf::from(public))
}

#[test]
fn a_signed_build_with_the_same_requests_runs_without_a_new_approval() {
    let site = Site::new();
    let (vendor, vendor_pub) = keygen(&site, "vendor.key");
    // The secret is owner-only, and never overwritten.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&vendor).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = site.uphost(&["plugins", "keygen", "--out", &vendor]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(
        again.stderr.contains("never overwritten"),
        "{}",
        again.stderr
    );

    let v1 = site.signed(&good(), &vendor);
    site.install(&v1);
    site.ok(&["plugins", "approve", "good", "--yes"]);
    let r = site.ok(&[
        "plugins",
        "trust",
        "good",
        "--key",
        vendor_pub.to_str().unwrap(),
    ]);
    assert!(
        r.stdout.contains("now run without a new approval"),
        "{}",
        r.stdout
    );
    assert!(site.lock().contains("key: ed25519:"), "{}", site.lock());
    site.ok(&["run", "--yes"]);

    // The vendor's next build: same requests, signed.
    let v2 = site.signed(&rebuilt(&good(), 2), &vendor);
    site.install(&v2);
    let r = site.ok(&["run", "--yes"]);
    assert!(
        r.stderr.contains("new build") && r.stderr.contains("signed by its trusted vendor key"),
        "{}",
        r.stderr
    );
    assert!(site.lock().contains(&sha256(&v2)), "{}", site.lock());
    let r = site.ok(&["plugins", "list"]);
    assert!(r.stdout.contains("approved"), "{}", r.stdout);
}

#[test]
fn builds_not_signed_by_the_trusted_key_or_asking_for_more_are_stopped() {
    let site = Site::new();
    let (vendor, vendor_pub) = keygen(&site, "vendor.key");
    let (mallory, _) = keygen(&site, "mallory.key");
    site.install(&site.signed(&good(), &vendor));
    site.ok(&["plugins", "approve", "good", "--yes"]);
    site.ok(&[
        "plugins",
        "trust",
        "good",
        "--key",
        vendor_pub.to_str().unwrap(),
    ]);
    let approved = site.lock();

    let refused = |bytes: &[u8], needles: &[&str]| {
        site.install(bytes);
        let r = site.uphost(&["run", "--yes"]);
        assert_eq!(r.code, 2, "{}", r.all());
        for n in needles {
            assert!(r.stderr.contains(n), "`{n}` not in:\n{}", r.stderr);
        }
        assert!(r.stderr.contains("nothing was executed"), "{}", r.stderr);
        assert_eq!(site.lock(), approved, "the lock changed");
        assert!(
            !site.path().join("state/current").exists(),
            "a run was started"
        );
    };
    refused(
        &rebuilt(&good(), 3),
        &[
            "not signed by the vendor key its approval trusts",
            "it is unsigned",
        ],
    );
    refused(
        &site.signed(&rebuilt(&good(), 4), &mallory),
        &["it is signed by another key"],
    );
    // The build number changed after signing (the file still loads).
    let mut altered = site.signed(&rebuilt(&good(), 5), &vendor);
    let at = rebuilt(&good(), 5).len() - 1;
    altered[at] ^= 0x01;
    refused(&altered, &["does not verify"]);
    // The next release asks for one capability more: signed by the right
    // key, it still stops with the difference.
    refused(
        &site.signed(&std::fs::read(wasm("fixture-good-more")).unwrap(), &vendor),
        &[
            "requests capabilities its grant does not cover",
            "+ ",
            "touch",
        ],
    );
}

#[test]
fn without_a_trusted_key_the_hash_is_the_approval() {
    let site = Site::new();
    let (vendor, vendor_pub) = keygen(&site, "vendor.key");
    site.install(&site.signed(&good(), &vendor));
    site.ok(&["plugins", "approve", "good", "--yes"]);
    site.install(&site.signed(&rebuilt(&good(), 2), &vendor));
    let r = site.uphost(&["run", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("changed since it was approved"),
        "{}",
        r.stderr
    );
    // Trust needs the approved file, signed by that key.
    let trust = || {
        let r = site.uphost(&[
            "plugins",
            "trust",
            "good",
            "--key",
            vendor_pub.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 2, "{}", r.all());
        r
    };
    let r = trust();
    assert!(
        r.stderr.contains("not approved as it stands"),
        "{}",
        r.stderr
    );
    site.install(&good());
    site.ok(&["plugins", "approve", "good", "--yes"]);
    let r = trust();
    assert!(
        r.stderr.contains("is not signed by") && r.stderr.contains("unsigned"),
        "{}",
        r.stderr
    );
    let r = site.uphost(&["plugins", "trust", "good", "--key", "ed25519:xyz"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("not an uphost public key"),
        "{}",
        r.stderr
    );
}

/// A real OCI registry (Debian's `docker-registry`, the CNCF
/// distribution server) on a loopback port, its storage in a temporary
/// directory, stopped with the test.
struct Registry {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        if !uphost_tests::packages::present("/usr/bin/docker-registry") {
            panic!(
                "docker-registry is missing: `cargo xtask test` installs it (tests/debian-packages.txt)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry { child, dir, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        r
    }

    fn uri(&self, repo: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo}", self.port)
    }

    /// The stored blob with this digest (`sha256:HEX`).
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A vendor signs and pushes; the operator pulls from the real registry
/// (digest and signature checked), approves, trusts the key and runs; the
/// next signed release pulled runs without a new approval.
#[test]
fn a_signed_plugin_travels_through_a_real_registry() {
    let reg = Registry::start();
    let site = Site::new();
    let (vendor, vendor_pub) = keygen(&site, "vendor.key");
    let v1 = site.path().join("good-1.wasm");
    std::fs::write(&v1, site.signed(&good(), &vendor)).unwrap();
    let r = site.ok(&[
        "plugins",
        "push",
        v1.to_str().unwrap(),
        &reg.uri("vendor/good:1.0"),
    ]);
    assert!(r.stdout.contains("pushed"), "{}", r.stdout);
    let r = site.ok(&["plugins", "pull", &reg.uri("vendor/good:1.0")]);
    assert!(r.stdout.contains("signed by ed25519:"), "{}", r.stdout);
    assert_eq!(
        std::fs::read(site.path().join("plugins/good.wasm")).unwrap(),
        std::fs::read(&v1).unwrap()
    );
    site.ok(&["plugins", "approve", "good", "--yes"]);
    site.ok(&[
        "plugins",
        "trust",
        "good",
        "--key",
        vendor_pub.to_str().unwrap(),
    ]);
    site.ok(&["run", "--yes"]);
    // Release 1.1: pushed, pulled (the trusted key is required), runs.
    let v2 = site.path().join("good-2.wasm");
    std::fs::write(&v2, site.signed(&rebuilt(&good(), 2), &vendor)).unwrap();
    site.ok(&[
        "plugins",
        "push",
        v2.to_str().unwrap(),
        &reg.uri("vendor/good:1.1"),
    ]);
    site.ok(&["plugins", "pull", &reg.uri("vendor/good:1.1")]);
    let r = site.ok(&["run", "--yes"]);
    assert!(
        r.stderr.contains("signed by its trusted vendor key"),
        "{}",
        r.stderr
    );
}

/// A corrupted blob (wrong digest), an unsigned plugin, another vendor's
/// key and an unreachable registry: each a clear error, and the plugin
/// directory untouched.
#[test]
fn pulls_that_must_not_land_are_refused_and_write_nothing() {
    let reg = Registry::start();
    let site = Site::new();
    let (vendor, _) = keygen(&site, "vendor.key");
    let (other, other_pub) = keygen(&site, "other.key");
    let _ = other;
    let refused = |args: &[&str], needles: &[&str]| {
        let r = site.uphost(args);
        assert_ne!(r.code, 0, "{}", r.all());
        for n in needles {
            assert!(r.stderr.contains(n), "`{n}` not in:\n{}", r.stderr);
        }
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        assert!(
            !site.path().join("plugins/good.wasm").exists(),
            "a refused pull wrote the plugin"
        );
        r
    };
    // The registry's copy is altered after the push.
    let signed = site.path().join("good.wasm");
    std::fs::write(&signed, site.signed(&good(), &vendor)).unwrap();
    site.ok(&[
        "plugins",
        "push",
        signed.to_str().unwrap(),
        &reg.uri("vendor/good:1.0"),
    ]);
    let blob = reg.blob(&format!(
        "sha256:{}",
        sha256(&std::fs::read(&signed).unwrap())
    ));
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&blob, &bytes).unwrap();
    refused(
        &["plugins", "pull", &reg.uri("vendor/good:1.0")],
        &["does not match its digest", "nothing was written"],
    );
    // Unsigned.
    let unsigned = site.path().join("unsigned.wasm");
    std::fs::write(&unsigned, good()).unwrap();
    site.ok(&[
        "plugins",
        "push",
        unsigned.to_str().unwrap(),
        &reg.uri("vendor/good:0.9"),
    ]);
    refused(
        &["plugins", "pull", &reg.uri("vendor/good:0.9")],
        &["missing signature", "--allow-unsigned"],
    );
    // Signed by the vendor, but another key is required (another build:
    // the registry keeps one copy of a blob, the corrupted one above).
    let next = site.path().join("next.wasm");
    std::fs::write(&next, site.signed(&rebuilt(&good(), 7), &vendor)).unwrap();
    site.ok(&[
        "plugins",
        "push",
        next.to_str().unwrap(),
        &reg.uri("vendor/good:1.0.1"),
    ]);
    refused(
        &[
            "plugins",
            "pull",
            &reg.uri("vendor/good:1.0.1"),
            "--key",
            other_pub.to_str().unwrap(),
        ],
        &["not by the key required"],
    );
    // Nobody listens there.
    let r = refused(
        &["plugins", "pull", "oci://127.0.0.1:1/vendor/good:1.0"],
        &["cannot reach the registry 127.0.0.1:1"],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    // Not a reference at all.
    refused(
        &["plugins", "pull", "vendor/good:1.0"],
        &["not an OCI reference"],
    );
    // Unsigned, explicitly allowed: written, and said so.
    let r = site.ok(&[
        "plugins",
        "pull",
        &reg.uri("vendor/good:0.9"),
        "--allow-unsigned",
    ]);
    assert!(r.stdout.contains("UNSIGNED"), "{}", r.stdout);
}
