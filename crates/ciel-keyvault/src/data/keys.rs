//! Keys: Create Key, Import Key, Get Key, Update Key, Get Keys, Get Key Versions, Delete Key
//! (soft) and the deleted keys, Rotate Key and its rotation policy, and the key operations
//! (encrypt, decrypt, wrapKey, unwrapKey, sign, verify) and Get Random Bytes. Private-key
//! operations run in custody (software or HSM) and are audited; public-key operations run here.

use super::common::{self, *};
use super::error::{KvError, KvResult};
use super::{blocking, ok_json, Ctx};
use crate::custody::{self, Curve, EncAlg, KeyMaterial, KeySpec, PrivateKey, PublicKey, SignAlg};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use ciel_store::KvVersion;
use http::StatusCode;
use serde_json::{json, Value};

const KIND: &str = "key";
const RSA_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrapKey",
    "unwrapKey",
];
const EC_OPS: &[&str] = &["sign", "verify"];

pub fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Key Vault sends base64url without padding; accept padding too.
pub fn unb64u(field: &str, s: &str) -> KvResult<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(s))
        .map_err(|_| KvError::bad(format!("'{field}' must be base64url.")))
}

fn curve_name(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "P-256",
        Curve::P384 => "P-384",
        Curve::P521 => "P-521",
    }
}

fn parse_curve(s: &str) -> KvResult<Curve> {
    match s {
        "P-256" => Ok(Curve::P256),
        "P-384" => Ok(Curve::P384),
        "P-521" => Ok(Curve::P521),
        "P-256K" => Err(KvError::not_supported("The secp256k1 curve (P-256K)")),
        other => Err(KvError::bad(format!(
            "'{}' is not a supported curve (P-256, P-384, P-521).",
            ciel_arm::clip(other)
        ))),
    }
}

/// The stored public part: JWK members plus `key_ops` and, for RSA, `key_size`.
fn public_json(kty: &str, key_ops: &[String], p: &PublicKey) -> Value {
    match p {
        PublicKey::Rsa { n, e } => json!({
            "kty": kty, "key_ops": key_ops, "n": b64u(n), "e": b64u(e),
            "key_size": significant_bits(n),
        }),
        PublicKey::Ec { curve, x, y } => json!({
            "kty": kty, "key_ops": key_ops, "crv": curve_name(*curve), "x": b64u(x), "y": b64u(y),
        }),
    }
}

fn significant_bits(n: &[u8]) -> usize {
    let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    match n.first() {
        Some(f) => n.len() * 8 - f.leading_zeros() as usize,
        None => 0,
    }
}

pub(crate) fn public_key(v: &KvVersion) -> KvResult<PublicKey> {
    let p = &v.public;
    let get = |k: &str| -> KvResult<Vec<u8>> { unb64u(k, p[k].as_str().unwrap_or("")) };
    if p["kty"].as_str().unwrap_or("").starts_with("EC") {
        Ok(PublicKey::Ec {
            curve: parse_curve(p["crv"].as_str().unwrap_or(""))?,
            x: get("x")?,
            y: get("y")?,
        })
    } else {
        Ok(PublicKey::Rsa {
            n: get("n")?,
            e: get("e")?,
        })
    }
}

pub(crate) fn kid(ctx: &Ctx<'_>, v: &KvVersion, with_version: bool) -> String {
    if with_version {
        format!("{}/keys/{}/{}", ctx.base, v.name, v.version)
    } else {
        format!("{}/keys/{}", ctx.base, v.name)
    }
}

fn render(ctx: &Ctx<'_>, v: &KvVersion) -> Value {
    let mut key = v.public.clone();
    if let Some(o) = key.as_object_mut() {
        o.remove("key_size");
        o.insert("kid".into(), json!(kid(ctx, v, true)));
    }
    let mut attrs = render_attributes(ctx, v);
    attrs["exportable"] = json!(false);
    json!({"key": key, "attributes": attrs, "tags": v.tags})
}

