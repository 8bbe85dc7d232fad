//! Copies within one account: Copy Blob (`PUT` with `x-ms-copy-source`, also synchronous with
//! `x-ms-requires-sync`), Put Blob From URL (`x-ms-copy-source` with `x-ms-blob-type:
//! BlockBlob`), Put Block From URL (`?comp=block` with `x-ms-copy-source`), Abort Copy Blob.
//!
//! A source in the same account is read from the store directly: the copy is finished before
//! the answer (`x-ms-copy-status: success`) and shares the source's encrypted objects, so no
//! byte is copied (the store marks both records as sharing, in the same transaction). The
//! caller's authorization on this account covers the source; token callers also need read on
//! the source container.
//!
//! A source in another account of this Ciel must prove read access itself, as in Azure: a SAS in
//! its URL (verified with that account's keys, and for a user delegation SAS the signer's RBAC
//! rights), or a public container of an account that allows public access. Its bytes are
//! decrypted with the source account's key and written into a new object under the
//! destination's key: accounts never share objects. Sources outside Ciel would need an outbound
//! connection, which Ciel never opens: `FeatureNotSupported`.

use super::blob_ops::{
    blob_type, check_conditions, h, load, load_at, pieces, remove_objects, Piece, READ, WRITE,
};
use super::container::{self, metadata_from};
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use crate::blobstore::{self, ObjectReader, ObjectWriter, DEFAULT_CHUNK};
use axum::body::Body;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_store::{BlobRecord, BlockRec, Found, ShareSource, StoreError};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use md5::{Digest, Md5};
use quick_xml::escape::escape;
use serde_json::json;

/// A copy source: a blob of this account, or of `account` when another one.
struct Source {
    account: Option<String>,
    query: Vec<(String, String)>,
    container: String,
    name: String,
    snapshot: Option<String>,
    url: String,
}

fn cannot_verify(status: StatusCode, msg: &str) -> BlobError {
    BlobError::new(status, "CannotVerifyCopySource", msg)
}

/// Reads `x-ms-copy-source`: a blob URL of this account, host-style
/// (`https://{account}.blob.core.D[:p]/c/b`) or path-style (`https://127.0.0.1:p/{account}/c/b`).
fn source(ctx: &Ctx<'_>, headers: &HeaderMap) -> BlobResult<Source> {
    let url = h(headers, "x-ms-copy-source")
        .unwrap_or_default()
        .to_string();
    let uri: http::Uri = url.parse().map_err(|_| {
        BlobError::bad("InvalidHeaderValue", "x-ms-copy-source is not a valid URL.")
    })?;
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    let suffix = ctx.svc.endpoints.storage_suffix();
    let suffix_host = suffix.split(':').next().unwrap_or_default().to_string();
    let path = uri.path().trim_start_matches('/');
    let (account, rest) = if let Some(acc) = host.strip_suffix(&format!(".blob.{suffix_host}")) {
        (acc.to_string(), path.to_string())
    } else if matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        match path.split_once('/') {
            Some((a, r)) => (a.to_ascii_lowercase(), r.to_string()),
            None => (path.to_string(), String::new()),
        }
    } else {
        return Err(BlobError::not_supported(
            "Copying from a source outside this Ciel deployment",
        ));
    };
    let other = (account != ctx.account.name.to_ascii_lowercase()).then_some(account);
    let decoded = percent_encoding::percent_decode_str(&rest)
        .decode_utf8()
        .map_err(|_| BlobError::bad("InvalidHeaderValue", "x-ms-copy-source is not UTF-8."))?;
    let (c, n) = decoded.split_once('/').ok_or_else(|| {
        BlobError::bad(
            "InvalidHeaderValue",
            "x-ms-copy-source does not name a blob.",
        )
    })?;
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let snapshot = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("snapshot"))
        .map(|(_, v)| v.clone());
    Ok(Source {
        account: other,
        query,
        container: c.to_string(),
        name: n.to_string(),
        snapshot,
        url,
    })
}

