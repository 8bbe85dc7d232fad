//! What secrets and keys share: object names, attributes, tags, versions, paging, the checks of
//! an object's state (deleted, disabled, not yet valid, expired), and soft delete, recover and
//! purge.

use super::error::{KvError, KvResult};
use super::Ctx;
use ciel_store::{Found, KvName, KvVersion};
use serde_json::{json, Map, Value};

/// Object names: 1 to 127 letters, digits and hyphens.
pub fn check_name(kind: &str, name: &str) -> KvResult<()> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(KvError::bad(format!(
            "The {kind} name '{}' is not valid: use 1 to 127 letters, digits and hyphens.",
            ciel_arm::clip(name)
        )));
    }
    Ok(())
}

/// A fresh version id: 32 lower-case hex digits, as Key Vault's.
pub fn new_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Validates and normalises `attributes` from a request (`enabled`, `nbf`, `exp`; Unix seconds).
/// `base` is the current value on an update; unknown fields are ignored, as the service does
/// for read-only ones (`created`, `updated`, `recoveryLevel`).
pub fn attributes(given: Option<&Value>, base: &Value) -> KvResult<Value> {
    let mut out = base.as_object().cloned().unwrap_or_default();
    out.entry("enabled").or_insert(json!(true));
    let Some(given) = given.filter(|v| !v.is_null()) else {
        return Ok(Value::Object(out));
    };
    let g = given
        .as_object()
        .ok_or_else(|| KvError::bad("'attributes' must be an object."))?;
    if let Some(e) = g.get("enabled").filter(|v| !v.is_null()) {
        out.insert(
            "enabled".into(),
            json!(e
                .as_bool()
                .ok_or_else(|| KvError::bad("'attributes.enabled' must be true or false."))?),
        );
    }
    for k in ["nbf", "exp"] {
        match g.get(k) {
            None => {}
            Some(Value::Null) => {
                out.remove(k);
            }
            Some(v) => {
                let t = v.as_i64().filter(|t| *t >= 0).ok_or_else(|| {
                    KvError::bad(format!("'attributes.{k}' must be a Unix time in seconds."))
                })?;
                out.insert(k.into(), json!(t));
            }
        }
    }
    if let (Some(n), Some(e)) = (
        out.get("nbf").and_then(Value::as_i64),
        out.get("exp").and_then(Value::as_i64),
    ) {
        if n > e {
            return Err(KvError::bad(
                "'attributes.nbf' must not be after 'attributes.exp'.",
            ));
        }
    }
    Ok(Value::Object(out))
}

/// Validates `tags`: at most 15, names up to 512 characters, values up to 256.
pub fn tags(given: Option<&Value>, base: &Value) -> KvResult<Value> {
    match given {
        None => Ok(if base.is_object() {
            base.clone()
        } else {
            json!({})
        }),
        Some(Value::Null) => Ok(json!({})),
        Some(Value::Object(m)) => {
            if m.len() > 15 {
                return Err(KvError::bad("An object carries at most 15 tags."));
            }
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| KvError::bad("Tag values must be strings."))?;
                if k.is_empty() || k.len() > 512 || v.len() > 256 {
                    return Err(KvError::bad(
                        "Tag names are 1 to 512 characters and values at most 256.",
                    ));
                }
            }
            Ok(Value::Object(m.clone()))
        }
        Some(_) => Err(KvError::bad("'tags' must be an object of strings.")),
    }
}

/// The attributes as the service renders them: stored fields plus times and recovery.
pub fn render_attributes(ctx: &Ctx<'_>, v: &KvVersion) -> Value {
    let mut a: Map<String, Value> = v.attributes.as_object().cloned().unwrap_or_default();
    a.insert("created".into(), json!(v.created));
    a.insert("updated".into(), json!(v.updated));
    a.insert("recoveryLevel".into(), json!(ctx.recovery_level()));
    a.insert("recoverableDays".into(), json!(ctx.retention_days()));
    Value::Object(a)
}

pub fn enabled(v: &KvVersion) -> bool {
    v.attributes["enabled"].as_bool().unwrap_or(true)
}

