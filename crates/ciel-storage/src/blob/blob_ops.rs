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
use ciel_store::{BlobRecord, Found, StoreError};
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
    Ok(())
}

pub(crate) async fn load(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
) -> BlobResult<Option<BlobRecord>> {
    let (a, c, n) = (
        ctx.account.id.key(),
        container.to_string(),
        name.to_string(),
    );
    Ok(ciel_store::run(&ctx.svc.store, move |s| s.get_blob(&a, &c, &n).found()).await?)
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
            let hexs = x["object"].as_str().unwrap_or("");
            let bytes: Vec<u8> = (0..hexs.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16).ok())
                .collect();
            let oid = <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| BlobError::internal())?;
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
    match h(&headers, "x-ms-blob-type") {
        Some("BlockBlob") => {}
        Some("AppendBlob") | Some("PageBlob") => {
            return Err(BlobError::not_supported("Append and page blobs"))
        }
        _ => return Err(BlobError::bad(
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-blob-type.",
        )),
    }
    if h(&headers, "x-ms-tags").is_some()
        || h(&headers, "x-ms-copy-source").is_some()
        || h(&headers, "x-ms-encryption-key").is_some()
    {
        return Err(BlobError::not_supported(
            "Blob index tags, copy sources and customer-provided keys",
        ));
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
    let want_md5 = request_md5(&headers)?;
    ctx.forbid_overwrite(existing.is_some())?;

    let (oid, size, md5) = stream_to_object(ctx, req.into_body()).await?;
    if let Some(want) = want_md5 {
        if want != md5 {
            let _ = blobstore::delete(&ctx.account.dir, &oid);
            return Err(BlobError::bad("Md5Mismatch", "The MD5 value specified in the request did not match with the MD5 value calculated by the server."));
        }
    }
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
    };
    let draft = ctx.draft(
        WRITE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({"size": size}),
    );
    let r2 = rec.clone();
    let replaced = match ciel_store::run(&ctx.svc.store, move |s| s.put_blob(&r2, &draft)).await {
        Ok(old) => old,
        Err(e) => {
            let _ = blobstore::delete(&ctx.account.dir, &oid);
            return Err(match e {
                StoreError::Conflict(_) => BlobError::container_not_found(),
                other => other.into(),
            });
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
    Ok(r)
}

/// Streams a request body into a new encrypted object: one chunk in memory, encrypted as it
/// arrives. Returns the object id, its length and the MD5 of the bytes.
pub(crate) async fn stream_to_object(
    ctx: &Ctx<'_>,
    body: Body,
) -> BlobResult<([u8; 16], u64, Vec<u8>)> {
    let oid = blobstore::new_object_id()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(8);
    let dir = ctx.account.dir.clone();
    let key = ctx.account.data_key;
    let writer = tokio::task::spawn_blocking(
        move || -> Result<Option<(u64, Vec<u8>)>, blobstore::ObjectError> {
            let mut w = ObjectWriter::create(&dir, &key, oid, DEFAULT_CHUNK)?;
            let mut md5 = Md5::new();
            while let Some(item) = rx.blocking_recv() {
                match item {
                    Some(b) => {
                        md5.update(&b);
                        w.write(&b)?;
                    }
                    // The body failed: drop the writer, which removes the partial object.
                    None => return Ok(None),
                }
            }
            let n = w.finish()?;
            Ok(Some((n, md5.finalize().to_vec())))
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
    set("x-ms-blob-type", Some("BlockBlob".into()));
    set("x-ms-server-encrypted", Some("true".into()));
    set("x-ms-lease-state", Some("available".into()));
    set("x-ms-lease-status", Some("unlocked".into()));
    set("x-ms-access-tier", Some("Hot".into()));
    set("x-ms-access-tier-inferred", Some("true".into()));
    set("accept-ranges", Some("bytes".into()));
}

pub async fn get_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    head: bool,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), READ, true)
        .await?;
    container::load(ctx, container).await?;
    let b = load(ctx, container, name)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), true)?;
    if h(headers, "x-ms-range-get-content-md5").is_some()
        || h(headers, "x-ms-range-get-content-crc64").is_some()
    {
        return Err(BlobError::not_supported("Per-range MD5 and CRC64"));
    }
    let size = b.size as u64;
    let range = if head { None } else { parse_range(headers)? };
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
    let mut r =
        if head {
            empty(StatusCode::OK)
        } else {
            let (dir, key) = (ctx.account.dir.clone(), ctx.account.data_key);
            let segs = segments(&b)?;
            if segs.iter().map(|s| s.1).sum::<u64>() != size {
                tracing::error!(
                    container,
                    blob = name,
                    "blob segments do not add up to its size"
                );
                return Err(BlobError::internal());
            }
            // Open the first object before answering, so that a missing object is an error status.
            let first = segs.first().map(|s| s.0);
            if let Some(oid) = first {
                let (d, k) = (dir.clone(), key);
                tokio::task::spawn_blocking(move || ObjectReader::open(&d, &k, oid))
                    .await
                    .map_err(|_| BlobError::internal())??;
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            tokio::task::spawn_blocking(move || {
                let res = (|| -> Result<(), blobstore::ObjectError> {
                    let mut base = 0u64;
                    for (oid, len) in segs {
                        let (s, e) = (start.max(base), end.min(base + len));
                        if s < e {
                            let mut reader = ObjectReader::open(&dir, &key, oid)?;
                            if reader.len() != len {
                                return Err(blobstore::ObjectError::Corrupt(
                                    "object length differs from its record".into(),
                                ));
                            }
                            reader.read_range(s - base, e - base, |piece| {
                                tx.blocking_send(Ok(Bytes::copy_from_slice(piece)))
                                    .map_err(|_| {
                                        blobstore::ObjectError::Io(std::io::Error::other(
                                            "client went away",
                                        ))
                                    })
                            })?;
                        }
                        base += len;
                    }
                    Ok(())
                })();
                if let Err(e) = res {
                    tracing::error!(error = %e, "reading a blob failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|x| (x, rx))
            });
            (status, Body::from_stream(stream)).into_response()
        };
    blob_headers(&mut r, &b);
    let hm = r.headers_mut();
    let len = if head { size } else { end - start };
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        hm.insert(http::header::CONTENT_LENGTH, v);
    }
    if let Some(md5) = &b.content_md5 {
        // A partial read carries the whole blob's MD5 as x-ms-blob-content-md5, as in Azure.
        let name = if status == StatusCode::PARTIAL_CONTENT {
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
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), DELETE, true)
        .await?;
    if h(headers, "x-ms-delete-snapshots").is_some() {
        return Err(BlobError::not_supported("Snapshots"));
    }
    container::load(ctx, container).await?;
    let b = load(ctx, container, name)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), false)?;
    let (a, c, n) = (
        ctx.account.id.key(),
        container.to_string(),
        name.to_string(),
    );
    let draft = ctx.draft(
        DELETE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({}),
    );
    let old = ciel_store::run(&ctx.svc.store, move |s| s.delete_blob(&a, &c, &n, &draft))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => BlobError::blob_not_found(),
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
    let max = match get("maxresults") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=5000).contains(n))
            .ok_or_else(|| {
                BlobError::bad(
                    "OutOfRangeQueryParameterValue",
                    "maxresults must be between 1 and 5000.",
                )
            })?,
        None => 5000,
    };
    let include: Vec<String> = get("include")
        .map(|i| {
            i.split(',')
                .map(|x| x.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    if include
        .iter()
        .any(|i| !matches!(i.as_str(), "metadata" | ""))
    {
        return Err(BlobError::not_supported(
            "Listing snapshots, uncommitted blobs, copies, tags or versions",
        ));
    }
    let with_meta = include.iter().any(|i| i == "metadata");
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
        let batch = ciel_store::run(&ctx.svc.store, move |s| {
            s.list_blobs(&a, &c, &p, m.as_deref(), 1000)
        })
        .await?;
        let exhausted = batch.len() < 1000;
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
            if items.len() == max {
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
                None => items.push(blob_xml(&b, with_meta)),
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

fn blob_xml(b: &BlobRecord, with_meta: bool) -> String {
    let opt = |v: &Option<String>| escape(v.as_deref().unwrap_or("")).into_owned();
    format!(
        "<Blob><Name>{}</Name><Properties><Creation-Time>{}</Creation-Time><Last-Modified>{}</Last-Modified><Etag>{}</Etag><Content-Length>{}</Content-Length><Content-Type>{}</Content-Type><Content-Encoding>{}</Content-Encoding><Content-Language>{}</Content-Language><Content-MD5>{}</Content-MD5><Content-Disposition>{}</Content-Disposition><Cache-Control>{}</Cache-Control><BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><ServerEncrypted>true</ServerEncrypted></Properties>{}</Blob>",
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
        if with_meta { metadata_xml(&b.metadata) } else { String::new() }
    )
}
