//! The platform master key and sealing of small secrets at rest (signing keys, audit keys).
//! AES-256-GCM with a random 96-bit nonce prefixed to the ciphertext; the purpose string is the
//! associated data, so a blob sealed for one use cannot be unsealed as another.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

pub struct MasterKey {
    key: LessSafeKey,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes")]
    BadKey,
    #[error("sealed data is corrupt or was sealed under another master key")]
    Open,
    #[error("the system random generator failed")]
    Rng,
}

impl MasterKey {
    pub fn from_bytes(b: &[u8]) -> Result<Self, SealError> {
        let k = UnboundKey::new(&AES_256_GCM, b).map_err(|_| SealError::BadKey)?;
        Ok(Self {
            key: LessSafeKey::new(k),
        })
    }

    pub fn generate_bytes() -> Result<[u8; 32], SealError> {
        let mut b = [0u8; 32];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| SealError::Rng)?;
        Ok(b)
    }

    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Rng)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(SealError::Open);
        }
        let (n, c) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(n).map_err(|_| SealError::Open)?;
        let mut buf = c.to_vec();
        let pt = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(pt.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roundtrip_and_purpose_binding() {
        let k = MasterKey::from_bytes(&MasterKey::generate_bytes().unwrap()).unwrap();
        let s = k.seal("a", b"secret").unwrap();
        assert_eq!(k.open("a", &s).unwrap(), b"secret");
        assert!(k.open("b", &s).is_err());
        let mut t = s.clone();
        t[20] ^= 1;
        assert!(k.open("a", &t).is_err());
        let other = MasterKey::from_bytes(&MasterKey::generate_bytes().unwrap()).unwrap();
        assert!(other.open("a", &s).is_err());
    }
}
