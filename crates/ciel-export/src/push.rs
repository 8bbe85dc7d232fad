//! `ciel export --to-blob-endpoint URL --sas TOKEN`: the exit to elsewhere. Every container and
//! blob of the tenant goes straight into an Azure-Blob-compatible endpoint (Azure itself,
//! Azurite, another Ciel), with its content headers and metadata: Create Container (an existing
//! one is reused), Put Blob for blobs up to 8 MiB, Put Block (8 MiB blocks) and Put Block List
//! above. Bytes are decrypted chunk by chunk and sent block by block: memory stays at one block
//! whatever the blob's size.
//!
//! Snapshots are recreated before their blob: each snapshot's content is uploaded, then
//! Snapshot Blob, oldest first, then the blob's current content (new snapshot times).
//!
//! Containers keep their names, so two accounts of the tenant with a container of the same name
//! cannot go to one endpoint together: `--account` pushes one account at a time.

use crate::export::{for_each_blob, tenant_accounts};
use crate::progress::Progress;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_core::seal::MasterKey;
use ciel_core::ResourceId;
use ciel_storage::offline;
use ciel_store::{BlobRecord, MetadataStore};
use std::path::Path;

/// Blobs up to this size go in one Put Blob; larger ones as blocks of this size.
pub const BLOCK: usize = 8 << 20;
const VERSION: &str = "2021-08-06";

pub struct Destination {
    /// `https://account.blob.core.windows.net`, `http://127.0.0.1:10000/devstoreaccount1`...
    pub endpoint: String,
    /// An account SAS (with or without the leading `?`).
    pub sas: String,
    /// Prepended to every container name (e.g. `ciel-`).
    pub container_prefix: String,
}

#[derive(Debug, Default)]
pub struct PushReport {
    pub endpoint: String,
    pub containers: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Snapshots recreated (with new snapshot times).
    pub snapshots: u64,
    pub seconds: f64,
}

/// A blob name in a URL path: every byte but unreserved ones and `/` percent-encoded.
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    sas: String,
}

