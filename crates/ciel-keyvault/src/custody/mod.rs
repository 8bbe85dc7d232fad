//! Key custody: where key material lives and where private-key operations run. One interface,
//! two backends — `software` (key material sealed under the vault's key, itself sealed under the
//! platform master key) and `pkcs11` (keys generated and used inside an HSM, never exported in
//! clear). The data plane only ever holds a `KeyMaterial` handle and public JWK parts.

use serde::{Deserialize, Serialize};

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
    Rsa { bits: u32 },
    Ec { curve: Curve },
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
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: Curve, x: Vec<u8>, y: Vec<u8> },
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
    /// Import a private key (software: sealed; PKCS#11: unwrapped into the HSM as non-extractable).
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
}

/// Public-key operations need no custody: they run here, for every backend.
pub fn verify(
    key: &PublicKey,
    alg: SignAlg,
    digest: &[u8],
    signature: &[u8],
) -> CustodyResult<bool> {
    let _ = (key, alg, digest, signature);
    Err(CustodyError::Unsupported("verify: not built yet".into()))
}

pub fn encrypt(key: &PublicKey, alg: EncAlg, plaintext: &[u8]) -> CustodyResult<Vec<u8>> {
    let _ = (key, alg, plaintext);
    Err(CustodyError::Unsupported("encrypt: not built yet".into()))
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