/// A list item: `kid` without the key material.
fn render_item(ctx: &Ctx<'_>, v: &KvVersion, with_version: bool) -> Value {
    let mut attrs = render_attributes(ctx, v);
    attrs["exportable"] = json!(false);
    json!({"kid": kid(ctx, v, with_version), "attributes": attrs, "tags": v.tags})
}

fn render_deleted(ctx: &Ctx<'_>, n: &ciel_store::KvName, v: &KvVersion) -> Value {
    let mut b = render(ctx, v);
    b["recoveryId"] = json!(format!("{}/deletedkeys/{}", ctx.base, v.name));
    b["deletedDate"] = json!(n.deleted);
    b["scheduledPurgeDate"] = json!(n.purge_at);
    b
}

fn render_deleted_item(ctx: &Ctx<'_>, n: &ciel_store::KvName, v: &KvVersion) -> Value {
    let mut b = render_item(ctx, v, false);
    b["recoveryId"] = json!(format!("{}/deletedkeys/{}", ctx.base, v.name));
    b["deletedDate"] = json!(n.deleted);
    b["scheduledPurgeDate"] = json!(n.purge_at);
    b
}

/// `kty` as asked, checked against the vault: `-HSM` needs a premium vault on an HSM.
fn check_kty(ctx: &Ctx<'_>, kty: &str) -> KvResult<bool> {
    let hsm = kty.ends_with("-HSM");
    match kty {
        "RSA" | "EC" => {}
        "RSA-HSM" | "EC-HSM" => {
            let premium = ctx.vault.body["properties"]["sku"]["name"].as_str() == Some("premium");
            if !premium || !ctx.svc.custody.is_hsm() {
                return Err(KvError::bad(
                    "HSM-protected keys (RSA-HSM, EC-HSM) need a premium vault on an HSM-backed deployment.",
                ));
            }
        }
        "oct" | "oct-HSM" => return Err(KvError::not_supported("Symmetric keys (oct)")),
        other => {
            return Err(KvError::bad(format!(
                "'{}' is not a valid key type (RSA, RSA-HSM, EC, EC-HSM).",
                ciel_arm::clip(other)
            )))
        }
    }
    Ok(hsm)
}

fn key_ops(given: Option<&Value>, kty: &str) -> KvResult<Vec<String>> {
    let allowed = if kty.starts_with("EC") {
        EC_OPS
    } else {
        RSA_OPS
    };
    match given {
        None | Some(Value::Null) => Ok(allowed.iter().map(|s| s.to_string()).collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|o| {
                let o = o.as_str().unwrap_or("");
                allowed
                    .iter()
                    .find(|a| a.eq_ignore_ascii_case(o))
                    .map(|a| a.to_string())
                    .ok_or_else(|| {
                        KvError::bad(format!(
                            "'{}' is not a valid operation for a {kty} key ({}).",
                            ciel_arm::clip(o),
                            allowed.join(", ")
                        ))
                    })
            })
            .collect(),
        Some(_) => Err(KvError::bad("'key_ops' must be an array.")),
    }
}

pub(crate) fn label(ctx: &Ctx<'_>, name: &str, version: &str) -> String {
    format!("{}/{}/{version}", ctx.vault_name, name.to_ascii_lowercase())
}

/// Stores a new version made by custody.
#[allow(clippy::too_many_arguments)]
async fn store_new(
    ctx: &Ctx<'_>,
    name: &str,
    version: String,
    kty: &str,
    ops: Vec<String>,
    material: KeyMaterial,
    public: PublicKey,
    attributes: Value,
    tags: Value,
    action: &str,
    details: Value,
) -> KvResult<KvVersion> {
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
        content_type: None,
        public: public_json(kty, &ops, &public),
        sealed: serde_json::to_vec(&material).map_err(|e| KvError::Internal(e.to_string()))?,
    };
    let draft = ctx.draft(
        action,
        &format!("{}/keys/{name}", ctx.vault.id),
        "success",
        details,
    );
    let rec = v.clone();
    let res = ciel_store::run(&ctx.svc.store, move |s| s.kv_put_version(&rec, &draft)).await;
    if let Err(ciel_store::StoreError::Conflict(_)) = res {
        // The material made for nothing must not linger in an HSM.
        let c = ctx.svc.custody.clone();
        let _ = blocking(move || c.destroy(&material).map_err(KvError::from)).await;
        return Err(KvError::conflict(
            "Conflict",
            format!("The key '{}' is deleted but recoverable: recover or purge it before creating it again.", ciel_arm::clip(name)),
        ));
    }
    res?;
    common::load_version(ctx, KIND, name, Some(&v.version)).await
}

