//! Block blobs in one piece: Put Blob, Get Blob (ranges), Get Blob Properties, Delete Blob,
//! List Blobs (flat or by delimiter). Conditional headers are honoured on reads and writes.

use super::container::{self, metadata_from, metadata_headers, metadata_xml};
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use crate::blobstore::{self, ObjectReader, ObjectWriter, DEFAULT_CHUNK};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use ciel_store::{BlobDeletion, BlobRecord, Found, StoreError};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use quick_xml::escape::escape;
use serde_json::json;

pub(crate) const READ: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
pub(crate) const WRITE: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write";
const DELETE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete";
/// Azure's limit for a single Put Blob (5000 MiB).
const MAX_PUT: u64 = 5000 * 1024 * 1024;

pub(crate) fn h<'a>(headers: &'a HeaderMap, n: &str) -> Option<&'a str> {
    headers
        .get(n)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// The transactional `Content-MD5` of a request body, when the client sends one.
pub(crate) fn request_md5(headers: &HeaderMap) -> BlobResult<Option<Vec<u8>>> {
    h(headers, "content-md5")
        .map(|m| {
            B64.decode(m).map_err(|_| {
                BlobError::bad(
                    "InvalidMd5",
                    "The MD5 value specified in the request is invalid.",
                )
            })
        })
        .transpose()
}

fn parse_http_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| d.timestamp())
}

/// Outcome of the conditional headers against the current blob (None when absent).
pub(crate) fn check_conditions(
    headers: &HeaderMap,
    current: Option<&BlobRecord>,
    read: bool,
) -> BlobResult<()> {
    let failed = || {
        BlobError::new(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    };
    let etag = current.map(|b| b.etag.as_str());
    let modified = current.map(|b| b.last_modified / 1_000_000);
    if let Some(m) = h(headers, "if-match") {
        if etag
            .map(|e| !(m == "*" || m.split(',').any(|x| x.trim() == e)))
            .unwrap_or(true)
        {
            return Err(failed());
        }
    }
    if let Some(m) = h(headers, "if-none-match") {
        let hit = match etag {
            Some(e) => m == "*" || m.split(',').any(|x| x.trim() == e),
            None => false,
        };
        if hit {
            if read {
                return Err(BlobError::new(
                    StatusCode::NOT_MODIFIED,
                    "ConditionNotMet",
                    "The condition specified using HTTP conditional header(s) is not met.",
                ));
            }
            if m == "*" {
                return Err(BlobError::new(
                    StatusCode::CONFLICT,
                    "BlobAlreadyExists",
                    "The specified blob already exists.",
                ));
            }
            return Err(failed());
        }
    }
    if let (Some(s), Some(m)) = (
        h(headers, "if-modified-since").and_then(parse_http_date),
        modified,
    ) {
        if m <= s {
            return Err(if read {
                BlobError::new(StatusCode::NOT_MODIFIED, "ConditionNotMet", "Not modified.")
            } else {
                failed()
            });
        }
    }
    if let (Some(s), Some(m)) = (
        h(headers, "if-unmodified-since").and_then(parse_http_date),
        modified,
    ) {
        if m > s {
            return Err(failed());
        }
    }
    // `x-ms-if-tags`: a blob that does not exist has no tags to match.
    match current {
        Some(b) => super::tags::check_if_tags(headers, &b.tags)?,
        None if h(headers, "x-ms-if-tags").is_some() => return Err(failed()),
        None => {}
    }
    Ok(())
}

pub(crate) async fn load(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
) -> BlobResult<Option<BlobRecord>> {
    load_at(ctx, container, name, None).await
}

/// The blob, or one of its snapshots when `snapshot` is given (`?snapshot=`).
pub(crate) async fn load_at(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    snapshot: Option<&str>,
) -> BlobResult<Option<BlobRecord>> {
    let snap = match snapshot {
        Some(s) => super::snapshot::canonical(s)?,
        None => String::new(),
    };
    let (a, c, n) = (
        ctx.account.id.key(),
        container.to_string(),
        name.to_string(),
    );
    Ok(ciel_store::run(&ctx.svc.store, move |s| {
        s.get_blob_at(&a, &c, &n, &snap).found()
    })
    .await?)
}

/// What a blob's bytes are made of, in order: stored objects (whole or a slice of one) and, in
/// page blobs, the zeros of pages never written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    /// `len` bytes of an object starting at `at`; `whole` when the object is exactly that long.
    Object {
        oid: [u8; 16],
        at: u64,
        len: u64,
        whole: bool,
    },
    Zeros(u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Object { len, .. } => *len,
            Piece::Zeros(n) => *n,
        }
    }
}

