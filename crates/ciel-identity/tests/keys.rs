//! Signing keys: sealed at rest, rotation keeps the retired key published (and verifying) for one
//! token lifetime, then drops it.

use ciel_core::audit::AuditDraft;
use ciel_core::seal::MasterKey;
use ciel_identity::keys::KeyRing;
use ciel_store::sqlite::SqliteStore;
use ciel_store::Store;
use std::sync::Arc;

fn kids(ring: &KeyRing) -> Vec<String> {
    ring.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rotation_and_expiry_of_retired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(SqliteStore::open(&dir.path().join("m.db")).unwrap());
    let master = Arc::new(MasterKey::from_bytes(&MasterKey::generate_bytes().unwrap()).unwrap());
    let ring = KeyRing::new(store.clone(), master.clone()).unwrap();
    ring.ensure_active("t").unwrap();
    let first = kids(&ring);
    assert_eq!(first.len(), 1);

    // The private key is not stored in clear: the sealed blob does not contain the DER header.
    let k = &store.list_signing_keys().unwrap()[0];
    assert!(!k
        .sealed_private_key
        .windows(4)
        .any(|w| w == [0x30, 0x82, 0x04, 0xa4] || w == [0x30, 0x82, 0x04, 0xa3]));
    // And it does not open under another master key.
    let other = Arc::new(MasterKey::from_bytes(&MasterKey::generate_bytes().unwrap()).unwrap());
    assert!(KeyRing::new(store.clone(), other).is_err());

    let new = ring.rotate("t").unwrap();
    let after = kids(&ring);
    assert_eq!(after.len(), 2);
    assert!(after.contains(&first[0]) && after.contains(&new));
    assert!(
        ring.decoding_key(&first[0]).is_some(),
        "the retired key still verifies"
    );

    // Pretend the retirement happened long ago: the key leaves JWKS and stops verifying.
    let mut old = store
        .list_signing_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.kid == first[0])
        .unwrap();
    old.kid = format!("{}-aged", old.kid);
    old.retired = Some(ciel_core::time::now_unix() - 2 * 3600 - 600);
    store.put_signing_key(&old, &AuditDraft::default()).unwrap();
    ring.reload().unwrap();
    let now = kids(&ring);
    assert!(!now.contains(&old.kid));
    assert!(ring.decoding_key(&old.kid).is_none());
}
