//! Vaults (`Microsoft.KeyVault/vaults`), one module per operation group: `create` (create,
//! update, recover and the settings' validation), `access_policies` (the alternative to RBAC),
//! `deleted` (soft-deleted vaults: list, get, purge), `name` (checkNameAvailability). Get, list
//! and delete live here.
//!
//! A vault's own key (32 random bytes) seals its secrets and software keys. It is kept beside
//! the ARM record, sealed by the custody backend (under the platform master key, or by an AES key
//! inside the HSM), never in the record. Purging a vault destroys it: crypto-erasure.

pub mod access_policies;
pub mod create;
pub mod deleted;
pub mod name;

use crate::KeyVaultProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_store::Resource;
use http::StatusCode;
use serde_json::json;

pub const TYPE: &str = "Microsoft.KeyVault/vaults";

/// Vault names: 3 to 24 characters, letters, digits and hyphens; a letter first, a letter or a
/// digit last, no two hyphens in a row (they are DNS labels).
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    (3..=24).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && !n.contains("--")
}

pub fn invalid_name(n: &str) -> ApiError {
    ApiError::bad_request(
        "VaultNameNotValid",
        format!(
            "The vault name '{}' is not valid: it must be 3 to 24 characters long, made of letters, digits and hyphens, start with a letter, end with a letter or a digit, and not contain two hyphens in a row.",
            ciel_arm::clip(n)
        ),
    )
}

pub fn not_found(id: &ResourceId) -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        format!(
            "The Resource '{TYPE}/{}' under resource group '{}' was not found.",
            ciel_arm::clip(id.name().unwrap_or("")),
            ciel_arm::clip(id.resource_group.as_deref().unwrap_or(""))
        ),
    )
}

/// The vault record, if it exists in the caller's tenant.
pub async fn load(
    p: &KeyVaultProvider,
    id: &ResourceId,
    caller: &Caller,
) -> ArmResult<Option<Resource>> {
    ciel_arm::provider::load_own(&p.store, id, caller, TYPE).await
}

pub async fn get(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    match load(p, &req.id, &req.caller).await? {
        Some(r) => Ok(ProviderResponse::Done {
            status: StatusCode::OK,
            body: Some(r.body),
        }),
        None => Err(not_found(&req.id).into()),
    }
}

/// List by subscription or by resource group (the router authorized read at that scope).
pub async fn list(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    ciel_arm::provider::list_own(&p.store, req, TYPE).await
}

/// `DELETE`: a soft delete. Soft delete cannot be turned off in this cloud (as in Azure today),
/// so the vault and its data are kept for its retention period, then purged.
pub async fn delete(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let Some(r) = load(p, &req.id, &req.caller).await? else {
        return Ok(ProviderResponse::Done {
            status: StatusCode::NO_CONTENT,
            body: None,
        });
    };
    soft_delete(
        p,
        &r,
        &req.caller,
        req.draft(&format!("{TYPE}/delete"), &req.id.to_string(), json!({})),
    )
    .await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: None,
    })
}

async fn soft_delete(
    p: &KeyVaultProvider,
    r: &Resource,
    _caller: &Caller,
    mut draft: ciel_core::audit::AuditDraft,
) -> ArmResult<()> {
    let days = r.body["properties"]["softDeleteRetentionInDays"]
        .as_i64()
        .unwrap_or(90);
    let now = ciel_core::time::now_unix();
    let purge_at = now + days * 86_400;
    draft.details = json!({"softDelete": true, "scheduledPurgeDate": ciel_core::time::unix_to_rfc3339(purge_at)});
    let key = r.id.to_ascii_lowercase();
    ciel_store::run(&p.store, move |s| {
        s.delete_vault(&key, Some((now, purge_at)), &draft)
    })
    .await?;
    Ok(())
}

/// Deletion as part of a resource group's deletion: a soft delete too.
pub async fn destroy(p: &KeyVaultProvider, id: &ResourceId, caller: &Caller) -> ArmResult<()> {
    let Some(r) = load(p, id, caller).await? else {
        return Ok(());
    };
    let draft = ciel_core::audit::AuditDraft {
        tenant_id: Some(caller.tenant_id.clone()),
        actor: caller.display(),
        action: format!("{TYPE}/delete"),
        target: id.to_string(),
        outcome: "success".into(),
        details: json!({"with": "resourceGroup"}),
        ..Default::default()
    };
    soft_delete(p, &r, caller, draft).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn vault_names() {
        for ok in ["abc", "my-vault-1", "A23", "v".repeat(24).as_str()] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            "1abc",
            "abc-",
            "a--b",
            "a_b",
            "v".repeat(25).as_str(),
            "ab.c",
        ] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
