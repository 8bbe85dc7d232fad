//! Public-key operations (verify, encrypt) for every backend, and the algorithm tables both
//! backends share. RustCrypto (`rsa`, `p256`, `p384`, `p521`) rather than ring, because Key
//! Vault's `verify` takes a digest and ring only verifies messages it hashes itself.

use super::{Curve, CustodyError, CustodyResult, EncAlg, PublicKey, SignAlg};
use ecdsa::signature::hazmat::PrehashVerifier;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPublicKey};

/// RSA sizes Key Vault offers (and the only ones generated or imported here).
pub(crate) const RSA_BITS: [usize; 3] = [2048, 3072, 4096];

pub(crate) fn check_digest(alg: SignAlg, digest: &[u8]) -> CustodyResult<()> {
    if digest.len() != alg.digest_len() {
        return Err(CustodyError::Invalid(format!(
            "{} signs a {}-byte digest, not {} bytes",
            alg.name(),
            alg.digest_len(),
            digest.len()
        )));
    }
    Ok(())
}

/// The PKCS#1 v1.5 signature scheme for an RS algorithm (DigestInfo prefix of its hash).
pub(crate) fn pkcs1v15_scheme(alg: SignAlg) -> Option<Pkcs1v15Sign> {
    match alg {
        SignAlg::RS256 => Some(Pkcs1v15Sign::new::<sha2::Sha256>()),
        SignAlg::RS384 => Some(Pkcs1v15Sign::new::<sha2::Sha384>()),
        SignAlg::RS512 => Some(Pkcs1v15Sign::new::<sha2::Sha512>()),
        _ => None,
    }
}

/// The PSS scheme for a PS algorithm: MGF1 with the same hash, salt as long as the digest (what
/// Azure Key Vault produces and expects).
pub(crate) fn pss_scheme(alg: SignAlg) -> Option<Pss> {
    match alg {
        SignAlg::PS256 => Some(Pss::new_with_salt::<sha2::Sha256>(32)),
        SignAlg::PS384 => Some(Pss::new_with_salt::<sha2::Sha384>(48)),
        SignAlg::PS512 => Some(Pss::new_with_salt::<sha2::Sha512>(64)),
        _ => None,
    }
}

pub(crate) fn is_rsa(alg: SignAlg) -> bool {
    alg.curve().is_none()
}

/// The largest plaintext `alg` can encrypt under a `k`-byte modulus.
pub(crate) fn max_plaintext(alg: EncAlg, k: usize) -> usize {
    let overhead = match alg {
        EncAlg::Rsa15 => 11,
        EncAlg::RsaOaep => 2 * 20 + 2,
        EncAlg::RsaOaep256 => 2 * 32 + 2,
    };
    k.saturating_sub(overhead)
}

pub(crate) fn rsa_public(n: &[u8], e: &[u8]) -> CustodyResult<RsaPublicKey> {
    let key = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
        .map_err(|e| CustodyError::Invalid(format!("RSA public key: {e}")))?;
    Ok(key)
}

pub(crate) fn rsa_jwk(key: &RsaPublicKey) -> PublicKey {
    PublicKey::Rsa {
        n: key.n().to_bytes_be(),
        e: key.e().to_bytes_be(),
    }
}

/// `0x04 || x || y`, coordinates left-padded to the curve's size (a JWK may carry them short).
pub(crate) fn sec1_point(curve: Curve, x: &[u8], y: &[u8]) -> CustodyResult<Vec<u8>> {
    let n = curve.field_len();
    let strip = |v: &[u8]| -> CustodyResult<Vec<u8>> {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        let v = &v[first..];
        if v.len() > n {
            return Err(CustodyError::Invalid(
                "EC coordinate longer than the curve".into(),
            ));
        }
        let mut out = vec![0u8; n - v.len()];
        out.extend_from_slice(v);
        Ok(out)
    };
    let mut p = Vec::with_capacity(1 + 2 * n);
    p.push(4);
    p.extend_from_slice(&strip(x)?);
    p.extend_from_slice(&strip(y)?);
    Ok(p)
}

/// Splits an uncompressed SEC1 point into a JWK.
pub(crate) fn ec_jwk(curve: Curve, sec1: &[u8]) -> CustodyResult<PublicKey> {
    let n = curve.field_len();
    if sec1.len() != 1 + 2 * n || sec1[0] != 4 {
        return Err(CustodyError::Backend(
            "EC public point is not uncompressed SEC1".into(),
        ));
    }
    Ok(PublicKey::Ec {
        curve,
        x: sec1[1..1 + n].to_vec(),
        y: sec1[1 + n..].to_vec(),
    })
}

