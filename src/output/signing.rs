//! Signed commit records (`[output] signing_key_env`): an OpenSSH Ed25519 key signs each
//! `commits/{run}.json` as an SSHSIG signature, `commits/{run}.json.sig`, which the standard
//! tool checks: `ssh-keygen -Y verify -n jumio-export -I … -f allowed_signers -s R.json.sig < R.json`.
//! Every hash of the dataset lives beside the data it protects; the signature is what someone
//! who can rewrite the files cannot recompute without the private key.
//!
//! Only what the job needs of the formats (PROTOCOL.sshsig and PROTOCOL.key of OpenSSH): an
//! unencrypted `openssh-key-v1` private key of type `ssh-ed25519`, the `ssh-ed25519` public-key
//! line, armoured signatures with SHA-512 message hashes. The Ed25519 arithmetic is ring's (in
//! the tree already, through rustls). Nothing here prints key material: errors name the
//! variable or file, never their content.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

/// The SSHSIG namespace of commit signatures (`ssh-keygen -Y verify -n jumio-export`).
pub const NAMESPACE: &str = "jumio-export";
/// The key type this module signs and verifies with.
const KEY_TYPE: &str = "ssh-ed25519";
/// The message hash of the signatures written.
const HASH_ALG: &str = "sha512";
const MAGIC: &[u8] = b"SSHSIG";
const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// Why a key or a signature cannot be used. Never holds key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// Not a key of the supported form.
    #[error("{0}")]
    Key(String),
    /// A signature that does not parse or does not verify.
    #[error("{0}")]
    Signature(String),
}

/// The private key commits are signed with. `Debug` prints only the public key.
pub struct CommitSigner {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for CommitSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitSigner({})", self.public_key())
    }
}

/// A public key commit signatures are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct CommitPublicKey {
    key: [u8; 32],
}

impl fmt::Display for CommitPublicKey {
    /// The OpenSSH public-key line (`ssh-ed25519 AAAA…`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blob = public_blob(&self.key);
        write!(
            f,
            "{KEY_TYPE} {}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }
}

impl fmt::Debug for CommitPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitPublicKey({self})")
    }
}

impl CommitSigner {
    /// Parses an unencrypted OpenSSH Ed25519 private key (`-----BEGIN OPENSSH PRIVATE KEY-----`,
    /// what `ssh-keygen -t ed25519 -N ''` writes).
    pub fn from_openssh(text: &str) -> Result<Self, SigningError> {
        let bad =
            |why: &str| SigningError::Key(format!("not an OpenSSH Ed25519 private key: {why}"));
        let body: String = text
            .trim()
            .strip_prefix("-----BEGIN OPENSSH PRIVATE KEY-----")
            .and_then(|t| t.strip_suffix("-----END OPENSSH PRIVATE KEY-----"))
            .ok_or_else(|| bad("no BEGIN/END OPENSSH PRIVATE KEY lines"))?
            .split_whitespace()
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| bad("its body is not base64"))?;
        let mut r = Reader(&bytes);
        if r.take(15) != Some(b"openssh-key-v1\0") {
            return Err(bad("no openssh-key-v1 header"));
        }
        let (cipher, kdf) = (r.string(), r.string());
        if cipher != Some(b"none") || kdf != Some(b"none") {
            return Err(bad(
                "it is encrypted with a passphrase (the variable must hold an unencrypted key)",
            ));
        }
        r.string().ok_or_else(|| bad("truncated"))?; // kdf options
        if r.u32() != Some(1) {
            return Err(bad("it must hold exactly one key"));
        }
        r.string().ok_or_else(|| bad("truncated"))?; // the public key, again below
        let private = r.string().ok_or_else(|| bad("truncated"))?;
        let mut p = Reader(private);
        let (check1, check2) = (p.u32(), p.u32());
        if check1.is_none() || check1 != check2 {
            return Err(bad("its check bytes differ"));
        }
        if p.string() != Some(KEY_TYPE.as_bytes()) {
            return Err(bad("only ssh-ed25519 keys are supported"));
        }
        let public = p
            .string()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| bad("truncated"))?;
        let secret = p
            .string()
            .filter(|k| k.len() == 64)
            .ok_or_else(|| bad("truncated"))?;
        let pair = Ed25519KeyPair::from_seed_and_public_key(&secret[..32], public)
            .map_err(|_| bad("its private and public halves do not match"))?;
        Ok(CommitSigner { pair })
    }

    /// The environment variable `var` holds the key; errors name the variable, not the value.
    pub fn from_env(var: &str) -> Result<Self, SigningError> {
        let text = std::env::var(var).map_err(|_| {
            SigningError::Key(format!(
                "{var} is not set (it must hold the OpenSSH Ed25519 private key that signs commits)"
            ))
        })?;
        Self::from_openssh(&text).map_err(|e| SigningError::Key(format!("{var}: {e}")))
    }

    /// The public half.
    pub fn public_key(&self) -> CommitPublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        CommitPublicKey { key }
    }

    /// The armoured SSHSIG signature of `message` in [`NAMESPACE`].
    pub fn sign(&self, message: &[u8]) -> String {
        let sig = self.pair.sign(&signed_data(HASH_ALG, message));
        let mut blob = Vec::new();
        blob.extend_from_slice(MAGIC);
        blob.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut blob, &public_blob(&self.public_key().key));
        put_string(&mut blob, NAMESPACE.as_bytes());
        put_string(&mut blob, b"");
        put_string(&mut blob, HASH_ALG.as_bytes());
        let mut sig_blob = Vec::new();
        put_string(&mut sig_blob, KEY_TYPE.as_bytes());
        put_string(&mut sig_blob, sig.as_ref());
        put_string(&mut blob, &sig_blob);
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        let mut out = format!("{BEGIN}\n");
        for line in b64.as_bytes().chunks(70) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
        out
    }
}