/// Where a source's bytes are read from: its account's directory and data key.
struct Origin {
    dir: std::path::PathBuf,
    key: [u8; 32],
    /// In another account: its objects cannot be shared, the bytes are copied.
    foreign: bool,
}

/// Loads the source (read permission on its container for token callers; a SAS or public
/// access for another account's blob) and checks the `x-ms-source-if-*` conditions.
async fn load_source(
    ctx: &Ctx<'_>,
    headers: &HeaderMap,
) -> BlobResult<(Source, BlobRecord, Origin)> {
    let src = source(ctx, headers)?;
    let (b, origin) = match &src.account {
        None => {
            ctx.authorize(&ctx.container_scope(&src.container), READ, true)
                .await?;
            let b = load_at(ctx, &src.container, &src.name, src.snapshot.as_deref()).await?;
            let origin = Origin {
                dir: ctx.account.dir.clone(),
                key: ctx.account.data_key,
                foreign: false,
            };
            (b, origin)
        }
        Some(name) => foreign_source(ctx, name, &src).await?,
    };
    let b = b.ok_or_else(|| {
        cannot_verify(
            StatusCode::NOT_FOUND,
            "The specified copy source blob does not exist.",
        )
    })?;
    let mut cond = HeaderMap::new();
    for (k, v) in headers {
        if let Some(rest) = k.as_str().strip_prefix("x-ms-source-") {
            if rest.starts_with("if-") {
                if let Ok(n) = HeaderName::from_bytes(rest.as_bytes()) {
                    cond.insert(n, v.clone());
                }
            }
        }
    }
    check_conditions(&cond, Some(&b), false).map_err(|_| {
        BlobError::new(
            StatusCode::PRECONDITION_FAILED,
            "SourceConditionNotMet",
            "The source condition specified using HTTP conditional header(s) is not met.",
        )
    })?;
    Ok((src, b, origin))
}

/// A source in another account: authorized by the SAS in its URL or by public access.
async fn foreign_source(
    ctx: &Ctx<'_>,
    name: &str,
    src: &Source,
) -> BlobResult<(Option<BlobRecord>, Origin)> {
    let denied = |msg: &str| cannot_verify(StatusCode::FORBIDDEN, msg);
    let acct = ctx.svc.resolve(name).await?.ok_or_else(|| {
        cannot_verify(
            StatusCode::NOT_FOUND,
            "The copy source storage account does not exist.",
        )
    })?;
    let (a, c) = (acct.id.key(), src.container.clone());
    let container =
        ciel_store::run(&ctx.svc.store, move |s| s.get_container(&a, &c).found()).await?;
    if super::sas::is_sas(&src.query) {
        let ud = src.query.iter().any(|(k, _)| k == "skoid");
        if !ud && !acct.allow_shared_key {
            return Err(denied(
                "Key based authentication is not permitted on the source account.",
            ));
        }
        let policy = match super::sas::Params::new(&src.query).policy() {
            Some(id) => {
                super::acl::policy(&ctx.svc.store, &acct.id.key(), &src.container, id).await?
            }
            None => None,
        };
        let need = super::sas::need(&http::Method::GET, super::sas::Level::Blob, None, None)
            .ok_or_else(BlobError::internal)?;
        let (data_key, epoch) = (acct.data_key, acct.udk_epoch);
        let udk = move |f: &super::sas::UdkFields| {
            super::service::user_delegation_key(&data_key, epoch, f)
        };
        let empty = HeaderMap::new();
        let grant = super::sas::verify(
            &src.query,
            &super::sas::Request {
                account: &acct.name,
                container: &src.container,
                blob: Some(&src.name),
                snapshot: src.snapshot.as_deref(),
                need,
                client_ip: ctx.client_ip.as_deref(),
                headers: &empty,
                now: chrono::Utc::now().timestamp(),
            },
            &super::sas::Keys {
                account_keys: [&acct.key1, &acct.key2],
                udk: &udk,
            },
            policy.as_ref(),
        )
        .map_err(|e| denied(&format!("The copy source SAS is not valid ({}).", e.code)))?;
        if let super::sas::SasKind::UserDelegation { oid, tid } = grant.kind {
            let mut scope = acct.id.clone();
            scope
                .segments
                .push(("blobServices".into(), "default".into()));
            scope
                .segments
                .push(("containers".into(), src.container.clone()));
            let (assignments, custom) = ciel_store::run(&ctx.svc.store, move |s| {
                ciel_identity::rbac::grants(s, &oid, &tid)
            })
            .await?;
            if !ciel_identity::rbac::is_data_allowed(&assignments, &custom, &scope, READ) {
                return Err(denied("The signer of the copy source SAS may not read it."));
            }
        }
    } else {
        let public = container
            .as_ref()
            .and_then(|c| c.public_access.as_deref())
            .is_some();
        if !(public && acct.allow_public) {
            return Err(denied(
                "A copy source in another account must carry a SAS or be publicly readable.",
            ));
        }
    }
    // Only a caller allowed to read the source learns that its customer key cannot be used.
    if let Some(e) = acct.key_error.clone() {
        return Err(super::customer_key_error(e));
    }
    if container.is_none() {
        return Ok((None, origin_of(&acct)));
    }
    let snap = match &src.snapshot {
        Some(s) => super::snapshot::canonical(s)?,
        None => String::new(),
    };
    let (a, c, n) = (acct.id.key(), src.container.clone(), src.name.clone());
    let b = ciel_store::run(&ctx.svc.store, move |s| {
        s.get_blob_at(&a, &c, &n, &snap).found()
    })
    .await?;
    Ok((b, origin_of(&acct)))
}