impl Client {
    fn url(&self, path: &str, query: &str) -> String {
        let mut u = format!("{}/{}?{}", self.base, path, self.sas);
        if !query.is_empty() {
            u.push('&');
            u.push_str(query);
        }
        u
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::blocking::Response> {
        let r = req
            .header("x-ms-version", VERSION)
            .header(
                "x-ms-date",
                chrono::Utc::now()
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            )
            .send()
            .with_context(|| format!("{what}: the endpoint did not answer"))?;
        Ok(r)
    }

    fn ok(&self, r: reqwest::blocking::Response, what: &str) -> Result<()> {
        if r.status().is_success() {
            return Ok(());
        }
        let status = r.status();
        let code = r
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.text().unwrap_or_default();
        bail!(
            "{what}: {status} {code} {}",
            body.chars().take(300).collect::<String>()
        )
    }
}

fn with_headers(
    mut req: reqwest::blocking::RequestBuilder,
    b: &BlobRecord,
) -> reqwest::blocking::RequestBuilder {
    for (h, v) in [
        ("x-ms-blob-content-type", &b.content_type),
        ("x-ms-blob-content-encoding", &b.content_encoding),
        ("x-ms-blob-content-language", &b.content_language),
        ("x-ms-blob-content-disposition", &b.content_disposition),
        ("x-ms-blob-cache-control", &b.cache_control),
    ] {
        if let Some(v) = v {
            req = req.header(h, v.as_str());
        }
    }
    if let Some(m) = &b.content_md5 {
        req = req.header("x-ms-blob-content-md5", B64.encode(m));
    }
    if let Some(o) = b.metadata.as_object() {
        for (k, v) in o {
            if let Some(v) = v.as_str() {
                req = req.header(format!("x-ms-meta-{k}"), v);
            }
        }
    }
    req
}

/// Uploads one record's content (a blob or a snapshot's) with its headers and metadata: Put Blob
/// up to `BLOCK` bytes, else Put Block of `BLOCK` bytes as they are decrypted, then Put Block List.
fn upload(
    c: &Client,
    dir: &Path,
    key: &[u8; 32],
    cname: &str,
    source_container: &str,
    b: &BlobRecord,
    progress: &mut Progress,
) -> Result<()> {
    let ct_name = source_container;
    let path = format!("{cname}/{}", encode_path(&b.name));
    let what = format!("blob {}/{}", ct_name, b.name);
    if (b.size as usize) <= BLOCK {
        let mut body = Vec::with_capacity(b.size as usize);
        offline::read_blob(dir, key, b, |x| {
            body.extend_from_slice(x);
            Ok(())
        })
        .map_err(|e| anyhow!("reading {what}: {e}"))?;
        let n = body.len() as u64;
        let req = with_headers(c.http.put(c.url(&path, "")), b)
            .header("x-ms-blob-type", "BlockBlob")
            .body(body);
        let r = c.send(req, &what)?;
        c.ok(r, &what)?;
        progress.add(n);
    } else {
        // Blocks of BLOCK bytes, each sent when full: one block in memory.
        let mut ids: Vec<String> = vec![];
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK);
        let mut failure: Option<anyhow::Error> = None;
        let mut send_block = |buf: &mut Vec<u8>, ids: &mut Vec<String>| -> Result<()> {
            let bid = B64.encode(format!("{:08}", ids.len()));
            let q = format!(
                "comp=block&blockid={}",
                encode_path(&bid).replace('/', "%2F")
            );
            let n = buf.len() as u64;
            let r = c.send(
                c.http.put(c.url(&path, &q)).body(std::mem::take(buf)),
                &what,
            )?;
            c.ok(r, &what)?;
            ids.push(bid);
            progress.add(n);
            Ok(())
        };
        let res = offline::read_blob(dir, key, b, |mut x| {
            while !x.is_empty() {
                let take = (BLOCK - buf.len()).min(x.len());
                buf.extend_from_slice(&x[..take]);
                x = &x[take..];
                if buf.len() == BLOCK {
                    if let Err(e) = send_block(&mut buf, &mut ids) {
                        failure = Some(e);
                        return Err(ciel_storage::blobstore::ObjectError::Corrupt(
                            "push failed".into(),
                        ));
                    }
                    buf.reserve(BLOCK);
                }
            }
            Ok(())
        });
        if let Some(e) = failure {
            return Err(e);
        }
        res.map_err(|e| anyhow!("reading {what}: {e}"))?;
        if !buf.is_empty() {
            send_block(&mut buf, &mut ids)?;
        }
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in &ids {
            xml.push_str(&format!("<Latest>{id}</Latest>"));
        }
        xml.push_str("</BlockList>");
        let req = with_headers(c.http.put(c.url(&path, "comp=blocklist")), b).body(xml);
        let r = c.send(req, &what)?;
        c.ok(r, &what)?;
    }
    Ok(())
}

