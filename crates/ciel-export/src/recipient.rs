//! The tenant's recipient key: Key Vault secret values and private keys leave a Ciel only as
//! compact JWE (RFC 7516) encrypted to it, with `alg` RSA-OAEP-256 and `enc` A256GCM — what any
//! JOSE library, or a few lines over the `cryptography` package, opens without Ciel
//! (docs/export-format.md, "Key Vault").
//!
//! A recipient is an RSA public key (2048 bits or more) given as a PEM file (`openssl pkey
//! -pubout`), an RSA JWK, or the PEM/JWK text itself; the identity that opens it is the matching
//! private key as PEM (PKCS#8 or PKCS#1) or a private JWK. The key id in each JWE header is the
//! public key's RFC 7638 thumbprint, recorded in the manifest too.

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64U;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const ALG: &str = "RSA-OAEP-256";
pub const ENC: &str = "A256GCM";
const MIN_BITS: usize = 2048;

/// The public key secrets are encrypted to.
#[derive(Clone)]
pub struct Recipient {
    key: RsaPublicKey,
    /// RFC 7638 thumbprint (base64url of SHA-256 of the canonical JWK).
    pub kid: String,
}

/// The private key that opens what was encrypted to the recipient.
pub struct Identity {
    key: RsaPrivateKey,
    pub kid: String,
}

fn text_of(arg: &str) -> Result<String> {
    let t = arg.trim_start();
    if t.starts_with("-----BEGIN") || t.starts_with('{') {
        return Ok(arg.to_string());
    }
    std::fs::read_to_string(arg).with_context(|| format!("reading the key file {arg}"))
}

fn big(jwk: &Value, k: &str) -> Result<BigUint> {
    let s = jwk[k]
        .as_str()
        .ok_or_else(|| anyhow!("the JWK has no '{k}'"))?;
    Ok(BigUint::from_bytes_be(&B64U.decode(s).map_err(|_| {
        anyhow!("the JWK's '{k}' is not base64url")
    })?))
}

fn thumbprint(k: &RsaPublicKey) -> String {
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let canon = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        B64U.encode(k.e().to_bytes_be()),
        B64U.encode(k.n().to_bytes_be())
    );
    B64U.encode(Sha256::digest(canon.as_bytes()))
}

fn check_size(bits: usize) -> Result<()> {
    if bits < MIN_BITS {
        bail!(
            "the recipient key has {bits} bits; RSA keys of at least {MIN_BITS} bits are required"
        );
    }
    Ok(())
}

impl Recipient {
    /// A PEM `PUBLIC KEY` (SPKI) or an RSA JWK; a path to a file holding one, or the text itself.
    pub fn parse(arg: &str) -> Result<Self> {
        let text = text_of(arg)?;
        let key = if text.trim_start().starts_with('{') {
            let jwk: Value =
                serde_json::from_str(&text).context("the recipient JWK is not JSON")?;
            if jwk["kty"].as_str() != Some("RSA") {
                bail!("the recipient JWK must be an RSA key (kty RSA)");
            }
            RsaPublicKey::new(big(&jwk, "n")?, big(&jwk, "e")?)
                .map_err(|e| anyhow!("the recipient JWK is not a valid RSA key: {e}"))?
        } else {
            RsaPublicKey::from_public_key_pem(text.trim()).map_err(|e| {
                anyhow!(
                    "the recipient is not an RSA public key in PEM (PUBLIC KEY) or JWK form: {e}"
                )
            })?
        };
        check_size(key.size() * 8)?;
        let kid = thumbprint(&key);
        Ok(Self { key, kid })
    }

    /// Compact JWE of `plaintext`: a fresh content key per message, RSA-OAEP-256 to the
    /// recipient, the protected header as additional data.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        let header = json!({"alg": ALG, "enc": ENC, "kid": self.kid});
        let protected = B64U.encode(header.to_string());
        let mut cek = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut cek[..]);
        let ek = self
            .key
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &cek[..])
            .map_err(|e| anyhow!("RSA-OAEP-256: {e}"))?;
        let mut iv = [0u8; 12];
        OsRng.fill_bytes(&mut iv);
        let k = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &cek[..]).map_err(|_| anyhow!("AES-256-GCM key"))?,
        );
        let mut buf = plaintext.to_vec();
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(protected.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow!("AES-256-GCM sealing failed"))?;
        Ok(format!(
            "{protected}.{}.{}.{}.{}",
            B64U.encode(ek),
            B64U.encode(iv),
            B64U.encode(&buf),
            B64U.encode(tag.as_ref())
        ))
    }

    /// How the manifest names it.
    pub fn describe(&self) -> Value {
        json!({"alg": ALG, "enc": ENC, "kid": self.kid, "kty": "RSA", "bits": self.key.size() * 8})
    }
}

