//! Plugins from OCI registries: `uphost plugins pull oci://REGISTRY/REPO:TAG`
//! and `push` for vendors, in the CNCF Wasm OCI artifact layout that wkg,
//! Istio's WasmPlugin and Kubewarden use (one `application/wasm` layer,
//! config `application/vnd.wasm.config.v0+json`). A pulled plugin is
//! written into the plugin directory only once its layer's digest matches
//! the manifest and its embedded vendor signature verifies (a trusted key
//! for that plugin, if the lock pins one, or the key given); approval is
//! still the operator's, as for any file there.
//!
//! The registry protocol is `oci-client`'s (maintained, the one wasmCloud
//! and Krustlet grew); its TLS is rustls with our `ring` provider. A
//! registry on a loopback address is spoken to over plain HTTP (as Docker
//! treats `localhost`), any other over HTTPS.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::capabilities::signing::{self, Signature};

/// The Wasm OCI artifact's layer media type.
pub const WASM_LAYER: &str = "application/wasm";
/// The Wasm OCI artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// Why a pull or push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// Not `oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:…`).
    #[error(
        "`{0}` is not an OCI reference: write oci://REGISTRY[:PORT]/REPOSITORY:TAG (or @sha256:DIGEST), e.g. oci://registry.example.com/vendor/galera:1.2.0"
    )]
    Reference(String),
    /// The registry did not answer.
    #[error(
        "cannot reach the registry {registry}: {detail}; check the address and port, and that it serves the OCI distribution API (/v2/)"
    )]
    Unreachable {
        /// host:port.
        registry: String,
        /// Why.
        detail: String,
    },
    /// The registry answered with an error.
    #[error("{reference}: the registry refused: {detail}")]
    Registry {
        /// What was asked for.
        reference: String,
        /// Its answer.
        detail: String,
    },
    /// Not a Wasm artifact (another media type, several layers, too big).
    #[error("{reference}: {detail}")]
    NotWasm {
        /// The reference.
        reference: String,
        /// What is wrong.
        detail: String,
    },
    /// The bytes served are not the ones the manifest names.
    #[error(
        "{reference}: the layer's content does not match its digest (manifest {expected}, content {found}): the registry's copy is corrupt or was tampered with; nothing was written"
    )]
    Digest {
        /// The reference.
        reference: String,
        /// The manifest's digest.
        expected: String,
        /// What the content hashes to.
        found: String,
    },
    /// No, a bad, or another key's signature.
    #[error("{reference}: {detail}; nothing was written")]
    Signature {
        /// The reference.
        reference: String,
        /// What is wrong, with the fix.
        detail: String,
    },
    /// A local file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A parsed `oci://` reference and the plugin file it becomes.
struct Target {
    reference: Reference,
    text: String,
    registry: String,
    name: String,
}

fn target(uri: &str) -> Result<Target, DistError> {
    let bad = || DistError::Reference(crate::untrusted::line(uri).into_owned());
    let rest = uri.strip_prefix("oci://").ok_or_else(bad)?;
    let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
    if registry.is_empty() || path.is_empty() || rest.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    let reference: Reference = rest.parse().map_err(|_| bad())?;
    let repo = reference.repository();
    let name = repo.rsplit('/').next().unwrap_or(repo).to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(bad());
    }
    Ok(Target {
        reference,
        text: uri.to_string(),
        registry: registry.to_string(),
        name,
    })
}

fn loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
        if p.parse::<u16>().is_ok() {
            h
        } else {
            registry
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

fn client(registry: &str) -> Client {
    // reqwest's rustls has no provider of its own here: ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if loopback(registry) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

/// An error from the client, sorted into unreachable and refused.
fn classify(t: &Target, e: oci_client::errors::OciDistributionError) -> DistError {
    let detail = format!("{e}");
    let chain = {
        let mut s = detail.clone();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s.push_str(": ");
            s.push_str(&x.to_string());
            src = x.source();
        }
        s
    };
    if chain.contains("error sending request")
        || chain.contains("Connection refused")
        || chain.contains("dns error")
        || chain.contains("connect")
    {
        DistError::Unreachable {
            registry: t.registry.clone(),
            detail: crate::untrusted::line_max(&chain, 300).into_owned(),
        }
    } else {
        DistError::Registry {
            reference: t.text.clone(),
            detail: crate::untrusted::line_max(&chain, 300).into_owned(),
        }
    }
}

/// A writer that refuses more than `cap` bytes (a registry that serves
/// more than its manifest said).
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() + data.len() > self.cap {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "more than the {} bytes the manifest announced",
                self.cap
            ))));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a pull wrote.
