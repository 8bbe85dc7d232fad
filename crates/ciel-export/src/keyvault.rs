//! Key Vault in the tenant export and import (docs/export-format.md, "Key Vault").
//!
//! Export: every vault of the tenant, live or deleted-but-recoverable, as
//! `keyvault/{vault}/vault.json`, `secrets.jsonl` (every version; the value a compact JWE to the
//! recipient) and `keys.jsonl` (every version; the public JWK, and for software keys the private
//! JWK as a JWE to the recipient; keys held in an HSM marked `"exportable": false`). Nothing
//! secret is ever written in clear.
//!
//! Import: vaults recreated with a new vault key (sealed by the target's custody), every secret
//! version with the same value and attributes, every software key version with the same key
//! material (imported through the target's custody), deleted items recreated deleted.

use crate::recipient::{Identity, Recipient};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64U;
use base64::Engine;
use ciel_keyvault::custody::{Curve, Custody, CustodyError, KeyMaterial, PrivateKey};
use ciel_keyvault::data::secrets::{open_value, seal_value};
use ciel_store::{Found, KvVersion, MetadataStore, Resource};
use serde_json::{json, Value};
use std::path::Path;

pub const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
const PAGE: usize = 5000;

/// A vault of the tenant, and when it is deleted: `(deleted, purge_at)`, Unix seconds.
pub struct TenantVault {
    pub resource: Resource,
    pub deleted: Option<(i64, i64)>,
}

/// Every vault of a tenant, live ones first (by id), then deleted ones.
pub fn tenant_vaults(store: &dyn MetadataStore, tenant: &str) -> Result<Vec<TenantVault>> {
    let mut out = vec![];
    let subs = store.list_subscriptions(tenant)?;
    for s in &subs {
        let scope = format!("/subscriptions/{}", s.id).to_ascii_lowercase();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_resources(&scope, Some(VAULT_TYPE), after.as_deref(), PAGE)?;
            let n = page.len();
            after = page.last().map(|r| r.id.to_ascii_lowercase());
            out.extend(
                page.into_iter()
                    .filter(|r| r.tenant_id == tenant)
                    .map(|resource| TenantVault {
                        resource,
                        deleted: None,
                    }),
            );
            if n < PAGE {
                break;
            }
        }
    }
    for s in &subs {
        for d in store.list_deleted_vaults(&s.id)? {
            if d.resource.tenant_id == tenant {
                out.push(TenantVault {
                    resource: d.resource,
                    deleted: Some((d.deleted, d.purge_at)),
                });
            }
        }
    }
    Ok(out)
}

