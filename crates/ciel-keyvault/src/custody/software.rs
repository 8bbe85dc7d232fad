//! The software backend: private keys are PKCS#8 DER, sealed with AES-256-GCM under the
//! per-vault key (itself sealed under the platform master key). The material blob is
//! `material::encode(label, nonce || ciphertext || tag)`, the plaintext `kind || PKCS#8`, and the
//! associated data binds the label: a blob copied to another key's record, or opened with
//! another vault's key, does not open.
//!
//! Library choice: ring cannot generate RSA keys and cannot sign a digest it did not hash, so
//! keys and private operations use RustCrypto (`rsa` 0.9 — already in the workspace — and
//! `p256`/`p384`/`p521`); ring does the AES-GCM sealing and nothing else. Every RSA private
//! operation is blinded (`sign_with_rng`, `decrypt_blinded`).

use super::material;
use super::public::{
    check_digest, ec_jwk, is_rsa, pkcs1v15_scheme, pss_scheme, rsa_jwk, sec1_point, RSA_BITS,
};
use super::{
    Curve, Custody, CustodyError, CustodyResult, EncAlg, KeyMaterial, KeySpec, PrivateKey,
    PublicKey, SignAlg,
};
use ciel_core::seal::MasterKey;
use ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::OsRng;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, RsaPrivateKey};
use std::sync::Arc;
use zeroize::Zeroizing;

pub const BACKEND: &str = "software";
/// Associated-data purpose of a sealed private key.
const KEY_PURPOSE: &str = "ciel/keyvault/key-material/v1";
/// Master-key purpose of a sealed vault key (the vault's resource id follows).
const VAULT_PURPOSE: &str = "ciel/keyvault/vault-key/v1:";

/// The first plaintext byte names the key's kind, so that opening does not have to guess from
/// the PKCS#8 algorithm identifier (and P-256/P-384/P-521 share one).
const KIND_RSA: u8 = 1;
const KIND_P256: u8 = 2;
const KIND_P384: u8 = 3;
const KIND_P521: u8 = 4;

pub struct SoftwareCustody {
    master: Arc<MasterKey>,
}

impl SoftwareCustody {
    pub fn new(master: Arc<MasterKey>) -> Self {
        Self { master }
    }
}

/// An opened private key; dropped (and zeroized by the RustCrypto types) after each operation.
enum Private {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

impl Private {
    fn generate(spec: KeySpec) -> CustodyResult<Self> {
        match spec {
            KeySpec::Rsa { bits } => {
                let bits = bits as usize;
                if !RSA_BITS.contains(&bits) {
                    return Err(CustodyError::Unsupported(format!("RSA {bits}")));
                }
                let k = RsaPrivateKey::new(&mut OsRng, bits)
                    .map_err(|e| CustodyError::Backend(format!("RSA generation: {e}")))?;
                Ok(Private::Rsa(Box::new(k)))
            }
            KeySpec::Ec { curve: Curve::P256 } => {
                Ok(Private::P256(p256::SecretKey::random(&mut OsRng)))
            }
            KeySpec::Ec { curve: Curve::P384 } => {
                Ok(Private::P384(p384::SecretKey::random(&mut OsRng)))
            }
            KeySpec::Ec { curve: Curve::P521 } => {
                Ok(Private::P521(p521::SecretKey::random(&mut OsRng)))
            }
        }
    }

