//! Block blobs built from blocks: Put Block, Put Block List, Get Block List. Each block is its own
//! encrypted object; a committed blob is the ordered list of its blocks' objects, so committing
//! rewrites nothing.

use super::blob_ops::{
    blob_type, check_conditions, check_digests, commit_blob, crc64_header, h, load, remove_objects,
    request_crc64, request_md5, stream_to_object, READ, WRITE,
};
use super::container::{self, metadata_from};
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_store::{BlobRecord, BlockRec};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use quick_xml::escape::escape;
use serde_json::json;

const MAX_BLOCKS: usize = 50_000;

fn invalid_blob_type() -> BlobError {
    BlobError::new(
        StatusCode::CONFLICT,
        "InvalidBlobType",
        "The blob type is invalid for this operation.",
    )
}

pub(crate) fn check_block_id(id: &str) -> BlobResult<()> {
    let ok = B64
        .decode(id)
        .map(|b| !b.is_empty() && b.len() <= 64)
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(BlobError::bad(
            "InvalidQueryParameterValue",
            "The block id must be a base64 string of at most 64 bytes.",
        ))
    }
}

pub async fn put_block(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    block_id: Option<&str>,
    req: Request<Body>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let block_id = block_id.ok_or_else(|| {
        BlobError::bad(
            "MissingRequiredQueryParameter",
            "A query parameter that's mandatory for this request is not specified: blockid.",
        )
    })?;
    check_block_id(block_id)?;
    container::load(ctx, container).await?;
    let existing = load(ctx, container, name).await?;
    if let Some(e) = &existing {
        if blob_type(e) != "BlockBlob" {
            return Err(invalid_blob_type());
        }
    }
    super::lease::check_blob_write(req.headers(), existing.as_ref())?;
    let want_md5 = request_md5(req.headers())?;
    let want_crc = request_crc64(req.headers())?;
    let (oid, size, dg) = stream_to_object(ctx, req.into_body(), want_crc.is_some()).await?;
    if let Err(e) = check_digests(want_md5.as_deref(), want_crc, &dg) {
        remove_objects(ctx, vec![oid.to_vec()]);
        return Err(e);
    }
    let md5 = dg.md5.clone();
    let rec = BlockRec {
        account: ctx.account.id.key(),
        container: container.to_string(),
        blob: name.to_string(),
        block_id: block_id.to_string(),
        object_id: oid.to_vec(),
        size: size as i64,
        created: now_micros(),
        shared: false,
    };
    match ciel_store::run(&ctx.svc.store, move |s| s.put_block(&rec)).await {
        Ok(old) => remove_objects(ctx, old.into_iter().collect()),
        Err(e) => {
            remove_objects(ctx, vec![oid.to_vec()]);
            return Err(e.into());
        }
    }
    let mut r = empty(StatusCode::CREATED);
    crc64_header(&mut r, want_crc, &dg);
    if let Ok(v) = HeaderValue::from_str(&B64.encode(&md5)) {
        r.headers_mut().insert("content-md5", v);
    }
    r.headers_mut().insert(
        "x-ms-request-server-encrypted",
        HeaderValue::from_static("true"),
    );
    Ok(r)
}

enum Pick {
    Committed,
    Uncommitted,
    Latest,
}

