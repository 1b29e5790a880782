//! Vendor signatures on plugin files: Ed25519 (ring, already the TLS
//! provider here), embedded as the file's last custom section
//! (`uphost-signature`), so a signed plugin stays one `.wasm` that loads
//! anywhere (a custom section means nothing to the component model). The
//! signature covers the sha256 of every byte before that section.
//!
//! A lock entry may pin a vendor key (`uphost plugins trust`): a new build
//! of that plugin signed by that key, whose requests its grant covers,
//! runs without a new approval; unsigned or signed by another key, it is
//! refused. Without a pinned key the file's hash is the approval, as
//! before.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

/// The custom section's name.
pub const SECTION: &str = "uphost-signature";
/// What the signature is over: this, then the content's sha256.
const DOMAIN: &[u8] = b"uphost-plugin-signature-v1\0";
/// The first line of a secret key file.
const SECRET_HEADER: &str = "uphost ed25519 secret key (keep it private)";

/// What a plugin file's signature says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// No signature section.
    Unsigned,
    /// Signed, and the signature verifies against the key it names.
    Valid {
        /// `ed25519:HEX`.
        key: String,
    },
    /// A signature section that does not verify (bytes changed after
    /// signing, a forged or truncated section).
    Invalid(String),
}

/// Signing and key problems.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Not a key file this uphost wrote.
    #[error("{0}")]
    Key(String),
    /// The file is not a WebAssembly component or module.
    #[error("{0}")]
    NotWasm(String),
}

/// A new key pair: (secret key file text, public key `ed25519:HEX`).
pub fn keygen() -> Result<(String, String), SignError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| SignError::Key("the system random generator failed".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| SignError::Key("ring produced an unreadable key".into()))?;
    Ok((
        format!("{SECRET_HEADER}\n{}\n", hex::encode(pkcs8.as_ref())),
        public_text(pair.public_key().as_ref()),
    ))
}

fn public_text(bytes: &[u8]) -> String {
    format!("ed25519:{}", hex::encode(bytes))
}

/// A short name for a key (its hash's first 16 hex digits).
pub fn key_id(public: &str) -> String {
    hex::encode(Sha256::digest(public.as_bytes()))[..16].to_string()
}

/// Read a public key (`ed25519:` and 64 hex digits), as given or from the
/// file `text` was read from.
pub fn parse_public(text: &str) -> Result<String, SignError> {
    let t = text.trim();
    match t.strip_prefix("ed25519:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(t.to_ascii_lowercase())
        }
        _ => Err(SignError::Key(
            "not an uphost public key: expected `ed25519:` and 64 hex digits (the .pub file `uphost plugins keygen` wrote)".into(),
        )),
    }
}

fn secret_pair(text: &str) -> Result<Ed25519KeyPair, SignError> {
    let mut lines = text.lines();
    let bad = || {
        SignError::Key(
            "not an uphost secret key file (the one `uphost plugins keygen` wrote, not its .pub)"
                .into(),
        )
    };
    if lines.next() != Some(SECRET_HEADER) {
        return Err(bad());
    }
    let der = hex::decode(lines.next().unwrap_or("").trim()).map_err(|_| bad())?;
    Ed25519KeyPair::from_pkcs8(&der).map_err(|_| bad())
}

/// The public key of a secret key file's text.
pub fn public_of_secret(text: &str) -> Result<String, SignError> {
    Ok(public_text(secret_pair(text)?.public_key().as_ref()))
}

/// A top-level section: (start offset, end offset, custom section name).
fn sections(bytes: &[u8]) -> Result<Vec<(usize, usize, Option<String>)>, String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file".into());
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let (size, n) = leb_u32(&bytes[pos..]).ok_or("a section size does not decode")?;
        pos += n;
        let end = pos
            .checked_add(size as usize)
            .filter(|e| *e <= bytes.len())
            .ok_or("a section runs past the end of the file")?;
        let name = if id == 0 {
            let (len, n) =
                leb_u32(&bytes[pos..end]).ok_or("a custom section name does not decode")?;
            let from = pos + n;
            let to = from
                .checked_add(len as usize)
                .filter(|t| *t <= end)
                .ok_or("a custom section name runs past its section")?;
            Some(String::from_utf8_lossy(&bytes[from..to]).into_owned())
        } else {
            None
        };
        out.push((start, end, name));
        pos = end;
    }
    Ok(out)
}

fn leb_u32(b: &[u8]) -> Option<(u32, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().take(5).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u32::try_from(v).ok().map(|v| (v, i + 1));
        }
    }
    None
}