/// `None` when usable now, else why not (`not yet valid` / `expired`).
pub fn outside_validity(v: &KvVersion, now: i64) -> Option<&'static str> {
    if v.attributes["nbf"].as_i64().is_some_and(|n| now < n) {
        return Some("not yet valid");
    }
    if v.attributes["exp"].as_i64().is_some_and(|e| now >= e) {
        return Some("expired");
    }
    None
}

/// The live name, or the kind's not-found error (also for a soft-deleted name).
pub async fn live_name(ctx: &Ctx<'_>, kind: &'static str, name: &str) -> KvResult<KvName> {
    let (v, k, n) = (ctx.vault_name.clone(), kind, name.to_string());
    let found = ciel_store::run(&ctx.svc.store, move |s| s.kv_get_name(&v, k, &n).found()).await?;
    match found {
        Some(n) if n.deleted.is_none() => Ok(n),
        _ => Err(not_found(kind, name)),
    }
}

pub fn not_found(kind: &str, name: &str) -> KvError {
    let code = if kind == "key" {
        "KeyNotFound"
    } else {
        "SecretNotFound"
    };
    KvError::not_found(
        code,
        format!(
            "No {kind} named '{}' exists in this vault (a deleted one can be recovered from the deleted {kind}s).",
            ciel_arm::clip(name)
        ),
    )
}

/// A version of a live name (`version` None or empty: the latest).
pub async fn load_version(
    ctx: &Ctx<'_>,
    kind: &'static str,
    name: &str,
    version: Option<&str>,
) -> KvResult<KvVersion> {
    live_name(ctx, kind, name).await?;
    let version = version.filter(|v| !v.is_empty()).map(str::to_string);
    let (v, n) = (ctx.vault_name.clone(), name.to_string());
    let found = ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_get_version(&v, kind, &n, version.as_deref()).found()
    })
    .await?;
    found.ok_or_else(|| {
        let code = if kind == "key" {
            "KeyNotFound"
        } else {
            "SecretNotFound"
        };
        KvError::not_found(
            code,
            format!("The {kind} '{}' has no such version.", ciel_arm::clip(name)),
        )
    })
}

/// A deleted name with its latest version.
pub async fn load_deleted(
    ctx: &Ctx<'_>,
    kind: &'static str,
    name: &str,
) -> KvResult<(KvName, KvVersion)> {
    let (v, n) = (ctx.vault_name.clone(), name.to_string());
    let found = ciel_store::run(&ctx.svc.store, move |s| {
        let Some(nm) = s.kv_get_name(&v, kind, &n).found()? else {
            return Ok(None);
        };
        if nm.deleted.is_none() {
            return Ok(None);
        }
        Ok(s.kv_get_version(&v, kind, &n, None)
            .found()?
            .map(|ver| (nm, ver)))
    })
    .await?;
    found.ok_or_else(|| {
        let code = if kind == "key" {
            "KeyNotFound"
        } else {
            "SecretNotFound"
        };
        KvError::not_found(
            code,
            format!(
                "No deleted {kind} named '{}' exists in this vault.",
                ciel_arm::clip(name)
            ),
        )
    })
}

/// `maxresults` (1 to 25, the service's limit) and the `$skiptoken` of the page to serve.
pub fn page_params(ctx: &Ctx<'_>) -> KvResult<(usize, Option<String>)> {
    let max = match ctx.q("maxresults") {
        None => 25,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=25).contains(m))
            .ok_or_else(|| KvError::bad("'maxresults' must be a number from 1 to 25."))?,
    };
    let skip = match ctx.q("$skiptoken") {
        None => None,
        Some(t) => {
            use base64::Engine;
            let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| KvError::bad("The '$skiptoken' is not valid."))?;
            Some(String::from_utf8(b).map_err(|_| KvError::bad("The '$skiptoken' is not valid."))?)
        }
    };
    Ok((max, skip))
}

