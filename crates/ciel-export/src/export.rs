//! `ciel export`: everything a tenant has, as the directory docs/export-format.md describes.
//!
//! It reads the data directory directly, like `ciel audit export`: the SQLite store in WAL mode
//! lets it read beside a running `ciel up`, and blob objects are immutable files (a replaced
//! blob gets new objects; the old ones are removed only after the commit that dropped them, so a
//! blob that changes under the export is read again from its new record).
//!
//! Memory is bounded: one decrypted chunk (1 MiB) of blob content at a time, pages of at most
//! 5,000 records, and the table of files (one entry per file, for the manifest).

use crate::keyvault;
use crate::manifest::{
    self, FileEntry, HashingFile, Journal, JournalLine, Manifest, Since, Source, TenantRef,
};
use crate::names;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_core::seal::MasterKey;
use ciel_core::ResourceId;
use ciel_storage::offline;
use ciel_store::{BlobRecord, Found, MetadataStore, Resource};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const STORAGE_TYPE: &str = "Microsoft.Storage/storageAccounts";
const PAGE: usize = 5000;

/// What the export reads: one data directory.
pub struct DataSource<'a> {
    pub store: &'a dyn MetadataStore,
    pub master: &'a MasterKey,
    /// The byte store's root (`DIR/blobs`).
    pub blob_root: PathBuf,
    /// The deployment's domain (recorded in the manifest).
    pub domain: String,
    /// Hex; verifies the audit log's checkpoints.
    pub audit_public_key: String,
    /// Opens vault keys and extracts software private keys (the deployment's own custody, as
    /// `ciel up` opens it); needed only when the tenant has vaults holding secrets or keys.
    pub custody: Option<&'a dyn ciel_keyvault::custody::Custody>,
}

pub struct ExportOptions {
    pub tenant: String,
    pub out: PathBuf,
    /// Continue an interrupted export in `out`.
    pub resume: bool,
    /// A previous export's `manifest.json`: export only blobs changed since.
    pub since: Option<PathBuf>,
    /// Whom Key Vault secrets and private keys are encrypted to; required when the tenant has
    /// vaults holding any.
    pub recipient: Option<crate::recipient::Recipient>,
}

#[derive(Debug)]
pub struct ExportReport {
    pub manifest_sha256: String,
    pub files: usize,
    pub blob_bytes: u64,
    pub seconds: f64,
    pub kept_from_before: u64,
    pub summary: BTreeMap<String, u64>,
}

/// Every storage account of a tenant (across its subscriptions), in id order.
pub fn tenant_accounts(store: &dyn MetadataStore, tenant: &str) -> Result<Vec<Resource>> {
    let mut out = vec![];
    for s in store.list_subscriptions(tenant)? {
        let scope = format!("/subscriptions/{}", s.id).to_ascii_lowercase();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_resources(&scope, Some(STORAGE_TYPE), after.as_deref(), PAGE)?;
            let n = page.len();
            after = page.last().map(|r| r.id.to_ascii_lowercase());
            out.extend(page.into_iter().filter(|r| r.tenant_id == tenant));
            if n < PAGE {
                break;
            }
        }
    }
    Ok(out)
}

/// A container's blobs and snapshots in pages, never splitting one blob's snapshots across pages
/// (the store pages by name).
pub fn for_each_blob(
    store: &dyn MetadataStore,
    account: &str,
    container: &str,
    mut f: impl FnMut(BlobRecord) -> Result<()>,
) -> Result<()> {
    let mut after: Option<String> = None;
    let mut limit = PAGE;
    loop {
        let mut page =
            store.list_blobs_with(account, container, "", after.as_deref(), limit, true)?;
        let full = page.len() == limit;
        if full {
            let last = page.last().map(|b| b.name.clone()).unwrap_or_default();
            let keep = page.iter().take_while(|b| b.name != last).count();
            if keep == 0 {
                // One blob with more snapshots than a page: ask for a bigger page.
                limit *= 2;
                continue;
            }
            page.truncate(keep);
        }
        after = page.last().map(|b| b.name.clone());
        // Each blob before its snapshots (oldest first): an importer creates the blob, then
        // the snapshots that refer to it. The store lists snapshots first.
        page.sort_by(|a, b| {
            a.name
                .as_bytes()
                .cmp(b.name.as_bytes())
                .then((!a.snapshot.is_empty()).cmp(&!b.snapshot.is_empty()))
                .then(a.snapshot.cmp(&b.snapshot))
        });
        for b in page {
            f(b)?;
        }
        if !full {
            return Ok(());
        }
        limit = PAGE;
    }
}