    fn import(key: &PrivateKey) -> CustodyResult<Self> {
        match key {
            PrivateKey::Rsa {
                n,
                e,
                d,
                p,
                q,
                dp,
                dq,
                qi,
            } => {
                let big = |v: &[u8]| BigUint::from_bytes_be(v);
                let k =
                    RsaPrivateKey::from_components(big(n), big(e), big(d), vec![big(p), big(q)])
                        .map_err(|e| CustodyError::Invalid(format!("RSA private key: {e}")))?;
                k.validate()
                    .map_err(|e| CustodyError::Invalid(format!("RSA private key: {e}")))?;
                let bits = k.n().bits();
                if !RSA_BITS.contains(&bits) {
                    return Err(CustodyError::Unsupported(format!("RSA {bits}")));
                }
                // The CRT values are recomputed from p and q; given ones must agree, or the
                // JWK is inconsistent (and an HSM would sign garbage with it).
                if !crt_matches(&k, dp, dq, qi) {
                    return Err(CustodyError::Invalid(
                        "RSA private key: dp, dq or qi do not match p and q".into(),
                    ));
                }
                Ok(Private::Rsa(Box::new(k)))
            }
            PrivateKey::Ec { curve, x, y, d } => {
                let point = sec1_point(*curve, x, y)?;
                let bad =
                    |_| CustodyError::Invalid("EC private key: d is not a valid scalar".into());
                let k = match curve {
                    Curve::P256 => Private::P256(p256::SecretKey::from_slice(d).map_err(bad)?),
                    Curve::P384 => Private::P384(p384::SecretKey::from_slice(d).map_err(bad)?),
                    Curve::P521 => Private::P521(p521::SecretKey::from_slice(d).map_err(bad)?),
                };
                // The public point given must be the one d makes.
                let PublicKey::Ec { x: px, y: py, .. } = k.public()? else {
                    return Err(CustodyError::Backend(
                        "EC key without an EC public key".into(),
                    ));
                };
                let mut mine = vec![4u8];
                mine.extend_from_slice(&px);
                mine.extend_from_slice(&py);
                if mine != point {
                    return Err(CustodyError::Invalid(
                        "EC private key: x and y are not d's public point".into(),
                    ));
                }
                Ok(k)
            }
        }
    }