pub fn verify(
    key: &PublicKey,
    alg: SignAlg,
    digest: &[u8],
    signature: &[u8],
) -> CustodyResult<bool> {
    match key {
        PublicKey::Rsa { n, e } => {
            if !is_rsa(alg) {
                return Err(CustodyError::AlgorithmMismatch(alg.name().into()));
            }
            check_digest(alg, digest)?;
            let k = rsa_public(n, e)?;
            if signature.len() != k.size() {
                return Err(CustodyError::Invalid(format!(
                    "an RSA signature under this key is {} bytes",
                    k.size()
                )));
            }
            let ok = if let Some(s) = pkcs1v15_scheme(alg) {
                k.verify(s, digest, signature).is_ok()
            } else if let Some(s) = pss_scheme(alg) {
                k.verify(s, digest, signature).is_ok()
            } else {
                false
            };
            Ok(ok)
        }
        PublicKey::Ec { curve, x, y } => {
            if alg.curve() != Some(*curve) {
                return Err(CustodyError::AlgorithmMismatch(alg.name().into()));
            }
            check_digest(alg, digest)?;
            if signature.len() != 2 * curve.field_len() {
                return Err(CustodyError::Invalid(format!(
                    "an {} signature is r||s, {} bytes",
                    alg.name(),
                    2 * curve.field_len()
                )));
            }
            let point = sec1_point(*curve, x, y)?;
            let bad_key = |_| CustodyError::Invalid("EC public key is not on the curve".into());
            // A signature that does not parse (r or s zero or beyond the order) is a signature
            // that does not verify, not a malformed request.
            let ok = match curve {
                Curve::P256 => {
                    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad_key)?;
                    p256::ecdsa::Signature::from_slice(signature)
                        .map(|s| vk.verify_prehash(digest, &s).is_ok())
                        .unwrap_or(false)
                }
                Curve::P384 => {
                    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad_key)?;
                    p384::ecdsa::Signature::from_slice(signature)
                        .map(|s| vk.verify_prehash(digest, &s).is_ok())
                        .unwrap_or(false)
                }
                Curve::P521 => {
                    let vk = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(bad_key)?;
                    p521::ecdsa::Signature::from_slice(signature)
                        .map(|s| vk.verify_prehash(digest, &s).is_ok())
                        .unwrap_or(false)
                }
            };
            Ok(ok)
        }
    }
}

pub fn encrypt(key: &PublicKey, alg: EncAlg, plaintext: &[u8]) -> CustodyResult<Vec<u8>> {
    let (n, e) = match key {
        PublicKey::Rsa { n, e } => (n, e),
        PublicKey::Ec { .. } => return Err(CustodyError::AlgorithmMismatch(alg.name().into())),
    };
    let k = rsa_public(n, e)?;
    let max = max_plaintext(alg, k.size());
    if plaintext.len() > max {
        return Err(CustodyError::Invalid(format!(
            "{} encrypts at most {max} bytes under this key",
            alg.name()
        )));
    }
    let mut rng = rand_core::OsRng;
    let r = match alg {
        EncAlg::RsaOaep => k.encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), plaintext),
        EncAlg::RsaOaep256 => k.encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), plaintext),
        EncAlg::Rsa15 => k.encrypt(&mut rng, Pkcs1v15Encrypt, plaintext),
    };
    r.map_err(|e| CustodyError::Backend(format!("RSA encryption: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_public_keys_are_invalid() {
        let d = [0u8; 32];
        let sig = [1u8; 64];
        let empty = PublicKey::Rsa {
            n: vec![],
            e: vec![1, 0, 1],
        };
        assert!(matches!(
            verify(&empty, SignAlg::RS256, &d, &sig),
            Err(CustodyError::Invalid(_))
        ));
        assert!(matches!(
            encrypt(&empty, EncAlg::RsaOaep, b"x"),
            Err(CustodyError::Invalid(_))
        ));
        let off_curve = PublicKey::Ec {
            curve: Curve::P256,
            x: vec![1; 32],
            y: vec![2; 32],
        };
        assert!(matches!(
            verify(&off_curve, SignAlg::ES256, &d, &sig),
            Err(CustodyError::Invalid(_))
        ));
        let long = PublicKey::Ec {
            curve: Curve::P256,
            x: vec![1; 33],
            y: vec![2; 32],
        };
        assert!(matches!(
            verify(&long, SignAlg::ES256, &d, &sig),
            Err(CustodyError::Invalid(_))
        ));
    }

    #[test]
    fn short_jwk_coordinates_are_padded() {
        // A JWK whose x lost its leading zero byte still names the same point.
        let p = sec1_point(Curve::P256, &[5; 31], &[6; 32]).unwrap();
        assert_eq!(p.len(), 65);
        assert_eq!(&p[1..3], &[0, 5]);
        let p = sec1_point(Curve::P521, &[0, 0, 1], &[1; 66]).unwrap();
        assert_eq!(p.len(), 133);
    }

    #[test]
    fn plaintext_limits() {
        assert_eq!(max_plaintext(EncAlg::Rsa15, 256), 245);
        assert_eq!(max_plaintext(EncAlg::RsaOaep, 256), 214);
        assert_eq!(max_plaintext(EncAlg::RsaOaep256, 256), 190);
    }
}
