//! Metadata and properties: Set/Get Blob Metadata, Set Blob Properties, Set/Get Container Metadata.

use super::blob_ops::{check_conditions, h, load, load_at, READ, WRITE};
use super::container::{self, metadata_from, metadata_headers};
use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

const CONTAINER_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/read";
const CONTAINER_WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/write";

fn stamp(r: &mut Response, etag: &str, micros: i64) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(micros)) {
        r.headers_mut().insert(http::header::LAST_MODIFIED, v);
    }
}

/// `PUT ?comp=metadata` replaces the blob's metadata; `PUT ?comp=properties` sets its content
/// headers (each one absent from the request is cleared, as Azure does).
pub async fn set_blob(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
    metadata: bool,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(container), WRITE, true)
        .await?;
    container::load(ctx, container).await?;
    let mut b = load(ctx, container, name)
        .await?
        .ok_or_else(BlobError::blob_not_found)?;
    check_conditions(headers, Some(&b), false)?;
    super::lease::check_blob_write(headers, Some(&b))?;
    if metadata {
        b.metadata = metadata_from(headers)?;
    } else {
        b.content_type = h(headers, "x-ms-blob-content-type").map(str::to_string);
        b.content_encoding = h(headers, "x-ms-blob-content-encoding").map(str::to_string);
        b.content_language = h(headers, "x-ms-blob-content-language").map(str::to_string);
        b.content_disposition = h(headers, "x-ms-blob-content-disposition").map(str::to_string);
        b.cache_control = h(headers, "x-ms-blob-cache-control").map(str::to_string);
        b.content_md5 = match h(headers, "x-ms-blob-content-md5") {
            Some(m) => Some(B64.decode(m).map_err(|_| {
                BlobError::bad("InvalidMd5", "x-ms-blob-content-md5 is not base64.")
            })?),
            None => None,
        };
    }
    b.last_modified = now_micros();
    b.etag = new_etag(b.last_modified);
    let what = if metadata { "metadata" } else { "properties" };
    let draft = ctx.draft(
        WRITE,
        &format!("{}/blobs/{}", ctx.container_scope(container), name),
        "success",
        json!({ "set": what }),
    );
    let b2 = b.clone();
    ciel_store::run(&ctx.svc.store, move |s| {
        s.update_blob_properties(&b2, &draft)
    })
    .await?;
    let mut r = empty(StatusCode::OK);
    stamp(&mut r, &b.etag, b.last_modified);
    r.headers_mut().insert(
        "x-ms-request-server-encrypted",
        HeaderValue::from_static("true"),
    );
    Ok(r)
}

pub async fn get_blob_metadata(
    ctx: &Ctx<'_>,
    container: &str,
    name: &str,
    headers: &HeaderMap,
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
    let mut r = empty(StatusCode::OK);
    stamp(&mut r, &b.etag, b.last_modified);
    metadata_headers(&mut r, &b.metadata);
    Ok(r)
}

pub async fn set_container_metadata(
    ctx: &Ctx<'_>,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), CONTAINER_WRITE, false)
        .await?;
    let mut c = container::load(ctx, name).await?;
    super::lease::check_container(headers, &c.lease, false)?;
    c.metadata = metadata_from(headers)?;
    c.last_modified = now_micros();
    c.etag = new_etag(c.last_modified);
    let draft = ctx.draft(
        CONTAINER_WRITE,
        &ctx.container_scope(name).to_string(),
        "success",
        json!({"set": "metadata"}),
    );
    let c2 = c.clone();
    ciel_store::run(&ctx.svc.store, move |s| s.update_container(&c2, &draft)).await?;
    let mut r = empty(StatusCode::OK);
    stamp(&mut r, &c.etag, c.last_modified);
    Ok(r)
}

pub async fn get_container_metadata(ctx: &Ctx<'_>, name: &str) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), CONTAINER_READ, false)
        .await?;
    let c = container::load(ctx, name).await?;
    let mut r = empty(StatusCode::OK);
    stamp(&mut r, &c.etag, c.last_modified);
    metadata_headers(&mut r, &c.metadata);
    Ok(r)
}