pub(crate) fn parse_oid(hexs: &str) -> BlobResult<[u8; 16]> {
    if hexs.len() != 32 {
        return Err(BlobError::internal());
    }
    let bytes: Vec<u8> = (0..16)
        .filter_map(|i| u8::from_str_radix(hexs.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| BlobError::internal())
}

/// The pieces of a blob, covering exactly its size.
pub(crate) fn pieces(b: &BlobRecord) -> BlobResult<Vec<Piece>> {
    if b.blob_type == "PageBlob" {
        return super::page::pieces(b);
    }
    Ok(segments(b)?
        .into_iter()
        .map(|(oid, len)| Piece::Object {
            oid,
            at: 0,
            len,
            whole: true,
        })
        .collect())
}

/// The objects holding a blob's bytes, in order, with their lengths.
fn segments(b: &BlobRecord) -> BlobResult<Vec<([u8; 16], u64)>> {
    let blocks = b.blocks.as_array().cloned().unwrap_or_default();
    // A block list of no blocks is an empty blob with no object at all.
    if blocks.is_empty() && b.object_id.is_empty() {
        return Ok(vec![]);
    }
    if blocks.is_empty() {
        let oid =
            <[u8; 16]>::try_from(b.object_id.as_slice()).map_err(|_| BlobError::internal())?;
        return Ok(vec![(oid, b.size as u64)]);
    }
    blocks
        .iter()
        .map(|x| {
            let oid = parse_oid(x["object"].as_str().unwrap_or(""))?;
            Ok((oid, x["size"].as_u64().unwrap_or(0)))
        })
        .collect()
}

pub async fn put_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    req: Request<Body>,
) -> BlobResult<Response> {
    if name.is_empty() || name.chars().count() > 1024 {
        return Err(BlobError::bad(
            "InvalidResourceName",
            "Blob names are 1 to 1024 characters.",
        ));
    }
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let headers = req.headers().clone();
    let kind = match h(&headers, "x-ms-blob-type") {
        Some(k @ ("BlockBlob" | "AppendBlob" | "PageBlob")) => k.to_string(),
        Some(_) => {
            return Err(BlobError::bad(
                "InvalidHeaderValue",
                "x-ms-blob-type must be BlockBlob, AppendBlob or PageBlob.",
            ))
        }
        None => return Err(BlobError::bad(
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-blob-type.",
        )),
    };
    if h(&headers, "x-ms-encryption-key").is_some()
        || h(&headers, "x-ms-encryption-scope").is_some()
    {
        return Err(BlobError::not_supported(
            "Customer-provided keys and encryption scopes",
        ));
    }
    let tags = super::tags::from_header(&headers)?;
    if kind != "BlockBlob" {
        return empty_blob(ctx, container, name, &headers, &kind, tags).await;
    }
    let declared = h(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.map(|l| l > MAX_PUT).unwrap_or(false) {
        return Err(BlobError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The request body is too large and exceeds the maximum permissible limit.",
        ));
    }
    let metadata = metadata_from(&headers)?;
    container::load(ctx, container).await?;
    let existing = load(ctx, container, name).await?;
    check_conditions(&headers, existing.as_ref(), false)?;
    super::lease::check_blob_write(&headers, existing.as_ref())?;
    let want_md5 = request_md5(&headers)?;
    let want_crc = request_crc64(&headers)?;
    ctx.forbid_overwrite(existing.is_some())?;

    let (oid, size, dg) = stream_to_object(ctx, req.into_body(), want_crc.is_some()).await?;
    if let Err(e) = check_digests(want_md5.as_deref(), want_crc, &dg) {
        let _ = blobstore::delete(&ctx.account.dir, &oid);
        return Err(e);
    }
    let md5 = dg.md5.clone();
    let stored_md5 = match h(&headers, "x-ms-blob-content-md5") {
        Some(m) => B64
            .decode(m)
            .map_err(|_| BlobError::bad("InvalidMd5", "x-ms-blob-content-md5 is not base64."))?,
        None => md5.clone(),
    };
    let now = now_micros();
    let rec = BlobRecord {
        account: ctx.account.id.key(),
        container: container.to_string(),
        name: name.to_string(),
        object_id: oid.to_vec(),
        size: size as i64,
        content_type: h(&headers, "x-ms-blob-content-type")
            .map(str::to_string)
            .or_else(|| Some("application/octet-stream".into())),
        content_encoding: h(&headers, "x-ms-blob-content-encoding").map(str::to_string),
        content_language: h(&headers, "x-ms-blob-content-language").map(str::to_string),
        content_disposition: h(&headers, "x-ms-blob-content-disposition").map(str::to_string),
        cache_control: h(&headers, "x-ms-blob-cache-control").map(str::to_string),
        content_md5: Some(stored_md5),
        metadata,
        etag: new_etag(now),
        last_modified: now,
        created: existing.as_ref().map(|b| b.created).unwrap_or(now),
        blocks: json!([]),
        blob_type: "BlockBlob".into(),
        // A lease outlives the writes made under it.
        lease: existing.as_ref().and_then(|b| b.lease.clone()),
        tags,
        ..Default::default()
    };
    let draft = ctx.draft(
        WRITE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({"size": size}),
    );
    let replaced = match commit_blob(ctx, &headers, existing, rec.clone(), draft, true).await {
        Ok(old) => old,
        Err(e) => {
            let _ = blobstore::delete(&ctx.account.dir, &oid);
            return Err(e);
        }
    };
    remove_objects(ctx, replaced);
    let mut r = empty(StatusCode::CREATED);
    let hm = r.headers_mut();
    for (k, v) in [
        ("etag", rec.etag.clone()),
        ("last-modified", http_date(rec.last_modified)),
        ("content-md5", B64.encode(&md5)),
        ("x-ms-request-server-encrypted", "true".into()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    }
    crc64_header(&mut r, want_crc, &dg);
    Ok(r)
}

/// Stores `rec` as the new version of the blob read as `existing`, atomically with that read:
/// when the blob changed meanwhile (a lease taken, another write), the conditions and the lease
/// are decided again on what is stored and, if `retry`, the write is tried again (a few times);
/// else the write fails. `rec` keeps the lease and creation time of the version it replaces.
/// Returns the objects nothing refers to any more.
pub(crate) async fn commit_blob(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
    existing: Option<BlobRecord>,
    mut rec: BlobRecord,
    draft: ciel_core::audit::AuditDraft,
    retry: bool,
) -> BlobResult<Vec<Vec<u8>>> {
    let mut existing = existing;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
        }
        rec.lease = existing.as_ref().and_then(|b| b.lease.clone());
        rec.created = existing.as_ref().map(|b| b.created).unwrap_or(rec.created);
        let expect = existing.as_ref().map(|b| (b.etag.clone(), b.lease.clone()));
        let (r2, d2) = (rec.clone(), draft.clone());
        match ciel_store::run(&ctx.svc.store, move |s| s.put_blob_if(&r2, &expect, &d2)).await {
            Ok(freed) => return Ok(freed),
            Err(StoreError::Conflict(c)) if c == "changed" => {
                if !retry {
                    break;
                }
                existing = load(ctx, &rec.container, &rec.name).await?;
                check_conditions(headers, existing.as_ref(), false)?;
                super::lease::check_blob_write(headers, existing.as_ref())?;
            }
            // The container went away (its foreign key refused the row).
            Err(StoreError::Conflict(_)) => return Err(BlobError::container_not_found()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "OperationConflict",
        "The blob was changed by another request at the same time; retry.",
    ))
}

