//! Retention: entries past the retention go up to a signed checkpoint (the anchor); the chain
//! still verifies from it, and a premature or forged anchor is reported as tampering.

use ciel_audit::export::{export, verify_export};
use ciel_audit::{prune, verify_at, Auditor, CheckpointSigner, Verdict, MIN_RETENTION_DAYS};
use ciel_core::audit::AuditDraft;
use ciel_store::sqlite::SqliteStore;
use ciel_store::Store;
use ring::signature::KeyPair;
use std::sync::Arc;

const DAY: i64 = 86_400;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
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

/// 10 entries, a checkpoint, 10 more entries (not yet signed).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cpfile = dir.path().join("cp.jsonl");
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
        cpfile.clone(),
    );
    for i in 0..10 {
        store.append_audit(&[draft(i)]).unwrap();
    }
    auditor.checkpoint().unwrap().unwrap();
    for i in 10..20 {
        store.append_audit(&[draft(i)]).unwrap();
    }
    Fixture {
        _dir: dir,
        store,
        cpfile,
        public,
    }
}

fn check(f: &Fixture, now: i64) -> Verdict {
    verify_at(f.store.as_ref(), &f.public, Some(&f.cpfile), now).unwrap()
}

#[test]
fn nothing_goes_before_the_retention() {
    let f = fixture();
    let now = ciel_core::time::now_unix();
    assert!(prune(f.store.as_ref(), now, MIN_RETENTION_DAYS, "t", false)
        .unwrap()
        .is_none());
    assert!(prune(f.store.as_ref(), now, 30, "t", false).is_err());
    assert!(matches!(
        check(&f, now),
        Verdict::Intact {
            entries: 20,
            pruned_through: 0,
            ..
        }
    ));
}

#[test]
fn pruned_chain_verifies_from_its_anchor() {
    let f = fixture();
    let later = ciel_core::time::now_unix() + 200 * DAY;
    let dry = prune(f.store.as_ref(), later, MIN_RETENTION_DAYS, "t", true)
        .unwrap()
        .unwrap();
    assert_eq!((dry.through_seq, dry.deleted), (10, 0));
    assert_eq!(f.store.read_audit(0, 1).unwrap()[0].seq, 1);
    let r = prune(f.store.as_ref(), later, MIN_RETENTION_DAYS, "t", false)
        .unwrap()
        .unwrap();
    assert_eq!((r.through_seq, r.deleted), (10, 10));
    // 11..20 are kept, 21 records the prune.
    let kept = f.store.read_audit(0, 100).unwrap();
    assert_eq!(kept.first().unwrap().seq, 11);
    assert_eq!(kept.last().unwrap().action, "audit/prune");
    assert_eq!(
        check(&f, later),
        Verdict::Intact {
            entries: 11,
            checkpoints: 1,
            pruned_through: 10
        }
    );
    // A second run has nothing to do.
    assert!(
        prune(f.store.as_ref(), later, MIN_RETENTION_DAYS, "t", false)
            .unwrap()
            .is_none()
    );
    // The tenant's export starts after the anchor and still verifies.
    let mut out = String::new();
    export(f.store.as_ref(), "t", 1, &hex::encode(&f.public), |l| {
        out.push_str(&serde_json::to_string(l).unwrap());
        out.push('\n');
        Ok(())
    })
    .unwrap();
    let s = verify_export(&out, &f.public).unwrap();
    assert_eq!(s.entries, 10);
}

#[test]
fn an_anchor_younger_than_six_months_is_tampering() {
    let f = fixture();
    let later = ciel_core::time::now_unix() + 200 * DAY;
    prune(f.store.as_ref(), later, MIN_RETENTION_DAYS, "t", false).unwrap();
    // The same database seen today: the anchored checkpoint is minutes old.
    match check(&f, ciel_core::time::now_unix()) {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, 10);
            assert!(reason.contains("at least 183 days"), "{reason}");
        }
        v => panic!("a premature prune was not reported: {v:?}"),
    }
}

#[test]
fn an_interrupted_prune_still_verifies_and_a_rerun_finishes_it() {
    let f = fixture();
    let later = ciel_core::time::now_unix() + 200 * DAY;
    let cp = f.store.list_checkpoints().unwrap().remove(0);
    // The anchor is written, the deletion has not run (a crash in between).
    f.store.set_audit_anchor(&cp, &draft(99)).unwrap();
    assert!(matches!(
        check(&f, later),
        Verdict::Intact {
            pruned_through: 10,
            ..
        }
    ));
    let r = prune(f.store.as_ref(), later, MIN_RETENTION_DAYS, "t", false)
        .unwrap()
        .unwrap();
    assert_eq!(r.deleted, 10);
    // An anchor cannot move backwards.
    assert!(f.store.set_audit_anchor(&cp, &draft(98)).is_err());
}

#[test]
fn a_forged_anchor_or_a_gap_after_it_is_named() {
    let f = fixture();
    let later = ciel_core::time::now_unix() + 200 * DAY;
    let mut cp = f.store.list_checkpoints().unwrap().remove(0);
    // An anchor claiming entry 15 with the signature of entry 10's checkpoint.
    cp.seq = 15;
    f.store.set_audit_anchor(&cp, &draft(99)).unwrap();
    match check(&f, later) {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, 15);
            assert!(reason.contains("invalid signature"), "{reason}");
        }
        v => panic!("a forged anchor was accepted: {v:?}"),
    }
}