/// `POST /keys/{name}/create`.
pub async fn create(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    check_name(KIND, name)?;
    ctx.authorize("keys", Some(name), "keys/create/action", "create")
        .await?;
    let body = ctx.json()?;
    let kty = body["kty"]
        .as_str()
        .ok_or_else(|| KvError::bad("'kty' is required."))?
        .to_string();
    check_kty(ctx, &kty)?;
    if body["exportable"].as_bool() == Some(true) || !body["release_policy"].is_null() {
        return Err(KvError::not_supported(
            "Exportable keys and key release policies",
        ));
    }
    let spec = if kty.starts_with("EC") {
        if !body["key_size"].is_null() {
            return Err(KvError::bad(
                "'key_size' applies to RSA keys; EC keys take 'crv'.",
            ));
        }
        KeySpec::Ec {
            curve: parse_curve(body["crv"].as_str().unwrap_or("P-256"))?,
        }
    } else {
        let bits = match &body["key_size"] {
            Value::Null => 2048,
            v => v.as_u64().unwrap_or(0) as u32,
        };
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(KvError::bad("RSA keys are 2048, 3072 or 4096 bits."));
        }
        if let Some(e) = body["public_exponent"].as_u64() {
            if e != 65537 {
                return Err(KvError::bad("The only supported public exponent is 65537."));
            }
        }
        KeySpec::Rsa { bits }
    };
    let ops = key_ops(body.get("key_ops"), &kty)?;
    let attributes = attributes(body.get("attributes"), &json!({}))?;
    let tags = tags(body.get("tags"), &json!({}))?;
    let version = new_version();
    let vault_key = ctx.vault_key().await?;
    let (c, l) = (ctx.svc.custody.clone(), label(ctx, name, &version));
    let (material, public) =
        blocking(move || c.generate(&vault_key, &l, spec).map_err(KvError::from)).await?;
    let v = store_new(
        ctx,
        name,
        version,
        &kty,
        ops,
        material,
        public,
        attributes,
        tags,
        "Microsoft.KeyVault/vaults/keys/create/action",
        json!({"kty": kty, "custody": ctx.svc.custody.backend()}),
    )
    .await?;
    Ok(ok_json(render(ctx, &v)))
}

/// `PUT /keys/{name}`: import a private key given as a JWK.
pub async fn import(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    check_name(KIND, name)?;
    ctx.authorize("keys", Some(name), "keys/import/action", "import")
        .await?;
    let body = ctx.json()?;
    let jwk = body.get("key").filter(|k| k.is_object()).ok_or_else(|| {
        KvError::bad("'key' (a JSON Web Key with its private members) is required.")
    })?;
    let mut kty = jwk["kty"].as_str().unwrap_or("").to_string();
    if body["Hsm"].as_bool() == Some(true) && !kty.ends_with("-HSM") {
        kty.push_str("-HSM");
    }
    check_kty(ctx, &kty)?;
    let f = |k: &str| -> KvResult<Vec<u8>> {
        let s = jwk[k]
            .as_str()
            .ok_or_else(|| KvError::bad(format!("The key is missing its '{k}' member.")))?;
        unb64u(k, s)
    };
    let private = if kty.starts_with("EC") {
        PrivateKey::Ec {
            curve: parse_curve(jwk["crv"].as_str().unwrap_or(""))?,
            x: f("x")?,
            y: f("y")?,
            d: f("d")?,
        }
    } else {
        PrivateKey::Rsa {
            n: f("n")?,
            e: f("e")?,
            d: f("d")?,
            p: f("p")?,
            q: f("q")?,
            dp: f("dp")?,
            dq: f("dq")?,
            qi: f("qi")?,
        }
    };
    let ops = key_ops(jwk.get("key_ops"), &kty)?;
    let attributes = attributes(body.get("attributes"), &json!({}))?;
    let tags = tags(body.get("tags"), &json!({}))?;
    let version = new_version();
    let vault_key = ctx.vault_key().await?;
    let (c, l) = (ctx.svc.custody.clone(), label(ctx, name, &version));
    let (material, public) =
        blocking(move || c.import(&vault_key, &l, &private).map_err(KvError::from)).await?;
    let v = store_new(
        ctx,
        name,
        version,
        &kty,
        ops,
        material,
        public,
        attributes,
        tags,
        "Microsoft.KeyVault/vaults/keys/import/action",
        json!({"kty": kty, "custody": ctx.svc.custody.backend()}),
    )
    .await?;
    Ok(ok_json(render(ctx, &v)))
}

