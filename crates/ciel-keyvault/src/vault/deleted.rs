//! Soft-deleted vaults: `GET /subscriptions/S/providers/Microsoft.KeyVault/deletedVaults`,
//! `GET …/locations/{l}/deletedVaults/{name}` and `POST …/purge`. A deleted vault keeps its name,
//! its key and its data until it is purged, by hand or when its retention period ends.

use crate::KeyVaultProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use ciel_store::{DeletedVault, Found};
use http::StatusCode;
use serde_json::{json, Value};

pub fn render(d: &DeletedVault) -> Value {
    let r = &d.resource;
    let loc = r.location.clone().unwrap_or_default();
    json!({
        "id": format!("/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}", r.subscription_id, loc, r.name),
        "name": r.name,
        "type": "Microsoft.KeyVault/deletedVaults",
        "properties": {
            "vaultId": r.id,
            "location": loc,
            "deletionDate": ciel_core::time::unix_to_rfc3339(d.deleted),
            "scheduledPurgeDate": ciel_core::time::unix_to_rfc3339(d.purge_at),
            "tags": r.body.get("tags").cloned().unwrap_or(json!({})),
            "purgeProtectionEnabled": r.body["properties"]["enablePurgeProtection"].as_bool().unwrap_or(false),
        }
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "ResourceNotFound",
        format!(
            "No deleted vault named '{}' was found.",
            ciel_arm::clip(name)
        ),
    )
}

pub async fn list(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let sub = req.id.subscription.clone();
    let tenant = req.caller.tenant_id.clone();
    let all = ciel_store::run(&p.store, move |s| s.list_deleted_vaults(&sub)).await?;
    let value: Vec<_> = all
        .iter()
        .filter(|d| d.resource.tenant_id == tenant)
        .map(render)
        .collect();
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(json!({ "value": value })),
    })
}

/// The deleted vault at `…/locations/{l}/deletedVaults/{name}`, in the caller's subscription.
async fn find(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<DeletedVault> {
    let name = req.id.name().unwrap_or("").to_string();
    let location = req
        .id
        .segments
        .first()
        .map(|(_, l)| l.clone())
        .unwrap_or_default();
    let n = name.to_ascii_lowercase();
    let d = ciel_store::run(&p.store, move |s| s.get_deleted_vault(&n).found()).await?;
    d.filter(|d| {
        d.resource
            .subscription_id
            .eq_ignore_ascii_case(&req.id.subscription)
            && d.resource.tenant_id == req.caller.tenant_id
            && d.resource
                .location
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(&location))
    })
    .ok_or_else(|| not_found(&name).into())
}

pub async fn get(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let d = find(p, req).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(render(&d)),
    })
}

/// `POST …/purge`: destroys the vault's key, secrets and keys. Refused under purge protection.
pub async fn purge(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let d = find(p, req).await?;
    if d.resource.body["properties"]["enablePurgeProtection"].as_bool() == Some(true) {
        let draft = ciel_core::audit::AuditDraft {
            outcome: "denied".into(),
            ..req.draft(
                "Microsoft.KeyVault/locations/deletedVaults/purge/action",
                &d.resource.id,
                json!({"reason": "PurgeProtection"}),
            )
        };
        ciel_store::run(&p.store, move |s| {
            s.append_audit(std::slice::from_ref(&draft))
        })
        .await?;
        return Err(ApiError::conflict(
            "Conflict",
            "This vault has purge protection: it will be purged when its retention period ends, and not before.",
        )
        .into());
    }
    crate::purge_vault(
        p,
        &d.resource.name,
        req.draft(
            "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            &d.resource.id,
            json!({"cryptoErasure": true}),
        ),
    )
    .await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: None,
    })
}
