//! `ciel tenant erase`: the end of a contract (SecNumCloud 19.4.a: erasure after a formal notice
//! of 21 days, by key destruction). `--notice` records the notice (a platform setting and an
//! audit entry); after the period, the erasure destroys every storage account's sealed keys
//! first (from that commit on, the tenant's blob objects cannot be decrypted by anyone:
//! crypto-erasure), then its blob records and object files, resource groups, role assignments,
//! custom roles and principals, and leaves an audit entry with the counts. The audit chain itself
//! is kept: it is the operator's record (retained at least six months, 12.6.c).

use crate::export::tenant_accounts;
use anyhow::{anyhow, bail, Result};
use ciel_core::audit::AuditDraft;
use ciel_core::ResourceId;
use ciel_storage::offline;
use ciel_store::{Found, MetadataStore};
use serde_json::json;
use std::path::Path;

pub const DEFAULT_NOTICE_DAYS: u32 = 21;

fn setting(tenant: &str) -> String {
    format!("tenant.erase_notice.{tenant}")
}

fn draft(
    tenant: &str,
    actor: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> AuditDraft {
    AuditDraft {
        tenant_id: Some(tenant.into()),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        outcome: "success".into(),
        details,
        ..Default::default()
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Records the notice (once: a second notice keeps the first date). Returns its time.
pub fn give_notice(store: &dyn MetadataStore, tenant: &str, actor: &str) -> Result<String> {
    store
        .get_tenant(tenant)
        .found()?
        .ok_or_else(|| anyhow!("tenant {tenant} does not exist"))?;
    if let Some(v) = store.get_setting(&setting(tenant))? {
        if let Ok(at) = v.parse::<i64>() {
            return Ok(rfc3339(at));
        }
    }
    let now = ciel_core::time::now_unix();
    store.append_audit(&[draft(
        tenant,
        actor,
        "Ciel.Tenant/erase/notice/action",
        &format!("/tenants/{tenant}"),
        json!({"noticeGiven": rfc3339(now)}),
    )])?;
    store.set_setting(&setting(tenant), &now.to_string())?;
    Ok(rfc3339(now))
}

/// Key Vault's resource type.
const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";

#[derive(Debug, Default)]
pub struct EraseReport {
    pub accounts: usize,
    /// Key vaults destroyed (live and soft-deleted), with their keys and secrets.
    pub vaults: usize,
    pub groups: usize,
    pub assignments: usize,
    pub definitions: usize,
    /// Policy definitions, set definitions and assignments.
    pub policies: usize,
    pub principals: usize,
}

/// Erases a tenant. `notice_days`: the period that must have passed since the notice; `None`
/// erases without notice (`--now`, tests and drills).
pub fn erase(
    store: &dyn MetadataStore,
    blob_root: &Path,
    tenant: &str,
    actor: &str,
    notice_days: Option<u32>,
) -> Result<EraseReport> {
    store
        .get_tenant(tenant)
        .found()?
        .ok_or_else(|| anyhow!("tenant {tenant} does not exist"))?;
    if let Some(days) = notice_days {
        let given = store
            .get_setting(&setting(tenant))?
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| anyhow!("no notice of erasure was given for tenant {tenant}: run `ciel tenant erase {tenant} --notice` first; the erasure is possible {days} days later"))?;
        let due = given + i64::from(days) * 86_400;
        if ciel_core::time::now_unix() < due {
            bail!(
                "the notice period is not over: notice given {}, erasure possible from {}",
                rfc3339(given),
                rfc3339(due)
            );
        }
    }
    let mut rep = EraseReport::default();
    let target = format!("/tenants/{tenant}");
    for a in tenant_accounts(store, tenant)? {
        let key = a.id.to_ascii_lowercase();
        // The account record holds its sealed keys: deleting it is the crypto-erasure.
        store.delete_resource(
            &key,
            &draft(
                tenant,
                actor,
                "Microsoft.Storage/storageAccounts/delete",
                &a.id,
                json!({"cryptoErasure": true, "with": "tenantErasure"}),
            ),
        )?;
        store.delete_account_data(&key)?;
        if let Some(id) = ResourceId::parse(&a.id) {
            offline::destroy_account_files(blob_root, &id);
        }
        rep.accounts += 1;
    }
    // Key vaults, live and soft-deleted: the records that hold their sealed vault keys go with
    // every secret and key version (crypto-erasure of secret values and software keys).
    for s in store.list_subscriptions(tenant)? {
        let scope = format!("/subscriptions/{}", s.id).to_ascii_lowercase();
        let vaults: Vec<_> = store
            .list_resources(&scope, Some(VAULT_TYPE), None, 100_000)?
            .into_iter()
            .filter(|r| r.tenant_id == tenant)
            .collect();
        for v in vaults {
            store.delete_vault(
                &v.id.to_ascii_lowercase(),
                None,
                &draft(
                    tenant,
                    actor,
                    "Microsoft.KeyVault/vaults/delete",
                    &v.id,
                    json!({"cryptoErasure": true, "with": "tenantErasure"}),
                ),
            )?;
            rep.vaults += 1;
        }
        for d in store.list_deleted_vaults(&s.id)? {
            if d.resource.tenant_id != tenant {
                continue;
            }
            store.purge_vault(
                &d.resource.name,
                &draft(
                    tenant,
                    actor,
                    "Microsoft.KeyVault/locations/deletedVaults/purge/action",
                    &d.resource.id,
                    json!({"cryptoErasure": true, "with": "tenantErasure"}),
                ),
            )?;
            rep.vaults += 1;
        }
    }
    for s in store.list_subscriptions(tenant)? {
        loop {
            let gs = store.list_resource_groups(&s.id, None, 1000)?;
            if gs.is_empty() {
                break;
            }
            for g in gs {
                store.delete_resource_group(
                    &s.id,
                    &g.name,
                    &draft(
                        tenant,
                        actor,
                        "Microsoft.Resources/resourceGroups/delete",
                        &format!("/subscriptions/{}/resourceGroups/{}", s.id, g.name),
                        json!({"with": "tenantErasure"}),
                    ),
                )?;
                rep.groups += 1;
            }
        }
    }
    for ra in store.list_role_assignments(tenant)? {
        store.delete_role_assignment(
            &ra.name,
            &draft(
                tenant,
                actor,
                "Microsoft.Authorization/roleAssignments/delete",
                &ra.name,
                json!({"with": "tenantErasure"}),
            ),
        )?;
        rep.assignments += 1;
    }
    for d in store.list_role_definitions(tenant)? {
        store.delete_role_definition(
            &d.id,
            &draft(
                tenant,
                actor,
                "Microsoft.Authorization/roleDefinitions/delete",
                &d.id,
                json!({"with": "tenantErasure"}),
            ),
        )?;
        rep.definitions += 1;
    }
    // Policy objects: assignments first, then the sets and definitions they named.
    for kind in [
        "policyAssignments",
        "policySetDefinitions",
        "policyDefinitions",
    ] {
        for o in store.policy_list(tenant, kind)? {
            store.policy_delete(
                &o.id,
                &draft(
                    tenant,
                    actor,
                    &format!("Microsoft.Authorization/{kind}/delete"),
                    &o.id,
                    json!({"with": "tenantErasure"}),
                ),
            )?;
            rep.policies += 1;
        }
    }
    for p in store.list_principals(tenant, None)? {
        store.delete_principal(
            &p.object_id,
            &draft(
                tenant,
                actor,
                "Ciel.Directory/principals/delete",
                &p.object_id,
                json!({"with": "tenantErasure"}),
            ),
        )?;
        rep.principals += 1;
    }
    // Keys held in an HSM are not destroyed here: erasure works on the data directory, without
    // the HSM session; their records and wrapped vault keys are gone, and the operator removes
    // the objects labelled `{vault}/...` from the token (docs/operations.md).
    store.append_audit(&[draft(tenant, actor, "Ciel.Tenant/erase/action", &target, json!({
        "storageAccounts": rep.accounts, "keyVaults": rep.vaults, "resourceGroups": rep.groups, "roleAssignments": rep.assignments,
        "customRoles": rep.definitions, "policies": rep.policies, "principals": rep.principals, "withoutNotice": notice_days.is_none()
    }))])?;
    store.set_setting(
        &setting(tenant),
        &format!("erased:{}", ciel_core::time::now_unix()),
    )?;
    Ok(rep)
}