pub fn push(
    store: &dyn MetadataStore,
    master: &MasterKey,
    blob_root: &Path,
    tenant: &str,
    dest: &Destination,
    account: Option<&str>,
) -> Result<PushReport> {
    let http = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .map_err(|e| anyhow!("HTTP client: {e}"))?;
    let c = Client {
        http,
        base: dest.endpoint.trim_end_matches('/').to_string(),
        sas: dest.sas.trim_start_matches('?').to_string(),
    };
    let accounts: Vec<_> = tenant_accounts(store, tenant)?
        .into_iter()
        .filter(|a| account.map(|n| n == a.name).unwrap_or(true))
        .collect();
    if accounts.is_empty() {
        bail!(
            "tenant {tenant} has no storage account{}",
            account.map(|a| format!(" named {a}")).unwrap_or_default()
        );
    }
    // Containers keep their names: refuse before sending anything when two accounts share one.
    let mut seen = std::collections::HashMap::new();
    let mut total = 0u64;
    for a in &accounts {
        let k = a.id.to_ascii_lowercase();
        for ct in store.list_containers(&k, "", None, 5000)? {
            if let Some(other) = seen.insert(ct.name.clone(), a.name.clone()) {
                bail!("accounts {other} and {} both have a container {}; push one account at a time with --account", a.name, ct.name);
            }
            for_each_blob(store, &k, &ct.name, |b| {
                total += b.size as u64;
                Ok(())
            })?;
        }
    }
    let mut rep = PushReport {
        endpoint: c.base.clone(),
        ..Default::default()
    };
    let mut progress = Progress::new("push", total);
    for a in &accounts {
        let id = ResourceId::parse(&a.id).ok_or_else(|| anyhow!("bad account id {}", a.id))?;
        let k = id.key();
        let secrets = offline::account_secrets(master, a).map_err(|e| anyhow!(e))?;
        let key = offline::data_key(&secrets).map_err(|e| anyhow!(e))?;
        let dir = offline::account_dir(blob_root, &id);
        for ct in store.list_containers(&k, "", None, 5000)? {
            let cname = format!("{}{}", dest.container_prefix, ct.name);
            let mut req = c.http.put(c.url(&cname, "restype=container"));
            if let Some(o) = ct.metadata.as_object() {
                for (mk, v) in o {
                    if let Some(v) = v.as_str() {
                        req = req.header(format!("x-ms-meta-{mk}"), v);
                    }
                }
            }
            let r = c.send(
                req.header("content-length", "0"),
                &format!("create container {cname}"),
            )?;
            // An existing container is reused (a second push completes the first).
            if r.status().as_u16() != 409 {
                c.ok(r, &format!("create container {cname}"))?;
            }
            rep.containers += 1;
            // A blob's snapshots are recreated before it (Snapshot Blob cannot be given content):
            // each snapshot's content is uploaded then snapshotted, oldest first, and the blob's
            // current content goes last. `for_each_blob` gives a blob then its snapshots; they are
            // held as records (not bytes) until the next name.
            let push_group = |group: Vec<BlobRecord>,
                              rep: &mut PushReport,
                              progress: &mut Progress|
             -> Result<()> {
                let (snaps, base): (Vec<_>, Vec<_>) =
                    group.into_iter().partition(|b| !b.snapshot.is_empty());
                for sn in &snaps {
                    upload(&c, &dir, &key, &cname, &ct.name, sn, progress)?;
                    let path = format!("{cname}/{}", encode_path(&sn.name));
                    let what = format!("snapshot of {}/{}", ct.name, sn.name);
                    let r = c.send(
                        c.http.put(c.url(&path, "comp=snapshot")).body(Vec::new()),
                        &what,
                    )?;
                    c.ok(r, &what)?;
                    rep.snapshots += 1;
                    rep.bytes += sn.size as u64;
                }
                for b in &base {
                    upload(&c, &dir, &key, &cname, &ct.name, b, progress)?;
                    rep.blobs += 1;
                    rep.bytes += b.size as u64;
                }
                Ok(())
            };
            let mut group: Vec<BlobRecord> = vec![];
            for_each_blob(store, &k, &ct.name, |b| {
                if group.first().map(|g| g.name != b.name).unwrap_or(false) {
                    push_group(std::mem::take(&mut group), &mut rep, &mut progress)?;
                }
                group.push(b);
                Ok(())
            })?;
            if !group.is_empty() {
                push_group(group, &mut rep, &mut progress)?;
            }
        }
    }
    let (_, secs) = progress.finish();
    rep.seconds = secs;
    Ok(rep)
}

/// Where an export directory goes: a container given by a SAS URL
/// (`https://acct.blob.core.windows.net/container?sv=…&sig=…`).
pub struct ContainerSas {
    /// `https://host[:port]/[account/]container`, without the query.
    pub container_url: String,
    /// The SAS query (without `?`).
    pub sas: String,
}