fn parse_block_list(xml: &[u8]) -> BlobResult<Vec<(Pick, String)>> {
    let bad = || {
        BlobError::bad(
            "InvalidXmlDocument",
            "XML specified is not syntactically valid.",
        )
    };
    let mut reader = quick_xml::Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut out = Vec::new();
    let mut current: Option<Pick> = None;
    let mut buf = Vec::new();
    let mut seen_root = false;
    loop {
        match reader.read_event_into(&mut buf).map_err(|_| bad())? {
            quick_xml::events::Event::Start(e) => match e.name().as_ref() {
                b"BlockList" => seen_root = true,
                b"Committed" => current = Some(Pick::Committed),
                b"Uncommitted" => current = Some(Pick::Uncommitted),
                b"Latest" => current = Some(Pick::Latest),
                _ => return Err(bad()),
            },
            quick_xml::events::Event::Text(t) => {
                let text = t.unescape().map_err(|_| bad())?.into_owned();
                match current.take() {
                    Some(p) => out.push((p, text)),
                    None => return Err(bad()),
                }
            }
            quick_xml::events::Event::End(_) => current = None,
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Decl(_) | quick_xml::events::Event::Comment(_) => {}
            _ => return Err(bad()),
        }
        buf.clear();
    }
    if !seen_root {
        return Err(bad());
    }
    Ok(out)
}

