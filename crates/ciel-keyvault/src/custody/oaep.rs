//! EME-OAEP decoding (RFC 8017, 7.1.2 step 3) for HSMs that refuse an OAEP hash: SoftHSM 2.6
//! only does OAEP with SHA-1, so RSA-OAEP-256 runs there as a raw RSA decryption
//! (`CKM_RSA_X_509`) in the HSM and this decoding here. It is written to take the same time
//! whatever the padding holds (no early exit, no branch on secret bytes), so that it is no
//! padding oracle; the only thing that leaves is success or `None`.

use sha2::Digest;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

fn mgf1_xor<D: Digest>(out: &mut [u8], seed: &[u8]) {
    let mut counter = 0u32;
    for chunk in out.chunks_mut(<D as Digest>::output_size()) {
        let mut h = D::new();
        h.update(seed);
        h.update(counter.to_be_bytes());
        let mask = h.finalize();
        for (o, m) in chunk.iter_mut().zip(mask.iter()) {
            *o ^= m;
        }
        counter = counter.wrapping_add(1);
    }
}

/// Decodes `em` (the raw RSA output, left-padded to `k` bytes) with an empty label.
pub(crate) fn decode<D: Digest>(em: &[u8], k: usize) -> Option<Vec<u8>> {
    let h = <D as Digest>::output_size();
    if em.len() != k || k < 2 * h + 2 {
        return None;
    }
    let mut em = zeroize::Zeroizing::new(em.to_vec());
    let (y, rest) = em.split_at_mut(1);
    let (seed, db) = rest.split_at_mut(h);
    mgf1_xor::<D>(seed, db);
    mgf1_xor::<D>(db, seed);
    let lhash = D::digest([]);
    let mut good = y[0].ct_eq(&0) & db[..h].ct_eq(&lhash[..]);
    // Find the 0x01 after the zero padding without branching on the bytes.
    let mut looking = Choice::from(1u8);
    let mut index = 0u32;
    let mut bad_ps = Choice::from(0u8);
    for (i, b) in db[h..].iter().enumerate() {
        let is0 = b.ct_eq(&0);
        let is1 = b.ct_eq(&1);
        index = u32::conditional_select(&index, &(i as u32), looking & is1);
        bad_ps |= looking & !is0 & !is1;
        looking &= !is1;
    }
    good &= !bad_ps & !looking;
    if bool::from(good) {
        Some(db[h + index as usize + 1..].to_vec())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::{BigUint, Oaep, RsaPrivateKey};

    fn raw(k: &RsaPrivateKey, ct: &[u8]) -> Vec<u8> {
        let m = BigUint::from_bytes_be(ct).modpow(k.d(), k.n());
        let b = m.to_bytes_be();
        let mut out = vec![0u8; k.size() - b.len()];
        out.extend_from_slice(&b);
        out
    }

    #[test]
    fn decodes_what_rsa_encodes_and_refuses_the_rest() {
        let mut rng = rand_core::OsRng;
        let k = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let p = k.to_public_key();
        for msg in [&b""[..], b"x", &[0xab; 190]] {
            let ct = p
                .encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), msg)
                .unwrap();
            let em = raw(&k, &ct);
            assert_eq!(decode::<sha2::Sha256>(&em, 256).as_deref(), Some(msg));
            // SHA-1 decoding of a SHA-256 encoding fails.
            assert!(decode::<sha1::Sha1>(&em, 256).is_none());
            let mut t = ct.clone();
            t[100] ^= 1;
            assert!(decode::<sha2::Sha256>(&raw(&k, &t), 256).is_none());
            assert!(decode::<sha2::Sha256>(&em[1..], 256).is_none());
        }
        let ct = p
            .encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), b"one")
            .unwrap();
        assert_eq!(decode::<sha1::Sha1>(&raw(&k, &ct), 256).unwrap(), b"one");
    }
}
