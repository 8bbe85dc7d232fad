//! A tenant's export proves its entries belong to the signed chain, and any edit shows.

use ciel_audit::export::{export, verify_export};
use ciel_audit::{Auditor, CheckpointSigner};
use ciel_core::audit::AuditDraft;
use ciel_store::sqlite::SqliteStore;
use ciel_store::Store;
use ring::signature::KeyPair;
use std::sync::Arc;

fn draft(tenant: &str, i: usize) -> AuditDraft {
    AuditDraft {
        tenant_id: Some(tenant.into()),
        actor: format!("actor{i}"),
        action: "Microsoft.Resources/subscriptions/resourceGroups/write".into(),
        target: format!("/subscriptions/s/resourceGroups/{tenant}{i}"),
        outcome: "success".into(),
        details: serde_json::json!({"i": i}),
        ..Default::default()
    }
}

fn exported() -> (String, Vec<u8>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(SqliteStore::open(&dir.path().join("ciel.db")).unwrap());
    let pk8 = CheckpointSigner::generate_pkcs8().unwrap();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pk8)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let auditor = Auditor::new(
        store.clone(),
        CheckpointSigner::from_pkcs8(&pk8).unwrap(),
        dir.path().join("cp.jsonl"),
    );
    for i in 0..12 {
        let t = if i % 3 == 0 { "alpha" } else { "beta" };
        store.append_audit(&[draft(t, i)]).unwrap();
    }
    auditor.checkpoint().unwrap().unwrap();
    store.append_audit(&[draft("alpha", 12)]).unwrap();
    let mut out = String::new();
    let n = export(store.as_ref(), "alpha", 1, &hex::encode(&public), |l| {
        out.push_str(&serde_json::to_string(l).unwrap());
        out.push('\n');
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 5);
    (out, public, dir)
}

#[test]
fn verifies_and_reveals_nothing_of_others() {
    let (text, public, _d) = exported();
    let s = verify_export(&text, &public).unwrap();
    assert_eq!((s.entries, s.links, s.checkpoints), (5, 8, 1));
    assert_eq!((s.signed_through, s.unsigned_entries), (12, 1));
    assert!(!text.contains("beta"), "another tenant's content leaked");
}

#[test]
fn any_edit_is_caught() {
    let (text, public, _d) = exported();
    // An edited entry, a substituted link, a dropped line, another key.
    let edited = text.replacen("actor3", "actorX", 1);
    assert!(verify_export(&edited, &public)
        .unwrap_err()
        .contains("altered"));
    let mut lines: Vec<&str> = text.lines().collect();
    let link = lines
        .iter()
        .position(|l| l.contains("\"type\":\"link\""))
        .unwrap();
    let forged = lines[link].replace("\"hash\":\"", "\"hash\":\"00");
    lines[link] = &forged;
    assert!(verify_export(&lines.join("\n"), &public).is_err());
    let mut dropped: Vec<&str> = text.lines().collect();
    dropped.remove(3);
    assert!(verify_export(&dropped.join("\n"), &public).is_err());
    assert!(verify_export(&text, &[7u8; 32])
        .unwrap_err()
        .contains("signature"));
}