impl ContainerSas {
    /// Splits and checks a container SAS URL: http(s), a container in the path, a signature.
    pub fn parse(uri: &str) -> Result<Self> {
        let (base, query) = uri
            .split_once('?')
            .ok_or_else(|| anyhow!("the container URL carries no SAS token (no query)"))?;
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| anyhow!("the container URL must be http(s)"))?;
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| anyhow!("the container URL names no container"))?;
        if host.is_empty() || path.trim_matches('/').is_empty() {
            bail!("the container URL names no container");
        }
        if !query.split('&').any(|kv| kv.starts_with("sig=")) {
            bail!("the container URL's query is not a SAS token (no sig)");
        }
        Ok(Self {
            container_url: base.trim_end_matches('/').to_string(),
            sas: query.to_string(),
        })
    }

    /// The host, for logs and audit entries (never the token).
    pub fn host(&self) -> &str {
        let rest = self
            .container_url
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&self.container_url);
        rest.split('/').next().unwrap_or(rest)
    }
}

/// Uploads a finished export directory into a container, each file as a block blob under
/// `prefix/`, `manifest.json` last (a reader who sees it sees a complete export). Memory: one
/// block. `extra_root` is a CA certificate (PEM) to trust besides the usual roots — this Ciel's
/// own, when the container is one of its accounts.
pub fn push_dir(
    dir: &Path,
    dest: &ContainerSas,
    prefix: &str,
    extra_root: Option<&[u8]>,
) -> Result<(u64, u64)> {
    use std::io::Read;
    let mut b = reqwest::blocking::Client::builder().timeout(None);
    if let Some(pem) = extra_root {
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(pem).map_err(|e| anyhow!("CA certificate: {e}"))?,
        );
    }
    let c = Client {
        http: b.build().map_err(|e| anyhow!("HTTP client: {e}"))?,
        base: dest.container_url.clone(),
        sas: dest.sas.clone(),
    };
    let (m, _) = crate::manifest::Manifest::read(dir)?;
    let mut paths: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
    paths.push(crate::manifest::MANIFEST.to_string());
    let (mut files, mut bytes) = (0u64, 0u64);
    let prefix = prefix.trim_matches('/');
    for rel in paths {
        let name = if prefix.is_empty() {
            rel.clone()
        } else {
            format!("{prefix}/{rel}")
        };
        let path = encode_path(&name);
        let what = format!("upload of {name}");
        let mut f = std::fs::File::open(dir.join(&rel))
            .with_context(|| format!("reading {rel} of the export"))?;
        let size = f.metadata()?.len();
        if size as usize <= BLOCK {
            let mut body = Vec::with_capacity(size as usize);
            f.read_to_end(&mut body)?;
            let r = c.send(
                c.http
                    .put(c.url(&path, ""))
                    .header("x-ms-blob-type", "BlockBlob")
                    .body(body),
                &what,
            )?;
            c.ok(r, &what)?;
        } else {
            let mut ids: Vec<String> = vec![];
            loop {
                let mut buf = Vec::with_capacity(BLOCK);
                (&mut f).take(BLOCK as u64).read_to_end(&mut buf)?;
                if buf.is_empty() {
                    break;
                }
                let bid = B64.encode(format!("{:08}", ids.len()));
                let q = format!(
                    "comp=block&blockid={}",
                    encode_path(&bid).replace('/', "%2F")
                );
                let r = c.send(c.http.put(c.url(&path, &q)).body(buf), &what)?;
                c.ok(r, &what)?;
                ids.push(bid);
            }
            let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
            for id in &ids {
                xml.push_str(&format!("<Latest>{id}</Latest>"));
            }
            xml.push_str("</BlockList>");
            let r = c.send(c.http.put(c.url(&path, "comp=blocklist")).body(xml), &what)?;
            c.ok(r, &what)?;
        }
        files += 1;
        bytes += size;
    }
    Ok((files, bytes))
}