fn origin_of(acct: &super::Account) -> Origin {
    Origin {
        dir: acct.dir.clone(),
        key: acct.data_key,
        foreign: true,
    }
}

fn share_of(src: &Source, b: &BlobRecord) -> ShareSource {
    ShareSource {
        container: src.container.clone(),
        name: src.name.clone(),
        snapshot: b.snapshot.clone(),
        etag: b.etag.clone(),
    }
}

fn copy_conflict() -> BlobError {
    BlobError::new(
        StatusCode::CONFLICT,
        "OperationConflict",
        "The copy source changed during the copy; retry.",
    )
}

/// Copy Blob and Put Blob From URL (`put_blob_from_url`): the destination becomes the source's
/// content, sharing its objects.
pub async fn copy_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    put_blob_from_url: bool,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    if h(headers, "x-ms-copy-source-authorization").is_some() {
        return Err(BlobError::not_supported(
            "x-ms-copy-source-authorization (sources in other accounts)",
        ));
    }
    if put_blob_from_url && h(headers, "x-ms-blob-type") != Some("BlockBlob") {
        return Err(BlobError::bad(
            "InvalidHeaderValue",
            "Put Blob From URL creates block blobs: x-ms-blob-type must be BlockBlob.",
        ));
    }
    if put_blob_from_url
        && h(headers, "content-length")
            .map(|l| l != "0")
            .unwrap_or(false)
    {
        return Err(BlobError::bad(
            "InvalidHeaderValue",
            "Put Blob From URL takes no content: Content-Length must be 0.",
        ));
    }
    let metadata = metadata_from(headers)?;
    let tags = super::tags::from_header(headers)?;
    let (src, sb, origin) = load_source(ctx, headers).await?;
    if origin.foreign && blob_type(&sb) == "PageBlob" {
        return Err(BlobError::not_supported(
            "Copying a page blob from another account",
        ));
    }
    container::load(ctx, container).await?;
    let existing = load(ctx, container, name).await?;
    check_conditions(headers, existing.as_ref(), false)?;
    super::lease::check_blob_write(headers, existing.as_ref())?;
    let now = now_micros();
    let mut rec = sb.clone();
    rec.account = ctx.account.id.key();
    rec.container = container.to_string();
    rec.name = name.to_string();
    rec.snapshot = String::new();
    rec.lease = existing.as_ref().and_then(|b| b.lease.clone());
    rec.etag = new_etag(now);
    rec.last_modified = now;
    rec.created = existing.as_ref().map(|b| b.created).unwrap_or(now);
    rec.shared = true;
    let copy_tags = h(headers, "x-ms-copy-source-tag-option")
        .map(|o| o.eq_ignore_ascii_case("copy"))
        .unwrap_or(false);
    rec.tags = if copy_tags { sb.tags.clone() } else { tags };
    let copy_id = uuid::Uuid::new_v4().to_string();
    if put_blob_from_url {
        match blob_type(&sb) {
            "BlockBlob" => {}
            // Appended blocks are whole objects: they become the new blob's blocks.
            "AppendBlob" => {
                let blocks: Vec<serde_json::Value> = sb
                    .blocks
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut b)| {
                        b["id"] = json!(B64.encode(format!("{i:08}")));
                        b
                    })
                    .collect();
                rec.blocks = serde_json::Value::Array(blocks);
            }
            _ => {
                return Err(BlobError::not_supported(
                    "Put Blob From URL from a page blob",
                ))
            }
        }
        rec.blob_type = "BlockBlob".into();
        rec.metadata = metadata;
        rec.sequence_number = 0;
        rec.copy = None;
        let keep_props = h(headers, "x-ms-copy-source-blob-properties")
            .map(|v| !v.eq_ignore_ascii_case("false"))
            .unwrap_or(true);
        if !keep_props || h(headers, "x-ms-blob-content-type").is_some() {
            rec.content_type = h(headers, "x-ms-blob-content-type")
                .map(str::to_string)
                .or_else(|| Some("application/octet-stream".into()));
            rec.content_encoding = h(headers, "x-ms-blob-content-encoding").map(str::to_string);
            rec.content_language = h(headers, "x-ms-blob-content-language").map(str::to_string);
            rec.content_disposition =
                h(headers, "x-ms-blob-content-disposition").map(str::to_string);
            rec.cache_control = h(headers, "x-ms-blob-cache-control").map(str::to_string);
        }
        if let Some(m) = h(headers, "x-ms-blob-content-md5") {
            rec.content_md5 = Some(B64.decode(m).map_err(|_| {
                BlobError::bad("InvalidMd5", "x-ms-blob-content-md5 is not base64.")
            })?);
        }
    } else {
        if metadata.as_object().map(|m| !m.is_empty()).unwrap_or(false) {
            rec.metadata = metadata;
        }
        rec.copy = Some(json!({
            "id": copy_id,
            "source": src.url,
            "status": "success",
            "progress": format!("{}/{}", sb.size, sb.size),
            "completed": now,
        }));
    }
    let draft = ctx.draft(
        WRITE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({"copySource": format!("{}/{}", src.container, src.name), "snapshot": src.snapshot, "fromUrl": put_blob_from_url}),
    );
    let freed = if origin.foreign {
        // Another account's bytes: decrypted with its key, written anew under this one's.
        let (oid, n, _) = copy_range(ctx, &origin, &sb, 0, sb.size as u64).await?;
        rec.object_id = oid.to_vec();
        rec.shared = false;
        rec.blocks = if rec.blob_type == "AppendBlob" {
            json!([{"id": B64.encode("00000000"), "object": blobstore::object_id_hex(&oid), "size": n}])
        } else {
            json!([])
        };
        let r2 = rec.clone();
        match ciel_store::run(&ctx.svc.store, move |s| s.put_blob(&r2, &draft)).await {
            Ok(freed) => freed,
            Err(e) => {
                remove_objects(ctx, vec![oid.to_vec()]);
                return Err(match e {
                    StoreError::Conflict(_) => BlobError::container_not_found(),
                    other => other.into(),
                });
            }
        }
    } else {
        let (r2, share) = (rec.clone(), share_of(&src, &sb));
        ciel_store::run(&ctx.svc.store, move |s| {
            s.put_blob_from(&r2, &share, &draft)
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => copy_conflict(),
            other => other.into(),
        })?
    };
    remove_objects(ctx, freed);
    let mut r = empty(if put_blob_from_url {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    });
    let hm = r.headers_mut();
    let mut pairs = vec![
        ("etag", rec.etag.clone()),
        ("last-modified", http_date(rec.last_modified)),
        ("x-ms-request-server-encrypted", "true".to_string()),
    ];
    if put_blob_from_url {
        if let Some(m) = &rec.content_md5 {
            pairs.push(("content-md5", B64.encode(m)));
        }
    } else {
        pairs.push(("x-ms-copy-id", copy_id));
        pairs.push(("x-ms-copy-status", "success".into()));
    }
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    }
    Ok(r)
}