/// Streams a request body into a new encrypted object: one chunk in memory, encrypted as it
/// arrives. Returns the object id, its length and the MD5 of the bytes.
/// CRC64 is computed only when `crc64` (the client sent `x-ms-content-crc64`); MD5 always,
/// as Azure returns it.
pub(crate) async fn stream_to_object(
    ctx: &Ctx<'_>,
    body: Body,
    crc64: bool,
) -> BlobResult<([u8; 16], u64, Digests)> {
    let oid = blobstore::new_object_id()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(8);
    let dir = ctx.account.dir.clone();
    let key = ctx.account.data_key;
    let writer = tokio::task::spawn_blocking(
        move || -> Result<Option<(u64, Digests)>, blobstore::ObjectError> {
            let mut w = ObjectWriter::create(&dir, &key, oid, DEFAULT_CHUNK)?;
            let mut md5 = Md5::new();
            let mut crc = CRC64.digest();
            while let Some(item) = rx.blocking_recv() {
                match item {
                    Some(b) => {
                        md5.update(&b);
                        if crc64 {
                            crc.update(&b);
                        }
                        w.write(&b)?;
                    }
                    // The body failed: drop the writer, which removes the partial object.
                    None => return Ok(None),
                }
            }
            let n = w.finish()?;
            Ok(Some((
                n,
                Digests {
                    md5: md5.finalize().to_vec(),
                    crc64: crc.finalize(),
                },
            )))
        },
    );
    let mut body = body;
    let mut total = 0u64;
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    total += data.len() as u64;
                    if total > MAX_PUT || tx.send(Some(data)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if failed {
        let _ = tx.send(None).await;
    }
    drop(tx);
    let written = writer.await.map_err(|_| BlobError::internal())??;
    let Some((size, md5)) = written else {
        return Err(BlobError::bad(
            "InvalidInput",
            "The request body could not be read completely.",
        ));
    };
    Ok((oid, size, md5))
}

/// Reads and drops what is left of a request body (at most `limit` bytes) before an early error
/// answer: clients that send the body anyway (the SDK's append upload probes with a 4 MiB Append
/// Block and expects a clean 404) would otherwise see the connection cut mid-request.
pub(crate) async fn drain(body: Body, limit: u64) {
    let mut body = body;
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(d) = frame.into_data() {
            seen += d.len() as u64;
            if seen > limit {
                break;
            }
        }
    }
}