    fn public(&self) -> CustodyResult<PublicKey> {
        match self {
            Private::Rsa(k) => Ok(rsa_jwk(&k.to_public_key())),
            Private::P256(k) => ec_jwk(
                Curve::P256,
                p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                )
                .as_bytes(),
            ),
            Private::P384(k) => ec_jwk(
                Curve::P384,
                p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                )
                .as_bytes(),
            ),
            Private::P521(k) => ec_jwk(
                Curve::P521,
                p521::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                )
                .as_bytes(),
            ),
        }
    }

    /// `kind || PKCS#8 DER`, zeroized on drop.
    fn encode(&self) -> CustodyResult<Zeroizing<Vec<u8>>> {
        let fail = |e: p256::pkcs8::Error| CustodyError::Backend(format!("PKCS#8 encoding: {e}"));
        let (kind, der) = match self {
            Private::Rsa(k) => (
                KIND_RSA,
                rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&**k)
                    .map_err(|e| CustodyError::Backend(format!("PKCS#8 encoding: {e}")))?,
            ),
            Private::P256(k) => (KIND_P256, k.to_pkcs8_der().map_err(fail)?),
            Private::P384(k) => (KIND_P384, k.to_pkcs8_der().map_err(fail)?),
            Private::P521(k) => (KIND_P521, k.to_pkcs8_der().map_err(fail)?),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(1 + der.as_bytes().len()));
        out.push(kind);
        out.extend_from_slice(der.as_bytes());
        Ok(out)
    }

    fn decode(pt: &[u8]) -> CustodyResult<Self> {
        let (kind, der) = pt.split_first().ok_or(CustodyError::Material)?;
        let k = match *kind {
            KIND_RSA => Private::Rsa(Box::new(
                rsa::pkcs8::DecodePrivateKey::from_pkcs8_der(der)
                    .map_err(|_| CustodyError::Material)?,
            )),
            KIND_P256 => Private::P256(
                p256::SecretKey::from_pkcs8_der(der).map_err(|_| CustodyError::Material)?,
            ),
            KIND_P384 => Private::P384(
                p384::SecretKey::from_pkcs8_der(der).map_err(|_| CustodyError::Material)?,
            ),
            KIND_P521 => Private::P521(
                p521::SecretKey::from_pkcs8_der(der).map_err(|_| CustodyError::Material)?,
            ),
            _ => return Err(CustodyError::Material),
        };
        Ok(k)
    }

    fn sign(&self, alg: SignAlg, digest: &[u8]) -> CustodyResult<Vec<u8>> {
        let mismatch = || CustodyError::AlgorithmMismatch(alg.name().into());
        let fail = |e: ecdsa::Error| CustodyError::Backend(format!("ECDSA: {e}"));
        match self {
            Private::Rsa(k) => {
                if !is_rsa(alg) {
                    return Err(mismatch());
                }
                check_digest(alg, digest)?;
                let r = if let Some(s) = pkcs1v15_scheme(alg) {
                    k.sign_with_rng(&mut OsRng, s, digest)
                } else if let Some(s) = pss_scheme(alg) {
                    k.sign_with_rng(&mut OsRng, s, digest)
                } else {
                    return Err(mismatch());
                };
                r.map_err(|e| CustodyError::Backend(format!("RSA signing: {e}")))
            }
            // ECDSA: deterministic nonces (RFC 6979); the signature is r||s at the curve's
            // width, as JWS and Key Vault carry it.
            Private::P256(k) => {
                if alg != SignAlg::ES256 {
                    return Err(mismatch());
                }
                check_digest(alg, digest)?;
                let s: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                    .sign_prehash(digest)
                    .map_err(fail)?;
                Ok(s.to_bytes().to_vec())
            }
            Private::P384(k) => {
                if alg != SignAlg::ES384 {
                    return Err(mismatch());
                }
                check_digest(alg, digest)?;
                let s: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                    .sign_prehash(digest)
                    .map_err(fail)?;
                Ok(s.to_bytes().to_vec())
            }
            Private::P521(k) => {
                if alg != SignAlg::ES512 {
                    return Err(mismatch());
                }
                check_digest(alg, digest)?;
                let sk = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes()).map_err(fail)?;
                let s: p521::ecdsa::Signature = sk.sign_prehash(digest).map_err(fail)?;
                Ok(s.to_bytes().to_vec())
            }
        }
    }

    fn decrypt(&self, alg: EncAlg, ciphertext: &[u8]) -> CustodyResult<Vec<u8>> {
        let Private::Rsa(k) = self else {
            return Err(CustodyError::AlgorithmMismatch(alg.name().into()));
        };
        // Every failure — length, padding, integer range — is the same `Decrypt`, so that the
        // answer is no padding oracle. The blinded decryption keeps the modular exponentiation's
        // timing independent of the ciphertext.
        if ciphertext.len() != k.size() {
            return Err(CustodyError::Decrypt);
        }
        let r = match alg {
            EncAlg::RsaOaep => k.decrypt_blinded(&mut OsRng, Oaep::new::<sha1::Sha1>(), ciphertext),
            EncAlg::RsaOaep256 => {
                k.decrypt_blinded(&mut OsRng, Oaep::new::<sha2::Sha256>(), ciphertext)
            }
            EncAlg::Rsa15 => k.decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, ciphertext),
        };
        r.map_err(|_| CustodyError::Decrypt)
    }
}

fn crt_matches(k: &RsaPrivateKey, dp: &[u8], dq: &[u8], qi: &[u8]) -> bool {
    let primes = k.primes();
    if primes.len() != 2 {
        return false;
    }
    let one = BigUint::from(1u8);
    let (p, q) = (&primes[0], &primes[1]);
    let d = k.d();
    let want_dp = d % (p - &one);
    let want_dq = d % (q - &one);
    let ok_dp = dp.is_empty() || BigUint::from_bytes_be(dp) == want_dp;
    let ok_dq = dq.is_empty() || BigUint::from_bytes_be(dq) == want_dq;
    // qi = q^-1 mod p: check q * qi ≡ 1 (mod p).
    let ok_qi = qi.is_empty() || (q * BigUint::from_bytes_be(qi)) % p == one;
    ok_dp && ok_dq && ok_qi
}