/// `x-ms-source-range: bytes=s-e` (inclusive), within the source.
fn source_range(headers: &HeaderMap, size: u64) -> BlobResult<(u64, u64)> {
    let Some(v) = h(headers, "x-ms-source-range") else {
        return Ok((0, size));
    };
    let bad = || {
        BlobError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
        )
    };
    let (a, b) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let s: u64 = a.trim().parse().map_err(|_| bad())?;
    let e: u64 = if b.trim().is_empty() {
        size.saturating_sub(1)
    } else {
        b.trim().parse().map_err(|_| bad())?
    };
    if e < s || e >= size {
        return Err(bad());
    }
    Ok((s, e + 1))
}

/// Copies bytes `start..end` of a blob into a new object (decrypted and encrypted again a chunk
/// at a time), for a block cut from part of a source.
async fn copy_range(
    ctx: &Ctx<'_>,
    origin: &Origin,
    b: &BlobRecord,
    start: u64,
    end: u64,
) -> BlobResult<([u8; 16], u64, Vec<u8>)> {
    let segs = pieces(b)?;
    let oid = blobstore::new_object_id()?;
    let (dir, key) = (ctx.account.dir.clone(), ctx.account.data_key);
    let (src_dir, src_key) = (origin.dir.clone(), origin.key);
    let out =
        tokio::task::spawn_blocking(move || -> Result<(u64, Vec<u8>), blobstore::ObjectError> {
            let mut w = ObjectWriter::create(&dir, &key, oid, DEFAULT_CHUNK)?;
            let mut md5 = Md5::new();
            let mut base = 0u64;
            for p in segs {
                let len = match &p {
                    Piece::Object { len, .. } => *len,
                    Piece::Zeros(n) => *n,
                };
                let (s, e) = (start.max(base), end.min(base + len));
                if s < e {
                    match p {
                        Piece::Object { oid: src, at, .. } => {
                            let mut r = ObjectReader::open(&src_dir, &src_key, src)?;
                            r.read_range(at + s - base, at + e - base, |piece| {
                                md5.update(piece);
                                w.write(piece)
                            })?;
                        }
                        Piece::Zeros(_) => {
                            let zeros = vec![0u8; ((e - s) as usize).min(DEFAULT_CHUNK as usize)];
                            let mut left = e - s;
                            while left > 0 {
                                let n = left.min(zeros.len() as u64) as usize;
                                md5.update(&zeros[..n]);
                                w.write(&zeros[..n])?;
                                left -= n as u64;
                            }
                        }
                    }
                }
                base += len;
            }
            let n = w.finish()?;
            Ok((n, md5.finalize().to_vec()))
        })
        .await
        .map_err(|_| BlobError::internal())??;
    Ok((oid, out.0, out.1))
}

