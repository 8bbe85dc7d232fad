//! Backup and restore of a secret or a key, every version. The blob is opaque to the client:
//! a fresh AES-256-GCM key encrypts the payload, and custody seals that key bound to the tenant
//! (under the master key, or inside the HSM), so a backup restores only into a vault of the
//! same tenant of this cloud. Secret values are re-sealed under the target vault's key.
//! Software key material stays sealed under its vault's key, so keys restore into the vault they
//! were backed up from; keys held in an HSM are not exported at all.

use super::common::*;
use super::error::{KvError, KvResult};
use super::keys::{b64u, unb64u};
use super::secrets::{open_value, seal_value};
use super::{blocking, ok_json, Ctx};
use axum::response::Response;
use ciel_core::seal::MasterKey;
use ciel_store::KvVersion;
use serde_json::{json, Value};

fn context(ctx: &Ctx<'_>) -> String {
    format!("ciel/kv-backup/v1:{}", ctx.caller.tenant_id)
}

const PURPOSE: &str = "ciel/kv-backup-payload/v1";

pub async fn backup(ctx: &Ctx<'_>, kind: &'static str, name: &str) -> KvResult<Response> {
    let family = if kind == "key" { "keys" } else { "secrets" };
    ctx.authorize(
        family,
        Some(name),
        &format!("{family}/backup/action"),
        "backup",
    )
    .await?;
    if kind == "key" && ctx.svc.custody.is_hsm() {
        return Err(KvError::not_supported(
            "Backup of keys held in an HSM (they never leave it)",
        ));
    }
    live_name(ctx, kind, name).await?;
    let (vault, n) = (ctx.vault_name.clone(), name.to_string());
    let versions = ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_list_versions(&vault, kind, &n)
    })
    .await?;
    let vault_key = ctx.vault_key().await?;
    let mut items = Vec::new();
    for v in &versions {
        let mut item = json!({
            "version": v.version, "created": v.created, "updated": v.updated,
            "attributes": v.attributes, "tags": v.tags, "contentType": v.content_type,
            "public": v.public,
        });
        if kind == "secret" {
            item["value"] = json!(b64u(&open_value(&vault_key, v)?));
        } else {
            item["material"] = json!(b64u(&v.sealed));
        }
        items.push(item);
    }
    let payload = json!({"v": 1, "kind": kind, "vault": ctx.vault_name, "name": versions.first().map(|v| v.name.clone()), "versions": items});
    let key = crate::random_bytes(32).map_err(|_| KvError::Internal("rng".into()))?;
    let sealed_payload = MasterKey::from_bytes(&key)
        .and_then(|k| k.seal(PURPOSE, payload.to_string().as_bytes()))
        .map_err(|e| KvError::Internal(e.to_string()))?;
    let (c, cx) = (ctx.svc.custody.clone(), context(ctx));
    let sealed_key = blocking(move || c.seal_vault_key(&cx, &key).map_err(KvError::from)).await?;
    let blob = json!({"ciel-backup": 1, "k": b64u(&sealed_key), "c": b64u(&sealed_payload)});
    ctx.audit(ctx.draft(
        &format!("Microsoft.KeyVault/vaults/{family}/backup/action"),
        &format!("{}/{family}/{name}", ctx.vault.id),
        "success",
        json!({"versions": versions.len()}),
    ))
    .await?;
    Ok(ok_json(json!({"value": b64u(blob.to_string().as_bytes())})))
}

pub async fn restore(ctx: &Ctx<'_>, kind: &'static str) -> KvResult<Response> {
    let family = if kind == "key" { "keys" } else { "secrets" };
    ctx.authorize(family, None, &format!("{family}/restore/action"), "restore")
        .await?;
    let body = ctx.json()?;
    let bad = || KvError::bad("The backup blob is not valid, or was made for another tenant.");
    let raw = unb64u(
        "value",
        body["value"]
            .as_str()
            .ok_or_else(|| KvError::bad("'value' is required."))?,
    )?;
    let blob: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let sealed_key = unb64u("k", blob["k"].as_str().ok_or_else(bad)?).map_err(|_| bad())?;
    let sealed_payload = unb64u("c", blob["c"].as_str().ok_or_else(bad)?).map_err(|_| bad())?;
    let (c, cx) = (ctx.svc.custody.clone(), context(ctx));
    let key = blocking(move || c.open_vault_key(&cx, &sealed_key).map_err(|_| bad())).await?;
    let payload = MasterKey::from_bytes(&key)
        .and_then(|k| k.open(PURPOSE, &sealed_payload))
        .map_err(|_| bad())?;
    let p: Value = serde_json::from_slice(&payload).map_err(|_| bad())?;
    if p["kind"].as_str() != Some(kind) {
        return Err(KvError::bad(format!("This backup does not hold a {kind}.")));
    }
    let name = p["name"].as_str().ok_or_else(bad)?.to_string();
    if kind == "key" && p["vault"].as_str() != Some(ctx.vault_name.as_str()) {
        return Err(KvError::not_supported(
            "Restoring a key into another vault than the one it was backed up from",
        ));
    }
    let vault_key = ctx.vault_key().await?;
    let mut versions = Vec::new();
    for it in p["versions"].as_array().ok_or_else(bad)? {
        let version = it["version"].as_str().ok_or_else(bad)?.to_string();
        let sealed = if kind == "secret" {
            let value = unb64u("value", it["value"].as_str().ok_or_else(bad)?)?;
            seal_value(&vault_key, &ctx.vault_name, &name, &version, &value)?
        } else {
            unb64u("material", it["material"].as_str().ok_or_else(bad)?)?
        };
        versions.push(KvVersion {
            vault: ctx.vault_name.clone(),
            kind: kind.into(),
            name: name.clone(),
            version,
            created: it["created"].as_i64().unwrap_or(0),
            updated: it["updated"].as_i64().unwrap_or(0),
            attributes: it["attributes"].clone(),
            tags: it["tags"].clone(),
            content_type: it["contentType"].as_str().map(String::from),
            public: it["public"].clone(),
            sealed,
        });
    }
    let draft = ctx.draft(
        &format!("Microsoft.KeyVault/vaults/{family}/restore/action"),
        &format!("{}/{family}/{name}", ctx.vault.id),
        "success",
        json!({"versions": versions.len()}),
    );
    let res = ciel_store::run(&ctx.svc.store, move |s| s.kv_restore(&versions, &draft)).await;
    if let Err(ciel_store::StoreError::Conflict(_)) = res {
        return Err(KvError::conflict(
            "Conflict",
            format!(
                "A {kind} named '{}' already exists in this vault (or is deleted but recoverable).",
                ciel_arm::clip(&name)
            ),
        ));
    }
    res?;
    let v = load_version(ctx, kind, &name, None).await?;
    let item = if kind == "secret" {
        json!({"id": format!("{}/secrets/{}/{}", ctx.base, v.name, v.version),
               "attributes": render_attributes(ctx, &v), "tags": v.tags, "contentType": v.content_type})
    } else {
        let mut k = v.public.clone();
        if let Some(o) = k.as_object_mut() {
            o.remove("key_size");
            o.insert(
                "kid".into(),
                json!(format!("{}/keys/{}/{}", ctx.base, v.name, v.version)),
            );
        }
        json!({"key": k, "attributes": render_attributes(ctx, &v), "tags": v.tags})
    };
    Ok(ok_json(item))
}