fn vault_cipher(vault_key: &[u8]) -> CustodyResult<LessSafeKey> {
    let k = UnboundKey::new(&AES_256_GCM, vault_key)
        .map_err(|_| CustodyError::Invalid("a vault key is 32 bytes".into()))?;
    Ok(LessSafeKey::new(k))
}

fn seal_private(vault_key: &[u8], label: &str, key: &Private) -> CustodyResult<KeyMaterial> {
    let cipher = vault_cipher(vault_key)?;
    let pt = key.encode()?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CustodyError::Backend("the system random generator failed".into()))?;
    let mut buf = Vec::with_capacity(NONCE_LEN + pt.len() + 16);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(&pt);
    let aad = material::binding(KEY_PURPOSE, label);
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut buf[NONCE_LEN..],
        )
        .map_err(|_| CustodyError::Backend("AES-GCM sealing failed".into()))?;
    buf.extend_from_slice(tag.as_ref());
    Ok(KeyMaterial {
        backend: BACKEND.into(),
        blob: material::encode(label, &buf)?,
    })
}

/// Opens the material; with `expect`, also requires it to have been made for that label.
fn open_private(vault_key: &[u8], m: &KeyMaterial, expect: Option<&str>) -> CustodyResult<Private> {
    if m.backend != BACKEND {
        return Err(CustodyError::Material);
    }
    let (label, body) = material::decode(&m.blob)?;
    // The label is compared before decryption only to fail early; the AEAD tag below is what
    // proves it (an attacker who rewrote the label in clear fails there).
    if let Some(want) = expect {
        if want != label {
            return Err(CustodyError::Material);
        }
    }
    if body.len() < NONCE_LEN + 16 {
        return Err(CustodyError::Material);
    }
    let cipher = vault_cipher(vault_key)?;
    let (n, c) = body.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| CustodyError::Material)?;
    let mut buf = Zeroizing::new(c.to_vec());
    let aad = material::binding(KEY_PURPOSE, label);
    let pt = cipher
        .open_in_place(nonce, Aad::from(&aad), &mut buf)
        .map_err(|_| CustodyError::Material)?;
    Private::decode(pt)
}