impl Identity {
    /// A PEM `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1), or a private RSA JWK; a path
    /// or the text itself.
    pub fn parse(arg: &str) -> Result<Self> {
        let text = Zeroizing::new(text_of(arg)?);
        let t = text.trim();
        let key = if t.starts_with('{') {
            let jwk: Value = serde_json::from_str(t).context("the identity JWK is not JSON")?;
            if jwk["kty"].as_str() != Some("RSA") {
                bail!("the identity JWK must be an RSA key (kty RSA)");
            }
            let k = RsaPrivateKey::from_components(
                big(&jwk, "n")?,
                big(&jwk, "e")?,
                big(&jwk, "d")?,
                vec![big(&jwk, "p")?, big(&jwk, "q")?],
            )
            .map_err(|e| anyhow!("the identity JWK is not a valid RSA private key: {e}"))?;
            k.validate()
                .map_err(|e| anyhow!("the identity JWK is not a valid RSA private key: {e}"))?;
            k
        } else if t.contains("BEGIN RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(t)
                .map_err(|e| anyhow!("the identity is not a PKCS#1 RSA private key: {e}"))?
        } else {
            RsaPrivateKey::from_pkcs8_pem(t).map_err(|e| {
                anyhow!(
                    "the identity is not an RSA private key in PEM (PRIVATE KEY) or JWK form: {e}"
                )
            })?
        };
        let kid = thumbprint(&key.to_public_key());
        Ok(Self { key, kid })
    }

    /// Opens a compact JWE made by [`Recipient::encrypt`] (or any JOSE library with the same
    /// algorithms).
    pub fn decrypt(&self, jwe: &str) -> Result<Zeroizing<Vec<u8>>> {
        let parts: Vec<&str> = jwe.split('.').collect();
        let [protected, ek, iv, ct, tag] = parts[..] else {
            bail!("not a compact JWE (five parts)");
        };
        let d = |s: &str, what: &str| {
            B64U.decode(s)
                .map_err(|_| anyhow!("the JWE's {what} is not base64url"))
        };
        let header: Value = serde_json::from_slice(&d(protected, "header")?)
            .map_err(|_| anyhow!("the JWE's header is not JSON"))?;
        if header["alg"].as_str() != Some(ALG) || header["enc"].as_str() != Some(ENC) {
            bail!("the JWE is not {ALG} + {ENC}");
        }
        if let Some(kid) = header["kid"].as_str() {
            if kid != self.kid {
                bail!(
                    "the value was encrypted to key {kid}, not to this identity ({})",
                    self.kid
                );
            }
        }
        let cek = Zeroizing::new(
            self.key
                .decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), &d(ek, "encrypted key")?)
                .map_err(|_| anyhow!("the JWE does not open with this identity"))?,
        );
        let iv: [u8; 12] = d(iv, "iv")?
            .try_into()
            .map_err(|_| anyhow!("the JWE's iv is not 96 bits"))?;
        let k = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &cek)
                .map_err(|_| anyhow!("the JWE's key is not 256 bits"))?,
        );
        let mut buf = Zeroizing::new(d(ct, "ciphertext")?);
        buf.extend_from_slice(&d(tag, "tag")?);
        let n = k
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(protected.as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow!("the JWE does not open (tampered, or not for this identity)"))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    #[test]
    fn round_trip_and_refusals() {
        let k = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let pem = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
        let r = Recipient::parse(&pem).unwrap();
        let id = Identity::parse(&k.to_pkcs8_pem(LineEnding::LF).unwrap()).unwrap();
        assert_eq!(r.kid, id.kid);
        let jwe = r.encrypt(b"le secret").unwrap();
        assert_eq!(&id.decrypt(&jwe).unwrap()[..], b"le secret");
        // One flipped bit of the ciphertext or the header: refused.
        let mut parts: Vec<String> = jwe.split('.').map(String::from).collect();
        let mut ct = B64U.decode(&parts[3]).unwrap();
        ct[0] ^= 1;
        parts[3] = B64U.encode(ct);
        assert!(id.decrypt(&parts.join(".")).is_err());
        // Another identity: refused, naming the key.
        let other = RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let oid = Identity::parse(&other.to_pkcs8_pem(LineEnding::LF).unwrap()).unwrap();
        assert!(oid.decrypt(&jwe).is_err());
        // Small keys are refused.
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let spem = small
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert!(Recipient::parse(&spem).is_err());
    }
}