#[derive(Debug)]
pub struct Pulled {
    /// The plugin file.
    pub path: PathBuf,
    /// The layer's digest.
    pub digest: String,
    /// Who signed it (`None`: unsigned, allowed).
    pub signer: Option<String>,
}

/// What a pull requires of the signature.
#[derive(Debug, Clone)]
pub enum SignaturePolicy {
    /// Signed by this key (`ed25519:HEX`).
    Key(String),
    /// Signed, by any key (shown to the operator).
    AnyKey,
    /// Also unsigned (`--allow-unsigned`).
    Unsigned,
}

/// Pull `uri` into `plugins_dir` as `NAME.wasm` (NAME: the repository's
/// last segment), at most `max_bytes`.
pub async fn pull(
    uri: &str,
    plugins_dir: &Path,
    max_bytes: u64,
    policy: impl FnOnce(&str) -> SignaturePolicy,
) -> Result<Pulled, DistError> {
    let t = target(uri)?;
    let c = client(&t.registry);
    let auth = RegistryAuth::Anonymous;
    let (manifest, _) = c
        .pull_image_manifest(&t.reference, &auth)
        .await
        .map_err(|e| classify(&t, e))?;
    let not_wasm = |detail: String| DistError::NotWasm {
        reference: t.text.clone(),
        detail,
    };
    if manifest.config.media_type != WASM_CONFIG {
        return Err(not_wasm(format!(
            "not a Wasm artifact: its config is `{}`, not `{WASM_CONFIG}` (push plugins with `uphost plugins push` or `wkg oci push`)",
            crate::untrusted::line_max(&manifest.config.media_type, 100)
        )));
    }
    let layer = match manifest.layers.as_slice() {
        [l] if l.media_type == WASM_LAYER => l.clone(),
        _ => {
            return Err(not_wasm(format!(
                "a Wasm artifact has exactly one `{WASM_LAYER}` layer; this one has {}",
                manifest.layers.len()
            )));
        }
    };
    if layer.size < 0 || layer.size as u64 > max_bytes {
        return Err(not_wasm(format!(
            "its layer is {} bytes, over the {max_bytes} byte cap on a plugin file (`plugin_max_mb:` in uphost.yaml)",
            layer.size
        )));
    }
    let mut out = Capped {
        buf: Vec::with_capacity(layer.size as usize),
        cap: layer.size as usize,
    };
    if let Err(e) = c.pull_blob(&t.reference, &layer, &mut out).await {
        let found = format!("sha256:{}", hex::encode(Sha256::digest(&out.buf)));
        return Err(match e {
            oci_client::errors::OciDistributionError::DigestError(_) => DistError::Digest {
                reference: t.text.clone(),
                expected: layer.digest.clone(),
                found,
            },
            e => classify(&t, e),
        });
    }
    let bytes = out.buf;
    // Whatever the client checked, the bytes written are the manifest's.
    let found = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if found != layer.digest {
        return Err(DistError::Digest {
            reference: t.text.clone(),
            expected: crate::untrusted::line_max(&layer.digest, 80).into_owned(),
            found,
        });
    }
    let signer = match (policy(&t.name), signing::signature(&bytes)) {
        (SignaturePolicy::Key(k), Signature::Valid { key }) if key == k => Some(key),
        (SignaturePolicy::AnyKey | SignaturePolicy::Unsigned, Signature::Valid { key }) => {
            Some(key)
        }
        (SignaturePolicy::Unsigned, Signature::Unsigned) => None,
        (policy, sig) => {
            return Err(DistError::Signature {
                reference: t.text.clone(),
                detail: match (&policy, &sig) {
                    (_, Signature::Unsigned) => format!(
                        "the plugin is not signed (a missing signature): ask its vendor for a signed release{}",
                        if matches!(policy, SignaturePolicy::Key(_)) {
                            ""
                        } else {
                            ", or pass --allow-unsigned to review it yourself"
                        }
                    ),
                    (SignaturePolicy::Key(k), Signature::Valid { key }) => format!(
                        "it is signed by {key} (id {}), not by the key required, {k} (id {})",
                        signing::key_id(key),
                        signing::key_id(k)
                    ),
                    (_, Signature::Invalid(why)) => {
                        format!("its signature is bad: {}", crate::untrusted::line(why))
                    }
                    _ => "its signature does not satisfy the policy".into(),
                },
            });
        }
    };
    // A plugin file, not anything: a component that decodes.
    crate::loading::inspect::declared(&bytes)
        .map_err(|e| not_wasm(format!("its layer is not a WebAssembly component: {e}")))?;
    if bytes.len() < 8 || bytes[4..8] != [0x0d, 0, 1, 0] {
        return Err(not_wasm(
            "its layer is not a WebAssembly component (a core module, or no wasm at all)".into(),
        ));
    }
    let file = format!("{}.wasm", t.name);
    let path = plugins_dir.join(&file);
    let io = |source| DistError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(plugins_dir).map_err(io)?;
    let dir = cap_std::fs::Dir::open_ambient_dir(plugins_dir, cap_std::ambient_authority())
        .map_err(io)?;
    let tmp = format!(".{file}.pulling");
    dir.write(&tmp, &bytes)
        .and_then(|()| dir.rename(&tmp, &dir, &file))
        .map_err(|e| {
            let _ = dir.remove_file(&tmp);
            io(e)
        })?;
    Ok(Pulled {
        path,
        digest: found,
        signer,
    })
}