pub(crate) fn remove_objects(ctx: &Ctx<'_>, objects: Vec<Vec<u8>>) {
    let dir = ctx.account.dir.clone();
    tokio::task::spawn_blocking(move || {
        for o in objects {
            if let Ok(oid) = <[u8; 16]>::try_from(o.as_slice()) {
                if let Err(e) = blobstore::delete(&dir, &oid) {
                    tracing::warn!(error = %e, "could not remove an unreferenced blob object");
                }
            }
        }
    });
}

/// `bytes=a-b` or `bytes=a-`, from `x-ms-range` (preferred) or `Range`.
fn parse_range(headers: &HeaderMap) -> BlobResult<Option<(u64, Option<u64>)>> {
    let Some(v) = h(headers, "x-ms-range").or_else(|| h(headers, "range")) else {
        return Ok(None);
    };
    let bad = || BlobError::bad("InvalidRange", "The range specified is invalid.");
    let spec = v.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start = a.trim().parse::<u64>().map_err(|_| bad())?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse::<u64>().map_err(|_| bad())?)
    };
    if end.map(|e| e < start).unwrap_or(false) {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn blob_headers(r: &mut Response, b: &BlobRecord) {
    let hm = r.headers_mut();
    let mut set = |k: &'static str, v: Option<String>| {
        if let Some(v) = v.and_then(|v| HeaderValue::from_str(&v).ok()) {
            hm.insert(k, v);
        }
    };
    set("etag", Some(b.etag.clone()));
    set("last-modified", Some(http_date(b.last_modified)));
    set("x-ms-creation-time", Some(http_date(b.created)));
    set("content-type", b.content_type.clone());
    set("content-encoding", b.content_encoding.clone());
    set("content-language", b.content_language.clone());
    set("content-disposition", b.content_disposition.clone());
    set("cache-control", b.cache_control.clone());
    set("x-ms-blob-type", Some(blob_type(b).into()));
    set("x-ms-server-encrypted", Some("true".into()));
    set("accept-ranges", Some("bytes".into()));
    match blob_type(b) {
        "BlockBlob" => {
            set("x-ms-access-tier", Some("Hot".into()));
            set("x-ms-access-tier-inferred", Some("true".into()));
        }
        "AppendBlob" => set(
            "x-ms-blob-committed-block-count",
            Some(
                b.blocks
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
            ),
        ),
        _ => set(
            "x-ms-blob-sequence-number",
            Some(b.sequence_number.to_string()),
        ),
    }
    let tag_count = b.tags.as_object().map(|t| t.len()).unwrap_or(0);
    if tag_count > 0 {
        set("x-ms-tag-count", Some(tag_count.to_string()));
    }
    if !b.snapshot.is_empty() {
        set("x-ms-snapshot", Some(b.snapshot.clone()));
    }
    super::copy::headers(hm, b);
    super::lease::headers(r, &b.lease);
}

pub(crate) fn blob_type(b: &BlobRecord) -> &str {
    if b.blob_type.is_empty() {
        "BlockBlob"
    } else {
        &b.blob_type
    }
}

