//! Customer Lockbox: what an approved request lets an operator do, and the check the data planes
//! run for every call made with an operator token. Operators have no standing access; a call is
//! allowed only when a grant of the resource's tenant is `Approved`, not past its end, names an
//! access kind that covers the data action, and has a scope that contains the target. Every
//! decision, allowed or denied, is an audit entry of the tenant, naming the request.

use ciel_core::audit::AuditDraft;
use ciel_core::Caller;
use ciel_store::{LockboxRequestRec, MetadataStore, Result};
use serde_json::json;

/// The access kinds an operator may ask for.
pub const BLOB_READ: &str = "blob.read";
pub const SECRET_READ: &str = "secret.read";
pub const KEY_OPERATIONS: &str = "key.operations";
pub const ACCESS_KINDS: &[&str] = &[BLOB_READ, SECRET_READ, KEY_OPERATIONS];

/// Azure's Customer Lockbox grants at most 8 hours.
pub const MAX_DURATION_SECS: i64 = 8 * 3600;
/// Short grants are allowed (a shorter window is only safer).
pub const MIN_DURATION_SECS: i64 = 10;
/// A request nobody decided expires after 4 days, as Azure's do.
pub const PENDING_TTL_SECS: i64 = 4 * 24 * 3600;
/// The api-version of `Microsoft.CustomerLockbox`.
pub const API_VERSION: &str = "2018-02-28-preview";

/// The access kind a data action needs, or `None`: an action no kind covers (every write, delete,
/// key creation, permission change) is never possible for an operator.
pub fn access_for(action: &str) -> Option<&'static str> {
    let a = action.to_ascii_lowercase();
    match a.as_str() {
        "microsoft.storage/storageaccounts/blobservices/containers/blobs/read"
        | "microsoft.storage/storageaccounts/blobservices/containers/read" => Some(BLOB_READ),
        "microsoft.keyvault/vaults/secrets/getsecret/action"
        | "microsoft.keyvault/vaults/secrets/readmetadata/action" => Some(SECRET_READ),
        "microsoft.keyvault/vaults/keys/read"
        | "microsoft.keyvault/vaults/keys/encrypt/action"
        | "microsoft.keyvault/vaults/keys/decrypt/action"
        | "microsoft.keyvault/vaults/keys/sign/action"
        | "microsoft.keyvault/vaults/keys/verify/action"
        | "microsoft.keyvault/vaults/keys/wrap/action"
        | "microsoft.keyvault/vaults/keys/unwrap/action" => Some(KEY_OPERATIONS),
        _ => None,
    }
}

/// The status as the tenant sees it now: an approved grant past its end, or a pending request
/// past its deadline, is `Expired` without anyone writing it.
pub fn status_at(r: &LockboxRequestRec, now: i64) -> &str {
    match r.status.as_str() {
        "Approved" | "Pending" if r.expires <= now => "Expired",
        s => s,
    }
}

/// True when `target` is `scope` or below it (resource ids compare without case, segment by
/// segment, so `/…/containers/ab` is not below `/…/containers/a`).
pub fn within(target: &str, scope: &str) -> bool {
    let t = target.trim_end_matches('/').to_ascii_lowercase();
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    !s.is_empty() && (t == s || t.starts_with(&format!("{s}/")))
}

/// True when `r` lets operator `operator` perform `access` on `target` of `tenant` at `now`.
pub fn covers(
    r: &LockboxRequestRec,
    operator: &str,
    tenant: &str,
    target: &str,
    access: &str,
    now: i64,
) -> bool {
    r.operator.eq_ignore_ascii_case(operator)
        && r.tenant_id == tenant
        && status_at(r, now) == "Approved"
        && r.access.iter().any(|a| a == access)
        && within(target, &r.scope)
}

/// The operator's name from its `Caller` (`operator:{name}`).
pub fn operator_name(c: &Caller) -> &str {
    c.upn
        .as_deref()
        .and_then(|u| u.strip_prefix("operator:"))
        .unwrap_or("")
}