pub async fn get(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/read", "get")
        .await?;
    let v = load_version(ctx, KIND, name, version).await?;
    Ok(ok_json(render(ctx, &v)))
}

/// `PATCH /keys/{name}/{version}`: attributes, tags and key_ops.
pub async fn update(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/update/action", "update")
        .await?;
    let mut v = load_version(ctx, KIND, name, version).await?;
    let body = ctx.json()?;
    if body.get("key_ops").is_some_and(|o| !o.is_null()) {
        return Err(KvError::not_supported("Changing key_ops after creation"));
    }
    v.attributes = attributes(body.get("attributes"), &v.attributes)?;
    v.tags = tags(body.get("tags"), &v.tags)?;
    v.updated = ciel_core::time::now_unix();
    let draft = ctx.draft(
        "Microsoft.KeyVault/vaults/keys/update/action",
        &format!("{}/keys/{}", ctx.vault.id, v.name),
        "success",
        json!({"version": v.version}),
    );
    let rec = v.clone();
    ciel_store::run(&ctx.svc.store, move |s| s.kv_update_version(&rec, &draft)).await?;
    Ok(ok_json(render(ctx, &v)))
}

pub async fn delete(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/delete", "delete")
        .await?;
    let (state, v) = common::soft_delete(ctx, KIND, name).await?;
    Ok(ok_json(render_deleted(ctx, &state, &v)))
}

pub async fn list(ctx: &Ctx<'_>) -> KvResult<Response> {
    ctx.authorize("keys", None, "keys/read", "list").await?;
    let vault = ctx.vault_name.clone();
    let all = ciel_store::run(&ctx.svc.store, move |s| s.kv_list(&vault, KIND, false)).await?;
    let items = all
        .iter()
        .map(|(n, v)| (n.name.to_ascii_lowercase(), render_item(ctx, v, false)))
        .collect();
    Ok(ok_json(common::page(ctx, "/keys", items)?))
}

pub async fn list_versions(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/read", "list")
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
        .map(|(i, v)| (version_key(i), render_item(ctx, v, true)))
        .collect();
    Ok(ok_json(common::page(
        ctx,
        &format!("/keys/{name}/versions"),
        items,
    )?))
}

pub async fn list_deleted(ctx: &Ctx<'_>) -> KvResult<Response> {
    ctx.authorize("keys", None, "keys/read", "list").await?;
    let vault = ctx.vault_name.clone();
    let all = ciel_store::run(&ctx.svc.store, move |s| s.kv_list(&vault, KIND, true)).await?;
    let items = all
        .iter()
        .map(|(n, v)| (n.name.to_ascii_lowercase(), render_deleted_item(ctx, n, v)))
        .collect();
    Ok(ok_json(common::page(ctx, "/deletedkeys", items)?))
}

pub async fn get_deleted(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/read", "get")
        .await?;
    let (n, v) = load_deleted(ctx, KIND, name).await?;
    Ok(ok_json(render_deleted(ctx, &n, &v)))
}

pub async fn recover(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/recover/action", "recover")
        .await?;
    let v = common::recover(ctx, KIND, name).await?;
    Ok(ok_json(render(ctx, &v)))
}