/// Put Blob of an append blob or a page blob: no body, an empty blob (a page blob of
/// `x-ms-blob-content-length` zeros).
async fn empty_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    kind: &str,
    tags: serde_json::Value,
) -> BlobResult<Response> {
    if h(headers, "content-length")
        .map(|l| l != "0")
        .unwrap_or(false)
    {
        return Err(BlobError::bad(
            "InvalidHeaderValue",
            "Put Blob of an append or page blob takes no content: Content-Length must be 0.",
        ));
    }
    let (size, sequence_number) = if kind == "PageBlob" {
        super::page::create_params(headers)?
    } else {
        (0, 0)
    };
    let metadata = metadata_from(headers)?;
    container::load(ctx, container).await?;
    let existing = load(ctx, container, name).await?;
    check_conditions(headers, existing.as_ref(), false)?;
    super::lease::check_blob_write(headers, existing.as_ref())?;
    let now = now_micros();
    let rec = BlobRecord {
        account: ctx.account.id.key(),
        container: container.to_string(),
        name: name.to_string(),
        size,
        content_type: h(headers, "x-ms-blob-content-type")
            .map(str::to_string)
            .or_else(|| Some("application/octet-stream".into())),
        content_encoding: h(headers, "x-ms-blob-content-encoding").map(str::to_string),
        content_language: h(headers, "x-ms-blob-content-language").map(str::to_string),
        content_disposition: h(headers, "x-ms-blob-content-disposition").map(str::to_string),
        cache_control: h(headers, "x-ms-blob-cache-control").map(str::to_string),
        content_md5: h(headers, "x-ms-blob-content-md5").and_then(|m| B64.decode(m).ok()),
        metadata,
        etag: new_etag(now),
        last_modified: now,
        created: existing.as_ref().map(|b| b.created).unwrap_or(now),
        blocks: json!([]),
        blob_type: kind.to_string(),
        lease: existing.as_ref().and_then(|b| b.lease.clone()),
        tags,
        sequence_number,
        ..Default::default()
    };
    let draft = ctx.draft(
        WRITE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({"blobType": kind, "size": size}),
    );
    let replaced = commit_blob(ctx, headers, existing, rec.clone(), draft, true).await?;
    remove_objects(ctx, replaced);
    let mut r = empty(StatusCode::CREATED);
    let hm = r.headers_mut();
    for (k, v) in [
        ("etag", rec.etag.clone()),
        ("last-modified", http_date(rec.last_modified)),
        ("x-ms-request-server-encrypted", "true".into()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    }
    Ok(r)
}

/// Which digest of a range the client asked for.
#[derive(Clone, Copy)]
enum RangeDigest {
    Md5,
    Crc64,
}

/// Azure Storage's CRC64 (the NVMe polynomial, reflected, all-ones start and end), as sent in
/// `x-ms-content-crc64`: base64 of its 8 bytes little-endian.
pub(crate) fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// Slice-by-16 tables: several GB/s, so that a requested CRC64 does not slow an upload much.
pub(crate) const CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_NVME);

/// The transactional `x-ms-content-crc64` of a request body, when the client sends one.
pub(crate) fn request_crc64(headers: &HeaderMap) -> BlobResult<Option<u64>> {
    h(headers, "x-ms-content-crc64")
        .map(|v| {
            B64.decode(v)
                .ok()
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| {
                    BlobError::bad(
                        "InvalidHeaderValue",
                        "x-ms-content-crc64 must be the base64 of 8 bytes.",
                    )
                })
        })
        .transpose()
}

/// Echoes the CRC64 of what was received when the client sent one to check.
pub(crate) fn crc64_header(r: &mut Response, wanted: Option<u64>, got: &Digests) {
    if wanted.is_some() {
        if let Ok(v) = HeaderValue::from_str(&B64.encode(got.crc64.to_le_bytes())) {
            r.headers_mut().insert("x-ms-content-crc64", v);
        }
    }
}

/// Checks the transactional digests a client sent against those of the body received.
pub(crate) fn check_digests(
    want_md5: Option<&[u8]>,
    want_crc64: Option<u64>,
    got: &Digests,
) -> BlobResult<()> {
    if want_md5.is_some_and(|w| w != got.md5.as_slice()) {
        return Err(BlobError::bad("Md5Mismatch", "The MD5 value specified in the request did not match with the MD5 value calculated by the server."));
    }
    if want_crc64.is_some_and(|w| w != got.crc64) {
        return Err(BlobError::bad("Crc64Mismatch", "The CRC64 value specified in the request did not match with the CRC64 value calculated by the server."));
    }
    Ok(())
}

/// The digests of a body as it streamed in.
pub(crate) struct Digests {
    pub md5: Vec<u8>,
    /// Only computed when the client sent `x-ms-content-crc64` (else 0).
    pub crc64: u64,
}

/// Feeds the bytes `start..end` of a blob's pieces to `sink`, one decrypted chunk at a time.
pub(crate) fn read_pieces(
    dir: &std::path::Path,
    key: &[u8; 32],
    segs: Vec<Piece>,
    start: u64,
    end: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), blobstore::ObjectError>,
) -> Result<(), blobstore::ObjectError> {
    let mut base = 0u64;
    for p in segs {
        let len = p.len();
        let (s, e) = (start.max(base), end.min(base + len));
        if s < e {
            match p {
                Piece::Object { oid, at, whole, .. } => {
                    let mut reader = ObjectReader::open(dir, key, oid)?;
                    let fits = if whole {
                        reader.len() == len
                    } else {
                        reader.len() >= at + len
                    };
                    if !fits {
                        return Err(blobstore::ObjectError::Corrupt(
                            "object length differs from its record".into(),
                        ));
                    }
                    reader.read_range(at + s - base, at + e - base, &mut sink)?;
                }
                // Pages never written read as zeros, a chunk at a time.
                Piece::Zeros(_) => {
                    let zeros = vec![0u8; (e - s).min(DEFAULT_CHUNK as u64) as usize];
                    let mut left = e - s;
                    while left > 0 {
                        let n = left.min(zeros.len() as u64) as usize;
                        sink(&zeros[..n])?;
                        left -= n as u64;
                    }
                }
            }
        }
        base += len;
    }
    Ok(())
}

