//! Containers: Create Container, Get Container Properties, Delete Container, List Containers.

use super::error::{BlobError, BlobResult};
use super::{empty, http_date, new_etag, now_micros, Ctx};
use axum::response::{IntoResponse, Response};
use ciel_store::{BlobContainer, StoreError};
use http::{HeaderMap, HeaderValue, StatusCode};
use quick_xml::escape::escape;
use serde_json::json;

const READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/read";
const WRITE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/write";
const DELETE: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/delete";

/// 3 to 63 characters: lower-case letters, digits and single hyphens, starting and ending with a
/// letter or digit.
pub fn valid_name(n: &str) -> bool {
    (3..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

/// `x-ms-meta-*` headers as a JSON object (names lower-cased by HTTP).
pub fn metadata_from(headers: &HeaderMap) -> BlobResult<serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in headers {
        if let Some(name) = k.as_str().strip_prefix("x-ms-meta-") {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .next()
                    .map(|c| c.is_ascii_alphabetic() || c == '_')
                    .unwrap_or(false)
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(BlobError::bad(
                    "InvalidMetadata",
                    format!("The metadata name '{name}' is not a valid C# identifier."),
                ));
            }
            let v = v
                .to_str()
                .map_err(|_| BlobError::bad("InvalidMetadata", "Metadata values must be ASCII."))?;
            m.insert(name.to_string(), json!(v));
        }
    }
    Ok(serde_json::Value::Object(m))
}

pub fn metadata_headers(r: &mut Response, meta: &serde_json::Value) {
    if let Some(m) = meta.as_object() {
        for (k, v) in m {
            if let (Ok(n), Some(Ok(val))) = (
                http::HeaderName::from_bytes(format!("x-ms-meta-{k}").as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                r.headers_mut().insert(n, val);
            }
        }
    }
}

pub fn metadata_xml(meta: &serde_json::Value) -> String {
    let mut s = String::from("<Metadata>");
    if let Some(m) = meta.as_object() {
        for (k, v) in m {
            s.push_str(&format!("<{k}>{}</{k}>", escape(v.as_str().unwrap_or(""))));
        }
    }
    s.push_str("</Metadata>");
    s
}

pub async fn load(ctx: &Ctx<'_>, name: &str) -> BlobResult<BlobContainer> {
    let (a, n) = (ctx.account.id.key(), name.to_string());
    ciel_store::run(&ctx.svc.store, move |s| s.get_container(&a, &n))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => BlobError::container_not_found(),
            other => other.into(),
        })
}

/// If-Modified-Since and If-Unmodified-Since against a container (the only conditions
/// container operations take).
pub fn check_container_conditions(headers: &HeaderMap, c: &BlobContainer) -> BlobResult<()> {
    let at = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.timestamp())
    };
    let modified = c.last_modified / 1_000_000;
    let failed = at("if-modified-since").is_some_and(|s| modified <= s)
        || at("if-unmodified-since").is_some_and(|s| modified > s);
    if failed {
        return Err(BlobError::new(
            StatusCode::PRECONDITION_FAILED,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        ));
    }
    Ok(())
}

fn with_common(mut r: Response, c: &BlobContainer) -> Response {
    if let Ok(v) = HeaderValue::from_str(&c.etag) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(c.last_modified)) {
        r.headers_mut().insert(http::header::LAST_MODIFIED, v);
    }
    r
}

