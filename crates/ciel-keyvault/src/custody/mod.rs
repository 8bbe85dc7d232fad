//! Key custody: where key material lives and where private-key operations run. One interface,
//! two backends — `software` (key material sealed under the vault's key, itself sealed under the
//! platform master key) and `pkcs11` (keys generated and used inside an HSM, never exported in
//! clear). The data plane only ever holds a `KeyMaterial` handle and public JWK parts.
//!
//! Open a backend from configuration with [`open`] ([`CustodyConfig`]). Every `KeyMaterial` is
//! bound to the vault key and to the label it was made for: prefer `sign_labelled` and
//! `decrypt_labelled` (or `check_label`), which refuse material moved to another key's record.

use serde::{Deserialize, Serialize};

mod config;
mod material;
mod oaep;
pub mod pkcs11;
mod public;
pub mod software;

pub use config::{open, CustodyBackend, CustodyConfig};
pub use pkcs11::{PinSource, Pkcs11Config, Pkcs11Custody};
pub use software::SoftwareCustody;

/// Key Vault's key types (`kty`). The `-HSM` forms exist only on an HSM-backed vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "RSA-HSM")]
    RsaHsm,
    #[serde(rename = "EC")]
    Ec,
    #[serde(rename = "EC-HSM")]
    EcHsm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
    #[serde(rename = "P-384")]
    P384,
    #[serde(rename = "P-521")]
    P521,
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// 2048, 3072 or 4096 bits; public exponent 65537.
    Rsa {
        bits: u32,
    },
    Ec {
        curve: Curve,
    },
}

/// Encryption algorithms for encrypt/decrypt and wrapKey/unwrapKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncAlg {
    /// RSA-OAEP (SHA-1, MGF1-SHA-1).
    RsaOaep,
    /// RSA-OAEP-256 (SHA-256, MGF1-SHA-256).
    RsaOaep256,
    /// RSAES-PKCS1-v1_5.
    Rsa15,
}

/// Signature algorithms; the caller passes the digest, as Key Vault's `sign` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
}

/// The public part of a key, as Key Vault's JWK carries it (big-endian unsigned integers, no
/// leading zero bytes for `n`/`e`; EC coordinates padded to the curve's size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A private key given for import (JWK private members, raw big-endian bytes).
#[derive(Debug, Clone)]
pub enum PrivateKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        d: Vec<u8>,
        p: Vec<u8>,
        q: Vec<u8>,
        dp: Vec<u8>,
        dq: Vec<u8>,
        qi: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
        d: Vec<u8>,
    },
}

/// What the metadata store keeps for one key version: the backend that made it and an opaque
/// blob (software: the private key sealed under the vault key; PKCS#11: the object's id). It is
/// meaningless without the vault key or the HSM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    pub backend: String,
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// The algorithm does not fit the key (RSA alg on an EC key, ES384 on P-256...).
    #[error("the algorithm {0} does not fit this key")]
    AlgorithmMismatch(String),
    /// Ciphertext of the wrong length, padding failure, tampered data: one answer for all, so
    /// that the error does not become a padding oracle.
    #[error("the data could not be decrypted")]
    Decrypt,
    /// A digest whose length does not match the algorithm, a malformed signature...
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("the key size or curve is not supported: {0}")]
    Unsupported(String),
    /// The material was made by another backend or is corrupt.
    #[error("the key material cannot be used by this backend")]
    Material,
    /// The backend itself failed (HSM unreachable, RNG failure...). Internal detail stays in
    /// the message for the log; the edge answers a generic 500.
    #[error("custody backend failure: {0}")]
    Backend(String),
}

pub type CustodyResult<T> = Result<T, CustodyError>;

/// A key custody backend. All methods are blocking (HSMs and RSA key generation are slow): the
/// data plane calls them on the blocking pool.
pub trait Custody: Send + Sync + 'static {
    /// `software` or `pkcs11`; recorded in each `KeyMaterial`.
    fn backend(&self) -> &'static str;
    /// Whether keys live in hardware (allows the `-HSM` key types).
    fn is_hsm(&self) -> bool;

    /// Wrap a fresh per-vault key (32 random bytes) for storage: software seals it under the
    /// platform master key; PKCS#11 wraps it under an AES key that never leaves the HSM.
    /// `context` (the vault's resource id) is bound to the result.
    fn seal_vault_key(&self, context: &str, vault_key: &[u8]) -> CustodyResult<Vec<u8>>;
    fn open_vault_key(&self, context: &str, sealed: &[u8]) -> CustodyResult<Vec<u8>>;

    /// Generate a key. `vault_key` is the opened per-vault key (software seals the private key
    /// under it); `label` names the object (vault/key/version) for an HSM.
    fn generate(
        &self,
        vault_key: &[u8],
        label: &str,
        spec: KeySpec,
    ) -> CustodyResult<(KeyMaterial, PublicKey)>;
    /// Import a private key (software: sealed; PKCS#11: created in the HSM with C_CreateObject as a
    /// sensitive, non-extractable object). The key is validated first (consistent components,
    /// supported size, `d` matching `x`/`y`); the public key returned is the imported one.
    fn import(
        &self,
        vault_key: &[u8],
        label: &str,
        key: &PrivateKey,
    ) -> CustodyResult<(KeyMaterial, PublicKey)>;

    fn sign(
        &self,
        vault_key: &[u8],
        m: &KeyMaterial,
        alg: SignAlg,
        digest: &[u8],
    ) -> CustodyResult<Vec<u8>>;
    fn decrypt(
        &self,
        vault_key: &[u8],
        m: &KeyMaterial,
        alg: EncAlg,
        ciphertext: &[u8],
    ) -> CustodyResult<Vec<u8>>;
    /// Remove the key from the backend for good (purge): software has nothing to do beyond the
    /// record; an HSM destroys the object.
    fn destroy(&self, m: &KeyMaterial) -> CustodyResult<()>;

    // --- Added with the backends: label binding. ---
    //
    // `sign`/`decrypt` cannot tell whether the material handed to them is the material that was
    // made for the key the caller names: a metadata record whose blob was swapped with another
    // key's of the same vault would sign with the other key. Every blob therefore carries the
    // label it was made for, authenticated under the vault key; these forms check it. The data
    // plane should call them with the same `vault/key/version` label it gave `generate`/`import`.

    // --- Added with the tenant export (docs/export-format.md, "Key Vault"). ---

    /// The private key behind `m` (made for `label`), for the tenant's export, where it leaves
    /// encrypted to the tenant's recipient key. Backends whose keys never leave the hardware
    /// answer `Unsupported`: the export lists such keys with their public part only.
    fn export_private(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
    ) -> CustodyResult<PrivateKey> {
        let _ = (vault_key, label, m);
        Err(CustodyError::Unsupported(
            "keys held in an HSM are not extractable".into(),
        ))
    }

    /// Fails with `Material` unless `m` was made for `label` under this `vault_key`.
    fn check_label(&self, vault_key: &[u8], label: &str, m: &KeyMaterial) -> CustodyResult<()> {
        let _ = (vault_key, label, m);
        Err(CustodyError::Unsupported(
            "this backend does not bind material to labels".into(),
        ))
    }

    /// `sign`, after checking that `m` was made for `label`.
    fn sign_labelled(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
        alg: SignAlg,
        digest: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        self.check_label(vault_key, label, m)?;
        self.sign(vault_key, m, alg, digest)
    }

    /// `decrypt`, after checking that `m` was made for `label`.
    fn decrypt_labelled(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
        alg: EncAlg,
        ciphertext: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        self.check_label(vault_key, label, m)?;
        self.decrypt(vault_key, m, alg, ciphertext)
    }
}