pub async fn put_block_list(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    req: Request<Body>,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    let headers = req.headers().clone();
    let tags = super::tags::from_header(&headers)?;
    let metadata = metadata_from(&headers)?;
    container::load(ctx, container).await?;
    let body = http_body_util::Limited::new(req.into_body(), 8 * 1024 * 1024)
        .collect()
        .await
        .map_err(|_| {
            BlobError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "The block list is too large.",
            )
        })?
        .to_bytes();
    let picks = parse_block_list(&body)?;
    if picks.len() > MAX_BLOCKS {
        return Err(BlobError::bad(
            "BlockListTooLong",
            "The block list may not contain more than 50,000 blocks.",
        ));
    }
    let existing = load(ctx, container, name).await?;
    check_conditions(&headers, existing.as_ref(), false)?;
    if let Some(e) = &existing {
        if blob_type(e) != "BlockBlob" {
            return Err(invalid_blob_type());
        }
    }
    super::lease::check_blob_write(&headers, existing.as_ref())?;
    ctx.forbid_overwrite(existing.is_some())?;
    let (a, c, n) = (
        ctx.account.id.key(),
        container.to_string(),
        name.to_string(),
    );
    let uncommitted = ciel_store::run(&ctx.svc.store, move |s| s.list_blocks(&a, &c, &n)).await?;
    let committed: Vec<serde_json::Value> = existing
        .as_ref()
        .and_then(|b| b.blocks.as_array().cloned())
        .unwrap_or_default();
    let mut blocks = Vec::with_capacity(picks.len());
    let mut size = 0i64;
    for (pick, id) in picks {
        let from_uncommitted = || {
            uncommitted.iter().find(|b| b.block_id == id).map(|b| json!({"id": id, "object": ciel_core::audit::hex_lower(&b.object_id), "size": b.size}))
        };
        let from_committed = || {
            committed
                .iter()
                .find(|b| b["id"].as_str() == Some(id.as_str()))
                .cloned()
        };
        let found = match pick {
            Pick::Uncommitted => from_uncommitted(),
            Pick::Committed => from_committed(),
            Pick::Latest => from_uncommitted().or_else(from_committed),
        };
        let b = found.ok_or_else(|| {
            BlobError::bad("InvalidBlockList", "The specified block list is invalid.")
        })?;
        size += b["size"].as_i64().unwrap_or(0);
        blocks.push(b);
    }
    let stored_md5 =
        match h(&headers, "x-ms-blob-content-md5") {
            Some(m) => Some(B64.decode(m).map_err(|_| {
                BlobError::bad("InvalidMd5", "x-ms-blob-content-md5 is not base64.")
            })?),
            None => None,
        };
    let now = now_micros();
    let rec = BlobRecord {
        account: ctx.account.id.key(),
        container: container.to_string(),
        name: name.to_string(),
        object_id: vec![],
        size,
        content_type: h(&headers, "x-ms-blob-content-type")
            .map(str::to_string)
            .or_else(|| Some("application/octet-stream".into())),
        content_encoding: h(&headers, "x-ms-blob-content-encoding").map(str::to_string),
        content_language: h(&headers, "x-ms-blob-content-language").map(str::to_string),
        content_disposition: h(&headers, "x-ms-blob-content-disposition").map(str::to_string),
        cache_control: h(&headers, "x-ms-blob-cache-control").map(str::to_string),
        content_md5: stored_md5,
        metadata,
        etag: new_etag(now),
        last_modified: now,
        created: existing.as_ref().map(|b| b.created).unwrap_or(now),
        blocks: serde_json::Value::Array(blocks),
        blob_type: "BlockBlob".into(),
        lease: existing.as_ref().and_then(|b| b.lease.clone()),
        tags,
        ..Default::default()
    };
    let draft = ctx.draft(
        WRITE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({"size": size, "blockList": true}),
    );
    // No retry: the blocks were picked from the version read, and a concurrent commit may have
    // consumed them; the client commits again.
    let garbage = commit_blob(ctx, &headers, existing, rec.clone(), draft, false).await?;
    remove_objects(ctx, garbage);
    let mut r = empty(StatusCode::CREATED);
    for (k, v) in [
        ("etag", rec.etag.clone()),
        ("last-modified", http_date(rec.last_modified)),
        ("x-ms-request-server-encrypted", "true".into()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    Ok(r)
}

pub async fn get_block_list(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    list_type: Option<&str>,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), READ, true)
        .await?;
    container::load(ctx, container).await?;
    let (want_committed, want_uncommitted) = match list_type.map(str::to_ascii_lowercase).as_deref()
    {
        None | Some("committed") => (true, false),
        Some("uncommitted") => (false, true),
        Some("all") => (true, true),
        Some(_) => {
            return Err(BlobError::bad(
                "InvalidQueryParameterValue",
                "blocklisttype must be committed, uncommitted or all.",
            ))
        }
    };
    let existing = load(ctx, container, name).await?;
    if let Some(b) = &existing {
        check_conditions(headers, Some(b), true)?;
    }
    let (a, c, n) = (
        ctx.account.id.key(),
        container.to_string(),
        name.to_string(),
    );
    let uncommitted = ciel_store::run(&ctx.svc.store, move |s| s.list_blocks(&a, &c, &n)).await?;
    if existing.is_none() && uncommitted.is_empty() {
        return Err(BlobError::blob_not_found());
    }
    let block = |id: &str, size: i64| {
        format!(
            "<Block><Name>{}</Name><Size>{size}</Size></Block>",
            escape(id)
        )
    };
    let mut x =
        String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><CommittedBlocks>");
    if want_committed {
        for b in existing
            .as_ref()
            .and_then(|b| b.blocks.as_array().cloned())
            .unwrap_or_default()
        {
            x.push_str(&block(
                b["id"].as_str().unwrap_or(""),
                b["size"].as_i64().unwrap_or(0),
            ));
        }
    }
    x.push_str("</CommittedBlocks><UncommittedBlocks>");
    if want_uncommitted {
        for b in &uncommitted {
            x.push_str(&block(&b.block_id, b.size));
        }
    }
    x.push_str("</UncommittedBlocks></BlockList>");
    let mut r = (StatusCode::OK, x).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    if let Some(b) = &existing {
        for (k, v) in [
            ("etag", b.etag.clone()),
            ("last-modified", http_date(b.last_modified)),
            ("x-ms-blob-content-length", b.size.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn block_list_xml() {
        let l = parse_block_list(b"<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>QUFB</Latest><Committed>QkJC</Committed><Uncommitted>Q0ND</Uncommitted></BlockList>").unwrap();
        assert_eq!(l.len(), 3);
        assert!(matches!(l[0].0, Pick::Latest) && l[0].1 == "QUFB");
        assert!(parse_block_list(b"<Nope/>").is_err());
        assert!(parse_block_list(b"not xml <").is_err());
        assert!(parse_block_list(b"<BlockList><Evil>x</Evil></BlockList>").is_err());
    }
}