impl Custody for SoftwareCustody {
    fn backend(&self) -> &'static str {
        BACKEND
    }
    fn is_hsm(&self) -> bool {
        false
    }

    fn seal_vault_key(&self, context: &str, vault_key: &[u8]) -> CustodyResult<Vec<u8>> {
        if vault_key.len() != 32 {
            return Err(CustodyError::Invalid("a vault key is 32 bytes".into()));
        }
        self.master
            .seal(&format!("{VAULT_PURPOSE}{context}"), vault_key)
            .map_err(|e| CustodyError::Backend(format!("sealing the vault key: {e}")))
    }

    fn open_vault_key(&self, context: &str, sealed: &[u8]) -> CustodyResult<Vec<u8>> {
        self.master
            .open(&format!("{VAULT_PURPOSE}{context}"), sealed)
            .map_err(|_| CustodyError::Material)
    }

    fn generate(
        &self,
        vault_key: &[u8],
        label: &str,
        spec: KeySpec,
    ) -> CustodyResult<(KeyMaterial, PublicKey)> {
        // Check the vault key before spending a second on RSA generation.
        vault_cipher(vault_key)?;
        let k = Private::generate(spec)?;
        Ok((seal_private(vault_key, label, &k)?, k.public()?))
    }

    fn import(
        &self,
        vault_key: &[u8],
        label: &str,
        key: &PrivateKey,
    ) -> CustodyResult<(KeyMaterial, PublicKey)> {
        let k = Private::import(key)?;
        Ok((seal_private(vault_key, label, &k)?, k.public()?))
    }

    fn sign(
        &self,
        vault_key: &[u8],
        m: &KeyMaterial,
        alg: SignAlg,
        digest: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        open_private(vault_key, m, None)?.sign(alg, digest)
    }

    fn decrypt(
        &self,
        vault_key: &[u8],
        m: &KeyMaterial,
        alg: EncAlg,
        ciphertext: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        open_private(vault_key, m, None)?.decrypt(alg, ciphertext)
    }

    fn destroy(&self, m: &KeyMaterial) -> CustodyResult<()> {
        // The blob is the key: deleting the record (and, for good, the vault key) destroys it.
        if m.backend != BACKEND {
            return Err(CustodyError::Material);
        }
        Ok(())
    }

    fn check_label(&self, vault_key: &[u8], label: &str, m: &KeyMaterial) -> CustodyResult<()> {
        open_private(vault_key, m, Some(label)).map(|_| ())
    }

    fn export_private(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
    ) -> CustodyResult<PrivateKey> {
        let k = open_private(vault_key, m, Some(label))?;
        let public = k.public()?;
        let (_, parts) = import_parts_of(k)?;
        Ok(match (&parts, public) {
            (
                ImportParts::Rsa {
                    n,
                    e,
                    d,
                    p,
                    q,
                    dp,
                    dq,
                    qi,
                },
                _,
            ) => PrivateKey::Rsa {
                n: n.clone(),
                e: e.clone(),
                d: d.clone(),
                p: p.clone(),
                q: q.clone(),
                dp: dp.clone(),
                dq: dq.clone(),
                qi: qi.clone(),
            },
            (ImportParts::Ec { curve, d }, PublicKey::Ec { x, y, .. }) => PrivateKey::Ec {
                curve: *curve,
                x,
                y,
                d: d.clone(),
            },
            _ => return Err(CustodyError::Material),
        })
    }

    fn sign_labelled(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
        alg: SignAlg,
        digest: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        open_private(vault_key, m, Some(label))?.sign(alg, digest)
    }

    fn decrypt_labelled(
        &self,
        vault_key: &[u8],
        label: &str,
        m: &KeyMaterial,
        alg: EncAlg,
        ciphertext: &[u8],
    ) -> CustodyResult<Vec<u8>> {
        open_private(vault_key, m, Some(label))?.decrypt(alg, ciphertext)
    }
}

/// A validated private key's components, for a backend that creates the key elsewhere (the HSM
/// import). Zeroized on drop.
#[derive(zeroize::ZeroizeOnDrop)]
pub(crate) enum ImportParts {
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
        #[zeroize(skip)]
        curve: Curve,
        /// The scalar, left-padded to the curve's size.
        d: Vec<u8>,
    },
}

/// Validates an import as the software backend does, and returns its public key and complete
/// components (CRT values computed from p and q when the JWK leaves them out).
pub(crate) fn import_parts(key: &PrivateKey) -> CustodyResult<(PublicKey, ImportParts)> {
    import_parts_of(Private::import(key)?)
}

fn import_parts_of(k: Private) -> CustodyResult<(PublicKey, ImportParts)> {
    let public = k.public()?;
    let missing = || CustodyError::Backend("RSA key without its CRT values".into());
    let parts = match &k {
        Private::Rsa(r) => {
            let primes = r.primes();
            if primes.len() != 2 {
                return Err(CustodyError::Unsupported("multi-prime RSA".into()));
            }
            ImportParts::Rsa {
                n: r.n().to_bytes_be(),
                e: r.e().to_bytes_be(),
                d: r.d().to_bytes_be(),
                p: primes[0].to_bytes_be(),
                q: primes[1].to_bytes_be(),
                dp: r.dp().ok_or_else(missing)?.to_bytes_be(),
                dq: r.dq().ok_or_else(missing)?.to_bytes_be(),
                qi: r.crt_coefficient().ok_or_else(missing)?.to_bytes_be(),
            }
        }
        Private::P256(s) => ImportParts::Ec {
            curve: Curve::P256,
            d: s.to_bytes().to_vec(),
        },
        Private::P384(s) => ImportParts::Ec {
            curve: Curve::P384,
            d: s.to_bytes().to_vec(),
        },
        Private::P521(s) => ImportParts::Ec {
            curve: Curve::P521,
            d: s.to_bytes().to_vec(),
        },
    };
    Ok((public, parts))
}