/// The lockbox check of one call by an operator: finds a grant covering it and writes the audit
/// entry of the tenant (allowed, with the request id, or denied, with why). Blocking: run it on
/// the store's pool.
pub fn check(
    store: &dyn MetadataStore,
    caller: &Caller,
    target: &str,
    action: &str,
    request_id: &str,
    client_ip: Option<&str>,
) -> Result<bool> {
    let now = ciel_core::time::now_unix();
    let name = operator_name(caller);
    let need = access_for(action);
    let requests = store.list_lockbox_requests(Some(&caller.tenant_id))?;
    let grant = need.and_then(|need| {
        requests
            .iter()
            .find(|r| covers(r, name, &caller.tenant_id, target, need, now))
    });
    let details = match (grant, need) {
        (Some(g), _) => json!({
            "lockboxRequestId": g.id, "accessType": need, "breakGlass": g.break_glass,
            "expirationDateTime": ciel_core::time::unix_to_rfc3339(g.expires),
        }),
        (None, None) => {
            json!({"reason": "LockboxNoSuchAccess", "detail": "no access kind covers this action"})
        }
        (None, Some(need)) => {
            // Say why, for the tenant reading its trail: an expired grant is the usual case.
            let mine: Vec<&LockboxRequestRec> = requests
                .iter()
                .filter(|r| {
                    r.operator.eq_ignore_ascii_case(name)
                        && r.access.iter().any(|a| a == need)
                        && within(target, &r.scope)
                })
                .collect();
            let reason = if mine
                .iter()
                .any(|r| status_at(r, now) == "Expired" && r.decided.is_some())
            {
                "LockboxGrantExpired"
            } else if mine.iter().any(|r| status_at(r, now) == "Revoked") {
                "LockboxGrantRevoked"
            } else {
                "LockboxNoApprovedGrant"
            };
            json!({"reason": reason, "accessType": need})
        }
    };
    let d = AuditDraft {
        tenant_id: Some(caller.tenant_id.clone()),
        actor: caller.display(),
        action: action.to_string(),
        target: target.to_string(),
        outcome: if grant.is_some() { "success" } else { "denied" }.into(),
        details,
        request_id: Some(request_id.to_string()),
        client_ip: client_ip.map(str::to_string),
    };
    store.append_audit(std::slice::from_ref(&d))?;
    Ok(grant.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scope: &str, access: &[&str], status: &str, expires: i64) -> LockboxRequestRec {
        LockboxRequestRec {
            id: "r1".into(),
            tenant_id: "t1".into(),
            subscription_id: "s1".into(),
            operator: "alice".into(),
            scope: scope.into(),
            access: access.iter().map(|s| s.to_string()).collect(),
            justification: "incident".into(),
            duration_secs: 3600,
            status: status.into(),
            created: 0,
            decided: Some(10),
            decided_by: Some("admin@t1".into()),
            decision_reason: None,
            expires,
            break_glass: false,
            incident: None,
        }
    }

    const ACC: &str =
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acc";

    #[test]
    fn scope_containment_is_by_segment_and_without_case() {
        let c = format!("{ACC}/blobServices/default/containers/a");
        assert!(within(&c, ACC));
        assert!(within(&c, &c.to_uppercase()));
        assert!(within(&c, "/subscriptions/s1"));
        assert!(!within(
            &format!("{ACC}/blobServices/default/containers/ab"),
            &c
        ));
        assert!(!within(&format!("{ACC}2"), ACC));
        assert!(!within(ACC, &c));
        assert!(!within(ACC, ""));
    }

    #[test]
    fn a_grant_covers_only_its_access_its_scope_its_tenant_its_operator_and_its_window() {
        let c = format!("{ACC}/blobServices/default/containers/a");
        let g = grant(ACC, &[BLOB_READ], "Approved", 100);
        assert!(covers(&g, "alice", "t1", &c, BLOB_READ, 50));
        assert!(covers(&g, "ALICE", "t1", &c, BLOB_READ, 99));
        assert!(
            !covers(&g, "alice", "t1", &c, BLOB_READ, 100),
            "expired at its end"
        );
        assert!(
            !covers(&g, "alice", "t1", &c, SECRET_READ, 50),
            "another access kind"
        );
        assert!(
            !covers(&g, "bob", "t1", &c, BLOB_READ, 50),
            "another operator"
        );
        assert!(
            !covers(&g, "alice", "t2", &c, BLOB_READ, 50),
            "another tenant"
        );
        assert!(!covers(
            &g,
            "alice",
            "t1",
            "/subscriptions/s1/resourceGroups/other",
            BLOB_READ,
            50
        ));
        for s in ["Pending", "Denied", "Revoked"] {
            assert!(!covers(
                &grant(ACC, &[BLOB_READ], s, 100),
                "alice",
                "t1",
                &c,
                BLOB_READ,
                50
            ));
        }
        assert_eq!(status_at(&g, 100), "Expired");
        assert_eq!(status_at(&grant(ACC, &[], "Pending", 5), 6), "Expired");
        assert_eq!(status_at(&grant(ACC, &[], "Denied", 5), 6), "Denied");
    }

    #[test]
    fn only_reads_and_key_operations_map_to_access_kinds() {
        assert_eq!(
            access_for("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"),
            Some(BLOB_READ)
        );
        assert_eq!(
            access_for("Microsoft.KeyVault/vaults/secrets/getSecret/action"),
            Some(SECRET_READ)
        );
        assert_eq!(
            access_for("Microsoft.KeyVault/vaults/keys/decrypt/action"),
            Some(KEY_OPERATIONS)
        );
        for a in [
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
            "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            "Microsoft.KeyVault/vaults/keys/create/action",
            "Microsoft.KeyVault/vaults/secrets/purge/action",
        ] {
            assert_eq!(access_for(a), None, "{a}");
        }
    }
}