/// One page of `items` (each keyed by a sort key, ascending), with the `nextLink` to follow.
pub fn page(ctx: &Ctx<'_>, path: &str, items: Vec<(String, Value)>) -> KvResult<Value> {
    let (max, skip) = page_params(ctx)?;
    let mut rest = items
        .into_iter()
        .filter(|(k, _)| skip.as_ref().is_none_or(|s| k > s))
        .peekable();
    let mut value = Vec::new();
    let mut last = None;
    while value.len() < max {
        match rest.next() {
            Some((k, v)) => {
                value.push(v);
                last = Some(k);
            }
            None => break,
        }
    }
    let next = match (rest.peek(), last) {
        (Some(_), Some(k)) => {
            use base64::Engine;
            let tok = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.as_bytes());
            Value::String(format!(
                "{}{path}?api-version={}&maxresults={max}&$skiptoken={tok}",
                ctx.base, ctx.api_version
            ))
        }
        _ => Value::Null,
    };
    Ok(json!({"value": value, "nextLink": next}))
}

/// Sort key of a version in a versions list: creation order.
pub fn version_key(i: usize) -> String {
    format!("{i:012}")
}

/// `secrets` or `keys`: the family in paths, data actions and audit targets.
fn family(kind: &str) -> &'static str {
    if kind == "key" {
        "keys"
    } else {
        "secrets"
    }
}

/// Soft-deletes a live name (every version); returns its new state and its latest version.
pub async fn soft_delete(
    ctx: &Ctx<'_>,
    kind: &'static str,
    name: &str,
) -> KvResult<(KvName, KvVersion)> {
    let fam = family(kind);
    let v = load_version(ctx, kind, name, None).await?;
    let now = ciel_core::time::now_unix();
    let purge_at = now + ctx.retention_days() * 86_400;
    let draft = ctx.draft(
        &format!("Microsoft.KeyVault/vaults/{fam}/delete"),
        &format!("{}/{fam}/{}", ctx.vault.id, v.name),
        "success",
        json!({"scheduledPurgeDate": purge_at}),
    );
    let (vault, n) = (ctx.vault_name.clone(), name.to_string());
    ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_set_deleted(&vault, kind, &n, Some((now, purge_at)), &draft)
    })
    .await?;
    let state = KvName {
        vault: ctx.vault_name.clone(),
        kind: kind.into(),
        name: v.name.clone(),
        deleted: Some(now),
        purge_at: Some(purge_at),
        policy: None,
    };
    Ok((state, v))
}

/// Brings a deleted name back; returns its latest version.
pub async fn recover(ctx: &Ctx<'_>, kind: &'static str, name: &str) -> KvResult<KvVersion> {
    let fam = family(kind);
    let (_, v) = load_deleted(ctx, kind, name).await?;
    let draft = ctx.draft(
        &format!("Microsoft.KeyVault/vaults/{fam}/recover/action"),
        &format!("{}/{fam}/{}", ctx.vault.id, v.name),
        "success",
        json!({}),
    );
    let (vault, n) = (ctx.vault_name.clone(), name.to_string());
    ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_set_deleted(&vault, kind, &n, None, &draft)
    })
    .await?;
    Ok(v)
}

/// Removes a deleted name for good (refused, and audited, under purge protection); returns the
/// versions removed.
pub async fn purge(ctx: &Ctx<'_>, kind: &'static str, name: &str) -> KvResult<Vec<KvVersion>> {
    let fam = family(kind);
    let (_, v) = load_deleted(ctx, kind, name).await?;
    let target = format!("{}/{fam}/{}", ctx.vault.id, v.name);
    let action = format!("Microsoft.KeyVault/vaults/{fam}/purge/action");
    if ctx.purge_protected() {
        ctx.audit(ctx.draft(
            &action,
            &target,
            "denied",
            json!({"reason": "PurgeProtection"}),
        ))
        .await?;
        return Err(KvError::forbidden(
            "PurgeProtectionEnabled",
            format!("This vault has purge protection: deleted {fam} are purged only when their retention period ends."),
        ));
    }
    let draft = ctx.draft(&action, &target, "success", json!({}));
    let (vault, n) = (ctx.vault_name.clone(), name.to_string());
    Ok(ciel_store::run(&ctx.svc.store, move |s| {
        s.kv_purge(&vault, kind, &n, &draft)
    })
    .await?)
}
