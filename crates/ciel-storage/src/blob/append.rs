//! Append Block (`PUT ?comp=appendblock`). An append blob is created empty by Put Blob
//! (`x-ms-blob-type: AppendBlob`); each appended block streams into its own encrypted object,
//! added to the end of the record's segment list, so an append rewrites no byte. Appends race
//! through the store's compare-and-swap: the append position and size conditions are decided on
//! the record the append is actually made to.

use super::blob_ops::{
    blob_type, check_conditions, check_digests, crc64_header, drain, h, load, remove_objects,
    request_crc64, request_md5, stream_to_object, WRITE,
};
use super::container;
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use axum::body::Body;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_store::{BlobRecord, StoreError};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use serde_json::json;

/// Azure's limits: 100 MiB per appended block, 50,000 blocks per append blob.
const MAX_BLOCK: u64 = 100 * 1024 * 1024;
const MAX_BLOCKS: usize = 50_000;

fn parse_u64(headers: &HeaderMap, n: &str) -> BlobResult<Option<u64>> {
    h(headers, n)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| BlobError::bad("InvalidHeaderValue", format!("{n} must be a number.")))
        })
        .transpose()
}

/// Everything that must hold for `len` more bytes to be appended to `b`.
fn check(headers: &HeaderMap, b: &BlobRecord, len: u64) -> BlobResult<()> {
    if blob_type(b) != "AppendBlob" {
        return Err(BlobError::new(
            StatusCode::CONFLICT,
            "InvalidBlobType",
            "The blob type is invalid for this operation.",
        ));
    }
    check_conditions(headers, Some(b), false)?;
    super::lease::check_blob_write(headers, Some(b))?;
    let size = b.size as u64;
    if let Some(max) = parse_u64(headers, "x-ms-blob-condition-maxsize")? {
        if size + len > max {
            return Err(BlobError::new(
                StatusCode::PRECONDITION_FAILED,
                "MaxBlobSizeConditionNotMet",
                "The max blob size condition specified was not met.",
            ));
        }
    }
    if let Some(pos) = parse_u64(headers, "x-ms-blob-condition-appendpos")? {
        if pos != size {
            return Err(BlobError::new(
                StatusCode::PRECONDITION_FAILED,
                "AppendPositionConditionNotMet",
                "The append position condition specified was not met.",
            ));
        }
    }
    if b.blocks.as_array().map(|a| a.len()).unwrap_or(0) >= MAX_BLOCKS {
        return Err(BlobError::new(
            StatusCode::CONFLICT,
            "BlockCountExceedsLimit",
            "The committed block count cannot exceed the maximum limit of 50,000 blocks.",
        ));
    }
    Ok(())
}

pub async fn append_block(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    req: Request<Body>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let headers = req.headers().clone();
    if h(&headers, "x-ms-copy-source").is_some() {
        return Err(BlobError::not_supported("Append Block From URL"));
    }
    let declared = parse_u64(&headers, "content-length")?;
    match declared {
        Some(0) => {
            return Err(BlobError::bad(
                "InvalidHeaderValue",
                "An appended block cannot be empty.",
            ))
        }
        Some(n) if n > MAX_BLOCK => {
            return Err(BlobError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "An appended block is at most 100 MiB.",
            ))
        }
        _ => {}
    }
    // Refuse early what the current blob already rules out, before storing the body.
    let early = async {
        container::load(ctx, container).await?;
        let b = load(ctx, container, name)
            .await?
            .ok_or_else(BlobError::blob_not_found)?;
        check(&headers, &b, declared.unwrap_or(0))?;
        Ok::<_, BlobError>((b, request_md5(&headers)?, request_crc64(&headers)?))
    }
    .await;
    let (b, want_md5, want_crc) = match early {
        Ok(v) => v,
        Err(e) => {
            drain(req.into_body(), MAX_BLOCK).await;
            return Err(e);
        }
    };
    let (oid, len, dg) = stream_to_object(ctx, req.into_body(), want_crc.is_some()).await?;
    let md5 = dg.md5.clone();
    let discard = |e: BlobError| {
        remove_objects(ctx, vec![oid.to_vec()]);
        e
    };
    if len == 0 || len > MAX_BLOCK || declared.map(|d| d != len).unwrap_or(false) {
        return Err(discard(BlobError::bad(
            "InvalidHeaderValue",
            "The appended block must be 1 byte to 100 MiB, as long as Content-Length says.",
        )));
    }
    if let Err(e) = check_digests(want_md5.as_deref(), want_crc, &dg) {
        return Err(discard(e));
    }
    let mut b = b;
    for attempt in 0..super::CAS_ATTEMPTS {
        if attempt > 0 {
            super::cas_pause(attempt).await;
            b = match load(ctx, container, name).await? {
                Some(b) => b,
                None => return Err(discard(BlobError::blob_not_found())),
            };
        }
        if let Err(e) = check(&headers, &b, len) {
            return Err(discard(e));
        }
        let offset = b.size as u64;
        let mut nb = b.clone();
        let mut blocks = b.blocks.as_array().cloned().unwrap_or_default();
        blocks.push(json!({"object": ciel_core::audit::hex_lower(&oid), "size": len}));
        let count = blocks.len();
        nb.blocks = serde_json::Value::Array(blocks);
        nb.size = (offset + len) as i64;
        nb.last_modified = now_micros();
        nb.etag = new_etag(nb.last_modified);
        // A whole-blob MD5 set at creation no longer describes the content.
        nb.content_md5 = None;
        let draft = ctx.draft(
            WRITE,
            &format!("{}/blobs/{}", ctx.container_scope(container), name),
            "success",
            json!({"appendOffset": offset, "size": len}),
        );
        let (etag, lease, n2) = (b.etag.clone(), b.lease.clone(), nb.clone());
        match ciel_store::run(&ctx.svc.store, move |s| {
            s.replace_blob(&n2, &etag, &lease, &draft)
        })
        .await
        {
            Ok(freed) => {
                remove_objects(ctx, freed);
                let mut r = empty(StatusCode::CREATED);
                let hm = r.headers_mut();
                for (k, v) in [
                    ("etag", nb.etag.clone()),
                    ("last-modified", http_date(nb.last_modified)),
                    ("content-md5", B64.encode(&md5)),
                    ("x-ms-blob-append-offset", offset.to_string()),
                    ("x-ms-blob-committed-block-count", count.to_string()),
                    ("x-ms-request-server-encrypted", "true".into()),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        hm.insert(k, v);
                    }
                }
                crc64_header(&mut r, want_crc, &dg);
                return Ok(r);
            }
            // Another append won the race: decide again on the blob it left.
            Err(StoreError::Conflict(_)) => continue,
            Err(StoreError::NotFound) => return Err(discard(BlobError::blob_not_found())),
            Err(e) => return Err(discard(e.into())),
        }
    }
    Err(discard(BlobError::new(
        StatusCode::CONFLICT,
        "OperationConflict",
        "Too many concurrent appends; retry.",
    )))
}
