//! The operator directory and Customer Lockbox requests. The trait methods in `sqlite.rs` call
//! these with the transaction (writes) or a reader connection.

use super::{append_in, conflict_or, not_found};
use crate::model::{LockboxRequestRec, OperatorRec};
use crate::{Result, StoreError};
use ciel_core::audit::AuditDraft;
use rusqlite::{params, Connection, Row};

const OCOLS: &str = "id, name, password_hash, disabled, failed_logins, locked_until, created";

fn operator(r: &Row) -> rusqlite::Result<OperatorRec> {
    Ok(OperatorRec {
        id: r.get(0)?,
        name: r.get(1)?,
        password_hash: r.get(2)?,
        disabled: r.get(3)?,
        failed_logins: r.get(4)?,
        locked_until: r.get(5)?,
        created: r.get(6)?,
    })
}

pub(super) fn put_operator(tx: &Connection, o: &OperatorRec, audit: &AuditDraft) -> Result<()> {
    tx.execute(
        &format!("INSERT INTO operators ({OCOLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
        params![
            o.id,
            o.name,
            o.password_hash,
            o.disabled,
            o.failed_logins,
            o.locked_until,
            o.created
        ],
    )
    .map_err(|e| conflict_or(e, "operator"))?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn get_operator(c: &Connection, name: &str) -> Result<OperatorRec> {
    not_found(c.query_row(
        &format!("SELECT {OCOLS} FROM operators WHERE name = ?1"),
        [name],
        operator,
    ))
}

pub(super) fn list_operators(c: &Connection) -> Result<Vec<OperatorRec>> {
    let mut s = c.prepare(&format!("SELECT {OCOLS} FROM operators ORDER BY name"))?;
    let out = s
        .query_map([], operator)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

pub(super) fn update_operator(
    tx: &Connection,
    o: &OperatorRec,
    audit: Option<&AuditDraft>,
) -> Result<()> {
    let n = tx.execute(
        "UPDATE operators SET password_hash = ?2, disabled = ?3, failed_logins = ?4, locked_until = ?5 WHERE id = ?1",
        params![o.id, o.password_hash, o.disabled, o.failed_logins, o.locked_until],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    if let Some(a) = audit {
        append_in(tx, std::slice::from_ref(a))?;
    }
    Ok(())
}

const RCOLS: &str = "id, tenant_id, subscription_id, operator, scope, access, justification, duration_secs, status, created, decided, decided_by, decision_reason, expires, break_glass, incident";

fn request(r: &Row) -> rusqlite::Result<LockboxRequestRec> {
    let access: String = r.get(5)?;
    Ok(LockboxRequestRec {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        subscription_id: r.get(2)?,
        operator: r.get(3)?,
        scope: r.get(4)?,
        access: serde_json::from_str(&access).unwrap_or_default(),
        justification: r.get(6)?,
        duration_secs: r.get(7)?,
        status: r.get(8)?,
        created: r.get(9)?,
        decided: r.get(10)?,
        decided_by: r.get(11)?,
        decision_reason: r.get(12)?,
        expires: r.get(13)?,
        break_glass: r.get(14)?,
        incident: r.get(15)?,
    })
}

fn access_json(r: &LockboxRequestRec) -> Result<String> {
    serde_json::to_string(&r.access).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn put_request(
    tx: &Connection,
    r: &LockboxRequestRec,
    audit: &AuditDraft,
) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO lockbox_requests ({RCOLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
        ),
        params![
            r.id,
            r.tenant_id,
            r.subscription_id,
            r.operator,
            r.scope,
            access_json(r)?,
            r.justification,
            r.duration_secs,
            r.status,
            r.created,
            r.decided,
            r.decided_by,
            r.decision_reason,
            r.expires,
            r.break_glass,
            r.incident
        ],
    )
    .map_err(|e| conflict_or(e, "lockbox request"))?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

pub(super) fn get_request(c: &Connection, id: &str) -> Result<LockboxRequestRec> {
    not_found(c.query_row(
        &format!("SELECT {RCOLS} FROM lockbox_requests WHERE id = ?1"),
        [id],
        request,
    ))
}

pub(super) fn list_requests(
    c: &Connection,
    tenant_id: Option<&str>,
) -> Result<Vec<LockboxRequestRec>> {
    let mut s = c.prepare(&format!(
        "SELECT {RCOLS} FROM lockbox_requests WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY created DESC, id"
    ))?;
    let out = s
        .query_map([tenant_id], request)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(out)
}

pub(super) fn decide(
    tx: &Connection,
    r: &LockboxRequestRec,
    from_status: &str,
    audit: &AuditDraft,
) -> Result<bool> {
    let n = tx.execute(
        "UPDATE lockbox_requests SET status = ?2, decided = ?3, decided_by = ?4, decision_reason = ?5, expires = ?6
         WHERE id = ?1 AND status = ?7",
        params![
            r.id,
            r.status,
            r.decided,
            r.decided_by,
            r.decision_reason,
            r.expires,
            from_status
        ],
    )?;
    if n == 0 {
        get_request(tx, &r.id)?;
        return Ok(false);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(true)
}
