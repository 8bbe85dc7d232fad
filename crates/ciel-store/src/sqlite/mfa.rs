//! Second factors (TOTP) of users and operators. The trait methods in `sqlite.rs` call these with
//! the transaction (writes) or a reader connection.

use super::{append_in, not_found};
use crate::model::MfaFactor;
use crate::{Result, StoreError};
use ciel_core::audit::AuditDraft;
use rusqlite::{params, Connection, Row};

const COLS: &str =
    "subject, tenant_id, kind, sealed_secret, confirmed, last_step, failed, locked_until, created";

fn row(r: &Row) -> rusqlite::Result<MfaFactor> {
    Ok(MfaFactor {
        subject: r.get(0)?,
        tenant_id: r.get(1)?,
        kind: r.get(2)?,
        sealed_secret: r.get(3)?,
        confirmed: r.get(4)?,
        last_step: r.get(5)?,
        failed: r.get(6)?,
        locked_until: r.get(7)?,
        created: r.get(8)?,
    })
}

pub(super) fn put(tx: &Connection, f: &MfaFactor, audit: &AuditDraft) -> Result<()> {
    tx.execute(
        &format!("INSERT OR REPLACE INTO mfa_factors ({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"),
        params![
            f.subject,
            f.tenant_id,
            f.kind,
            f.sealed_secret,
            f.confirmed,
            f.last_step,
            f.failed,
            f.locked_until,
            f.created
        ],
    )?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn get(c: &Connection, subject: &str) -> Result<MfaFactor> {
    not_found(c.query_row(
        &format!("SELECT {COLS} FROM mfa_factors WHERE subject = ?1"),
        [subject],
        row,
    ))
}

pub(super) fn list(c: &Connection) -> Result<Vec<MfaFactor>> {
    let mut s = c.prepare(&format!("SELECT {COLS} FROM mfa_factors ORDER BY subject"))?;
    let out = s
        .query_map([], row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

pub(super) fn accept_step(
    tx: &Connection,
    subject: &str,
    step: i64,
    audit: &AuditDraft,
) -> Result<bool> {
    // The comparison and the update are one statement inside the writer's transaction, so a code
    // can be accepted once even when two requests carry it at the same moment.
    let n = tx.execute(
        "UPDATE mfa_factors SET last_step = ?2, failed = 0, locked_until = NULL, confirmed = 1
         WHERE subject = ?1 AND last_step < ?2",
        params![subject, step],
    )?;
    if n == 0 {
        // Either unknown, or a replay: tell them apart for the caller.
        get(tx, subject)?;
        return Ok(false);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(true)
}

pub(super) fn record_failure(
    tx: &Connection,
    subject: &str,
    failed: i64,
    locked_until: Option<i64>,
    audit: &AuditDraft,
) -> Result<()> {
    let n = tx.execute(
        "UPDATE mfa_factors SET failed = ?2, locked_until = ?3 WHERE subject = ?1",
        params![subject, failed, locked_until],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn delete(tx: &Connection, subject: &str, audit: &AuditDraft) -> Result<()> {
    let n = tx.execute("DELETE FROM mfa_factors WHERE subject = ?1", [subject])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::MfaFactor;
    use crate::sqlite::SqliteStore;
    use crate::MetadataStore;
    use ciel_core::audit::AuditDraft;

    fn draft() -> AuditDraft {
        AuditDraft {
            tenant_id: None,
            actor: "system".into(),
            action: "identity/mfa/test".into(),
            target: "u1".into(),
            outcome: "success".into(),
            details: serde_json::json!({}),
            request_id: None,
            client_ip: None,
        }
    }

    #[test]
    fn a_step_is_accepted_once_and_never_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let f = MfaFactor {
            subject: "u1".into(),
            tenant_id: Some("t".into()),
            kind: "totp".into(),
            sealed_secret: vec![1, 2, 3],
            confirmed: false,
            last_step: 0,
            failed: 3,
            locked_until: None,
            created: 1,
        };
        s.put_mfa_factor(&f, &draft()).unwrap();
        assert!(s.mfa_accept_step("u1", 100, &draft()).unwrap());
        let got = s.get_mfa_factor("u1").unwrap();
        assert!(got.confirmed);
        assert_eq!((got.last_step, got.failed), (100, 0));
        assert!(!s.mfa_accept_step("u1", 100, &draft()).unwrap());
        assert!(!s.mfa_accept_step("u1", 99, &draft()).unwrap());
        assert!(s.mfa_accept_step("u1", 101, &draft()).unwrap());
        assert!(s.mfa_accept_step("nobody", 5, &draft()).is_err());
        s.mfa_record_failure("u1", 5, Some(42), &draft()).unwrap();
        assert_eq!(s.get_mfa_factor("u1").unwrap().locked_until, Some(42));
        s.delete_mfa_factor("u1", &draft()).unwrap();
        assert!(s.get_mfa_factor("u1").is_err());
        assert!(s.list_mfa_factors().unwrap().is_empty());
    }
}