impl SignAlg {
    /// The digest length the algorithm signs (SHA-256/384/512).
    pub fn digest_len(self) -> usize {
        match self {
            SignAlg::RS256 | SignAlg::PS256 | SignAlg::ES256 => 32,
            SignAlg::RS384 | SignAlg::PS384 | SignAlg::ES384 => 48,
            SignAlg::RS512 | SignAlg::PS512 | SignAlg::ES512 => 64,
        }
    }
    /// The JOSE name (`RS256`...).
    pub fn name(self) -> &'static str {
        match self {
            SignAlg::RS256 => "RS256",
            SignAlg::RS384 => "RS384",
            SignAlg::RS512 => "RS512",
            SignAlg::PS256 => "PS256",
            SignAlg::PS384 => "PS384",
            SignAlg::PS512 => "PS512",
            SignAlg::ES256 => "ES256",
            SignAlg::ES384 => "ES384",
            SignAlg::ES512 => "ES512",
        }
    }
    /// The curve an ES algorithm needs; `None` for the RSA algorithms.
    pub fn curve(self) -> Option<Curve> {
        match self {
            SignAlg::ES256 => Some(Curve::P256),
            SignAlg::ES384 => Some(Curve::P384),
            SignAlg::ES512 => Some(Curve::P521),
            _ => None,
        }
    }
    /// Every algorithm, for tests and capability lists.
    pub const ALL: [SignAlg; 9] = [
        SignAlg::RS256,
        SignAlg::RS384,
        SignAlg::RS512,
        SignAlg::PS256,
        SignAlg::PS384,
        SignAlg::PS512,
        SignAlg::ES256,
        SignAlg::ES384,
        SignAlg::ES512,
    ];
}

impl EncAlg {
    /// The JOSE name (`RSA-OAEP`...).
    pub fn name(self) -> &'static str {
        match self {
            EncAlg::RsaOaep => "RSA-OAEP",
            EncAlg::RsaOaep256 => "RSA-OAEP-256",
            EncAlg::Rsa15 => "RSA1_5",
        }
    }
    pub const ALL: [EncAlg; 3] = [EncAlg::RsaOaep, EncAlg::RsaOaep256, EncAlg::Rsa15];
}

impl Curve {
    /// The size in bytes of a coordinate or scalar (32, 48, 66).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// A fresh per-vault key (32 random bytes) for `seal_vault_key`, zeroized on drop.
pub fn new_vault_key() -> CustodyResult<zeroize::Zeroizing<Vec<u8>>> {
    use ring::rand::SecureRandom;
    let mut k = zeroize::Zeroizing::new(vec![0u8; 32]);
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| CustodyError::Backend("the system random generator failed".into()))?;
    Ok(k)
}

/// Public-key operations need no custody: they run here, for every backend.
///
/// `Ok(false)` is a well-formed signature that does not verify; `Err(Invalid)` a digest of the
/// wrong length for `alg` or a signature of the wrong length for the key;
/// `Err(AlgorithmMismatch)` an algorithm that does not fit the key.
pub fn verify(
    key: &PublicKey,
    alg: SignAlg,
    digest: &[u8],
    signature: &[u8],
) -> CustodyResult<bool> {
    public::verify(key, alg, digest, signature)
}

/// Encrypts with the public key (Key Vault's `encrypt` and `wrapKey` for RSA keys). A plaintext
/// beyond the padding's limit (k-11 for RSA1_5, k-42 for RSA-OAEP, k-66 for RSA-OAEP-256, k the
/// modulus length in bytes) is `Invalid`.
pub fn encrypt(key: &PublicKey, alg: EncAlg, plaintext: &[u8]) -> CustodyResult<Vec<u8>> {
    public::encrypt(key, alg, plaintext)
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}