pub async fn get_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    head: bool,
    snapshot: Option<&str>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), READ, true)
        .await?;
    container::load(ctx, container).await?;
    let b = load_at(ctx, container, name, snapshot)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), true)?;
    super::lease::check_blob_read(headers, &b)?;
    let size = b.size as u64;
    let range = if head { None } else { parse_range(headers)? };
    let wants = |n: &str| h(headers, n).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let range_digest =
        match (
            wants("x-ms-range-get-content-md5"),
            wants("x-ms-range-get-content-crc64"),
        ) {
            (false, false) => None,
            (true, true) => return Err(BlobError::bad(
                "InvalidHeaderValue",
                "x-ms-range-get-content-md5 and x-ms-range-get-content-crc64 cannot both be set.",
            )),
            _ if head => None,
            (md5, _) => {
                // Azure computes per-range digests only for an explicit range of at most 4 MiB.
                let within = match range {
                    Some((s, Some(e))) => e + 1 - s <= 4 * 1024 * 1024,
                    Some((s, None)) => size.saturating_sub(s) <= 4 * 1024 * 1024,
                    None => false,
                };
                if !within {
                    return Err(BlobError::bad(
                        "OutOfRangeInput",
                        "A per-range digest needs a range of at most 4 MiB.",
                    ));
                }
                Some(if md5 {
                    RangeDigest::Md5
                } else {
                    RangeDigest::Crc64
                })
            }
        };
    let mut range_digest_header: Option<&'static str> = None;
    let (start, end, status) = match range {
        None => (0, size, StatusCode::OK),
        Some((s, _)) if s >= size => {
            let mut r = BlobError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(http::header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        Some((s, e)) => (
            s,
            e.map(|e| (e + 1).min(size)).unwrap_or(size),
            StatusCode::PARTIAL_CONTENT,
        ),
    };
    let mut r = if head {
        empty(StatusCode::OK)
    } else {
        let (dir, key) = (ctx.account.dir.clone(), ctx.account.data_key);
        let segs = pieces(&b)?;
        if segs.iter().map(Piece::len).sum::<u64>() != size {
            tracing::error!(
                container,
                blob = name,
                "blob segments do not add up to its size"
            );
            return Err(BlobError::internal());
        }
        // Open the first object before answering, so that a missing object is an error status.
        let first = segs.iter().find_map(|p| match p {
            Piece::Object { oid, .. } => Some(*oid),
            Piece::Zeros(_) => None,
        });
        if let Some(oid) = first {
            let (d, k) = (dir.clone(), key);
            tokio::task::spawn_blocking(move || ObjectReader::open(&d, &k, oid))
                .await
                .map_err(|_| BlobError::internal())??;
        }
        if let Some(kind) = range_digest {
            // Per-range digests: the range (at most 4 MiB) is read whole, then sent.
            let (segs, d, k) = (segs, dir.clone(), key);
            let bytes = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity((end - start) as usize);
                read_pieces(&d, &k, segs, start, end, |piece| {
                    buf.extend_from_slice(piece);
                    Ok(())
                })
                .map(|_| buf)
            })
            .await
            .map_err(|_| BlobError::internal())??;
            let digest = match kind {
                RangeDigest::Md5 => ("content-md5", B64.encode(Md5::digest(&bytes))),
                RangeDigest::Crc64 => (
                    "x-ms-content-crc64",
                    B64.encode(crc64(&bytes).to_le_bytes()),
                ),
            };
            let mut r = (status, Body::from(bytes)).into_response();
            if let Ok(v) = HeaderValue::from_str(&digest.1) {
                r.headers_mut().insert(digest.0, v);
            }
            range_digest_header = Some(digest.0);
            r
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::task::spawn_blocking(move || {
                let res = read_pieces(&dir, &key, segs, start, end, |piece| {
                    tx.blocking_send(Ok(Bytes::copy_from_slice(piece)))
                        .map_err(|_| {
                            blobstore::ObjectError::Io(std::io::Error::other("client went away"))
                        })
                });
                if let Err(e) = res {
                    tracing::error!(error = %e, "reading a blob failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            });
            (status, Body::from_stream(stream)).into_response()
        }
    };
    blob_headers(&mut r, &b);
    let hm = r.headers_mut();
    let len = if head { size } else { end - start };
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        hm.insert(http::header::CONTENT_LENGTH, v);
    }
    if let Some(md5) = &b.content_md5 {
        // A partial read carries the whole blob's MD5 as x-ms-blob-content-md5, as in Azure.
        let name = if status == StatusCode::PARTIAL_CONTENT || range_digest_header.is_some() {
            "x-ms-blob-content-md5"
        } else {
            "content-md5"
        };
        if let Ok(v) = HeaderValue::from_str(&B64.encode(md5)) {
            hm.insert(name, v);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{}",
            start,
            end.saturating_sub(1),
            size
        )) {
            hm.insert(http::header::CONTENT_RANGE, v);
        }
    }
    metadata_headers(&mut r, &b.metadata);
    Ok(r)
}

pub async fn delete_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    snapshot: Option<&str>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), DELETE, true)
        .await?;
    let what = match (snapshot, h(headers, "x-ms-delete-snapshots")) {
        (Some(_), Some(_)) => {
            return Err(BlobError::bad(
                "InvalidQueryParameterValue",
                "x-ms-delete-snapshots cannot be used when deleting a snapshot.",
            ))
        }
        (Some(s), None) => BlobDeletion::Snapshot(super::snapshot::canonical(s)?),
        (None, Some("include")) => BlobDeletion::BaseAndSnapshots,
        (None, Some("only")) => BlobDeletion::SnapshotsOnly,
        (None, Some(_)) => {
            return Err(BlobError::bad(
                "InvalidHeaderValue",
                "x-ms-delete-snapshots must be include or only.",
            ))
        }
        (None, None) => BlobDeletion::Base,
    };
    container::load(ctx, container).await?;
    let b = load_at(ctx, container, name, snapshot)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), false)?;
    // A snapshot carries no lease; deleting the blob (with or without its snapshots) needs it.
    if snapshot.is_none() {
        super::lease::check_blob_write(headers, Some(&b))?;
    }
    let (a, c, n) = (
        ctx.account.id.key(),
        container.to_string(),
        name.to_string(),
    );
    let draft = ctx.draft(
        DELETE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({ "snapshot": snapshot, "deleteSnapshots": h(headers, "x-ms-delete-snapshots") }),
    );
    let old = ciel_store::run(&ctx.svc.store, move |s| {
        s.delete_blobs(&a, &c, &n, &what, &draft)
    })
    .await
    .map_err(|e| match e {
        StoreError::NotFound => BlobError::blob_not_found(),
        StoreError::Conflict(_) => BlobError::new(
            StatusCode::CONFLICT,
            "SnapshotsPresent",
            "This operation is not permitted because the blob has snapshots.",
        ),
        other => other.into(),
    })?;
    remove_objects(ctx, old);
    Ok(empty(StatusCode::ACCEPTED))
}

