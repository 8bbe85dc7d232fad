//! `ciel import`: an export into a data directory (another Ciel, or the same one under another
//! tenant). docs/export-format.md, "Importing", says what maps to what.
//!
//! Order of work, so that nothing is half-imported silently:
//! 1. verify the whole export (sizes and SHA-256 of every file);
//! 2. plan: the target tenant and subscriptions, and every name that would collide (resource
//!    groups, storage accounts — unique in the whole cloud —, custom role and assignment ids);
//!    a collision is an error before anything is written, unless `--rename` (then the plan says
//!    the new names);
//! 3. record the plan in `DIR/imports/{manifest sha256}.json` (the import's journal), then
//!    create, adding every top-level thing created to the journal before creating what is in it;
//! 4. mark the journal complete.
//!
//! Interrupted, the same command resumes (what the journal says it created is its own, blobs
//! already present with the same size, MD5 and time are kept); `--rollback` removes what the
//! journal says it created instead.

use crate::export::STORAGE_TYPE;
use crate::keyvault;
use crate::manifest::{self, Manifest};
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_core::seal::MasterKey;
use ciel_core::ResourceId;
use ciel_storage::account::Secrets;
use ciel_storage::offline;
use ciel_store::{
    BlobContainer, BlobRecord, ContainerAcl, Found, MetadataStore, PrincipalKindRec, Resource,
    ResourceGroup, RoleAssignment, RoleDefinitionRec, Subscription, Tenant,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const ACTOR: &str = "operator:import";

/// What the import writes into: one data directory.
pub struct Target<'a> {
    pub store: &'a dyn MetadataStore,
    pub master: &'a MasterKey,
    pub blob_root: PathBuf,
    pub endpoints: Endpoints,
    /// Where import journals live (`DIR/imports`).
    pub journal_dir: PathBuf,
    /// The target's key custody (as its `ciel up` opens it): seals new vault keys and takes the
    /// imported private keys. Needed only when the export has vaults.
    pub custody: Option<&'a dyn ciel_keyvault::custody::Custody>,
}

pub struct ImportOptions {
    pub from: PathBuf,
    /// The target tenant; default: the exported tenant's id (created when absent).
    pub tenant: Option<String>,
    /// Give colliding names new ones instead of failing.
    pub rename: bool,
    /// Exported subscription id → target subscription id.
    pub subscription_map: BTreeMap<String, String>,
    /// Remove what an interrupted import created, instead of resuming it.
    pub rollback: bool,
    /// The recipient's private key: opens Key Vault secrets and private keys.
    pub identity: Option<crate::recipient::Identity>,
}

/// The import's journal: its plan and what it created.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportState {
    pub manifest_sha256: String,
    pub from: String,
    /// `in-progress` or `complete`.
    pub status: String,
    pub tenant: String,
    pub tenant_created: bool,
    /// Exported id → target id.
    pub subscriptions: BTreeMap<String, String>,
    pub subscriptions_created: Vec<String>,
    /// `{exported sub}/{exported group}` (lower-case) → target group name.
    pub resource_groups: BTreeMap<String, String>,
    /// Exported account name → target name.
    pub accounts: BTreeMap<String, String>,
    /// Exported custom role GUID → target GUID.
    pub role_definitions: BTreeMap<String, String>,
    /// Exported assignment GUID → target GUID.
    pub role_assignments: BTreeMap<String, String>,
    /// Exported vault name (lower-case) → target name.
    #[serde(default)]
    pub vaults: BTreeMap<String, String>,
    /// Created, in order: `resourceGroup:/subscriptions/S/resourceGroups/g`,
    /// `account:{id}`, `roleDefinition:{guid}`, `roleAssignment:{guid}`.
    pub created: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub tenant: String,
    pub renamed: Vec<String>,
    pub skipped: Vec<String>,
    pub blobs: u64,
    pub snapshots: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub verify_seconds: f64,
    pub resumed: bool,
    pub vaults: u64,
    pub secret_versions: u64,
    pub key_versions: u64,
}

fn draft(tenant: &str, action: &str, target: &str, details: Value) -> AuditDraft {
    AuditDraft {
        tenant_id: Some(tenant.to_string()),
        actor: ACTOR.into(),
        action: action.into(),
        target: target.into(),
        outcome: "success".into(),
        details,
        ..Default::default()
    }
}

fn read_json(dir: &Path, rel: &str) -> Result<Value> {
    let p = dir.join(rel);
    let t = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&t).with_context(|| format!("{} is not JSON", p.display()))
}

fn micros(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_micros())
        .unwrap_or_else(|_| chrono::Utc::now().timestamp_micros())
}

/// The exported structure, read from the metadata files (blob sidecars are streamed later).
struct Exported {
    subs: Vec<Value>,
    /// (subscription id, group JSON, group directory)
    groups: Vec<(String, Value, PathBuf)>,
    /// (subscription id, group name, resource ARM JSON)
    resources: Vec<(String, String, Value)>,
    principals: Vec<Value>,
    assignments: Vec<Value>,
    definitions: Vec<Value>,
}

