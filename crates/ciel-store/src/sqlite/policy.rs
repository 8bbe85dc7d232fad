//! Azure Policy table: definitions, set definitions and assignments (one row each, the ARM body
//! whole). The trait methods in `sqlite.rs` call these with the transaction or a reader.

use super::{append_in, json_col, not_found};
use crate::model::PolicyObject;
use crate::{Result, StoreError};
use ciel_core::audit::AuditDraft;
use rusqlite::{params, Connection, OptionalExtension, Row};

const COLS: &str = "id, tenant_id, kind, scope_key, name, body, created, changed";

fn row(r: &Row) -> rusqlite::Result<PolicyObject> {
    Ok(PolicyObject {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        kind: r.get(2)?,
        scope: r.get(3)?,
        name: r.get(4)?,
        body: json_col(r.get(5)?)?,
        created: r.get(6)?,
        changed: r.get(7)?,
    })
}

pub(super) fn put(tx: &Connection, p: &PolicyObject, audit: &AuditDraft) -> Result<bool> {
    let key = p.id.to_ascii_lowercase();
    let existed = tx
        .query_row(
            "SELECT 1 FROM policy_objects WHERE id_key = ?1",
            [&key],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    tx.execute(
        "INSERT INTO policy_objects (id_key, id, tenant_id, kind, scope_key, name, body, created, changed)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)
         ON CONFLICT(id_key) DO UPDATE SET body = excluded.body, changed = excluded.changed",
        params![
            key,
            p.id,
            p.tenant_id,
            p.kind,
            p.scope.to_ascii_lowercase(),
            p.name,
            p.body.to_string(),
            p.created,
            p.changed
        ],
    )?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(!existed)
}

pub(super) fn get(c: &Connection, id: &str) -> Result<PolicyObject> {
    not_found(c.query_row(
        &format!("SELECT {COLS} FROM policy_objects WHERE id_key = ?1"),
        [id.to_ascii_lowercase()],
        row,
    ))
}

pub(super) fn list(c: &Connection, tenant_id: &str, kind: &str) -> Result<Vec<PolicyObject>> {
    let mut s = c.prepare(&format!(
        "SELECT {COLS} FROM policy_objects WHERE tenant_id = ?1 AND kind = ?2 ORDER BY id_key"
    ))?;
    let rows = s.query_map(params![tenant_id, kind], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn delete(tx: &Connection, id: &str, audit: &AuditDraft) -> Result<()> {
    let n = tx.execute(
        "DELETE FROM policy_objects WHERE id_key = ?1",
        [id.to_ascii_lowercase()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}

/// Removes what is assigned or defined at `scope` (lower-cased) or below it: a deleted resource
/// group takes its assignments with it, in the transaction that deletes it.
pub(super) fn delete_within(tx: &Connection, scope: &str) -> Result<()> {
    let esc = scope
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    tx.execute(
        "DELETE FROM policy_objects WHERE scope_key = ?1 OR scope_key LIKE ?2 ESCAPE '\\'",
        params![scope, format!("{esc}/%")],
    )?;
    Ok(())
}