pub async fn list_blobs(
    ctx: &Ctx<'_>,
    container: &str,
    q: &[(String, String)],
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), READ, true)
        .await?;
    container::load(ctx, container).await?;
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let prefix = get("prefix").unwrap_or_default();
    let delimiter = get("delimiter").filter(|d| !d.is_empty());
    let marker = get("marker").filter(|m| !m.is_empty());
    let max = super::max_results(get("maxresults").as_deref())?;
    let include: Vec<String> = get("include")
        .map(|i| {
            i.split(',')
                .map(|x| x.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    if include.iter().any(|i| {
        !matches!(
            i.as_str(),
            "metadata" | "snapshots" | "copy" | "tags" | "immutabilitypolicy" | "legalhold" | ""
        )
    }) {
        return Err(BlobError::not_supported(
            "Listing uncommitted blobs, deleted blobs or versions",
        ));
    }
    let has = |w: &str| include.iter().any(|i| i == w);
    let with_meta = has("metadata");
    let with_snapshots = has("snapshots");
    let with = Include {
        metadata: with_meta,
        copy: has("copy"),
        tags: has("tags"),
    };
    let mut items: Vec<String> = Vec::new();
    let mut cursor = marker.clone();
    let mut next_marker: Option<String> = None;
    let mut last_prefix: Option<String> = None;
    'outer: loop {
        let (a, c, p, m) = (
            ctx.account.id.key(),
            container.to_string(),
            prefix.clone(),
            cursor.clone(),
        );
        let mut batch = ciel_store::run(&ctx.svc.store, move |s| {
            s.list_blobs_with(&a, &c, &p, m.as_deref(), 1000, with_snapshots)
        })
        .await?;
        let exhausted = batch.len() < 1000;
        // With snapshots, a full batch may end inside one blob's rows, and the next batch starts
        // after that name: leave that blob to the next batch (unless it fills the batch alone).
        if with_snapshots && !exhausted {
            if let Some(last) = batch.last().map(|b| b.name.clone()) {
                let keep = batch.iter().filter(|b| b.name != last).count();
                if keep > 0 {
                    batch.truncate(keep);
                }
            }
        }
        for b in batch {
            cursor = Some(b.name.clone());
            // Resuming after a prefix group: skip the rest of that group.
            if let (Some(m), Some(d)) = (&marker, &delimiter) {
                if m.ends_with(d.as_str()) && b.name.starts_with(m.as_str()) {
                    continue;
                }
            }
            let group = delimiter.as_ref().and_then(|d| {
                b.name[prefix.len()..]
                    .find(d.as_str())
                    .map(|i| b.name[..prefix.len() + i + d.len()].to_string())
            });
            if let Some(g) = &group {
                if last_prefix.as_deref() == Some(g.as_str()) {
                    continue;
                }
            }
            // A blob's snapshots and the blob itself stay on one page (markers are names).
            let same_blob = with_snapshots
                && group.is_none()
                && last_name(&items) == b.name
                && !items.is_empty();
            if items.len() >= max && !same_blob {
                next_marker = Some(match &last_prefix {
                    Some(p)
                        if items
                            .last()
                            .map(|l| l.starts_with("<BlobPrefix>"))
                            .unwrap_or(false) =>
                    {
                        p.clone()
                    }
                    _ => last_name(&items),
                });
                break 'outer;
            }
            match group {
                Some(g) => {
                    items.push(format!(
                        "<BlobPrefix><Name>{}</Name></BlobPrefix>",
                        escape(&g)
                    ));
                    last_prefix = Some(g);
                }
                None => items.push(blob_xml(&b, &with)),
            }
        }
        if exhausted {
            break;
        }
    }
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"{}\" ContainerName=\"{}\"><Prefix>{}</Prefix><Marker>{}</Marker><MaxResults>{}</MaxResults>{}<Blobs>",
        escape(&ctx.service_endpoint),
        escape(container),
        escape(&prefix),
        escape(marker.as_deref().unwrap_or("")),
        max,
        delimiter.as_ref().map(|d| format!("<Delimiter>{}</Delimiter>", escape(d))).unwrap_or_default()
    );
    for i in &items {
        x.push_str(i);
    }
    x.push_str(&format!(
        "</Blobs><NextMarker>{}</NextMarker></EnumerationResults>",
        escape(next_marker.as_deref().unwrap_or(""))
    ));
    let mut r = (StatusCode::OK, x).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    Ok(r)
}

