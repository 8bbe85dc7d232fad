//! Tampering behind the server's back: edit, delete, reorder, truncate, re-chain — verify names
//! the first broken entry each time.

use ciel_audit::{verify, Auditor, CheckpointSigner, Verdict};
use ciel_core::audit::AuditDraft;
use ciel_store::sqlite::SqliteStore;
use ciel_store::{MetadataStore, Store};
use ring::signature::KeyPair;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    cpfile: std::path::PathBuf,
    public: Vec<u8>,
}

fn draft(i: usize) -> AuditDraft {
    AuditDraft {
        tenant_id: Some("t".into()),
        actor: format!("actor{i}"),
        action: "Microsoft.Resources/subscriptions/resourceGroups/write".into(),
        target: format!("/subscriptions/s/resourceGroups/rg{i}"),
        outcome: "success".into(),
        details: serde_json::json!({"i": i}),
        ..Default::default()
    }
}

/// 20 entries, a checkpoint after entry 10, and 10 more entries after it.
fn fixture(checkpoint_at_end: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ciel.db");
    let cpfile = dir.path().join("cp.jsonl");
    let store: Store = Arc::new(SqliteStore::open(&db).unwrap());
    let pk8 = CheckpointSigner::generate_pkcs8().unwrap();
    let public = ring::signature::Ed25519KeyPair::from_pkcs8(&pk8)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let auditor = Auditor::new(
        store.clone(),
        CheckpointSigner::from_pkcs8(&pk8).unwrap(),
        cpfile.clone(),
    );
    for i in 0..10 {
        store.append_audit(&[draft(i)]).unwrap();
    }
    auditor.checkpoint().unwrap().unwrap();
    for i in 10..20 {
        store.append_audit(&[draft(i)]).unwrap();
    }
    if checkpoint_at_end {
        auditor.checkpoint().unwrap().unwrap();
    }
    Fixture {
        _dir: dir,
        db,
        cpfile,
        public,
    }
}

fn check(f: &Fixture) -> Verdict {
    let store = SqliteStore::open(&f.db).unwrap();
    verify(&store, &f.public, Some(&f.cpfile)).unwrap()
}

fn sql(f: &Fixture, q: &str) {
    let c = rusqlite::Connection::open(&f.db).unwrap();
    c.execute_batch(q).unwrap();
}

fn broken_at(v: Verdict) -> i64 {
    match v {
        Verdict::Broken { seq, .. } => seq,
        Verdict::Intact { .. } => panic!("tampering was not detected"),
    }
}

#[test]
fn intact_chain_verifies() {
    let f = fixture(true);
    assert_eq!(
        check(&f),
        Verdict::Intact {
            entries: 20,
            checkpoints: 2,
            pruned_through: 0
        }
    );
}

#[test]
fn edited_entry_is_named() {
    let f = fixture(true);
    sql(
        &f,
        "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 7",
    );
    assert_eq!(broken_at(check(&f)), 7);
}

#[test]
fn deleted_entry_is_named() {
    let f = fixture(true);
    sql(&f, "DELETE FROM audit_log WHERE seq = 12");
    assert_eq!(broken_at(check(&f)), 12);
}

#[test]
fn reordered_entries_are_caught() {
    let f = fixture(true);
    // Swap the contents of entries 4 and 5, keeping their sequence numbers.
    sql(
        &f,
        "UPDATE audit_log SET seq = -4 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = -4;",
    );
    assert_eq!(broken_at(check(&f)), 4);
}

#[test]
fn truncated_tail_is_caught_by_the_checkpoint_file() {
    let f = fixture(true);
    sql(
        &f,
        "DELETE FROM audit_log WHERE seq > 15; DELETE FROM audit_checkpoints;",
    );
    assert_eq!(broken_at(check(&f)), 16);
}

#[test]
fn rechained_history_is_caught_by_the_signed_checkpoint() {
    // Edit entry 3 and recompute every hash after it, as an attacker with the database would.
    let f = fixture(false);
    {
        let store = SqliteStore::open(&f.db).unwrap();
        let mut all = store.read_audit(0, 100).unwrap();
        all[2].actor = "forged".into();
        let mut prev = all[1].hash.clone();
        let c = rusqlite::Connection::open(&f.db).unwrap();
        for r in all.iter_mut().skip(2) {
            r.prev_hash = prev.clone();
            r.hash = ciel_core::audit::chain_hash(r);
            c.execute(
                "UPDATE audit_log SET actor = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                rusqlite::params![r.actor, r.prev_hash, r.hash, r.seq],
            )
            .unwrap();
            prev = r.hash.clone();
        }
    }
    // The chain is self-consistent again, but the checkpoint signed at entry 10 disagrees.
    assert_eq!(broken_at(check(&f)), 10);
}

#[test]
fn forged_checkpoint_signature_is_caught() {
    let f = fixture(true);
    sql(&f, "UPDATE audit_checkpoints SET signature = (CASE WHEN substr(signature, 1, 2) = '00' THEN '11' ELSE '00' END) || substr(signature, 3) WHERE seq = 10");
    assert!(matches!(check(&f), Verdict::Broken { .. }));
}