/// `PUT ?comp=block&blockid=` with `x-ms-copy-source`: a block from (part of) a blob of this
/// account. A whole single-object source is shared; a part is copied into a new object.
pub async fn put_block_from_url(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    block_id: &str,
    req: Request<Body>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let headers = req.headers().clone();
    if h(&headers, "x-ms-copy-source-authorization").is_some() {
        return Err(BlobError::not_supported(
            "x-ms-copy-source-authorization (sources in other accounts)",
        ));
    }
    let (src, sb, origin) = load_source(ctx, &headers).await?;
    container::load(ctx, container).await?;
    let existing = load(ctx, container, name).await?;
    if let Some(e) = &existing {
        if blob_type(e) != "BlockBlob" {
            return Err(BlobError::new(
                StatusCode::CONFLICT,
                "InvalidBlobType",
                "The blob type is invalid for this operation.",
            ));
        }
    }
    super::lease::check_blob_write(&headers, existing.as_ref())?;
    let size = sb.size as u64;
    let (start, end) = source_range(&headers, size)?;
    if end - start > 4000 * 1024 * 1024 {
        return Err(BlobError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "A block is at most 4000 MiB.",
        ));
    }
    let whole = pieces(&sb)?;
    let single = match whole.as_slice() {
        [Piece::Object {
            oid,
            whole: true,
            len,
            ..
        }] if start == 0 && end == *len && !origin.foreign => Some(*oid),
        _ => None,
    };
    let mut rec = BlockRec {
        account: ctx.account.id.key(),
        container: container.to_string(),
        blob: name.to_string(),
        block_id: block_id.to_string(),
        object_id: vec![],
        size: (end - start) as i64,
        created: now_micros(),
        shared: false,
    };
    let md5 = match single {
        Some(oid) => {
            rec.object_id = oid.to_vec();
            rec.shared = true;
            let share = share_of(&src, &sb);
            let r2 = rec.clone();
            let freed = ciel_store::run(&ctx.svc.store, move |s| s.put_block_from(&r2, &share))
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(_) => copy_conflict(),
                    other => other.into(),
                })?;
            remove_objects(ctx, freed);
            sb.content_md5.clone()
        }
        None => {
            let (oid, _, md5) = copy_range(ctx, &origin, &sb, start, end).await?;
            rec.object_id = oid.to_vec();
            let r2 = rec.clone();
            match ciel_store::run(&ctx.svc.store, move |s| s.put_block(&r2)).await {
                Ok(old) => remove_objects(ctx, old.into_iter().collect()),
                Err(e) => {
                    remove_objects(ctx, vec![oid.to_vec()]);
                    return Err(e.into());
                }
            }
            Some(md5)
        }
    };
    let mut r = empty(StatusCode::CREATED);
    r.headers_mut().insert(
        "x-ms-request-server-encrypted",
        HeaderValue::from_static("true"),
    );
    if let Some(m) = md5.and_then(|m| HeaderValue::from_str(&B64.encode(m)).ok()) {
        r.headers_mut().insert("content-md5", m);
    }
    Ok(r)
}