fn leb(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The bytes before our signature section (all of them when unsigned),
/// and the section's payload.
fn split(bytes: &[u8]) -> Result<(&[u8], Option<&[u8]>), String> {
    let secs = sections(bytes)?;
    let ours: Vec<usize> = secs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.2.as_deref() == Some(SECTION))
        .map(|(i, _)| i)
        .collect();
    match ours.as_slice() {
        [] => Ok((bytes, None)),
        [i] if *i == secs.len() - 1 => {
            let (start, end, _) = secs[*i];
            // The payload follows the name.
            let (len, n) = leb_u32(&bytes[start + 1..]).ok_or("bad size")?;
            let _ = len;
            let body = start + 1 + n;
            let (name_len, m) = leb_u32(&bytes[body..end]).ok_or("bad name")?;
            Ok((
                &bytes[..start],
                Some(&bytes[body + m + name_len as usize..end]),
            ))
        }
        [_] => Err(format!(
            "its `{SECTION}` section is not the last one: bytes were added after it was signed"
        )),
        _ => Err(format!("it has more than one `{SECTION}` section")),
    }
}

fn message(content: &[u8]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&Sha256::digest(content));
    m
}

/// Sign `bytes` with the secret key file's text: the file with any
/// previous uphost signature replaced by a new one.
pub fn sign(bytes: &[u8], secret: &str) -> Result<Vec<u8>, SignError> {
    let pair = secret_pair(secret)?;
    let (content, _) = split(bytes).map_err(SignError::NotWasm)?;
    let sig = pair.sign(&message(content));
    let payload = format!(
        "uphost-signature v1\nkey {}\nsig {}\n",
        public_text(pair.public_key().as_ref()),
        hex::encode(sig.as_ref())
    );
    let mut body = Vec::new();
    leb(SECTION.len(), &mut body);
    body.extend_from_slice(SECTION.as_bytes());
    body.extend_from_slice(payload.as_bytes());
    let mut out = content.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Read and check a file's signature.
pub fn signature(bytes: &[u8]) -> Signature {
    let (content, payload) = match split(bytes) {
        Ok(x) => x,
        Err(e) => return Signature::Invalid(e),
    };
    let Some(payload) = payload else {
        return Signature::Unsigned;
    };
    let text = String::from_utf8_lossy(payload);
    let mut lines = text.lines();
    let (Some("uphost-signature v1"), Some(key), Some(sig)) = (
        lines.next(),
        lines.next().and_then(|l| l.strip_prefix("key ")),
        lines.next().and_then(|l| l.strip_prefix("sig ")),
    ) else {
        return Signature::Invalid("its signature section is not one uphost wrote".into());
    };
    let Ok(key) = parse_public(key) else {
        return Signature::Invalid("its signature names no valid key".into());
    };
    let (Ok(pk), Ok(sig)) = (hex::decode(&key["ed25519:".len()..]), hex::decode(sig)) else {
        return Signature::Invalid("its signature does not decode".into());
    };
    match UnparsedPublicKey::new(&ED25519, pk).verify(&message(content), &sig) {
        Ok(()) => Signature::Valid { key },
        Err(_) => Signature::Invalid(format!(
            "its signature by {key} does not verify: the file changed after it was signed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal component: the header and one custom section.
    fn component() -> Vec<u8> {
        let mut b = b"\0asm\x0d\0\x01\0".to_vec();
        b.extend_from_slice(&[0, 4, 3, b'a', b'b', b'c']);
        b
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let (secret, public) = keygen().unwrap();
        assert_eq!(public_of_secret(&secret).unwrap(), public);
        let signed = sign(&component(), &secret).unwrap();
        assert_eq!(
            signature(&signed),
            Signature::Valid {
                key: public.clone()
            }
        );
        assert_eq!(signature(&component()), Signature::Unsigned);
        // Re-signing replaces, never stacks.
        let again = sign(&signed, &secret).unwrap();
        assert_eq!(again.len(), signed.len());
        // A byte of the content changed.
        let mut bad = signed.clone();
        bad[12] ^= 1;
        assert!(matches!(signature(&bad), Signature::Invalid(e) if e.contains("does not verify")));
        // Bytes appended after the signature.
        let mut appended = signed.clone();
        appended.extend_from_slice(&[0, 4, 3, b'x', b'y', b'z']);
        assert!(
            matches!(signature(&appended), Signature::Invalid(e) if e.contains("not the last"))
        );
        // Another key's signature is valid, but names that key.
        let (other, other_pub) = keygen().unwrap();
        assert_eq!(
            signature(&sign(&signed, &other).unwrap()),
            Signature::Valid { key: other_pub }
        );
    }

    #[test]
    fn keys_that_are_not_ours_are_refused() {
        assert!(parse_public("ed25519:abc").is_err());
        assert!(parse_public(&format!("ed25519:{}", "0".repeat(64))).is_ok());
        let (_, public) = keygen().unwrap();
        assert!(public_of_secret(&public).is_err());
        assert!(sign(b"not wasm at all", &keygen().unwrap().0).is_err());
    }
}