impl CommitPublicKey {
    /// Parses an OpenSSH public-key line (`ssh-ed25519 AAAA… comment`, as in `key.pub`), or an
    /// allowed-signers line whose key is one (`principal ssh-ed25519 AAAA…`).
    pub fn from_openssh(text: &str) -> Result<Self, SigningError> {
        let bad = |why: &str| SigningError::Key(format!("not an ssh-ed25519 public key: {why}"));
        let mut words = text.split_whitespace();
        let b64 = loop {
            match words.next() {
                Some(KEY_TYPE) => {
                    break words.next().ok_or_else(|| bad("no key after its type"))?;
                }
                Some(_) => continue,
                None => return Err(bad("no ssh-ed25519 key on the line")),
            }
        };
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("not base64"))?;
        parse_public_blob(&blob).ok_or_else(|| bad("malformed"))
    }

    /// Reads the first key of the file at `path`.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SigningError::Key(format!("{}: {e}", path.display())))?;
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .unwrap_or("");
        Self::from_openssh(line).map_err(|e| SigningError::Key(format!("{}: {e}", path.display())))
    }

    /// Checks an armoured SSHSIG `signature` of `message` in [`NAMESPACE`] by this key.
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), SigningError> {
        let bad = |why: &str| SigningError::Signature(why.to_string());
        let body: String = signature
            .trim()
            .strip_prefix(BEGIN)
            .and_then(|t| t.strip_suffix(END))
            .ok_or_else(|| bad("not an armoured SSH signature"))?
            .split_whitespace()
            .collect();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| bad("its body is not base64"))?;
        let mut r = Reader(&blob);
        if r.take(6) != Some(MAGIC) || r.u32() != Some(1) {
            return Err(bad("not an SSHSIG version 1 signature"));
        }
        let signer = r
            .string()
            .and_then(parse_public_blob)
            .ok_or_else(|| bad("malformed public key"))?;
        if signer != *self {
            return Err(bad("made by another key"));
        }
        if r.string() != Some(NAMESPACE.as_bytes()) {
            return Err(bad("of another namespace"));
        }
        r.string().ok_or_else(|| bad("truncated"))?; // reserved
        let hash_alg = r.string().ok_or_else(|| bad("truncated"))?;
        let hash_alg = match hash_alg {
            b"sha512" => "sha512",
            b"sha256" => "sha256",
            _ => return Err(bad("of an unknown hash algorithm")),
        };
        let mut s = Reader(r.string().ok_or_else(|| bad("truncated"))?);
        if s.string() != Some(KEY_TYPE.as_bytes()) {
            return Err(bad("not an ssh-ed25519 signature"));
        }
        let sig = s.string().ok_or_else(|| bad("truncated"))?;
        UnparsedPublicKey::new(&signature::ED25519, &self.key)
            .verify(&signed_data(hash_alg, message), sig)
            .map_err(|_| bad("does not match the file: it was changed after it was signed"))
    }
}

