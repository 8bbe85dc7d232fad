//! listKeys, regenerateKey and revokeUserDelegationKeys. Reading keys is reading secrets: each
//! read is audited.

use super::{load, not_found, random_b64, Secrets, TYPE};
use crate::StorageProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use http::StatusCode;
use serde_json::json;

fn keys_json(s: &Secrets) -> serde_json::Value {
    json!({"keys": [
        {"keyName": "key1", "value": s.key1, "permissions": "FULL", "creationTime": s.key1_created},
        {"keyName": "key2", "value": s.key2, "permissions": "FULL", "creationTime": s.key2_created}
    ]})
}

pub async fn list_keys(p: &StorageProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let r = load(p, &req.id, &req.caller)
        .await?
        .ok_or_else(|| not_found(&req.id))?;
    let sealed = r.sealed.as_deref().ok_or_else(ApiError::internal)?;
    let secrets = Secrets::open(&p.master, &req.id, sealed)?;
    let draft = req.draft(
        &format!("{TYPE}/listKeys/action"),
        &req.id.to_string(),
        json!({}),
    );
    ciel_store::run(&p.store, move |s| {
        s.append_audit(std::slice::from_ref(&draft))
    })
    .await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(keys_json(&secrets)),
    })
}

pub async fn regenerate_key(
    p: &StorageProvider,
    req: &ProviderRequest,
) -> ArmResult<ProviderResponse> {
    let which = req
        .json()?
        .get("keyName")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if which != "key1" && which != "key2" {
        return Err(
            ApiError::bad_request("InvalidValue", "keyName must be 'key1' or 'key2'.").into(),
        );
    }
    let mut r = load(p, &req.id, &req.caller)
        .await?
        .ok_or_else(|| not_found(&req.id))?;
    let sealed = r.sealed.as_deref().ok_or_else(ApiError::internal)?;
    let mut secrets = Secrets::open(&p.master, &req.id, sealed)?;
    let now = ciel_core::time::now_rfc3339();
    if which == "key1" {
        secrets.key1 = random_b64(64)?;
        secrets.key1_created = now.clone();
    } else {
        secrets.key2 = random_b64(64)?;
        secrets.key2_created = now.clone();
    }
    r.body["properties"]["keyCreationTime"][which.as_str()] = json!(now);
    r.sealed = Some(secrets.seal(&p.master, &req.id)?);
    r.changed = ciel_core::time::now_unix();
    let draft = req.draft(
        &format!("{TYPE}/regenerateKey/action"),
        &req.id.to_string(),
        json!({"keyName": which}),
    );
    ciel_store::run(&p.store, move |s| s.put_resource(&r, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(keys_json(&secrets)),
    })
}

/// Revokes every user delegation key issued so far (and so every user delegation SAS signed
/// with one): the keys are derived from the account's secrets and this generation number.
pub async fn revoke_user_delegation_keys(
    p: &StorageProvider,
    req: &ProviderRequest,
) -> ArmResult<ProviderResponse> {
    let mut r = load(p, &req.id, &req.caller)
        .await?
        .ok_or_else(|| not_found(&req.id))?;
    let sealed = r.sealed.as_deref().ok_or_else(ApiError::internal)?;
    let mut secrets = Secrets::open(&p.master, &req.id, sealed)?;
    secrets.udk_epoch += 1;
    r.sealed = Some(secrets.seal(&p.master, &req.id)?);
    r.changed = ciel_core::time::now_unix();
    let draft = req.draft(
        &format!("{TYPE}/revokeUserDelegationKeys/action"),
        &req.id.to_string(),
        json!({"generation": secrets.udk_epoch}),
    );
    ciel_store::run(&p.store, move |s| s.put_resource(&r, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: None,
    })
}