pub async fn create_container(
    ctx: &Ctx<'_>,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    if !valid_name(name) {
        return Err(BlobError::bad(
            "InvalidResourceName",
            "The specifed resource name contains invalid characters.",
        ));
    }
    ctx.authorize(&ctx.container_scope(name), WRITE, false)
        .await?;
    let public_access = super::acl::public_access_of(headers)?;
    if public_access.is_some() && !ctx.account.allow_public {
        return Err(super::acl::public_access_not_permitted());
    }
    let now = now_micros();
    let c = BlobContainer {
        account: ctx.account.id.key(),
        name: name.to_string(),
        metadata: metadata_from(headers)?,
        etag: new_etag(now),
        last_modified: now,
        public_access,
        lease: None,
    };
    let draft = ctx.draft(
        WRITE,
        &ctx.container_scope(name).to_string(),
        "success",
        json!({}),
    );
    let c2 = c.clone();
    match ciel_store::run(&ctx.svc.store, move |s| s.put_container(&c2, &draft)).await {
        Ok(()) => Ok(with_common(empty(StatusCode::CREATED), &c)),
        Err(StoreError::Conflict(_)) => Err(BlobError::new(
            StatusCode::CONFLICT,
            "ContainerAlreadyExists",
            "The specified container already exists.",
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn get_container_properties(ctx: &Ctx<'_>, name: &str) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), READ, false)
        .await?;
    let c = load(ctx, name).await?;
    let mut r = with_common(empty(StatusCode::OK), &c);
    if let Some(p) = c
        .public_access
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        r.headers_mut().insert("x-ms-blob-public-access", p);
    }
    super::lease::headers(&mut r, &c.lease);
    for (k, v) in [
        ("x-ms-has-immutability-policy", "false"),
        ("x-ms-has-legal-hold", "false"),
    ] {
        r.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    metadata_headers(&mut r, &c.metadata);
    Ok(r)
}

pub async fn delete_container(
    ctx: &Ctx<'_>,
    name: &str,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), DELETE, false)
        .await?;
    // A leased container is deleted only by the lease holder.
    let c = load(ctx, name).await?;
    super::lease::check_container(headers, &c.lease, true)?;
    let (a, n) = (ctx.account.id.key(), name.to_string());
    let draft = ctx.draft(
        DELETE,
        &ctx.container_scope(name).to_string(),
        "success",
        json!({}),
    );
    let ids = ciel_store::run(&ctx.svc.store, move |s| s.delete_container(&a, &n, &draft))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => BlobError::container_not_found(),
            other => other.into(),
        })?;
    super::blob_ops::remove_objects(ctx, ids);
    Ok(empty(StatusCode::ACCEPTED))
}

pub async fn list_containers(ctx: &Ctx<'_>, q: &[(String, String)]) -> BlobResult<Response> {
    ctx.authorize(&ctx.account.id, READ, false).await?;
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let prefix = get("prefix").unwrap_or_default();
    let marker = get("marker").filter(|m| !m.is_empty());
    let max = super::max_results(get("maxresults").as_deref())?;
    let with_meta = get("include")
        .map(|i| i.split(',').any(|x| x.trim() == "metadata"))
        .unwrap_or(false);
    let (a, p, m) = (ctx.account.id.key(), prefix.clone(), marker.clone());
    let mut rows = ciel_store::run(&ctx.svc.store, move |s| {
        s.list_containers(&a, &p, m.as_deref(), max + 1)
    })
    .await?;
    let next = if rows.len() > max {
        rows.truncate(max);
        rows.last().map(|c| c.name.clone())
    } else {
        None
    };
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"{}\"><Prefix>{}</Prefix><Marker>{}</Marker><MaxResults>{}</MaxResults><Containers>",
        escape(&ctx.service_endpoint),
        escape(&prefix),
        escape(marker.as_deref().unwrap_or("")),
        max
    );
    for c in &rows {
        x.push_str(&format!(
            "<Container><Name>{}</Name><Properties><Last-Modified>{}</Last-Modified><Etag>{}</Etag>{}{}<HasImmutabilityPolicy>false</HasImmutabilityPolicy><HasLegalHold>false</HasLegalHold></Properties>{}</Container>",
            escape(&c.name),
            http_date(c.last_modified),
            escape(&c.etag),
            super::lease::xml(&c.lease),
            c.public_access
                .as_deref()
                .map(|p| format!("<PublicAccess>{p}</PublicAccess>"))
                .unwrap_or_default(),
            if with_meta { metadata_xml(&c.metadata) } else { String::new() }
        ));
    }
    x.push_str(&format!(
        "</Containers><NextMarker>{}</NextMarker></EnumerationResults>",
        escape(next.as_deref().unwrap_or(""))
    ));
    let mut r = (StatusCode::OK, x).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    Ok(r)
}