/// `commits/{run}.json.sig` under `root`.
pub fn signature_path(root: &Path, run: &str) -> std::path::PathBuf {
    root.join(crate::dataset::COMMITS_DIR)
        .join(format!("{run}.json.sig"))
}

/// Writes the signature of commit `run` (create-if-absent), before the commit itself: a commit
/// is never published unsigned when signing is on.
pub fn write_signature(
    root: &Path,
    run: &str,
    signature: &str,
    modes: crate::output::fsmode::Modes,
) -> std::io::Result<()> {
    use crate::dataset::publish::{Published, write_no_replace};
    let dir = root.join(crate::dataset::COMMITS_DIR);
    modes.create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{run}.json.sig.tmp"));
    match write_no_replace(
        &tmp,
        &signature_path(root, run),
        signature.as_bytes(),
        modes,
    )? {
        Published::Created => Ok(()),
        Published::AlreadyThere => Err(std::io::Error::other(format!(
            "commits/{run}.json.sig already exists"
        ))),
    }
}

/// What SSHSIG signs: the magic, the namespace, the hash algorithm and the message's hash.
fn signed_data(hash_alg: &str, message: &[u8]) -> Vec<u8> {
    let digest = match hash_alg {
        "sha256" => ring::digest::digest(&ring::digest::SHA256, message),
        _ => ring::digest::digest(&ring::digest::SHA512, message),
    };
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_string(&mut out, NAMESPACE.as_bytes());
    put_string(&mut out, b"");
    put_string(&mut out, hash_alg.as_bytes());
    put_string(&mut out, digest.as_ref());
    out
}

fn public_blob(key: &[u8; 32]) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, KEY_TYPE.as_bytes());
    put_string(&mut blob, key);
    blob
}

fn parse_public_blob(blob: &[u8]) -> Option<CommitPublicKey> {
    let mut r = Reader(blob);
    if r.string()? != KEY_TYPE.as_bytes() {
        return None;
    }
    let key: [u8; 32] = r.string()?.try_into().ok()?;
    Some(CommitPublicKey { key })
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("SSH strings here are short");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The SSH wire format's `uint32` and `string`, over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ed25519 -N '' -C test` output: a throw-away key made for this test only.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBvYCgnMHFdI3BdoAHzCZrYJxWl3DDq3CAvqjC+7Pir5gAAAIgZ0fgzGdH4
MwAAAAtzc2gtZWQyNTUxOQAAACBvYCgnMHFdI3BdoAHzCZrYJxWl3DDq3CAvqjC+7Pir5g
AAAEChrG8qXRHMFLW1pmegXL+itJ2gh+Rp1r0AsAWObi68AG9gKCcwcV0jcF2gAfMJmtgn
FaXcMOrcIC+qML7s+KvmAAAABHRlc3QB
-----END OPENSSH PRIVATE KEY-----";
    /// Its `.pub`.
    const PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG9gKCcwcV0jcF2gAfMJmtgnFaXcMOrcIC+qML7s+Kvm test";

    #[test]
    fn a_signature_verifies_with_the_public_key_and_not_after_a_change() {
        let signer = CommitSigner::from_openssh(KEY).unwrap();
        let public = CommitPublicKey::from_openssh(PUB).unwrap();
        assert_eq!(public, signer.public_key());
        assert_eq!(
            CommitPublicKey::from_openssh(&format!("auditor@example.com {PUB}")).unwrap(),
            public,
            "an allowed_signers line"
        );
        let sig = signer.sign(b"{\"run\": 1}\n");
        assert!(sig.starts_with(BEGIN) && sig.trim_end().ends_with(END));
        public.verify(b"{\"run\": 1}\n", &sig).unwrap();
        assert!(public.verify(b"{\"run\": 2}\n", &sig).is_err());
        let other = CommitPublicKey { key: [7; 32] };
        assert_eq!(
            other.verify(b"{\"run\": 1}\n", &sig),
            Err(SigningError::Signature("made by another key".into()))
        );
        assert!(!format!("{signer:?}").contains("BEGIN"));
    }

    #[test]
    fn keys_that_are_not_unencrypted_ed25519_are_refused_without_echoing_them() {
        for text in [
            "",
            "ssh-ed25519 AAAA",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nQUJD\n-----END OPENSSH PRIVATE KEY-----",
        ] {
            let e = CommitSigner::from_openssh(text).unwrap_err().to_string();
            assert!(e.starts_with("not an OpenSSH Ed25519 private key"), "{e}");
            assert!(text.is_empty() || !e.contains(text), "{e}");
        }
    }
}
