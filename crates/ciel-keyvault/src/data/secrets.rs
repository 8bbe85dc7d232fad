//! Secrets: Set Secret, Get Secret (latest or a version), Update Secret, Delete Secret (soft),
//! Get Secrets, Get Secret Versions, the deleted secrets (list, get, recover, purge). Values are
//! sealed under the vault's key (AES-256-GCM, bound to vault, name and version).

use super::common::{self, *};
use super::error::{KvError, KvResult};
use super::{ok_json, Ctx};
use axum::response::{IntoResponse, Response};
use ciel_core::seal::MasterKey;
use ciel_store::KvVersion;
use http::StatusCode;
use serde_json::{json, Value};

const KIND: &str = "secret";
/// Key Vault's limit on a secret value.
pub const MAX_VALUE: usize = 25 * 1024;

fn purpose(vault: &str, name: &str, version: &str) -> String {
    format!(
        "ciel/kv-secret/v1:{vault}/{}/{version}",
        name.to_ascii_lowercase()
    )
}

pub fn seal_value(
    key: &[u8],
    vault: &str,
    name: &str,
    version: &str,
    value: &[u8],
) -> KvResult<Vec<u8>> {
    let k = MasterKey::from_bytes(key).map_err(|e| KvError::Internal(e.to_string()))?;
    k.seal(&purpose(vault, name, version), value)
        .map_err(|e| KvError::Internal(e.to_string()))
}

pub fn open_value(key: &[u8], v: &KvVersion) -> KvResult<Vec<u8>> {
    let k = MasterKey::from_bytes(key).map_err(|e| KvError::Internal(e.to_string()))?;
    k.open(&purpose(&v.vault, &v.name, &v.version), &v.sealed)
        .map_err(|_| KvError::Internal("a secret value does not open under its vault key".into()))
}

fn id(ctx: &Ctx<'_>, v: &KvVersion, with_version: bool) -> String {
    if with_version {
        format!("{}/secrets/{}/{}", ctx.base, v.name, v.version)
    } else {
        format!("{}/secrets/{}", ctx.base, v.name)
    }
}

/// A secret bundle (`value` only when given) or a list item.
fn render(ctx: &Ctx<'_>, v: &KvVersion, value: Option<String>, with_version: bool) -> Value {
    let mut b = json!({
        "id": id(ctx, v, with_version),
        "attributes": render_attributes(ctx, v),
        "tags": v.tags,
    });
    if let Some(ct) = &v.content_type {
        b["contentType"] = json!(ct);
    }
    if let Some(val) = value {
        b["value"] = json!(val);
    }
    b
}

fn render_deleted(
    ctx: &Ctx<'_>,
    n: &ciel_store::KvName,
    v: &KvVersion,
    with_version: bool,
) -> Value {
    let mut b = render(ctx, v, None, with_version);
    b["recoveryId"] = json!(format!("{}/deletedsecrets/{}", ctx.base, v.name));
    b["deletedDate"] = json!(n.deleted);
    b["scheduledPurgeDate"] = json!(n.purge_at);
    b
}

/// `PUT /secrets/{name}`: a new version.
pub async fn set(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    check_name(KIND, name)?;
    ctx.authorize("secrets", Some(name), "secrets/setSecret/action", "set")
        .await?;
    let body = ctx.json()?;
    let value = body["value"]
        .as_str()
        .ok_or_else(|| KvError::bad("'value' is required and must be a string."))?;
    if value.len() > MAX_VALUE {
        return Err(KvError::bad(format!(
            "A secret value is at most {MAX_VALUE} bytes; this one has {}.",
            value.len()
        )));
    }
    let content_type = match body.get("contentType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 255 => Some(s.clone()),
        Some(_) => {
            return Err(KvError::bad(
                "'contentType' must be a string of at most 255 characters.",
            ))
        }
    };
    let attributes = attributes(body.get("attributes"), &json!({}))?;
    let tags = tags(body.get("tags"), &json!({}))?;
    let version = new_version();
    let key = ctx.vault_key().await?;
    let sealed = seal_value(&key, &ctx.vault_name, name, &version, value.as_bytes())?;
    let now = ciel_core::time::now_unix();
    let v = KvVersion {
        vault: ctx.vault_name.clone(),
        kind: KIND.into(),
        name: name.to_string(),
        version,
        created: now,
        updated: now,
        attributes,
        tags,
        content_type,
        public: json!({}),
        sealed,
    };
    let draft = ctx.draft(
        "Microsoft.KeyVault/vaults/secrets/setSecret/action",
        &format!("{}/secrets/{name}", ctx.vault.id),
        "success",
        json!({"version": v.version, "size": value.len()}),
    );
    let rec = v.clone();
    let res = ciel_store::run(&ctx.svc.store, move |s| s.kv_put_version(&rec, &draft)).await;
    if let Err(ciel_store::StoreError::Conflict(_)) = res {
        return Err(KvError::conflict(
            "Conflict",
            format!("The secret '{}' is deleted but recoverable: recover or purge it before setting it again.", ciel_arm::clip(name)),
        ));
    }
    res?;
    // The stored spelling of the name is the first one; answer with it.
    let stored = load_version(ctx, KIND, name, Some(&v.version)).await?;
    Ok(ok_json(render(ctx, &stored, Some(value.to_string()), true)))
}