/// `PUT ?comp=copy&copyid=`: copies here finish before they are answered, so there is never a
/// pending copy to abort.
pub async fn abort_copy(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    copy_id: Option<&str>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    if copy_id.is_none() {
        return Err(BlobError::bad(
            "MissingRequiredQueryParameter",
            "A query parameter that's mandatory for this request is not specified: copyid.",
        ));
    }
    container::load(ctx, container).await?;
    load(ctx, container, name)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    Err(BlobError::new(
        StatusCode::CONFLICT,
        "NoPendingCopyOperation",
        "There is currently no pending copy operation.",
    ))
}

fn copy_fields(b: &BlobRecord) -> Option<[(&'static str, &'static str, String); 5]> {
    let c = b.copy.as_ref()?;
    let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
    Some([
        ("x-ms-copy-id", "CopyId", s("id")),
        ("x-ms-copy-source", "CopySource", s("source")),
        ("x-ms-copy-status", "CopyStatus", s("status")),
        ("x-ms-copy-progress", "CopyProgress", s("progress")),
        (
            "x-ms-copy-completion-time",
            "CopyCompletionTime",
            http_date(c["completed"].as_i64().unwrap_or(0)),
        ),
    ])
}

/// The copy properties of Get Blob / Get Blob Properties.
pub fn headers(hm: &mut HeaderMap, b: &BlobRecord) {
    for (k, _, v) in copy_fields(b).into_iter().flatten() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    }
}

/// The copy properties of a List Blobs entry (`include=copy`).
pub fn xml(b: &BlobRecord) -> String {
    copy_fields(b)
        .into_iter()
        .flatten()
        .map(|(_, t, v)| format!("<{t}>{}</{t}>", escape(&v)))
        .collect()
}
