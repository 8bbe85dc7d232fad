//! Tenants' MFA policy: which users must sign in with a second factor.

use super::append_in;
use crate::{Result, StoreError};
use ciel_core::audit::AuditDraft;
use rusqlite::{params, Connection, OptionalExtension};

pub(super) fn get(c: &Connection, tenant_id: &str) -> Result<Option<String>> {
    Ok(c.query_row(
        "SELECT require FROM tenant_mfa_policies WHERE tenant_id = ?1",
        [tenant_id],
        |r| r.get(0),
    )
    .optional()?)
}

pub(super) fn put(
    tx: &Connection,
    tenant_id: &str,
    require: &str,
    updated_by: &str,
    audit: &AuditDraft,
) -> Result<()> {
    let exists: bool = tx
        .query_row("SELECT 1 FROM tenants WHERE id = ?1", [tenant_id], |_| {
            Ok(true)
        })
        .optional()?
        .unwrap_or(false);
    if !exists {
        return Err(StoreError::NotFound);
    }
    tx.execute(
        "INSERT INTO tenant_mfa_policies (tenant_id, require, updated, updated_by) VALUES (?1,?2,?3,?4)
         ON CONFLICT(tenant_id) DO UPDATE SET require = excluded.require, updated = excluded.updated, updated_by = excluded.updated_by",
        params![tenant_id, require, ciel_core::time::now_unix(), updated_by],
    )?;
    append_in(tx, std::slice::from_ref(audit))?;
    Ok(())
}