/// `GET /secrets/{name}[/{version}]`: the value. Audited.
pub async fn get(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/getSecret/action", "get")
        .await?;
    let v = load_version(ctx, KIND, name, version).await?;
    if !enabled(&v) {
        return Err(KvError::forbidden(
            "SecretDisabled",
            "Operation get is not allowed on a disabled secret.",
        ));
    }
    let key = ctx.vault_key().await?;
    let value = open_value(&key, &v)?;
    let value = String::from_utf8(value)
        .map_err(|_| KvError::Internal("a stored secret is not UTF-8".into()))?;
    ctx.audit(ctx.draft(
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        &format!("{}/secrets/{}", ctx.vault.id, v.name),
        "success",
        json!({"version": v.version}),
    ))
    .await?;
    Ok(ok_json(render(ctx, &v, Some(value), true)))
}

/// `PATCH /secrets/{name}/{version}`: attributes, tags and content type (never the value).
pub async fn update(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/update/action", "set")
        .await?;
    let mut v = load_version(ctx, KIND, name, version).await?;
    let body = ctx.json()?;
    if body.get("value").is_some() {
        return Err(KvError::bad("Update Secret changes attributes, tags and content type; set a new version to change the value."));
    }
    v.attributes = attributes(body.get("attributes"), &v.attributes)?;
    v.tags = tags(body.get("tags"), &v.tags)?;
    match body.get("contentType") {
        None => {}
        Some(Value::Null) => v.content_type = None,
        Some(Value::String(s)) if s.len() <= 255 => v.content_type = Some(s.clone()),
        Some(_) => {
            return Err(KvError::bad(
                "'contentType' must be a string of at most 255 characters.",
            ))
        }
    }
    v.updated = ciel_core::time::now_unix();
    let draft = ctx.draft(
        "Microsoft.KeyVault/vaults/secrets/update/action",
        &format!("{}/secrets/{}", ctx.vault.id, v.name),
        "success",
        json!({"version": v.version}),
    );
    let rec = v.clone();
    ciel_store::run(&ctx.svc.store, move |s| s.kv_update_version(&rec, &draft)).await?;
    Ok(ok_json(render(ctx, &v, None, true)))
}

/// `DELETE /secrets/{name}`: a soft delete of every version.
pub async fn delete(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/delete", "delete")
        .await?;
    let (state, v) = common::soft_delete(ctx, KIND, name).await?;
    Ok(ok_json(render_deleted(ctx, &state, &v, true)))
}

/// `GET /secrets`: each live secret once, without its value.
pub async fn list(ctx: &Ctx<'_>) -> KvResult<Response> {
    ctx.authorize("secrets", None, "secrets/readMetadata/action", "list")
        .await?;
    let vault = ctx.vault_name.clone();
    let all = ciel_store::run(&ctx.svc.store, move |s| s.kv_list(&vault, KIND, false)).await?;
    let items = all
        .iter()
        .map(|(n, v)| (n.name.to_ascii_lowercase(), render(ctx, v, None, false)))
        .collect();
    Ok(ok_json(common::page(ctx, "/secrets", items)?))
}

/// `GET /secrets/{name}/versions`.
pub async fn list_versions(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/readMetadata/action", "list")
        .await?;
    live_name(ctx, KIND, name).await?;
    let (vault, n) = (ctx.vault_name.clone(), name.to_string());
    let all = ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_list_versions(&vault, KIND, &n)
    })
    .await?;
    let items = all
        .iter()
        .enumerate()
        .map(|(i, v)| (version_key(i), render(ctx, v, None, true)))
        .collect();
    Ok(ok_json(common::page(
        ctx,
        &format!("/secrets/{name}/versions"),
        items,
    )?))
}

pub async fn list_deleted(ctx: &Ctx<'_>) -> KvResult<Response> {
    ctx.authorize("secrets", None, "secrets/readMetadata/action", "list")
        .await?;
    let vault = ctx.vault_name.clone();
    let all = ciel_store::run(&ctx.svc.store, move |s| s.kv_list(&vault, KIND, true)).await?;
    let items = all
        .iter()
        .map(|(n, v)| {
            (
                n.name.to_ascii_lowercase(),
                render_deleted(ctx, n, v, false),
            )
        })
        .collect();
    Ok(ok_json(common::page(ctx, "/deletedsecrets", items)?))
}

pub async fn get_deleted(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/readMetadata/action", "get")
        .await?;
    let (n, v) = load_deleted(ctx, KIND, name).await?;
    Ok(ok_json(render_deleted(ctx, &n, &v, true)))
}

/// `POST /deletedsecrets/{name}/recover`.
pub async fn recover(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/recover/action", "recover")
        .await?;
    let v = common::recover(ctx, KIND, name).await?;
    Ok(ok_json(render(ctx, &v, None, true)))
}

/// `DELETE /deletedsecrets/{name}`: gone for good. Refused under purge protection.
pub async fn purge(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("secrets", Some(name), "secrets/purge/action", "purge")
        .await?;
    common::purge(ctx, KIND, name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