fn rfc3339_micros(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn rfc3339_secs(s: i64) -> String {
    chrono::DateTime::from_timestamp(s, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A blob's sidecar line (docs/export-format.md, "blobs.jsonl").
pub fn blob_entry(b: &BlobRecord, file: Option<&str>, sha256: Option<&str>) -> Value {
    let mut v = json!({
        "name": b.name,
        "blobType": if b.blob_type.is_empty() { "BlockBlob" } else { b.blob_type.as_str() },
        "size": b.size,
        "file": file,
        "sha256": sha256,
        "contentType": b.content_type,
        "contentEncoding": b.content_encoding,
        "contentLanguage": b.content_language,
        "contentDisposition": b.content_disposition,
        "cacheControl": b.cache_control,
        "contentMd5": b.content_md5.as_ref().map(|m| B64.encode(m)),
        "metadata": if b.metadata.is_object() { b.metadata.clone() } else { json!({}) },
        "tags": if b.tags.is_object() { b.tags.clone() } else { json!({}) },
        "etag": b.etag,
        "lastModified": rfc3339_micros(b.last_modified),
        "createdOn": rfc3339_micros(b.created),
    });
    if !b.snapshot.is_empty() {
        v["snapshot"] = json!(b.snapshot);
    }
    if b.blob_type == "PageBlob" {
        v["sequenceNumber"] = json!(b.sequence_number);
    }
    if let Some(c) = &b.copy {
        v["copy"] = c.clone();
    }
    v
}

/// The ARM template that recreates a resource group's resources (deploymentTemplate 2019-04-01).
pub fn template(resources: &[Value], containers: &HashMap<String, Vec<Value>>) -> Value {
    let mut out = vec![];
    for r in resources {
        let rtype = r["type"].as_str().unwrap_or("");
        let name = r["name"].as_str().unwrap_or("");
        if rtype.eq_ignore_ascii_case(STORAGE_TYPE) {
            let p = &r["properties"];
            let mut props = serde_json::Map::new();
            // Only the writable settings: a template carries what a PUT accepts.
            for k in [
                "accessTier",
                "allowBlobPublicAccess",
                "allowSharedKeyAccess",
                "minimumTlsVersion",
                "supportsHttpsTrafficOnly",
            ] {
                if !p[k].is_null() {
                    props.insert(k.into(), p[k].clone());
                }
            }
            out.push(json!({
                "type": STORAGE_TYPE, "apiVersion": "2023-05-01", "name": name,
                "location": r["location"], "sku": {"name": r["sku"]["name"]}, "kind": r["kind"],
                "tags": r.get("tags").cloned().unwrap_or(json!({})), "properties": props
            }));
            for c in containers.get(name).map(|v| v.as_slice()).unwrap_or(&[]) {
                let cname = c["name"].as_str().unwrap_or("");
                out.push(json!({
                    "type": "Microsoft.Storage/storageAccounts/blobServices/containers",
                    "apiVersion": "2023-05-01",
                    "name": format!("{name}/default/{cname}"),
                    "dependsOn": [format!("[resourceId('{STORAGE_TYPE}', '{name}')]")],
                    "properties": {
                        "publicAccess": c["publicAccess"].as_str().map(|a| if a == "blob" { "Blob" } else { "Container" }).unwrap_or("None"),
                        "metadata": c["metadata"]
                    }
                }));
            }
        } else {
            // Other types as they are: their ARM JSON without the read-only envelope.
            let mut x = r.clone();
            if let Some(o) = x.as_object_mut() {
                o.remove("id");
                o.insert("apiVersion".into(), json!("2023-05-01"));
            }
            out.push(x);
        }
    }
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {},
        "resources": out
    })
}

struct Exporter<'a> {
    src: &'a DataSource<'a>,
    out: PathBuf,
    journal: Journal,
    base: Option<PathBuf>,
    progress: Progress,
    summary: BTreeMap<String, u64>,
    kept: u64,
}

