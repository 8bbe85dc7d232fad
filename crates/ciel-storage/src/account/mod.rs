//! Storage accounts (`Microsoft.Storage/storageAccounts`), one module per operation group:
//! `create` (create and update: the settings and their validation), `keys` (listKeys,
//! regenerateKey, revokeUserDelegationKeys), `name` (checkNameAvailability). Get, list and delete live here.
//!
//! An account's secret material — its two access keys and its data encryption key — is sealed
//! under the platform master key, bound to the account id, and stored beside the account's ARM
//! record but never in it. Deleting the account deletes that material (crypto-erasure).

pub mod create;
pub mod encryption;
pub mod keys;
pub mod name;

pub use create::{create, update};
pub use keys::{list_keys, regenerate_key, revoke_user_delegation_keys};
pub use name::check_name_availability;

use crate::error::StorageError;
use crate::StorageProvider;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_store::Resource;
use http::StatusCode;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const TYPE: &str = "Microsoft.Storage/storageAccounts";

/// The sealed part of an account.
#[derive(Serialize, Deserialize, Clone)]
pub struct Secrets {
    pub key1: String,
    pub key2: String,
    pub key1_created: String,
    pub key2_created: String,
    /// 256-bit data encryption key for the account's blobs (base64).
    pub data_key: String,
    /// Generation of user delegation keys: revokeUserDelegationKeys increments it, which
    /// changes every key derived before (they are derived, never stored).
    #[serde(default)]
    pub udk_epoch: u64,
    /// Set when a customer-managed key wraps the data key; `data_key` is then empty.
    #[serde(default)]
    pub cmk: Option<encryption::CmkState>,
}

fn purpose(id: &ResourceId) -> String {
    format!("ciel/storage-account/v1:{}", id.key())
}

pub fn random_b64(n: usize) -> Result<String, StorageError> {
    let mut b = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| ciel_core::seal::SealError::Rng)?;
    Ok(B64.encode(b))
}

impl Secrets {
    pub fn generate() -> Result<Self, StorageError> {
        let now = ciel_core::time::now_rfc3339();
        Ok(Self {
            key1: random_b64(64)?,
            key2: random_b64(64)?,
            key1_created: now.clone(),
            key2_created: now,
            data_key: random_b64(32)?,
            udk_epoch: 0,
            cmk: None,
        })
    }
    pub fn seal(
        &self,
        master: &ciel_core::seal::MasterKey,
        id: &ResourceId,
    ) -> Result<Vec<u8>, StorageError> {
        let plain = serde_json::to_vec(self)
            .map_err(|e| StorageError::Invalid(ApiError::bad_request("Internal", e.to_string())))?;
        Ok(master.seal(&purpose(id), &plain)?)
    }
    pub fn open(
        master: &ciel_core::seal::MasterKey,
        id: &ResourceId,
        sealed: &[u8],
    ) -> Result<Self, StorageError> {
        let plain = master.open(&purpose(id), sealed)?;
        serde_json::from_slice(&plain)
            .map_err(|_| StorageError::Seal(ciel_core::seal::SealError::Open))
    }
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

/// The account record, if it exists in the caller's tenant.
pub async fn load(
    p: &StorageProvider,
    id: &ResourceId,
    caller: &Caller,
) -> ArmResult<Option<Resource>> {
    ciel_arm::provider::load_own(&p.store, id, caller, TYPE).await
}

pub async fn get_properties(
    p: &StorageProvider,
    req: &ProviderRequest,
) -> ArmResult<ProviderResponse> {
    match load(p, &req.id, &req.caller).await? {
        Some(r) => Ok(ProviderResponse::Done {
            status: StatusCode::OK,
            body: Some(r.body),
        }),
        None => Err(not_found(&req.id).into()),
    }
}

/// List by subscription or by resource group (the router authorized read at that scope).
pub async fn list(p: &StorageProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    ciel_arm::provider::list_own(&p.store, req, TYPE).await
}

/// `DELETE`: the account, its keys and (once the data plane exists) its data. 204 when absent.
pub async fn delete(p: &StorageProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let Some(existing) = load(p, &req.id, &req.caller).await? else {
        return Ok(ProviderResponse::Done {
            status: StatusCode::NO_CONTENT,
            body: None,
        });
    };
    let draft = req.draft(
        &format!("{TYPE}/delete"),
        &req.id.to_string(),
        json!({"cryptoErasure": true}),
    );
    let key = req.id.key();
    let identity = identity_of(&existing);
    ciel_store::run(&p.store, move |s| s.delete_resource(&key, &draft)).await?;
    erase_data(p, &req.id, identity, &req.caller).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: None,
    })
}

/// Deletion as part of a resource group's deletion.
pub async fn destroy(p: &StorageProvider, id: &ResourceId, caller: &Caller) -> ArmResult<()> {
    let Some(existing) = load(p, id, caller).await? else {
        return Ok(());
    };
    let draft = ciel_core::audit::AuditDraft {
        tenant_id: Some(caller.tenant_id.clone()),
        actor: caller.display(),
        action: format!("{TYPE}/delete"),
        target: id.to_string(),
        outcome: "success".into(),
        details: json!({"cryptoErasure": true, "with": "resourceGroup"}),
        ..Default::default()
    };
    let key = id.key();
    let identity = identity_of(&existing);
    ciel_store::run(&p.store, move |s| s.delete_resource(&key, &draft)).await?;
    erase_data(p, id, identity, caller).await
}

fn identity_of(r: &Resource) -> Option<String> {
    r.body["identity"]["principalId"]
        .as_str()
        .map(str::to_string)
}

/// After the account (and its data key) is gone: its containers, blob records and object files.
async fn erase_data(
    p: &StorageProvider,
    id: &ResourceId,
    identity: Option<String>,
    caller: &Caller,
) -> ArmResult<()> {
    if let Some(o) = identity {
        // The account's managed identity goes with it.
        let draft = ciel_core::audit::AuditDraft {
            tenant_id: Some(caller.tenant_id.clone()),
            actor: caller.display(),
            action: "Microsoft.Storage/storageAccounts/identity/delete".into(),
            target: id.to_string(),
            outcome: "success".into(),
            details: json!({"principalId": o}),
            ..Default::default()
        };
        ciel_store::run(&p.store, move |s| s.delete_principal(&o, &draft)).await?;
    }
    let key = id.key();
    ciel_store::run(&p.store, move |s| s.delete_account_data(&key)).await?;
    let (root, id) = (p.blob_root.clone(), id.clone());
    tokio::task::spawn_blocking(move || {
        crate::blob::BlobService::destroy_account_files(&root, &id)
    })
    .await
    .map_err(|_| ApiError::internal())?;
    Ok(())
}

pub fn list_skus() -> ProviderResponse {
    let locs = ciel_core::region::REGIONS
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>();
    let value: Vec<_> = ["Standard_LRS", "Standard_ZRS"]
        .iter()
        .map(|n| {
            json!({"resourceType": "storageAccounts", "name": n, "tier": "Standard", "kind": "StorageV2",
                   "locations": locs, "locationInfo": locs.iter().map(|l| json!({"location": l, "zones": []})).collect::<Vec<_>>(),
                   "capabilities": [], "restrictions": []})
        })
        .collect();
    ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(json!({ "value": value })),
    }
}