/// Whether any of the vaults holds a secret or a key (live or deleted): then the export needs a
/// recipient.
pub fn holds_material(store: &dyn MetadataStore, vaults: &[TenantVault]) -> Result<bool> {
    for v in vaults {
        let n = v.resource.name.to_ascii_lowercase();
        for kind in ["secret", "key"] {
            for deleted in [false, true] {
                if !store.kv_list(&n, kind, deleted)?.is_empty() {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn custody_err(e: CustodyError) -> anyhow::Error {
    anyhow!("key custody: {e}")
}

fn open_vault_key(custody: &dyn Custody, r: &Resource) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let sealed = r
        .sealed
        .as_deref()
        .ok_or_else(|| anyhow!("vault {} has no sealed key", r.name))?;
    custody
        .open_vault_key(&r.id.to_ascii_lowercase(), sealed)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| {
            anyhow!(
                "the key of vault {} does not open with this deployment's custody ({e}); run the export with the same [keyvault.custody] as the server",
                r.name
            )
        })
}

/// The custody label a key version's material is bound to (as the data plane makes it).
fn label(vault: &str, name: &str, version: &str) -> String {
    format!(
        "{}/{}/{version}",
        vault.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
}

fn private_jwk(k: &PrivateKey) -> Value {
    let e = |v: &[u8]| B64U.encode(v);
    match k {
        PrivateKey::Rsa {
            n,
            e: pe,
            d,
            p,
            q,
            dp,
            dq,
            qi,
        } => json!({"kty": "RSA", "n": e(n), "e": e(pe), "d": e(d), "p": e(p), "q": e(q),
                    "dp": e(dp), "dq": e(dq), "qi": e(qi)}),
        PrivateKey::Ec { curve, x, y, d } => json!({
            "kty": "EC", "crv": match curve { Curve::P256 => "P-256", Curve::P384 => "P-384", Curve::P521 => "P-521" },
            "x": e(x), "y": e(y), "d": e(d)
        }),
    }
}

fn private_from_jwk(j: &Value) -> Result<PrivateKey> {
    let get = |k: &str| -> Result<Vec<u8>> {
        B64U.decode(j[k].as_str().unwrap_or(""))
            .map_err(|_| anyhow!("the private JWK's '{k}' is not base64url"))
    };
    match j["kty"].as_str() {
        Some("RSA") => Ok(PrivateKey::Rsa {
            n: get("n")?,
            e: get("e")?,
            d: get("d")?,
            p: get("p")?,
            q: get("q")?,
            dp: get("dp")?,
            dq: get("dq")?,
            qi: get("qi")?,
        }),
        Some("EC") => Ok(PrivateKey::Ec {
            curve: match j["crv"].as_str() {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                Some("P-521") => Curve::P521,
                other => bail!("unsupported curve {other:?}"),
            },
            x: get("x")?,
            y: get("y")?,
            d: get("d")?,
        }),
        other => bail!("unsupported private key type {other:?}"),
    }
}

fn deleted_json(d: Option<i64>, p: Option<i64>) -> Value {
    match d {
        Some(d) => json!({"deletedDate": d, "scheduledPurgeDate": p}),
        None => Value::Null,
    }
}

/// What one vault becomes in the export.
pub struct VaultExport {
    pub vault: Value,
    pub secrets: Vec<Value>,
    pub keys: Vec<Value>,
    pub secret_versions: u64,
    pub key_versions: u64,
    pub not_exportable: u64,
}

/// Reads one vault: its ARM JSON, and every secret and key version, values and software
/// private keys encrypted to `recipient` as they are read (they exist in clear only in memory,
/// one at a time).
pub fn export_vault(
    store: &dyn MetadataStore,
    custody: Option<&dyn Custody>,
    recipient: Option<&Recipient>,
    v: &TenantVault,
) -> Result<VaultExport> {
    let r = &v.resource;
    let vname = r.name.to_ascii_lowercase();
    let mut out = VaultExport {
        vault: json!({
            "id": r.id, "name": r.name, "resourceGroup": r.resource_group,
            "subscriptionId": r.subscription_id, "arm": r.body,
            "deleted": v.deleted.map(|(d, p)| json!({"deletionDate": d, "scheduledPurgeDate": p})),
        }),
        secrets: vec![],
        keys: vec![],
        secret_versions: 0,
        key_versions: 0,
        not_exportable: 0,
    };
    let mut names = vec![];
    for kind in ["secret", "key"] {
        for deleted in [false, true] {
            for (n, _) in store.kv_list(&vname, kind, deleted)? {
                names.push(n);
            }
        }
    }
    if names.is_empty() {
        return Ok(out);
    }
    let recipient = recipient.ok_or_else(|| {
        anyhow!(
            "vault {} holds secrets or keys: give --recipient (an RSA public key, PEM or JWK) to encrypt them to; they are never written in clear",
            r.name
        )
    })?;
    let custody =
        custody.ok_or_else(|| anyhow!("the key custody is needed to export vault {}", r.name))?;
    let vault_key = open_vault_key(custody, r)?;
    names.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
    for n in names {
        for ver in store.kv_list_versions(&vname, &n.kind, &n.name)? {
            let mut line = json!({
                "name": ver.name, "version": ver.version, "created": ver.created, "updated": ver.updated,
                "attributes": ver.attributes, "tags": ver.tags,
            });
            if n.deleted.is_some() {
                line["deleted"] = deleted_json(n.deleted, n.purge_at);
            }
            if n.kind == "secret" {
                line["contentType"] = json!(ver.content_type);
                let value = zeroize::Zeroizing::new(
                    open_value(&vault_key, &ver)
                        .map_err(|e| anyhow!("secret {}/{}: {e:?}", r.name, ver.name))?,
                );
                line["value"] = json!(recipient.encrypt(&value)?);
                out.secret_versions += 1;
                out.secrets.push(line);
            } else {
                line["key"] = ver.public.clone();
                if let Some(p) = &n.policy {
                    line["rotationPolicy"] = p.clone();
                }
                let m: KeyMaterial = serde_json::from_slice(&ver.sealed)
                    .with_context(|| format!("key {}/{}: material", r.name, ver.name))?;
                match custody.export_private(
                    &vault_key,
                    &label(&vname, &ver.name, &ver.version),
                    &m,
                ) {
                    Ok(pk) => {
                        let jwk = zeroize::Zeroizing::new(private_jwk(&pk).to_string());
                        line["exportable"] = json!(true);
                        line["private"] = json!(recipient.encrypt(jwk.as_bytes())?);
                    }
                    Err(CustodyError::Unsupported(why)) => {
                        line["exportable"] = json!(false);
                        line["reason"] = json!(why);
                        out.not_exportable += 1;
                    }
                    Err(e) => return Err(custody_err(e)),
                }
                out.key_versions += 1;
                out.keys.push(line);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

/// One exported vault, read back.
pub struct ExportedVault {
    pub dir_name: String,
    pub vault: Value,
    pub secrets: Vec<Value>,
    pub keys: Vec<Value>,
}

fn read_lines(p: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .with_context(|| format!("{} holds a line that is not JSON", p.display()))
        })
        .collect()
}

pub fn read_exported(dir: &Path) -> Result<Vec<ExportedVault>> {
    let root = dir.join("keyvault");
    let mut dirs: Vec<_> = match std::fs::read_dir(&root) {
        Ok(r) => r.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(_) => return Ok(vec![]),
    };
    dirs.sort();
    let mut out = vec![];
    for d in dirs {
        let vault: Value = serde_json::from_slice(
            &std::fs::read(d.join("vault.json"))
                .with_context(|| format!("reading {}/vault.json", d.display()))?,
        )?;
        out.push(ExportedVault {
            dir_name: d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            vault,
            secrets: read_lines(&d.join("secrets.jsonl"))?,
            keys: read_lines(&d.join("keys.jsonl"))?,
        });
    }
    Ok(out)
}

/// Whether the export holds anything that needs the identity to import.
pub fn needs_identity(vaults: &[ExportedVault]) -> bool {
    vaults
        .iter()
        .any(|v| !v.secrets.is_empty() || v.keys.iter().any(|k| k["private"].is_string()))
}

/// Is a vault name taken anywhere in the target (live or deleted: names are unique in a cloud)?
pub fn vault_name_taken(store: &dyn MetadataStore, name: &str) -> Result<bool> {
    Ok(!store.find_resources_by_name(VAULT_TYPE, name)?.is_empty()
        || store
            .get_deleted_vault(&name.to_ascii_lowercase())
            .found()?
            .is_some())
}

/// Where one vault goes in the target.
pub struct VaultTarget<'a> {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub group: String,
    pub tenant: String,
    pub vault_uri: String,
    pub draft: &'a dyn Fn(&str, &str, Value) -> ciel_core::audit::AuditDraft,
}

#[derive(Default)]
pub struct VaultImportReport {
    pub secrets: u64,
    pub keys: u64,
    pub skipped: Vec<String>,
}

/// Groups lines by name (first-seen order), keeping versions in their exported (oldest-first)
/// order.
fn by_name(lines: &[Value]) -> Vec<(String, Vec<&Value>)> {
    let mut out: Vec<(String, Vec<&Value>)> = vec![];
    for l in lines {
        let n = l["name"].as_str().unwrap_or("").to_string();
        match out.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(&n)) {
            Some((_, v)) => v.push(l),
            None => out.push((n, vec![l])),
        }
    }
    out
}

/// Creates the vault (when `create`), then its secrets and keys; names already there (a resumed
/// import) are kept as they are.
pub fn import_vault(
    store: &dyn MetadataStore,
    custody: &dyn Custody,
    identity: Option<&Identity>,
    x: &ExportedVault,
    t: &VaultTarget<'_>,
    create: bool,
) -> Result<VaultImportReport> {
    let mut rep = VaultImportReport::default();
    let key_s = t.id.to_ascii_lowercase();
    let vname = t.name.to_ascii_lowercase();
    if create {
        let vault_key = ciel_keyvault::custody::new_vault_key().map_err(custody_err)?;
        let sealed = custody
            .seal_vault_key(&key_s, &vault_key)
            .map_err(custody_err)?;
        let mut body = x.vault["arm"].clone();
        body["id"] = json!(t.id);
        body["name"] = json!(t.name);
        body["properties"]["tenantId"] = json!(t.tenant);
        body["properties"]["vaultUri"] = json!(t.vault_uri);
        // Access policies name principals of the exported tenant: they now belong to the
        // target tenant (object ids are kept; docs/export-format.md says when they match).
        if let Some(ps) = body["properties"]["accessPolicies"].as_array_mut() {
            for p in ps {
                p["tenantId"] = json!(t.tenant);
            }
        }
        if custody.is_hsm() {
            // Premium needs an HSM; a standard vault stays standard.
        } else if body["properties"]["sku"]["name"].as_str() == Some("premium") {
            body["properties"]["sku"]["name"] = json!("standard");
            rep.skipped.push(format!(
                "vault {}: premium SKU imported as standard (this deployment has no HSM)",
                t.name
            ));
        }
        let now = ciel_core::time::now_unix();
        let res = Resource {
            id: t.id.clone(),
            subscription_id: t.subscription.clone(),
            resource_group: Some(t.group.clone()),
            rtype: VAULT_TYPE.into(),
            name: t.name.clone(),
            location: body["location"].as_str().map(String::from),
            tenant_id: t.tenant.clone(),
            body,
            created: now,
            changed: now,
            sealed: Some(sealed),
        };
        store.put_resource(
            &res,
            &(t.draft)(
                &format!("{VAULT_TYPE}/write"),
                &t.id,
                json!({"created": true}),
            ),
        )?;
    }
    let res = store
        .get_resource(&key_s)
        .found()?
        .ok_or_else(|| anyhow!("vault {} disappeared during the import", t.id))?;
    let vault_key = open_vault_key(custody, &res)?;
    let need_identity = || {
        identity.ok_or_else(|| {
            anyhow!("the export holds Key Vault secrets or keys: give --identity (the recipient's private key)")
        })
    };
    let exists = |kind: &str, name: &str| -> Result<bool> {
        Ok(store.kv_get_name(&vname, kind, name).found()?.is_some())
    };
    let attrs = |l: &Value, k: &str| l[k].as_i64().unwrap_or(0);
    for (name, lines) in by_name(&x.secrets) {
        if exists("secret", &name)? {
            continue;
        }
        let id = need_identity()?;
        let mut versions = vec![];
        for l in &lines {
            let version = l["version"].as_str().unwrap_or("").to_string();
            let value = id
                .decrypt(l["value"].as_str().unwrap_or(""))
                .with_context(|| format!("secret {}/{name} version {version}", t.name))?;
            versions.push(KvVersion {
                vault: vname.clone(),
                kind: "secret".into(),
                name: name.clone(),
                sealed: seal_value(&vault_key, &vname, &name, &version, &value)
                    .map_err(|e| anyhow!("sealing secret {name}: {e:?}"))?,
                version,
                created: attrs(l, "created"),
                updated: attrs(l, "updated"),
                attributes: l["attributes"].clone(),
                tags: l["tags"].clone(),
                content_type: l["contentType"].as_str().map(String::from),
                public: json!({}),
            });
        }
        let target = format!("{}/secrets/{name}", t.id);
        store.kv_restore(
            &versions,
            &(t.draft)(
                &format!("{VAULT_TYPE}/secrets/write"),
                &target,
                json!({"versions": versions.len()}),
            ),
        )?;
        rep.secrets += versions.len() as u64;
        set_deleted(store, &vname, "secret", &name, lines[0], &target, t)?;
    }
    for (name, lines) in by_name(&x.keys) {
        if exists("key", &name)? {
            continue;
        }
        let mut versions = vec![];
        for l in &lines {
            let version = l["version"].as_str().unwrap_or("").to_string();
            let Some(private) = l["private"].as_str() else {
                rep.skipped.push(format!(
                    "key {}/{name} version {version}: held in an HSM at the source, not exportable, so not imported",
                    t.name
                ));
                continue;
            };
            let jwk = need_identity()?
                .decrypt(private)
                .with_context(|| format!("key {}/{name} version {version}", t.name))?;
            let jwk: Value = serde_json::from_slice(&jwk)
                .map_err(|_| anyhow!("key {}/{name}: the private JWK is not JSON", t.name))?;
            let pk = private_from_jwk(&jwk)?;
            let (material, _public) = custody
                .import(&vault_key, &label(&vname, &name, &version), &pk)
                .map_err(custody_err)?;
            versions.push(KvVersion {
                vault: vname.clone(),
                kind: "key".into(),
                name: name.clone(),
                version,
                created: attrs(l, "created"),
                updated: attrs(l, "updated"),
                attributes: l["attributes"].clone(),
                tags: l["tags"].clone(),
                content_type: None,
                public: l["key"].clone(),
                sealed: serde_json::to_vec(&material)?,
            });
        }
        if versions.is_empty() {
            continue;
        }
        let target = format!("{}/keys/{name}", t.id);
        store.kv_restore(
            &versions,
            &(t.draft)(
                &format!("{VAULT_TYPE}/keys/write"),
                &target,
                json!({"versions": versions.len()}),
            ),
        )?;
        rep.keys += versions.len() as u64;
        if let Some(p) = lines.iter().find_map(|l| l.get("rotationPolicy")) {
            if !p.is_null() {
                store.kv_set_policy(
                    &vname,
                    "key",
                    &name,
                    p,
                    &(t.draft)(
                        &format!("{VAULT_TYPE}/keys/rotationpolicy/write"),
                        &target,
                        json!({}),
                    ),
                )?;
            }
        }
        set_deleted(store, &vname, "key", &name, lines[0], &target, t)?;
    }
    Ok(rep)
}

fn set_deleted(
    store: &dyn MetadataStore,
    vault: &str,
    kind: &str,
    name: &str,
    first: &Value,
    target: &str,
    t: &VaultTarget<'_>,
) -> Result<()> {
    let d = &first["deleted"];
    if let Some(at) = d["deletedDate"].as_i64() {
        let purge = d["scheduledPurgeDate"].as_i64().unwrap_or(at);
        store.kv_set_deleted(
            vault,
            kind,
            name,
            Some((at, purge)),
            &(t.draft)(
                &format!("{VAULT_TYPE}/{kind}s/delete"),
                target,
                json!({"deleted": true}),
            ),
        )?;
    }
    Ok(())
}

/// After its contents: a vault exported deleted is deleted again (recoverable until the same
/// purge date).
pub fn delete_if_exported_deleted(
    store: &dyn MetadataStore,
    x: &ExportedVault,
    t: &VaultTarget<'_>,
) -> Result<()> {
    let d = &x.vault["deleted"];
    if let Some(at) = d["deletionDate"].as_i64() {
        let purge = d["scheduledPurgeDate"].as_i64().unwrap_or(at);
        if store
            .get_resource(&t.id.to_ascii_lowercase())
            .found()?
            .is_some()
        {
            store.delete_vault(
                &t.id.to_ascii_lowercase(),
                Some((at, purge)),
                &(t.draft)(
                    &format!("{VAULT_TYPE}/delete"),
                    &t.id,
                    json!({"soft": true}),
                ),
            )?;
        }
    }
    Ok(())
}

/// The data key of a storage account under a customer-managed key, unwrapped through the
/// custody offline, under the same conditions as the Blob service: the vault live, the key name
/// not deleted, the version enabled, valid and allowing `unwrapKey` — a customer who revoked
/// its key is not bypassed by an offline export. Audited as the unwrap it is.
pub fn unwrap_cmk(
    store: &dyn MetadataStore,
    custody: &dyn Custody,
    kid: &str,
    wrapped_b64: &str,
    account_id: &str,
    actor: &str,
) -> Result<[u8; 32]> {
    let bad = || anyhow!("the customer-managed key id {kid} is not a key version id");
    let rest = kid.strip_prefix("https://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    let vault = host.split('.').next().unwrap_or("").to_ascii_lowercase();
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let ["keys", name, version] = parts[..] else {
        return Err(bad());
    };
    let r = store
        .find_resources_by_name(VAULT_TYPE, &vault)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the customer-managed key's vault {vault} does not exist (deleted?): the account's data cannot be read"))?;
    let n = store.kv_get_name(&vault, "key", name).found()?;
    if n.as_ref().map(|n| n.deleted.is_some()).unwrap_or(true) {
        bail!(
            "the customer-managed key {vault}/{name} is deleted: the account's data cannot be read"
        );
    }
    let v = store
        .kv_get_version(&vault, "key", name, Some(version))
        .found()?
        .ok_or_else(|| anyhow!("the customer-managed key version {kid} does not exist"))?;
    ciel_keyvault::data::keys::usable(&v, "unwrapKey").map_err(|e| {
        anyhow!("the customer-managed key {vault}/{name} refuses unwrapKey ({e:?}): the account's data cannot be read")
    })?;
    let m: KeyMaterial = serde_json::from_slice(&v.sealed).context("key material")?;
    let vault_key = open_vault_key(custody, &r)?;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(wrapped_b64)
        .map_err(|_| anyhow!("the wrapped data key is not base64"))?;
    let dk = zeroize::Zeroizing::new(
        custody
            .decrypt_labelled(
                &vault_key,
                &label(&vault, name, version),
                &m,
                ciel_keyvault::custody::EncAlg::RsaOaep256,
                &wrapped,
            )
            .map_err(custody_err)?,
    );
    store.append_audit(&[ciel_core::audit::AuditDraft {
        tenant_id: Some(r.tenant_id.clone()),
        actor: actor.into(),
        action: format!("{VAULT_TYPE}/keys/unwrap/action"),
        target: format!("{}/keys/{name}", r.id),
        outcome: "success".into(),
        details: json!({"algorithm": "RSA-OAEP-256", "for": account_id, "offline": true}),
        ..Default::default()
    }])?;
    <[u8; 32]>::try_from(dk.as_slice())
        .map_err(|_| anyhow!("the unwrapped data key is not 256 bits"))
}