impl Exporter<'_> {
    /// A metadata file: JSON, pretty, rewritten on every run (cheap, and always current).
    fn json_file(&mut self, rel: &str, v: &Value) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(v)?;
        bytes.push(b'\n');
        let mut f = HashingFile::create(self.out.join(rel))?;
        f.write(&bytes)?;
        let (size, sha256) = f.finish()?;
        self.journal.record(JournalLine {
            path: rel.into(),
            size,
            sha256,
            tag: String::new(),
        })
    }

    /// A JSON-lines file, one value a line.
    fn jsonl_file(&mut self, rel: &str, lines: &[Value]) -> Result<()> {
        let mut f = HashingFile::create(self.out.join(rel))?;
        for l in lines {
            let mut b = serde_json::to_vec(l)?;
            b.push(b'\n');
            f.write(&b)?;
        }
        let (size, sha256) = f.finish()?;
        self.journal.record(JournalLine {
            path: rel.into(),
            size,
            sha256,
            tag: String::new(),
        })
    }

    fn count(&mut self, k: &str, n: u64) {
        *self.summary.entry(k.into()).or_default() += n;
    }

    /// Can `rel` be a file? Not when it is a folder already, or one of its folders is a file.
    fn free(&self, rel: &str) -> bool {
        let p = self.out.join(rel);
        if p.is_dir() {
            return false;
        }
        let mut a = p.parent();
        while let Some(d) = a {
            if d == self.out {
                return true;
            }
            if d.is_file() {
                return false;
            }
            a = d.parent();
        }
        true
    }

    /// Writes a blob's bytes to `rel`, decrypting chunk by chunk and hashing as it goes.
    /// Returns None when the blob disappeared meanwhile.
    fn blob_bytes(
        &mut self,
        acct_dir: &Path,
        key: &[u8; 32],
        b: &BlobRecord,
        rel: &str,
    ) -> Result<Option<(BlobRecord, u64, String)>> {
        if let Some(j) = self.journal.kept(&self.out, rel, &b.etag) {
            let r = (b.clone(), j.size, j.sha256.clone());
            self.kept += j.size;
            self.progress.add(j.size);
            return Ok(Some(r));
        }
        let mut rec = b.clone();
        for _attempt in 0..5 {
            let mut f = HashingFile::create(self.out.join(rel))?;
            let progress = &mut self.progress;
            let res = offline::read_blob(acct_dir, key, &rec, |bytes| {
                f.write(bytes)?;
                progress.add(bytes.len() as u64);
                Ok(())
            });
            match res {
                Ok(()) => {
                    let (size, sha256) = f.finish()?;
                    self.journal.record(JournalLine {
                        path: rel.into(),
                        size,
                        sha256: sha256.clone(),
                        tag: rec.etag.clone(),
                    })?;
                    return Ok(Some((rec, size, sha256)));
                }
                Err(ciel_storage::blobstore::ObjectError::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound =>
                {
                    // Replaced or deleted since it was listed: read what is there now.
                    drop(f);
                    match self
                        .src
                        .store
                        .get_blob_at(&rec.account, &rec.container, &rec.name, &rec.snapshot)
                        .found()?
                    {
                        Some(now) => rec = now,
                        None => return Ok(None),
                    }
                }
                Err(e) => return Err(anyhow!("reading blob {}/{}: {e}", rec.container, rec.name)),
            }
        }
        bail!(
            "blob {}/{} kept changing while it was exported; run the export again with --resume",
            rec.container,
            rec.name
        )
    }

    fn base_entries(&self, acct: &str, container: &str) -> HashMap<(String, String), String> {
        let mut m = HashMap::new();
        let Some(base) = &self.base else { return m };
        let p = base
            .join("blobs")
            .join(acct)
            .join(container)
            .join("blobs.jsonl");
        if let Ok(text) = std::fs::read_to_string(p) {
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    m.insert(
                        (
                            v["name"].as_str().unwrap_or("").to_string(),
                            v["snapshot"].as_str().unwrap_or("").to_string(),
                        ),
                        v["etag"].as_str().unwrap_or("").to_string(),
                    );
                }
            }
        }
        m
    }

    fn account(&mut self, r: &Resource) -> Result<()> {
        let store = self.src.store;
        let id = ResourceId::parse(&r.id).ok_or_else(|| anyhow!("bad account id {}", r.id))?;
        let key_str = id.key();
        let secrets = offline::account_secrets(self.src.master, r).map_err(|e| anyhow!(e))?;
        let key = match (&secrets.cmk, self.src.custody) {
            // Wrapped by the customer's key: unwrapped through the custody, as the Blob service
            // does, while the customer's key allows it.
            (Some(c), Some(custody)) => {
                keyvault::unwrap_cmk(store, custody, &c.kid, &c.wrapped, &r.id, "operator:export")
                    .with_context(|| format!("storage account {}", r.name))?
            }
            _ => offline::data_key(&secrets).map_err(|e| anyhow!(e))?,
        };
        let dir = offline::account_dir(&self.src.blob_root, &id);
        let base_rel = format!("blobs/{}", r.name);
        let props = store.get_blob_service_properties(&key_str)?;
        self.json_file(
            &format!("{base_rel}/account.json"),
            &json!({"id": r.id, "name": r.name, "blobServiceProperties": props}),
        )?;
        let mut after: Option<String> = None;
        loop {
            let cs = store.list_containers(&key_str, "", after.as_deref(), PAGE)?;
            let n = cs.len();
            after = cs.last().map(|c| c.name.clone());
            for c in cs {
                self.count("containers", 1);
                let crel = format!("{base_rel}/{}", c.name);
                let policies = store.get_container_policies(&key_str, &c.name)?;
                self.json_file(
                    &format!("{crel}/container.json"),
                    &json!({
                        "name": c.name, "metadata": c.metadata, "etag": c.etag,
                        "lastModified": rfc3339_micros(c.last_modified),
                        "publicAccess": c.public_access, "storedAccessPolicies": policies
                    }),
                )?;
                let base = self.base_entries(&r.name, &c.name);
                let side_rel = format!("{crel}/blobs.jsonl");
                let mut side = HashingFile::create(self.out.join(&side_rel))?;
                for_each_blob(store, &key_str, &c.name, |b| {
                    let what = if b.snapshot.is_empty() {
                        "blobs"
                    } else {
                        "snapshots"
                    };
                    if base.get(&(b.name.clone(), b.snapshot.clone())) == Some(&b.etag) {
                        // Unchanged since the base export: listed, bytes not copied.
                        let mut e = blob_entry(&b, None, None);
                        e["inBase"] = json!(true);
                        side.write(format!("{e}\n").as_bytes())?;
                        self.count(what, 1);
                        return Ok(());
                    }
                    let sub = if b.snapshot.is_empty() {
                        "data".to_string()
                    } else {
                        format!("snapshots/{}", names::snapshot_suffix(&b.snapshot))
                    };
                    let mut rel = names::encode_name(&b.name)
                        .map(|p| format!("{crel}/{sub}/{p}"))
                        .filter(|p| self.free(p))
                        .unwrap_or_else(|| {
                            format!(
                                "{crel}/{}",
                                names::conflict_path(&format!(
                                    "{}?snapshot={}",
                                    b.name, b.snapshot
                                ))
                            )
                        });
                    if self.journal.done.contains_key(&rel) && !self.free(&rel) {
                        rel = format!("{crel}/{}", names::conflict_path(&b.name));
                    }
                    let Some((b2, _size, sha)) = self.blob_bytes(&dir, &key, &b, &rel)? else {
                        return Ok(());
                    };
                    let file = rel.strip_prefix(&format!("{crel}/")).unwrap_or(&rel);
                    let e = blob_entry(&b2, Some(file), Some(&sha));
                    side.write(format!("{e}\n").as_bytes())?;
                    self.count(what, 1);
                    self.count("blobBytes", b2.size as u64);
                    Ok(())
                })?;
                let (size, sha256) = side.finish()?;
                self.journal.record(JournalLine {
                    path: side_rel,
                    size,
                    sha256,
                    tag: String::new(),
                })?;
            }
            if n < PAGE {
                break;
            }
        }
        Ok(())
    }
}

