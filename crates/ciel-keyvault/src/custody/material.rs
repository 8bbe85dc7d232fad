//! The framing both backends put around their `KeyMaterial` blobs: a version byte, then the
//! label the material was made for, then the backend's own bytes. The label is in clear but
//! authenticated under the vault key by each backend (software: AES-GCM associated data;
//! PKCS#11: an HMAC), so a blob moved to another key's record, or another vault's, is refused.

use super::{CustodyError, CustodyResult};

const VERSION: u8 = 1;

pub(crate) fn encode(label: &str, body: &[u8]) -> CustodyResult<Vec<u8>> {
    let l = label.as_bytes();
    let len = u16::try_from(l.len())
        .map_err(|_| CustodyError::Invalid("key label longer than 65535 bytes".into()))?;
    let mut out = Vec::with_capacity(3 + l.len() + body.len());
    out.push(VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(l);
    out.extend_from_slice(body);
    Ok(out)
}

/// `(label, body)`; `Material` when the framing is not ours.
pub(crate) fn decode(blob: &[u8]) -> CustodyResult<(&str, &[u8])> {
    if blob.len() < 3 || blob[0] != VERSION {
        return Err(CustodyError::Material);
    }
    let len = u16::from_be_bytes([blob[1], blob[2]]) as usize;
    let rest = &blob[3..];
    if rest.len() < len {
        return Err(CustodyError::Material);
    }
    let (l, body) = rest.split_at(len);
    let label = std::str::from_utf8(l).map_err(|_| CustodyError::Material)?;
    Ok((label, body))
}

/// The associated data binding a blob to its label (and, through the key, to its vault).
/// Length-prefixed so that no two (purpose, label) pairs share an encoding.
pub(crate) fn binding(purpose: &str, label: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(purpose.len() + label.len() + 9);
    a.extend_from_slice(&(purpose.len() as u32).to_be_bytes());
    a.extend_from_slice(purpose.as_bytes());
    a.extend_from_slice(&(label.len() as u32).to_be_bytes());
    a.extend_from_slice(label.as_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roundtrip_and_refusals() {
        let b = encode("v/k/1", b"body").unwrap();
        assert_eq!(decode(&b).unwrap(), ("v/k/1", &b"body"[..]));
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0, 0]).is_err());
        assert!(decode(&[1, 0, 9, b'a']).is_err());
        assert_ne!(binding("ab", "c"), binding("a", "bc"));
    }
}
