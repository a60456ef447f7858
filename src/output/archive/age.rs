//! Public-key encryption of archives (`[output] age_recipients`): the finished ZIP is encrypted
//! to every recipient with [age](https://age-encryption.org) and published as
//! `archives/{reference}.zip.age`. The exporting machine holds no identity, so it cannot read an
//! archive back once the plaintext temporary is gone; `verify` and resume work on the
//! ciphertext's sha256 (the tables' `archive_sha256` and the commit's root hash cover it).
//!
//! Recipients are age X25519 keys (`age1…`) and SSH public keys (`ssh-ed25519 …`,
//! `ssh-rsa …`). Errors name the recipient by its index only: a key is not secret, but a
//! message never echoes more of a job file than it needs to.
//!
//! Blocking code (file I/O); the encryption streams in 64 KiB chunks, so no archive is ever
//! held in memory.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::super::fsmode::Modes;

/// The suffix an age archive adds to the ZIP's name: `archives/{reference}.zip.age`.
pub const AGE_SUFFIX: &str = ".age";

/// The recipients every archive is encrypted to. Cheap to clone.
#[derive(Clone)]
pub struct AgeRecipients(Arc<Vec<Box<dyn age::Recipient + Send + Sync>>>);

impl std::fmt::Debug for AgeRecipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeRecipients({} keys)", self.0.len())
    }
}

/// One recipient that does not parse: its index in the list and why (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecipient {
    /// Position in `age_recipients`, from 0.
    pub index: usize,
    /// Why, in words that name no part of the key.
    pub reason: &'static str,
}

/// Parses one recipient: an age X25519 public key or an SSH public key.
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send + Sync>, &'static str> {
    let text = text.trim();
    if text.starts_with("age1") {
        return age::x25519::Recipient::from_str(text)
            .map(|r| Box::new(r) as Box<dyn age::Recipient + Send + Sync>)
            .map_err(|_| "not a valid age X25519 public key (age1…)");
    }
    if text.starts_with("ssh-") {
        return match age::ssh::Recipient::from_str(text) {
            Ok(r) => Ok(Box::new(r)),
            Err(age::ssh::ParseRecipientKeyError::Unsupported(_)) => {
                Err("an SSH key of a type age does not encrypt to (use ssh-ed25519 or ssh-rsa)")
            }
            Err(age::ssh::ParseRecipientKeyError::RsaModulusTooSmall) => {
                Err("an ssh-rsa key shorter than 2048 bits")
            }
            Err(_) => Err("not a valid SSH public key (ssh-ed25519 AAAA… or ssh-rsa AAAA…)"),
        };
    }
    Err("not an age public key (age1…) or an SSH public key (ssh-ed25519 …, ssh-rsa …)")
}

impl AgeRecipients {
    /// Parses every recipient; the first that does not parse is the error. An empty list is an
    /// error at index 0.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, BadRecipient> {
        if list.is_empty() {
            return Err(BadRecipient {
                index: 0,
                reason: "the list is empty: give at least one recipient",
            });
        }
        let mut keys = Vec::with_capacity(list.len());
        for (index, text) in list.iter().enumerate() {
            keys.push(
                parse_recipient(text.as_ref()).map_err(|reason| BadRecipient { index, reason })?,
            );
        }
        Ok(AgeRecipients(Arc::new(keys)))
    }

    /// How many recipients.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true (an empty list does not parse).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Encrypts the file at `plain` into a new file `dest` (created exclusively with `modes`),
    /// streamed, then fsyncs it. Returns the ciphertext's sha256 (hex) and size. On error `dest`
    /// is removed.
    pub fn encrypt_file(
        &self,
        plain: &Path,
        dest: &Path,
        modes: Modes,
    ) -> io::Result<(String, u64)> {
        let out = modes.create_file(dest)?;
        let result = self.encrypt_into(plain, out);
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    fn encrypt_into(&self, plain: &Path, out: File) -> io::Result<(String, u64)> {
        let encryptor = age::Encryptor::with_recipients(
            self.0.iter().map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(io::Error::other)?;
        let hashed = HashingWriter {
            inner: BufWriter::with_capacity(64 * 1024, out),
            sha256: Sha256::new(),
            bytes: 0,
        };
        let mut writer = encryptor.wrap_output(hashed)?;
        let mut input = BufReader::with_capacity(64 * 1024, File::open(plain)?);
        io::copy(&mut input, &mut writer)?;
        let hashed = writer.finish()?;
        let HashingWriter {
            inner,
            sha256,
            bytes,
        } = hashed;
        let file = inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((hex::encode(sha256.finalize()), bytes))
    }
}

/// Passes bytes on and hashes them: the ciphertext's sha256 without reading the file back.
struct HashingWriter<W> {
    inner: W,
    sha256: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The identities that open age archives (`verify --age-identity-env`): an age identity file's
/// text (`AGE-SECRET-KEY-1…` lines, `#` comments) or an unencrypted OpenSSH private key. Never
/// printed.
pub struct AgeIdentities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl std::fmt::Debug for AgeIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgeIdentities(<redacted>)")
    }
}