fn read_exported(dir: &Path) -> Result<Exported> {
    let mut x = Exported {
        subs: vec![],
        groups: vec![],
        resources: vec![],
        principals: read_json(dir, "directory/principals.json")?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        assignments: read_json(dir, "authorization/roleAssignments.json")?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        definitions: read_json(dir, "authorization/roleDefinitions.json")?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    let subs_dir = dir.join("subscriptions");
    let mut sub_names: Vec<_> = std::fs::read_dir(&subs_dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    sub_names.sort();
    for sd in sub_names {
        let s = read_json(&sd, "subscription.json")?;
        let sid = s["subscriptionId"].as_str().unwrap_or("").to_string();
        x.subs.push(s);
        let mut gdirs: Vec<_> = std::fs::read_dir(sd.join("resourceGroups"))
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        gdirs.sort();
        for gd in gdirs {
            let g = read_json(&gd, "resourceGroup.json")?;
            let gname = g["name"].as_str().unwrap_or("").to_string();
            for r in read_json(&gd, "resources.json")?
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                x.resources.push((sid.clone(), gname.clone(), r));
            }
            x.groups.push((sid.clone(), g, gd));
        }
    }
    Ok(x)
}

impl ImportState {
    /// One journal per export and target tenant: the same export may go to several tenants.
    fn path(journal_dir: &Path, sha: &str, tenant: &str) -> PathBuf {
        journal_dir.join(format!("{sha}.{tenant}.json"))
    }
    fn save(&self, journal_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(journal_dir)?;
        manifest::write_atomic(
            &Self::path(journal_dir, &self.manifest_sha256, &self.tenant),
            &serde_json::to_vec_pretty(self)?,
        )
    }
    fn owns(&self, item: &str) -> bool {
        self.created.iter().any(|c| c.eq_ignore_ascii_case(item))
    }

    /// A resource id (or scope) of the export, in the target's names.
    fn map_id(&self, id: &str) -> String {
        let parts: Vec<&str> = id.split('/').collect();
        let mut out: Vec<String> = Vec::with_capacity(parts.len());
        let mut sub = String::new();
        for (i, p) in parts.iter().enumerate() {
            let prev = if i > 0 { parts[i - 1] } else { "" };
            let mapped = if prev.eq_ignore_ascii_case("subscriptions") {
                sub = p.to_string();
                self.subscriptions.get(*p).cloned()
            } else if prev.eq_ignore_ascii_case("resourceGroups") {
                self.resource_groups
                    .get(&format!("{sub}/{p}").to_ascii_lowercase())
                    .cloned()
            } else if prev.eq_ignore_ascii_case("storageAccounts") {
                self.accounts.get(*p).cloned()
            } else if prev.eq_ignore_ascii_case("vaults") {
                self.vaults.get(&p.to_ascii_lowercase()).cloned()
            } else if prev.eq_ignore_ascii_case("roleDefinitions") {
                self.role_definitions.get(*p).cloned()
            } else {
                None
            };
            out.push(mapped.unwrap_or_else(|| p.to_string()));
        }
        out.join("/")
    }
}

/// A name for `--rename`: `base` with a short suffix derived from the export and the name, so
/// that a resumed import picks the same one; `fits` says whether a candidate is free.
fn new_name(
    base: &str,
    seed: &str,
    max: usize,
    sep: &str,
    fits: impl Fn(&str) -> Result<bool>,
) -> Result<String> {
    for i in 0..100u32 {
        let h = manifest::sha256_hex(format!("{seed}/{base}/{i}").as_bytes());
        let suffix = &h[..6];
        let keep = max.saturating_sub(suffix.len() + sep.len()).min(base.len());
        let cand = format!("{}{sep}{suffix}", &base[..keep]);
        if fits(&cand)? {
            return Ok(cand);
        }
    }
    bail!("no free name found for {base}")
}

fn uuid_from(seed: &str) -> String {
    let h = manifest::sha256_hex(seed.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Removes what an interrupted import created (newest first) and its journal.
pub fn rollback(t: &Target<'_>, from: &Path, tenant: Option<&str>) -> Result<Vec<String>> {
    let (m, bytes) = Manifest::read(from)?;
    let sha = manifest::sha256_hex(&bytes);
    let p = ImportState::path(&t.journal_dir, &sha, tenant.unwrap_or(&m.tenant.id));
    let st: ImportState = serde_json::from_slice(
        &std::fs::read(&p)
            .with_context(|| format!("no import journal of this export ({})", p.display()))?,
    )?;
    let mut removed = vec![];
    for item in st.created.iter().rev() {
        let (kind, what) = item.split_once(':').unwrap_or(("", item));
        let d = |action: &str| draft(&st.tenant, action, what, json!({"rollback": true}));
        match kind {
            "account" => {
                let key = what.to_ascii_lowercase();
                if t.store.get_resource(&key).found()?.is_some() {
                    t.store
                        .delete_resource(&key, &d(&format!("{STORAGE_TYPE}/delete")))?;
                }
                t.store.delete_account_data(&key)?;
                if let Some(id) = ResourceId::parse(what) {
                    offline::destroy_account_files(&t.blob_root, &id);
                }
            }
            "vault" => {
                let key = what.to_ascii_lowercase();
                let name = what.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
                let gone = if t.store.get_resource(&key).found()?.is_some() {
                    t.store.delete_vault(
                        &key,
                        None,
                        &d(&format!("{}/delete", keyvault::VAULT_TYPE)),
                    )?
                } else if t.store.get_deleted_vault(&name).found()?.is_some() {
                    t.store
                        .purge_vault(&name, &d(&format!("{}/purge/action", keyvault::VAULT_TYPE)))?
                } else {
                    vec![]
                };
                // An HSM holds the imported keys as objects: destroy them with the records.
                if let Some(c) = t.custody {
                    for v in gone.iter().filter(|v| v.kind == "key") {
                        if let Ok(m) = serde_json::from_slice(&v.sealed) {
                            let _ = c.destroy(&m);
                        }
                    }
                }
            }
            "roleAssignment" if t.store.get_role_assignment(what).found()?.is_some() => {
                t.store.delete_role_assignment(
                    what,
                    &d("Microsoft.Authorization/roleAssignments/delete"),
                )?;
            }
            "roleDefinition" => {
                let _ = t.store.delete_role_definition(
                    what,
                    &d("Microsoft.Authorization/roleDefinitions/delete"),
                );
            }
            "resourceGroup" => {
                if let Some(id) = ResourceId::parse(what) {
                    if let Some(g) = id.resource_group.as_deref() {
                        // Its accounts went first (above), with their data.
                        let _ = t.store.delete_resource_group(
                            &id.subscription,
                            g,
                            &d("Microsoft.Resources/resourceGroups/delete"),
                        );
                    }
                }
            }
            _ => {}
        }
        removed.push(item.clone());
    }
    std::fs::remove_file(&p)?;
    Ok(removed)
}

pub fn import(t: &Target<'_>, opts: &ImportOptions) -> Result<ImportReport> {
    let store = t.store;
    let from = std::fs::canonicalize(&opts.from)
        .with_context(|| format!("reading {}", opts.from.display()))?;
    let mut report = ImportReport::default();
    let vstart = std::time::Instant::now();
    let (m, mbytes) = Manifest::read(&from)?;
    let total: u64 = m.files.iter().map(|f| f.size).sum();
    let mut vp = Progress::new("verify", total);
    match manifest::verify(&from, None, |n| vp.add(n))? {
        Ok(_) => {}
        Err(p) => bail!("the export does not verify, nothing imported: {p}"),
    }
    vp.finish();
    report.verify_seconds = vstart.elapsed().as_secs_f64();
    if m.since.is_some() {
        bail!("this is an incremental export (--since): import its base first... incremental imports are not supported yet; import a full export");
    }
    let sha = manifest::sha256_hex(&mbytes);
    let tenant_id = opts.tenant.clone().unwrap_or_else(|| m.tenant.id.clone());
    let state_path = ImportState::path(&t.journal_dir, &sha, &tenant_id);
    let previous: Option<ImportState> = match std::fs::read(&state_path) {
        Ok(b) => Some(serde_json::from_slice(&b)?),
        Err(_) => None,
    };
    if let Some(p) = &previous {
        if p.status == "complete" {
            bail!(
                "this export was already imported into tenant {} (journal {})",
                p.tenant,
                state_path.display()
            );
        }
    }
    report.resumed = previous.is_some();
    let x = read_exported(&from)?;

    // ---- plan (nothing written before it is complete and recorded)
    let mut st = previous.unwrap_or_default();
    let seed = sha.clone();
    st.manifest_sha256 = sha.clone();
    st.from = from.display().to_string();
    st.status = "in-progress".into();
    let tenant_exists = store.get_tenant(&tenant_id).found()?.is_some();
    if !tenant_exists && opts.tenant.is_some() && !st.tenant_created {
        bail!("tenant {tenant_id} does not exist in the target (create it with `ciel tenant create`, or leave out --tenant to recreate the exported one)");
    }
    st.tenant = tenant_id.clone();
    report.tenant = tenant_id.clone();
    let mut conflicts: Vec<String> = vec![];
    for s in &x.subs {
        let old = s["subscriptionId"].as_str().unwrap_or("").to_string();
        if st.subscriptions.contains_key(&old) {
            continue;
        }
        let mut new = opts
            .subscription_map
            .get(&old)
            .cloned()
            .unwrap_or(old.clone());
        if let Some(existing) = store.get_subscription(&new).found()? {
            if existing.tenant_id != tenant_id {
                if opts.rename && !opts.subscription_map.contains_key(&old) {
                    new = uuid_from(&format!("{seed}/sub/{old}"));
                    report.renamed.push(format!("subscription {old} -> {new}"));
                } else {
                    conflicts.push(format!(
                        "subscription {new} exists in another tenant (map it with --subscription {old}=ID, or --rename)"
                    ));
                }
            }
        }
        st.subscriptions.insert(old, new);
    }
    for (sid, g, _) in &x.groups {
        let name = g["name"].as_str().unwrap_or("");
        let k = format!("{sid}/{name}").to_ascii_lowercase();
        if st.resource_groups.contains_key(&k) {
            continue;
        }
        let tsub = st.subscriptions.get(sid).cloned().unwrap_or_default();
        let taken =
            |n: &str| -> Result<bool> { Ok(store.get_resource_group(&tsub, n).found()?.is_some()) };
        let mut new = name.to_string();
        if taken(name)? {
            if opts.rename {
                new = new_name(name, &seed, 90, "-", |c| Ok(!taken(c)?))?;
                report
                    .renamed
                    .push(format!("resource group {name} -> {new}"));
            } else {
                conflicts.push(format!(
                    "resource group {name} exists in subscription {tsub}"
                ));
            }
        }
        st.resource_groups.insert(k, new);
    }
    for (_, _, r) in &x.resources {
        if !r["type"]
            .as_str()
            .unwrap_or("")
            .eq_ignore_ascii_case(STORAGE_TYPE)
        {
            continue;
        }
        let name = r["name"].as_str().unwrap_or("").to_string();
        if st.accounts.contains_key(&name) {
            continue;
        }
        let taken = |n: &str| -> Result<bool> {
            Ok(!store.find_resources_by_name(STORAGE_TYPE, n)?.is_empty())
        };
        let mut new = name.clone();
        if taken(&name)? {
            if opts.rename {
                new = new_name(&name, &seed, 24, "", |c| Ok(!taken(c)?))?;
                report
                    .renamed
                    .push(format!("storage account {name} -> {new}"));
            } else {
                conflicts.push(format!(
                    "storage account name {name} is taken in the target (names are unique in a cloud)"
                ));
            }
        }
        st.accounts.insert(name, new);
    }
    // Custom roles and assignments have ids unique in the whole deployment.
    let mut all_defs = std::collections::HashMap::new();
    for tn in store.list_tenants()? {
        for d in store.list_role_definitions(&tn.id)? {
            all_defs.insert(d.id.to_ascii_lowercase(), tn.id.clone());
        }
    }
    for d in &x.definitions {
        let old = d["name"].as_str().unwrap_or("").to_ascii_lowercase();
        if st.role_definitions.contains_key(&old) {
            continue;
        }
        let mut new = old.clone();
        if all_defs.contains_key(&old) {
            if opts.rename {
                new = uuid_from(&format!("{seed}/roledef/{old}"));
                report.renamed.push(format!("custom role {old} -> {new}"));
            } else {
                conflicts.push(format!("custom role id {old} exists in the target"));
            }
        }
        st.role_definitions.insert(old, new);
    }
    for a in &x.assignments {
        let old = a["name"].as_str().unwrap_or("").to_string();
        if st.role_assignments.contains_key(&old) {
            continue;
        }
        let new = if store.get_role_assignment(&old).found()?.is_some() {
            // Assignment ids are opaque GUIDs nobody types: a collision gets a new one.
            uuid_from(&format!("{seed}/ra/{old}"))
        } else {
            old.clone()
        };
        st.role_assignments.insert(old, new);
    }
    // Key Vault: names unique in the cloud (deleted vaults included), the group each goes to,
    // and the identity that opens the material.
    let kv = keyvault::read_exported(&from)?;
    for v in &kv {
        let name = v.vault["name"].as_str().unwrap_or("").to_ascii_lowercase();
        if st.vaults.contains_key(&name) {
            continue;
        }
        let taken = |n: &str| keyvault::vault_name_taken(store, n);
        let mut new = name.clone();
        if taken(&name)? {
            if opts.rename {
                new = new_name(&name, &seed, 24, "-", |c| Ok(!taken(c)?))?;
                report.renamed.push(format!("key vault {name} -> {new}"));
            } else {
                conflicts.push(format!(
                    "key vault name {name} is taken in the target (names are unique in a cloud, deleted vaults included)"
                ));
            }
        }
        st.vaults.insert(name, new);
    }
    if !kv.is_empty() && t.custody.is_none() {
        bail!("the export has key vaults: the target's key custody is needed to import them");
    }
    if keyvault::needs_identity(&kv) {
        let Some(id) = &opts.identity else {
            bail!("nothing imported: the export holds Key Vault secrets or keys encrypted to a recipient; give --identity FILE (the recipient's RSA private key, PEM or JWK)");
        };
        if let Some(kid) = m
            .keyvault
            .as_ref()
            .and_then(|k| k["recipient"]["kid"].as_str())
        {
            if kid != id.kid {
                bail!(
                    "nothing imported: the export's Key Vault material is encrypted to key {kid}, and --identity is key {}",
                    id.kid
                );
            }
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "nothing imported: {} name conflict(s) in the target:\n  {}\n(use --rename to import under new names)",
            conflicts.len(),
            conflicts.join("\n  ")
        );
    }
    st.save(&t.journal_dir)?;

    // ---- write
    let start = std::time::Instant::now();
    if !tenant_exists {
        let tn = read_json(&from, "tenant.json")?;
        store.create_tenant(
            &Tenant {
                id: tenant_id.clone(),
                display_name: tn["displayName"]
                    .as_str()
                    .unwrap_or(&m.tenant.display_name)
                    .into(),
                default_domain: tn["defaultDomain"].as_str().unwrap_or("").into(),
                created: ciel_core::time::now_unix(),
            },
            &draft(
                &tenant_id,
                "Ciel.Directory/tenants/write",
                &tenant_id,
                json!({"import": sha}),
            ),
        )?;
        st.tenant_created = true;
        st.save(&t.journal_dir)?;
    }
    for s in &x.subs {
        let old = s["subscriptionId"].as_str().unwrap_or("");
        let new = st.subscriptions.get(old).cloned().unwrap_or_default();
        if store.get_subscription(&new).found()?.is_none() {
            store.create_subscription(
                &Subscription {
                    id: new.clone(),
                    tenant_id: tenant_id.clone(),
                    display_name: s["displayName"].as_str().unwrap_or("imported").into(),
                    state: "Enabled".into(),
                    created: ciel_core::time::now_unix(),
                },
                &draft(
                    &tenant_id,
                    "Microsoft.Resources/subscriptions/write",
                    &format!("/subscriptions/{new}"),
                    json!({"import": sha, "exportedId": old}),
                ),
            )?;
            st.subscriptions_created.push(new);
            st.save(&t.journal_dir)?;
        }
    }
    for (sid, g, _) in &x.groups {
        let name = g["name"].as_str().unwrap_or("");
        let tsub = st.subscriptions.get(sid).cloned().unwrap_or_default();
        let tname = st
            .resource_groups
            .get(&format!("{sid}/{name}").to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        let rid = format!("/subscriptions/{tsub}/resourceGroups/{tname}");
        let item = format!("resourceGroup:{rid}");
        if st.owns(&item) {
            continue;
        }
        st.created.push(item);
        st.save(&t.journal_dir)?;
        let now = ciel_core::time::now_unix();
        store.put_resource_group(
            &ResourceGroup {
                subscription_id: tsub.clone(),
                name: tname.clone(),
                location: g["location"].as_str().unwrap_or("francecentral").into(),
                tags: g.get("tags").cloned().unwrap_or(json!({})),
                managed_by: g["managedBy"].as_str().map(String::from),
                created: now,
                changed: now,
            },
            &draft(
                &tenant_id,
                "Microsoft.Resources/resourceGroups/write",
                &rid,
                json!({"import": sha}),
            ),
        )?;
    }

    // Storage accounts and their blobs.
    let mut progress = Progress::new(
        "import",
        m.files
            .iter()
            .filter(|f| f.path.starts_with("blobs/"))
            .map(|f| f.size)
            .sum(),
    );
    for (sid, gname, r) in &x.resources {
        let rtype = r["type"].as_str().unwrap_or("");
        if rtype.eq_ignore_ascii_case(keyvault::VAULT_TYPE) {
            // Recreated below from `keyvault/`, with their secrets and keys.
            continue;
        }
        if !rtype.eq_ignore_ascii_case(STORAGE_TYPE) {
            report.skipped.push(format!(
                "resource {} (type {rtype} is not imported yet)",
                r["id"]
            ));
            continue;
        }
        let old_name = r["name"].as_str().unwrap_or("");
        let new_name_ = st.accounts.get(old_name).cloned().unwrap_or_default();
        let tsub = st.subscriptions.get(sid).cloned().unwrap_or_default();
        let tgroup = st
            .resource_groups
            .get(&format!("{sid}/{gname}").to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        let id_s = format!(
            "/subscriptions/{tsub}/resourceGroups/{tgroup}/providers/{STORAGE_TYPE}/{new_name_}"
        );
        let id = ResourceId::parse(&id_s).ok_or_else(|| anyhow!("bad account id {id_s}"))?;
        let key = id.key();
        let item = format!("account:{id_s}");
        let existing = store.get_resource(&key).found()?;
        let res = match existing {
            Some(e) if st.owns(&item) => e,
            Some(_) => bail!("storage account {id_s} appeared in the target meanwhile; nothing more imported (use --rollback)"),
            None => {
                st.created.push(item);
                st.save(&t.journal_dir)?;
                // New keys and a new data key: secrets never leave a Ciel (the export holds
                // plaintext bytes, not keys), so the imported account has its own.
                let secrets = Secrets::generate().map_err(|e| anyhow!("{e:?}"))?;
                let mut body = r.clone();
                body["id"] = json!(id_s);
                body["name"] = json!(new_name_);
                body["properties"]["primaryEndpoints"]["blob"] = json!(format!(
                    "https://{new_name_}.blob.{}/",
                    t.endpoints.storage_suffix()
                ));
                body["properties"]["keyCreationTime"] =
                    json!({"key1": secrets.key1_created, "key2": secrets.key2_created});
                let now = ciel_core::time::now_unix();
                let res = Resource {
                    id: id_s.clone(),
                    subscription_id: tsub.clone(),
                    resource_group: Some(tgroup.clone()),
                    rtype: STORAGE_TYPE.into(),
                    name: new_name_.clone(),
                    location: r["location"].as_str().map(String::from),
                    tenant_id: tenant_id.clone(),
                    body,
                    created: now,
                    changed: now,
                    sealed: Some(secrets.seal(t.master, &id).map_err(|e| anyhow!("{e:?}"))?),
                };
                store.put_resource(
                    &res,
                    &draft(&tenant_id, &format!("{STORAGE_TYPE}/write"), &id_s, json!({"import": sha, "created": true})),
                )?;
                res
            }
        };
        let secrets = offline::account_secrets(t.master, &res).map_err(|e| anyhow!(e))?;
        let dk = offline::data_key(&secrets).map_err(|e| anyhow!(e))?;
        let dir = offline::account_dir(&t.blob_root, &id);
        import_blobs(
            t,
            &from,
            old_name,
            &id_s,
            &key,
            &dir,
            &dk,
            &tenant_id,
            &sha,
            &mut report,
            &mut progress,
        )?;
    }
    let (bytes, _) = progress.finish();
    report.bytes = bytes;

    // Key vaults, with every secret and key version.
    for v in &kv {
        let old = v.vault["name"].as_str().unwrap_or("").to_ascii_lowercase();
        let sid = v.vault["subscriptionId"].as_str().unwrap_or("");
        let group = v.vault["resourceGroup"].as_str().unwrap_or("");
        let Some(tgroup) = st
            .resource_groups
            .get(&format!("{sid}/{group}").to_ascii_lowercase())
            .cloned()
        else {
            report.skipped.push(format!(
                "key vault {old} (deleted, and its resource group {group} is not in the export)"
            ));
            continue;
        };
        let tsub = st.subscriptions.get(sid).cloned().unwrap_or_default();
        let new = st.vaults.get(&old).cloned().unwrap_or(old.clone());
        let id_s = format!(
            "/subscriptions/{tsub}/resourceGroups/{tgroup}/providers/{}/{new}",
            keyvault::VAULT_TYPE
        );
        let item = format!("vault:{id_s}");
        let exists = store
            .get_resource(&id_s.to_ascii_lowercase())
            .found()?
            .is_some();
        let create = match (exists, st.owns(&item)) {
            (true, true) => false,
            (true, false) => bail!("key vault {id_s} appeared in the target meanwhile; nothing more imported (use --rollback)"),
            (false, true) => {
                // Created and already deleted again by a previous run: done.
                continue;
            }
            (false, false) => true,
        };
        if create {
            st.created.push(item);
            st.save(&t.journal_dir)?;
        }
        let tenant_c = tenant_id.clone();
        let sha_c = sha.clone();
        let mk = move |action: &str, target: &str, mut details: Value| {
            details["import"] = json!(sha_c);
            draft(&tenant_c, action, target, details)
        };
        let vt = keyvault::VaultTarget {
            id: id_s.clone(),
            name: new.clone(),
            subscription: tsub,
            group: tgroup,
            tenant: tenant_id.clone(),
            vault_uri: format!("https://{new}.{}/", t.endpoints.keyvault_suffix()),
            draft: &mk,
        };
        let custody = t
            .custody
            .ok_or_else(|| anyhow!("the target's key custody is needed"))?;
        let r = keyvault::import_vault(store, custody, opts.identity.as_ref(), v, &vt, create)?;
        keyvault::delete_if_exported_deleted(store, v, &vt)?;
        report.vaults += 1;
        report.secret_versions += r.secrets;
        report.key_versions += r.keys;
        report.skipped.extend(r.skipped);
    }

    // Custom roles, then assignments whose principal exists in the target.
    for d in &x.definitions {
        let old = d["name"].as_str().unwrap_or("").to_ascii_lowercase();
        let new = st
            .role_definitions
            .get(&old)
            .cloned()
            .unwrap_or(old.clone());
        let item = format!("roleDefinition:{new}");
        if st.owns(&item) {
            continue;
        }
        st.created.push(item);
        st.save(&t.journal_dir)?;
        let mut body = d.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("id");
        }
        body["name"] = json!(new);
        if let Some(scopes) = body["properties"]["assignableScopes"].as_array().cloned() {
            body["properties"]["assignableScopes"] = json!(scopes
                .iter()
                .map(|s| st.map_id(s.as_str().unwrap_or("")))
                .collect::<Vec<_>>());
        }
        store.put_role_definition(
            &RoleDefinitionRec {
                id: new.clone(),
                tenant_id: tenant_id.clone(),
                body,
            },
            &draft(
                &tenant_id,
                "Microsoft.Authorization/roleDefinitions/write",
                &format!("/providers/Microsoft.Authorization/roleDefinitions/{new}"),
                json!({"import": sha}),
            ),
        )?;
    }
    let target_principals = store.list_principals(&tenant_id, None)?;
    let existing_assignments = store.list_role_assignments(&tenant_id)?;
    for a in &x.assignments {
        let p = &a["properties"];
        let old_pid = p["principalId"].as_str().unwrap_or("");
        let exported = x
            .principals
            .iter()
            .find(|e| e["objectId"].as_str() == Some(old_pid));
        // Principals are not exported with credentials, so they are not recreated: an
        // assignment follows its principal when the target has it (same object id, else the
        // same user principal name, else the one service principal of the same display name).
        let target = target_principals
            .iter()
            .find(|tp| tp.object_id == old_pid)
            .or_else(|| {
                let e = exported?;
                if let Some(upn) = e["userPrincipalName"].as_str() {
                    return target_principals.iter().find(|tp| {
                        tp.upn.as_deref().map(|u| u.eq_ignore_ascii_case(upn)) == Some(true)
                    });
                }
                let name = e["displayName"].as_str()?;
                let mut same = target_principals.iter().filter(|tp| {
                    tp.kind == PrincipalKindRec::ServicePrincipal && tp.display_name == name
                });
                let first = same.next()?;
                same.next().is_none().then_some(first)
            });
        let Some(tp) = target else {
            report.skipped.push(format!(
                "role assignment {} (principal {old_pid}{} has no counterpart in the target)",
                a["name"].as_str().unwrap_or(""),
                exported
                    .and_then(|e| e["displayName"].as_str())
                    .map(|n| format!(", {n}"))
                    .unwrap_or_default()
            ));
            continue;
        };
        let scope = st.map_id(p["scope"].as_str().unwrap_or(""));
        let role = st.map_id(p["roleDefinitionId"].as_str().unwrap_or(""));
        if existing_assignments.iter().any(|e| {
            e.principal_id == tp.object_id
                && e.scope.eq_ignore_ascii_case(&scope)
                && e.role_definition_id.eq_ignore_ascii_case(&role)
        }) {
            continue;
        }
        let old = a["name"].as_str().unwrap_or("");
        let new = st
            .role_assignments
            .get(old)
            .cloned()
            .unwrap_or(old.to_string());
        let item = format!("roleAssignment:{new}");
        if st.owns(&item) {
            continue;
        }
        st.created.push(item);
        st.save(&t.journal_dir)?;
        let ra = RoleAssignment {
            name: new.clone(),
            tenant_id: tenant_id.clone(),
            scope: scope.clone(),
            role_definition_id: role,
            principal_id: tp.object_id.clone(),
            principal_type: p["principalType"]
                .as_str()
                .unwrap_or("ServicePrincipal")
                .into(),
            description: p["description"].as_str().map(String::from),
            created_by: ACTOR.into(),
            created: ciel_core::time::now_unix(),
        };
        store.put_role_assignment(
            &ra,
            &draft(
                &tenant_id,
                "Microsoft.Authorization/roleAssignments/write",
                &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{new}"),
                json!({"import": sha, "principalId": tp.object_id}),
            ),
        )?;
    }
    st.status = "complete".into();
    st.save(&t.journal_dir)?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn import_blobs(
    t: &Target<'_>,
    from: &Path,
    old_account: &str,
    account_id: &str,
    key: &str,
    dir: &Path,
    dk: &[u8; 32],
    tenant: &str,
    sha: &str,
    report: &mut ImportReport,
    progress: &mut Progress,
) -> Result<()> {
    let store = t.store;
    let adir = from.join("blobs").join(old_account);
    if !adir.is_dir() {
        return Ok(());
    }
    let acct = read_json(&adir, "account.json")?;
    if !acct["blobServiceProperties"].is_null() {
        store.put_blob_service_properties(
            key,
            &acct["blobServiceProperties"],
            &draft(
                tenant,
                "Microsoft.Storage/storageAccounts/blobServices/write",
                account_id,
                json!({"import": sha}),
            ),
        )?;
    }
    let mut cdirs: Vec<_> = std::fs::read_dir(&adir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cdirs.sort();
    for cd in cdirs {
        let c = read_json(&cd, "container.json")?;
        let cname = c["name"].as_str().unwrap_or("").to_string();
        let ctarget = format!("{account_id}/blobServices/default/containers/{cname}");
        let now = chrono::Utc::now().timestamp_micros();
        if store.get_container(key, &cname).found()?.is_none() {
            store.put_container(
                &BlobContainer {
                    account: key.into(),
                    name: cname.clone(),
                    metadata: c.get("metadata").cloned().unwrap_or(json!({})),
                    etag: offline::new_etag(now),
                    last_modified: now,
                    public_access: c["publicAccess"].as_str().map(String::from),
                    lease: None,
                },
                &draft(
                    tenant,
                    "Microsoft.Storage/storageAccounts/blobServices/containers/write",
                    &ctarget,
                    json!({"import": sha}),
                ),
            )?;
            let policies = c.get("storedAccessPolicies").cloned().unwrap_or(json!([]));
            if policies.as_array().map(|a| !a.is_empty()).unwrap_or(false) {
                store.set_container_acl(
                    &ContainerAcl {
                        account: key.into(),
                        container: cname.clone(),
                        public_access: c["publicAccess"].as_str().map(String::from),
                        policies,
                        etag: offline::new_etag(now),
                        last_modified: now,
                    },
                    &draft(
                        tenant,
                        "Microsoft.Storage/storageAccounts/blobServices/containers/setAcl/action",
                        &ctarget,
                        json!({"import": sha}),
                    ),
                )?;
            }
        }
        let side = std::fs::File::open(cd.join("blobs.jsonl"))?;
        use std::io::BufRead;
        for line in std::io::BufReader::new(side).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e: Value = serde_json::from_str(&line)?;
            import_blob(
                t, &cd, &cname, key, dir, dk, tenant, sha, &ctarget, &e, report, progress,
            )?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn import_blob(
    t: &Target<'_>,
    cdir: &Path,
    container: &str,
    key: &str,
    dir: &Path,
    dk: &[u8; 32],
    tenant: &str,
    sha: &str,
    ctarget: &str,
    e: &Value,
    report: &mut ImportReport,
    progress: &mut Progress,
) -> Result<()> {
    let store = t.store;
    let name = e["name"].as_str().unwrap_or("").to_string();
    let snapshot = e["snapshot"].as_str().unwrap_or("").to_string();
    let size = e["size"].as_i64().unwrap_or(0);
    let md5 = e["contentMd5"].as_str().and_then(|m| B64.decode(m).ok());
    let last_modified = micros(e["lastModified"].as_str().unwrap_or(""));
    if let Some(have) = store
        .get_blob_at(key, container, &name, &snapshot)
        .found()?
    {
        // Resumed import: this one is already in.
        if have.size == size && have.content_md5 == md5 && have.last_modified == last_modified {
            progress.add(size as u64);
            return Ok(());
        }
        if !snapshot.is_empty() {
            bail!("snapshot {name}?snapshot={snapshot} exists in the target with other content");
        }
    }
    let file = e["file"]
        .as_str()
        .ok_or_else(|| anyhow!("blob {name}: no file in the sidecar"))?;
    let path = manifest::safe_join(cdir, file)?;
    let mut w = offline::new_object(dir, dk)?;
    let oid = w.id();
    let mut f =
        std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
        n_total += n as u64;
        progress.add(n as u64);
    }
    if n_total != size as u64 {
        bail!(
            "{}: {n_total} bytes, the sidecar says {size}",
            path.display()
        );
    }
    w.finish()?;
    let ohex = ciel_core::audit::hex_lower(&oid);
    let btype = e["blobType"].as_str().unwrap_or("BlockBlob").to_string();
    let blocks = match btype.as_str() {
        // One piece each: the export has the bytes, not the block or page structure (a page
        // blob's unwritten pages come back as written zeros).
        "AppendBlob" => json!([{"object": ohex, "size": size}]),
        "PageBlob" if size > 0 => json!([{"offset": 0, "len": size, "object": ohex, "at": 0}]),
        _ => json!([]),
    };
    let s = |k: &str| e[k].as_str().map(String::from);
    let rec = BlobRecord {
        account: key.into(),
        container: container.into(),
        name: name.clone(),
        object_id: if btype == "BlockBlob" {
            oid.to_vec()
        } else {
            vec![]
        },
        size,
        content_type: s("contentType"),
        content_encoding: s("contentEncoding"),
        content_language: s("contentLanguage"),
        content_disposition: s("contentDisposition"),
        cache_control: s("cacheControl"),
        content_md5: md5,
        metadata: e.get("metadata").cloned().unwrap_or(json!({})),
        etag: offline::new_etag(chrono::Utc::now().timestamp_micros()),
        last_modified,
        created: micros(e["createdOn"].as_str().unwrap_or("")),
        blocks,
        snapshot: snapshot.clone(),
        blob_type: btype,
        lease: None,
        tags: e.get("tags").cloned().unwrap_or(json!({})),
        sequence_number: e["sequenceNumber"].as_i64().unwrap_or(0),
        copy: e.get("copy").cloned().filter(|c| !c.is_null()),
        shared: false,
    };
    let target = format!("{ctarget}/blobs/{name}");
    let d = draft(
        tenant,
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
        &target,
        json!({"import": sha, "snapshot": snapshot}),
    );
    let result = if snapshot.is_empty() {
        store.put_blob(&rec, &d).map(|freed| {
            // A resumed import replaced a different version: its objects are unreferenced now.
            for o in freed {
                if let Ok(o) = <[u8; 16]>::try_from(o.as_slice()) {
                    let _ = ciel_storage::blobstore::delete(dir, &o);
                }
            }
        })
    } else {
        store.create_snapshot(&rec, &d)
    };
    if let Err(err) = result {
        let _ = ciel_storage::blobstore::delete(dir, &oid);
        return Err(anyhow!("importing blob {container}/{name}: {err}"));
    }
    if snapshot.is_empty() {
        report.blobs += 1;
    } else {
        report.snapshots += 1;
    }
    Ok(())
}