pub async fn purge(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/purge/action", "purge")
        .await?;
    let gone = common::purge(ctx, KIND, name).await?;
    crate::destroy_materials(&ctx.svc.custody, gone).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /keys/{name}/rotate`: a new version of the same type, size and operations.
pub async fn rotate(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize("keys", Some(name), "keys/rotate/action", "rotate")
        .await?;
    let v = rotate_key(ctx, name, "manual").await?;
    Ok(ok_json(render(ctx, &v)))
}

pub(crate) async fn rotate_key(ctx: &Ctx<'_>, name: &str, why: &str) -> KvResult<KvVersion> {
    let cur = load_version(ctx, KIND, name, None).await?;
    let kty = cur.public["kty"].as_str().unwrap_or("RSA").to_string();
    let spec = if kty.starts_with("EC") {
        KeySpec::Ec {
            curve: parse_curve(cur.public["crv"].as_str().unwrap_or(""))?,
        }
    } else {
        KeySpec::Rsa {
            bits: cur.public["key_size"].as_u64().unwrap_or(2048) as u32,
        }
    };
    let ops: Vec<String> = cur.public["key_ops"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let (vault, n) = (ctx.vault_name.clone(), name.to_string());
    let policy = ciel_store::run(&ctx.svc.store, move |s| s.kv_get_name(&vault, KIND, &n))
        .await?
        .policy;
    let mut attributes = json!({"enabled": true});
    if let Some(exp) = policy
        .as_ref()
        .and_then(|p| p["attributes"]["expiryTime"].as_str())
        .and_then(iso_duration_secs)
    {
        attributes["exp"] = json!(ciel_core::time::now_unix() + exp);
    }
    let version = new_version();
    let vault_key = ctx.vault_key().await?;
    let (c, l) = (ctx.svc.custody.clone(), label(ctx, name, &version));
    let (material, public) =
        blocking(move || c.generate(&vault_key, &l, spec).map_err(KvError::from)).await?;
    store_new(
        ctx,
        name,
        version,
        &kty,
        ops,
        material,
        public,
        attributes,
        cur.tags.clone(),
        "Microsoft.KeyVault/vaults/keys/rotate/action",
        json!({"trigger": why, "previous": cur.version}),
    )
    .await
}

/// ISO-8601 durations of rotation policies: `P{n}Y`, `P{n}M`, `P{n}D` (and combinations).
pub fn iso_duration_secs(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P')?;
    if rest.is_empty() || rest.contains('T') {
        return None;
    }
    let mut total = 0i64;
    let mut num = String::new();
    for ch in rest.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: i64 = num.parse().ok()?;
        num.clear();
        total += n * match ch {
            'Y' => 365 * 86_400,
            'M' => 30 * 86_400,
            'W' => 7 * 86_400,
            'D' => 86_400,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

/// Whether a policy's `Rotate` action is due for the key's current version `v` at `now`:
/// `timeAfterCreate` counts from the version's creation, `timeBeforeExpiry` back from its `exp`.
pub fn rotation_due(policy: &Value, v: &KvVersion, now: i64) -> bool {
    policy["lifetimeActions"].as_array().is_some_and(|actions| {
        actions.iter().any(|a| {
            if a["action"]["type"].as_str() != Some("Rotate") {
                return false;
            }
            let t = &a["trigger"];
            if let Some(d) = t["timeAfterCreate"].as_str().and_then(iso_duration_secs) {
                return now >= v.created + d;
            }
            if let (Some(d), Some(exp)) = (
                t["timeBeforeExpiry"].as_str().and_then(iso_duration_secs),
                v.attributes["exp"].as_i64(),
            ) {
                return now >= exp - d;
            }
            false
        })
    })
}

fn default_policy() -> Value {
    json!({
        "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
        "attributes": {},
    })
}

fn render_policy(ctx: &Ctx<'_>, name: &str, p: &Value) -> Value {
    let mut out = p.clone();
    out["id"] = json!(format!("{}/keys/{name}/rotationpolicy", ctx.base));
    out
}

pub async fn get_rotation_policy(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize(
        "keyrotationpolicies",
        Some(name),
        "keyrotationpolicies/read",
        "getrotationpolicy",
    )
    .await?;
    let n = live_name(ctx, KIND, name).await?;
    let p = n.policy.unwrap_or_else(default_policy);
    Ok(ok_json(render_policy(ctx, &n.name, &p)))
}

/// `PUT /keys/{name}/rotationpolicy`: lifetime actions (Rotate or Notify, after creation or
/// before expiry) and the expiry given to new versions. Validated; Rotate actions are carried
/// out by the platform's periodic sweep.
pub async fn set_rotation_policy(ctx: &Ctx<'_>, name: &str) -> KvResult<Response> {
    ctx.authorize(
        "keyrotationpolicies",
        Some(name),
        "keyrotationpolicies/write",
        "setrotationpolicy",
    )
    .await?;
    let n = live_name(ctx, KIND, name).await?;
    let body = ctx.json()?;
    let actions = body["lifetimeActions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if actions.len() > 2 {
        return Err(KvError::bad(
            "A rotation policy has at most two lifetime actions.",
        ));
    }
    let expiry = match body["attributes"]["expiryTime"].as_str() {
        None => None,
        Some(e) => Some(
            iso_duration_secs(e)
                .filter(|s| *s >= 28 * 86_400)
                .ok_or_else(|| KvError::bad("'attributes.expiryTime' must be an ISO-8601 duration of at least 28 days (P28D)."))?,
        ),
    };
    let mut clean = Vec::new();
    for a in &actions {
        let t = &a["trigger"];
        let (after, before) = (
            t["timeAfterCreate"].as_str(),
            t["timeBeforeExpiry"].as_str(),
        );
        let trigger = match (after, before) {
            (Some(d), None) => {
                iso_duration_secs(d).filter(|s| *s >= 7 * 86_400).ok_or_else(|| KvError::bad("'timeAfterCreate' must be an ISO-8601 duration of at least 7 days."))?;
                json!({"timeAfterCreate": d})
            }
            (None, Some(d)) => {
                iso_duration_secs(d).filter(|s| *s >= 7 * 86_400).ok_or_else(|| KvError::bad("'timeBeforeExpiry' must be an ISO-8601 duration of at least 7 days."))?;
                if expiry.is_none() {
                    return Err(KvError::bad("A 'timeBeforeExpiry' trigger needs 'attributes.expiryTime'."));
                }
                json!({"timeBeforeExpiry": d})
            }
            _ => return Err(KvError::bad("Each lifetime action has exactly one trigger: 'timeAfterCreate' or 'timeBeforeExpiry'.")),
        };
        let typ = match a["action"]["type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("rotate") => "Rotate",
            Some("notify") => "Notify",
            _ => {
                return Err(KvError::bad(
                    "A lifetime action's type is 'Rotate' or 'Notify'.",
                ))
            }
        };
        clean.push(json!({"trigger": trigger, "action": {"type": typ}}));
    }
    let now = ciel_core::time::now_unix();
    let created = n
        .policy
        .as_ref()
        .and_then(|p| p["attributes"]["created"].as_i64())
        .unwrap_or(now);
    let mut attrs = json!({"created": created, "updated": now});
    if let Some(e) = body["attributes"]["expiryTime"].as_str() {
        attrs["expiryTime"] = json!(e);
    }
    let policy = json!({"lifetimeActions": clean, "attributes": attrs});
    let draft = ctx.draft(
        "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
        &format!("{}/keys/{}", ctx.vault.id, n.name),
        "success",
        json!({"actions": clean.len()}),
    );
    let (vault, nm, p2) = (ctx.vault_name.clone(), name.to_string(), policy.clone());
    ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_set_policy(&vault, KIND, &nm, &p2, &draft)
    })
    .await?;
    Ok(ok_json(render_policy(ctx, &n.name, &policy)))
}

fn enc_alg(a: &str) -> KvResult<EncAlg> {
    match a {
        "RSA-OAEP" => Ok(EncAlg::RsaOaep),
        "RSA-OAEP-256" => Ok(EncAlg::RsaOaep256),
        "RSA1_5" => Ok(EncAlg::Rsa15),
        other => Err(KvError::bad(format!(
            "'{}' is not a supported encryption algorithm (RSA-OAEP, RSA-OAEP-256, RSA1_5).",
            ciel_arm::clip(other)
        ))),
    }
}

fn sign_alg(a: &str) -> KvResult<SignAlg> {
    Ok(match a {
        "RS256" => SignAlg::RS256,
        "RS384" => SignAlg::RS384,
        "RS512" => SignAlg::RS512,
        "PS256" => SignAlg::PS256,
        "PS384" => SignAlg::PS384,
        "PS512" => SignAlg::PS512,
        "ES256" => SignAlg::ES256,
        "ES384" => SignAlg::ES384,
        "ES512" => SignAlg::ES512,
        "ES256K" => return Err(KvError::not_supported("ES256K signatures")),
        other => {
            return Err(KvError::bad(format!(
                "'{}' is not a supported signature algorithm.",
                ciel_arm::clip(other)
            )))
        }
    })
}

/// Whether version `v` may run `op_name` now: enabled, within its validity period, and the
/// operation among its `key_ops`.
pub fn usable(v: &KvVersion, op_name: &str) -> KvResult<()> {
    let refuse = |inner: &'static str, why: &str| {
        KvError::forbidden(
            inner,
            format!("Operation {op_name} is not allowed on {why} key."),
        )
    };
    if !enabled(v) {
        return Err(refuse("KeyDisabled", "a disabled"));
    }
    match outside_validity(v, ciel_core::time::now_unix()) {
        Some("expired") => return Err(refuse("KeyExpired", "an expired")),
        Some(_) => return Err(refuse("KeyNotYetValid", "a not yet valid")),
        None => {}
    }
    let allowed = v.public["key_ops"]
        .as_array()
        .is_some_and(|a| a.iter().any(|o| o.as_str() == Some(op_name)));
    if !allowed {
        return Err(KvError::forbidden(
            "KeyOperationNotAllowed",
            format!("The key's key_ops do not include '{op_name}'."),
        ));
    }
    Ok(())
}

/// `POST /keys/{name}[/{version}]/{encrypt|decrypt|wrapkey|unwrapkey|sign|verify}`.
pub async fn operation(
    ctx: &Ctx<'_>,
    name: &str,
    version: Option<&str>,
    op: &str,
) -> KvResult<Response> {
    let (op_name, action, perm) = match op {
        "encrypt" => ("encrypt", "keys/encrypt/action", "encrypt"),
        "decrypt" => ("decrypt", "keys/decrypt/action", "decrypt"),
        "wrapkey" => ("wrapKey", "keys/wrap/action", "wrapKey"),
        "unwrapkey" => ("unwrapKey", "keys/unwrap/action", "unwrapKey"),
        "sign" => ("sign", "keys/sign/action", "sign"),
        "verify" => ("verify", "keys/verify/action", "verify"),
        "release" => return Err(KvError::not_supported("Key release")),
        other => {
            return Err(KvError::bad(format!(
                "'{}' is not a key operation.",
                ciel_arm::clip(other)
            )))
        }
    };
    ctx.authorize("keys", Some(name), action, perm).await?;
    let v = load_version(ctx, KIND, name, version).await?;
    let body = ctx.json()?;
    let target = format!("{}/keys/{}/{}", ctx.vault.id, v.name, v.version);
    usable(&v, op_name)?;
    let alg = body["alg"]
        .as_str()
        .ok_or_else(|| KvError::bad("'alg' is required."))?
        .to_string();
    let value = unb64u(
        "value",
        body["value"]
            .as_str()
            .ok_or_else(|| KvError::bad("'value' is required."))?,
    )?;
    let kid = kid(ctx, &v, true);
    let public = public_key(&v)?;
    match op_name {
        "encrypt" | "wrapKey" => {
            let alg_e = enc_alg(&alg)?;
            let out =
                blocking(move || custody::encrypt(&public, alg_e, &value).map_err(KvError::from))
                    .await?;
            Ok(ok_json(json!({"kid": kid, "value": b64u(&out)})))
        }
        "verify" => {
            let alg_s = sign_alg(&alg)?;
            let digest = unb64u(
                "digest",
                body["digest"]
                    .as_str()
                    .ok_or_else(|| KvError::bad("'digest' is required."))?,
            )?;
            let ok = blocking(move || {
                custody::verify(&public, alg_s, &digest, &value).map_err(KvError::from)
            })
            .await?;
            Ok(ok_json(json!({"value": ok})))
        }
        _ => {
            let material: KeyMaterial = serde_json::from_slice(&v.sealed)
                .map_err(|_| KvError::Internal("unreadable key material".into()))?;
            let vault_key = ctx.vault_key().await?;
            let c = ctx.svc.custody.clone();
            // The material must be the one made for this key version: a swapped record would
            // otherwise sign with another key.
            let l = label(ctx, &v.name, &v.version);
            let res = if op_name == "sign" {
                let alg_s = sign_alg(&alg)?;
                blocking(move || {
                    c.sign_labelled(&vault_key, &l, &material, alg_s, &value)
                        .map_err(KvError::from)
                })
                .await
            } else {
                let alg_e = enc_alg(&alg)?;
                blocking(move || {
                    c.decrypt_labelled(&vault_key, &l, &material, alg_e, &value)
                        .map_err(KvError::from)
                })
                .await
            };
            let outcome = if res.is_ok() { "success" } else { "failure" };
            ctx.audit(ctx.draft(
                &format!("Microsoft.KeyVault/vaults/{action}"),
                &target,
                outcome,
                json!({"alg": alg}),
            ))
            .await?;
            let out = res?;
            Ok(ok_json(json!({"kid": kid, "value": b64u(&out)})))
        }
    }
}

/// `POST /rng`: 1 to 128 random bytes from the platform's generator.
pub async fn get_random_bytes(ctx: &Ctx<'_>) -> KvResult<Response> {
    ctx.authorize("keys", None, "keys/read", "get").await?;
    let body = ctx.json()?;
    let n = body["count"]
        .as_u64()
        .filter(|n| (1..=128).contains(n))
        .ok_or_else(|| KvError::bad("'count' must be a number from 1 to 128."))?;
    let b = crate::random_bytes(n as usize).map_err(|_| KvError::Internal("rng".into()))?;
    Ok(ok_json(json!({"value": b64u(&b)})))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotation_policies_fall_due() {
        use serde_json::json;
        let mut v = ciel_store::KvVersion {
            vault: "v".into(),
            kind: "key".into(),
            name: "k".into(),
            version: "1".into(),
            created: 1_000,
            updated: 1_000,
            attributes: json!({}),
            tags: json!({}),
            content_type: None,
            public: json!({}),
            sealed: vec![],
        };
        let after = json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P7D"}, "action": {"type": "Rotate"}}]});
        assert!(!super::rotation_due(&after, &v, 1_000 + 7 * 86_400 - 1));
        assert!(super::rotation_due(&after, &v, 1_000 + 7 * 86_400));
        let notify = json!({"lifetimeActions": [{"trigger": {"timeAfterCreate": "P7D"}, "action": {"type": "Notify"}}]});
        assert!(!super::rotation_due(&notify, &v, 10_000_000));
        let before = json!({"lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Rotate"}}]});
        assert!(
            !super::rotation_due(&before, &v, 10_000_000),
            "no exp: nothing to count back from"
        );
        v.attributes = json!({"exp": 100 * 86_400});
        assert!(!super::rotation_due(&before, &v, 89 * 86_400));
        assert!(super::rotation_due(&before, &v, 90 * 86_400));
    }

    #[test]
    fn durations() {
        assert_eq!(super::iso_duration_secs("P90D"), Some(90 * 86_400));
        assert_eq!(super::iso_duration_secs("P1Y"), Some(365 * 86_400));
        assert_eq!(super::iso_duration_secs("P1Y2M"), Some((365 + 60) * 86_400));
        assert_eq!(super::iso_duration_secs("PT1H"), None);
        assert_eq!(super::iso_duration_secs("P"), None);
        assert_eq!(super::iso_duration_secs("90D"), None);
    }
}