/// Removes everything in `out` the journal does not vouch for (interrupted files, files whose
/// journal line was never written), so that a resumed export ends exactly as a fresh one.
fn clean_for_resume(out: &Path, journal: &Journal) -> Result<()> {
    let mut stack = vec![out.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = manifest::relative(out, &p);
            if rel != manifest::JOURNAL && !journal.done.contains_key(&rel) {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

pub fn export(src: &DataSource<'_>, opts: &ExportOptions) -> Result<ExportReport> {
    let store = src.store;
    let tenant = store
        .get_tenant(&opts.tenant)
        .found()?
        .ok_or_else(|| anyhow!("tenant {} does not exist", opts.tenant))?;
    let out = &opts.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    if out.join(manifest::MANIFEST).exists() {
        bail!(
            "{} already holds a finished export (manifest.json); choose another directory",
            out.display()
        );
    }
    let journal_exists = out.join(manifest::JOURNAL).exists();
    let non_empty = std::fs::read_dir(&out)?.next().is_some();
    if !opts.resume && non_empty {
        bail!(
            "{} is not empty; use --resume to continue an interrupted export there, or choose an empty directory",
            out.display()
        );
    }
    if opts.resume && non_empty && !journal_exists {
        bail!(
            "{} is not an interrupted export (no {}); nothing to resume",
            out.display(),
            manifest::JOURNAL
        );
    }
    let since = match &opts.since {
        None => None,
        Some(p) => {
            let base_dir = if p.is_dir() {
                p.clone()
            } else {
                p.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            let base_dir = std::fs::canonicalize(&base_dir)
                .with_context(|| format!("reading the base export {}", p.display()))?;
            let (m, bytes) = Manifest::read(&base_dir)?;
            if m.tenant.id != tenant.id {
                bail!(
                    "the base export is of tenant {}, not {}",
                    m.tenant.id,
                    tenant.id
                );
            }
            Some((
                base_dir.clone(),
                Since {
                    path: base_dir.display().to_string(),
                    manifest_sha256: manifest::sha256_hex(&bytes),
                    created_at: m.created_at,
                },
            ))
        }
    };
    // Key Vault: refused before anything is written when its material could not be encrypted.
    let vaults = keyvault::tenant_vaults(store, &tenant.id)?;
    let kv_material = keyvault::holds_material(store, &vaults)?;
    if kv_material {
        if opts.recipient.is_none() {
            bail!(
                "tenant {} has Key Vault secrets or keys: give --recipient FILE (an RSA public key of 2048 bits or more, PEM or JWK); they are encrypted to it and never written in clear",
                tenant.id
            );
        }
        if src.custody.is_none() {
            bail!("the key custody is needed to export Key Vault material");
        }
    }
    let journal = Journal::open(&out, opts.resume)?;
    if opts.resume {
        clean_for_resume(&out, &journal)?;
    }
    let accounts = tenant_accounts(store, &tenant.id)?;
    // The total, for the progress bar's ETA: a pass over the records only.
    let mut total = 0u64;
    for a in &accounts {
        let k = a.id.to_ascii_lowercase();
        let mut after: Option<String> = None;
        loop {
            let cs = store.list_containers(&k, "", after.as_deref(), PAGE)?;
            after = cs.last().map(|c| c.name.clone());
            for c in &cs {
                for_each_blob(store, &k, &c.name, |b| {
                    total += b.size as u64;
                    Ok(())
                })?;
            }
            if cs.len() < PAGE {
                break;
            }
        }
    }
    let mut x = Exporter {
        src,
        out: out.clone(),
        journal,
        base: since.as_ref().map(|(d, _)| d.clone()),
        progress: Progress::new("export", total),
        summary: BTreeMap::new(),
        kept: 0,
    };
    tracing::info!(tenant = %tenant.id, out = %out.display(), resume = opts.resume, bytes = total, "export started");

    x.json_file(
        "tenant.json",
        &json!({"tenantId": tenant.id, "displayName": tenant.display_name,
                "defaultDomain": tenant.default_domain, "createdOn": rfc3339_secs(tenant.created)}),
    )?;
    let principals: Vec<Value> = store
        .list_principals(&tenant.id, None)?
        .into_iter()
        // Identities only: never secrets or password hashes.
        .map(|p| json!({"objectId": p.object_id, "principalType": if p.kind == ciel_store::PrincipalKindRec::User { "User" } else { "ServicePrincipal" },
                         "displayName": p.display_name, "appId": p.app_id, "userPrincipalName": p.upn}))
        .collect();
    x.count("principals", principals.len() as u64);
    x.json_file("directory/principals.json", &json!(principals))?;

    let subs = store.list_subscriptions(&tenant.id)?;
    for s in &subs {
        x.count("subscriptions", 1);
        let srel = format!("subscriptions/{}", s.id);
        x.json_file(
            &format!("{srel}/subscription.json"),
            &json!({"id": format!("/subscriptions/{}", s.id), "subscriptionId": s.id, "tenantId": s.tenant_id,
                    "displayName": s.display_name, "state": s.state}),
        )?;
        let mut after: Option<String> = None;
        loop {
            let rgs = store.list_resource_groups(&s.id, after.as_deref(), PAGE)?;
            after = rgs.last().map(|g| g.name.clone());
            for g in &rgs {
                x.count("resourceGroups", 1);
                let rid = format!("/subscriptions/{}/resourceGroups/{}", s.id, g.name);
                let grel = format!("{srel}/resourceGroups/{}", names::encode_segment(&g.name));
                x.json_file(
                    &format!("{grel}/resourceGroup.json"),
                    &json!({"id": rid, "name": g.name, "type": "Microsoft.Resources/resourceGroups",
                            "location": g.location, "tags": g.tags, "managedBy": g.managed_by,
                            "properties": {"provisioningState": "Succeeded"}}),
                )?;
                let mut bodies = vec![];
                let mut containers: HashMap<String, Vec<Value>> = HashMap::new();
                let mut rafter: Option<String> = None;
                let scope = rid.to_ascii_lowercase();
                loop {
                    let rs = store.list_resources(&scope, None, rafter.as_deref(), PAGE)?;
                    rafter = rs.last().map(|r| r.id.to_ascii_lowercase());
                    for r in &rs {
                        if r.tenant_id != tenant.id {
                            continue;
                        }
                        if r.rtype.eq_ignore_ascii_case(STORAGE_TYPE) {
                            let cs = store.list_containers(
                                &r.id.to_ascii_lowercase(),
                                "",
                                None,
                                PAGE,
                            )?;
                            containers.insert(
                                r.name.clone(),
                                cs.iter()
                                    .map(|c| json!({"name": c.name, "metadata": c.metadata, "publicAccess": c.public_access}))
                                    .collect(),
                            );
                        }
                        bodies.push(r.body.clone());
                    }
                    if rs.len() < PAGE {
                        break;
                    }
                }
                x.count("resources", bodies.len() as u64);
                x.json_file(
                    &format!("{grel}/template.json"),
                    &template(&bodies, &containers),
                )?;
                x.json_file(&format!("{grel}/resources.json"), &json!(bodies))?;
            }
            if rgs.len() < PAGE {
                break;
            }
        }
    }

    let assignments: Vec<Value> = store
        .list_role_assignments(&tenant.id)?
        .into_iter()
        .map(|a| json!({
            "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.name),
            "name": a.name, "type": "Microsoft.Authorization/roleAssignments",
            "properties": {"scope": a.scope, "roleDefinitionId": a.role_definition_id, "principalId": a.principal_id,
                           "principalType": a.principal_type, "description": a.description,
                           "createdBy": a.created_by, "createdOn": rfc3339_secs(a.created)}
        }))
        .collect();
    x.count("roleAssignments", assignments.len() as u64);
    x.json_file("authorization/roleAssignments.json", &json!(assignments))?;
    let defs: Vec<Value> = store
        .list_role_definitions(&tenant.id)?
        .into_iter()
        .map(|d| {
            let mut b = d.body.clone();
            b["id"] = json!(format!(
                "/providers/Microsoft.Authorization/roleDefinitions/{}",
                d.id
            ));
            b
        })
        .collect();
    x.count("roleDefinitions", defs.len() as u64);
    x.json_file("authorization/roleDefinitions.json", &json!(defs))?;
    // Azure Policy: custom definitions, sets and assignments, as their ARM bodies.
    for (kind, rel) in [
        ("policyDefinitions", "authorization/policyDefinitions.json"),
        (
            "policySetDefinitions",
            "authorization/policySetDefinitions.json",
        ),
        ("policyAssignments", "authorization/policyAssignments.json"),
    ] {
        let objs: Vec<Value> = store
            .policy_list(&tenant.id, kind)?
            .into_iter()
            .map(|o| o.body)
            .collect();
        x.count(kind, objs.len() as u64);
        x.json_file(rel, &json!(objs))?;
    }

    for a in &accounts {
        x.account(a)?;
    }
    // Key Vault: each vault's ARM JSON (live vaults' are in resources.json too), its secrets and
    // keys, values and software private keys encrypted to the recipient as they are read.
    for v in &vaults {
        let ve = keyvault::export_vault(store, src.custody, opts.recipient.as_ref(), v)?;
        let rel = format!("keyvault/{}", v.resource.name.to_ascii_lowercase());
        x.count("vaults", 1);
        x.count("secretVersions", ve.secret_versions);
        x.count("keyVersions", ve.key_versions);
        x.count("keyVersionsNotExportable", ve.not_exportable);
        x.json_file(&format!("{rel}/vault.json"), &ve.vault)?;
        x.jsonl_file(&format!("{rel}/secrets.jsonl"), &ve.secrets)?;
        x.jsonl_file(&format!("{rel}/keys.jsonl"), &ve.keys)?;
    }

    // The audit log last, so that it includes as much as possible (the export's own entry is
    // written by the caller, after the manifest).
    {
        let rel = "audit/audit-log.jsonl";
        let mut f = HashingFile::create(out.join(rel))?;
        let n = ciel_audit::export::export(store, &tenant.id, 1, &src.audit_public_key, |line| {
            let mut s = serde_json::to_vec(line)?;
            s.push(b'\n');
            f.write(&s)
        })
        .map_err(|e| anyhow!("exporting the audit log: {e}"))?;
        let (size, sha256) = f.finish()?;
        x.journal.record(JournalLine {
            path: rel.into(),
            size,
            sha256,
            tag: String::new(),
        })?;
        x.count("auditEntries", n as u64);
    }

    let (blob_bytes, seconds) = x.progress.finish();
    let files: Vec<FileEntry> = x.journal.entries();
    let m = Manifest {
        format: manifest::FORMAT.into(),
        tenant: TenantRef {
            id: tenant.id.clone(),
            display_name: tenant.display_name.clone(),
        },
        source: Source {
            software: format!("ciel {}", env!("CARGO_PKG_VERSION")),
            domain: src.domain.clone(),
            audit_public_key: src.audit_public_key.clone(),
        },
        created_at: ciel_core::time::now_rfc3339(),
        since: since.map(|(_, s)| s),
        summary: x.summary.clone(),
        keyvault: if kv_material {
            opts.recipient
                .as_ref()
                .map(|r| json!({"recipient": r.describe()}))
        } else {
            None
        },
        files,
    };
    let digest = m.write(&out)?;
    // The journal has served its purpose; a finished export is exactly what the manifest lists.
    std::fs::remove_file(out.join(manifest::JOURNAL))?;
    tracing::info!(tenant = %tenant.id, files = m.files.len(), bytes = blob_bytes, seconds, manifest_sha256 = %digest, "export finished");
    Ok(ExportReport {
        manifest_sha256: digest,
        files: m.files.len(),
        blob_bytes,
        seconds,
        kept_from_before: x.kept,
        summary: m.summary,
    })
}