/// The name of the last blob item (items hold XML; the name is between the first Name tags).
fn last_name(items: &[String]) -> String {
    items
        .last()
        .and_then(|i| i.split("<Name>").nth(1))
        .and_then(|r| r.split("</Name>").next())
        .map(|n| {
            quick_xml::escape::unescape(n)
                .map(|c| c.into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// What `include=` asks List Blobs to add to each entry.
pub(crate) struct Include {
    pub metadata: bool,
    pub copy: bool,
    pub tags: bool,
}

fn blob_xml(b: &BlobRecord, with: &Include) -> String {
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or("")).into_owned();
    let kind = blob_type(b);
    let mut extra = String::new();
    match kind {
        "BlockBlob" => extra
            .push_str("<AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred>"),
        "PageBlob" => extra.push_str(&format!(
            "<x-ms-blob-sequence-number>{}</x-ms-blob-sequence-number>",
            b.sequence_number
        )),
        _ => {}
    }
    // Snapshots carry no lease of their own.
    if b.snapshot.is_empty() {
        extra.push_str(&super::lease::xml(&b.lease));
    }
    extra.push_str("<ServerEncrypted>true</ServerEncrypted>");
    if with.copy {
        extra.push_str(&super::copy::xml(b));
    }
    let tag_count = b.tags.as_object().map(|t| t.len()).unwrap_or(0);
    if tag_count > 0 {
        extra.push_str(&format!("<TagCount>{tag_count}</TagCount>"));
    }
    let snapshot = if b.snapshot.is_empty() {
        String::new()
    } else {
        format!("<Snapshot>{}</Snapshot>", escape(&b.snapshot))
    };
    let tags = if with.tags && tag_count > 0 {
        super::tags::xml(&b.tags)
    } else {
        String::new()
    };
    format!(
        "<Blob><Name>{}</Name>{snapshot}<Properties><Creation-Time>{}</Creation-Time><Last-Modified>{}</Last-Modified><Etag>{}</Etag><Content-Length>{}</Content-Length><Content-Type>{}</Content-Type><Content-Encoding>{}</Content-Encoding><Content-Language>{}</Content-Language><Content-MD5>{}</Content-MD5><Content-Disposition>{}</Content-Disposition><Cache-Control>{}</Cache-Control><BlobType>{kind}</BlobType>{extra}</Properties>{}{tags}</Blob>",
        escape(&b.name),
        http_date(b.created),
        http_date(b.last_modified),
        escape(&b.etag),
        b.size,
        opt(&b.content_type),
        opt(&b.content_encoding),
        opt(&b.content_language),
        b.content_md5.as_ref().map(|m| B64.encode(m)).unwrap_or_default(),
        opt(&b.content_disposition),
        opt(&b.cache_control),
        if with.metadata { metadata_xml(&b.metadata) } else { String::new() }
    )
}