impl AgeIdentities {
    /// Parses `text`; the error says what is wrong without quoting it.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return match age::ssh::Identity::from_buffer(text.as_bytes(), None) {
                Ok(age::ssh::Identity::Unencrypted(key)) => Ok(AgeIdentities(vec![Box::new(
                    age::ssh::Identity::Unencrypted(key),
                )])),
                Ok(age::ssh::Identity::Encrypted(_)) => {
                    Err("an SSH private key protected by a passphrase (give an unencrypted one)")
                }
                Ok(_) => Err("an SSH private key of a type age does not decrypt with"),
                Err(_) => Err("not a readable OpenSSH private key"),
            };
        }
        let mut keys: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match age::x25519::Identity::from_str(line) {
                Ok(k) => keys.push(Box::new(k)),
                Err(_) => return Err("a line that is not an age identity (AGE-SECRET-KEY-1…)"),
            }
        }
        if keys.is_empty() {
            return Err("no identity in it");
        }
        Ok(AgeIdentities(keys))
    }

    /// Decrypts the age file at `path` into a new file `dest` (created exclusively with
    /// `modes`), streamed. On error `dest` is removed.
    pub fn decrypt_file(&self, path: &Path, dest: &Path, modes: Modes) -> io::Result<()> {
        let input = BufReader::with_capacity(64 * 1024, File::open(path)?);
        let decryptor = age::Decryptor::new_buffered(input).map_err(io::Error::other)?;
        let mut reader = decryptor
            .decrypt(self.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(io::Error::other)?;
        let mut out = BufWriter::with_capacity(64 * 1024, modes.create_file(dest)?);
        let copied = io::copy(&mut reader, &mut out).and_then(|_| out.flush());
        if copied.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        copied
    }
}

/// sha256 (hex) and size of a file, read in 64 KiB chunks.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(sha.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_recipient_is_named_by_its_index_and_never_echoed() {
        let good = age::x25519::Identity::generate().to_public().to_string();
        let bad = "age1notakeyatallbutlooksalittlelikeone";
        let e = AgeRecipients::parse(&[good.as_str(), bad]).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(!e.reason.contains("notakey"), "{}", e.reason);
        assert!(AgeRecipients::parse::<&str>(&[]).is_err());
        assert_eq!(AgeRecipients::parse(&[good.as_str()]).unwrap().len(), 1);
    }

    #[test]
    fn an_archive_encrypted_to_a_recipient_opens_with_its_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.zip");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&plain, &body).unwrap();
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let recipients = AgeRecipients::parse(&[id.to_public().to_string()]).unwrap();
        let sealed = dir.path().join("a.zip.age");
        let (sha, len) = recipients
            .encrypt_file(&plain, &sealed, Modes::default())
            .unwrap();
        assert_eq!((sha.clone(), len), hash_file(&sealed).unwrap());
        let ids = AgeIdentities::parse(&format!("# key\n{}\n", {
            use age::secrecy::ExposeSecret;
            id.to_string().expose_secret().to_string()
        }))
        .unwrap();
        let opened = dir.path().join("b.zip");
        ids.decrypt_file(&sealed, &opened, Modes::default())
            .unwrap();
        assert!(std::fs::read(&opened).unwrap() == body);
        let wrong = AgeIdentities(vec![Box::new(other)]);
        assert!(
            wrong
                .decrypt_file(&sealed, &dir.path().join("c.zip"), Modes::default())
                .is_err()
        );
        assert!(!dir.path().join("c.zip").exists());
    }
}