/// Push the plugin `file` to `uri` as a Wasm OCI artifact; the manifest's
/// digest.
pub async fn push(file: &Path, uri: &str) -> Result<String, DistError> {
    let t = target(uri)?;
    let bytes = std::fs::read(file).map_err(|source| DistError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let declared = crate::loading::inspect::declared(&bytes).map_err(|e| DistError::NotWasm {
        reference: file.display().to_string(),
        detail: format!("not a WebAssembly component: {e}"),
    })?;
    if bytes.len() < 8 || bytes[4..8] != [0x0d, 0, 1, 0] {
        return Err(DistError::NotWasm {
            reference: file.display().to_string(),
            detail: "not a WebAssembly component (build it for wasm32-wasip2)".into(),
        });
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    // The Wasm OCI artifact's config (CNCF TAG Runtime's layout).
    let config = serde_json::json!({
        "created": crate::events::now_rfc3339(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest],
        "component": {"imports": declared.imports, "exports": ["uphost:plugin/plugin"]},
    });
    let layers = [ImageLayer::new(bytes, WASM_LAYER.to_string(), None)];
    let config = Config::new(
        serde_json::to_vec(&config).expect("json"),
        WASM_CONFIG.to_string(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let c = client(&t.registry);
    let r = c
        .push(
            &t.reference,
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .map_err(|e| classify(&t, e))?;
    Ok(r.manifest_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_or_refused_with_the_form() {
        let t = target("oci://127.0.0.1:5000/vendor/galera:1.2.0").unwrap();
        assert_eq!(t.name, "galera");
        assert_eq!(t.registry, "127.0.0.1:5000");
        assert!(loopback(&t.registry));
        assert!(!loopback("registry.example.com"));
        assert!(loopback("localhost:5000"));
        for bad in [
            "galera:1",
            "oci://",
            "oci://host",
            "oci://host/Bad Name:1",
            "http://h/x:1",
        ] {
            let e = target(bad).err().expect(bad).to_string();
            assert!(e.contains("oci://REGISTRY"), "{e}");
        }
    }
}
