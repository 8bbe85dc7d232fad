//! Get/Set Container ACL: a container's public access level and its stored access policies
//! (which service SAS tokens may refer to by `si`, so that revoking a policy revokes them).
//! Public access is honoured only while the account allows it (`allowBlobPublicAccess`).

use super::blob_ops::h;
use super::container;
use super::error::{BlobError, BlobResult};
use super::sas::{self, Policy};
use super::service::read_small;
use super::xml;
use super::{http_date, new_etag, now_micros, Ctx};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use ciel_store::{ContainerAcl, StoreError};
use http::{HeaderMap, HeaderValue, StatusCode};
use quick_xml::escape::escape;
use serde_json::{json, Value};

const GET_ACL: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/getAcl/action";
const SET_ACL: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/setAcl/action";
const PERMISSIONS: &str = "racwdxyltfmeopi";

/// The public access level named by `x-ms-blob-public-access` (None: private).
pub fn public_access_of(headers: &HeaderMap) -> BlobResult<Option<String>> {
    match h(headers, "x-ms-blob-public-access") {
        None => Ok(None),
        Some(v @ ("container" | "blob")) => Ok(Some(v.to_string())),
        Some(_) => Err(BlobError::bad(
            "InvalidHeaderValue",
            "The value for x-ms-blob-public-access must be 'container' or 'blob'.",
        )),
    }
}

pub fn public_access_not_permitted() -> BlobError {
    BlobError::new(
        StatusCode::CONFLICT,
        "PublicAccessNotPermitted",
        "Public access is not permitted on this storage account.",
    )
}

/// The stored access policy `id` of a container, for a SAS that names it.
pub async fn policy(
    ctx_store: &ciel_store::Store,
    account: &str,
    container: &str,
    id: &str,
) -> BlobResult<Option<Policy>> {
    let (a, c) = (account.to_string(), container.to_string());
    let all = match ciel_store::run(ctx_store, move |s| s.get_container_policies(&a, &c)).await {
        Ok(v) => v,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == id)
        .map(|p| {
            let s = |k: &str| p[k].as_str().filter(|v| !v.is_empty()).map(str::to_string);
            Policy {
                start: s("start"),
                expiry: s("expiry"),
                permission: s("permission"),
            }
        }))
}

fn parse_policies(body: &[u8]) -> BlobResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!([]));
    }
    let doc = xml::parse(body)?;
    if doc.name != "SignedIdentifiers" {
        return Err(xml::invalid());
    }
    let ids: Vec<_> = doc.all("SignedIdentifier").collect();
    if ids.len() > 5 {
        return Err(BlobError::bad(
            "InvalidXmlDocument",
            "A container may have at most five stored access policies.",
        ));
    }
    let mut out: Vec<Value> = Vec::new();
    for i in ids {
        let id = i.text_of("Id").unwrap_or("");
        if id.is_empty() || id.chars().count() > 64 {
            return Err(BlobError::bad(
                "InvalidXmlNodeValue",
                "A signed identifier's Id is 1 to 64 characters.",
            ));
        }
        if out.iter().any(|p| p["id"] == id) {
            return Err(BlobError::bad(
                "InvalidXmlNodeValue",
                "Signed identifiers must be unique.",
            ));
        }
        let ap = i.child("AccessPolicy");
        let field = |n: &str| ap.and_then(|a| a.text_of(n)).unwrap_or("").to_string();
        let (start, expiry, perm) = (field("Start"), field("Expiry"), field("Permission"));
        for t in [&start, &expiry] {
            if !t.is_empty() && sas::parse_time(t).is_none() {
                return Err(BlobError::bad(
                    "InvalidXmlNodeValue",
                    "A stored access policy time is not a valid ISO 8601 time.",
                ));
            }
        }
        if !perm.chars().all(|c| PERMISSIONS.contains(c)) {
            return Err(BlobError::bad(
                "InvalidXmlNodeValue",
                "A stored access policy permission is not valid.",
            ));
        }
        out.push(json!({"id": id, "start": start, "expiry": expiry, "permission": perm}));
    }
    Ok(Value::Array(out))
}

fn stamp(r: &mut Response, etag: &str, micros: i64, public: Option<&str>) {
    let hm = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        hm.insert(http::header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&http_date(micros)) {
        hm.insert(http::header::LAST_MODIFIED, v);
    }
    if let Some(p) = public.and_then(|p| HeaderValue::from_str(p).ok()) {
        hm.insert("x-ms-blob-public-access", p);
    }
}

/// `GET|HEAD ?restype=container&comp=acl`.
pub async fn get_container_acl(ctx: &Ctx<'_>, name: &str) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), GET_ACL, false)
        .await?;
    let c = container::load(ctx, name).await?;
    let (a, n) = (ctx.account.id.key(), name.to_string());
    let policies =
        ciel_store::run(&ctx.svc.store, move |s| s.get_container_policies(&a, &n)).await?;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><SignedIdentifiers>");
    for p in policies.as_array().into_iter().flatten() {
        let f = |k: &str| escape(p[k].as_str().unwrap_or("")).into_owned();
        x.push_str(&format!(
            "<SignedIdentifier><Id>{}</Id><AccessPolicy>",
            f("id")
        ));
        for (tag, k) in [
            ("Start", "start"),
            ("Expiry", "expiry"),
            ("Permission", "permission"),
        ] {
            if !f(k).is_empty() {
                x.push_str(&format!("<{tag}>{}</{tag}>", f(k)));
            }
        }
        x.push_str("</AccessPolicy></SignedIdentifier>");
    }
    x.push_str("</SignedIdentifiers>");
    let mut r = (StatusCode::OK, x).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    stamp(&mut r, &c.etag, c.last_modified, c.public_access.as_deref());
    Ok(r)
}

/// `PUT ?restype=container&comp=acl`: replaces the public access level and every policy.
pub async fn set_container_acl(
    ctx: &Ctx<'_>,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> BlobResult<Response> {
    ctx.authorize(&ctx.container_scope(name), SET_ACL, false)
        .await?;
    let public = public_access_of(headers)?;
    if public.is_some() && !ctx.account.allow_public {
        return Err(public_access_not_permitted());
    }
    let policies = parse_policies(&read_small(body, 64 * 1024).await?)?;
    let c = container::load(ctx, name).await?;
    container::check_container_conditions(headers, &c)?;
    let now = now_micros();
    let acl = ContainerAcl {
        account: ctx.account.id.key(),
        container: name.to_string(),
        public_access: public.clone(),
        policies: policies.clone(),
        etag: new_etag(now),
        last_modified: now,
    };
    let draft = ctx.draft(
        SET_ACL,
        &ctx.container_scope(name).to_string(),
        "success",
        json!({
            "publicAccess": public,
            "policies": policies.as_array().map(|a| a.iter().map(|p| p["id"].clone()).collect::<Vec<_>>()),
        }),
    );
    let acl2 = acl.clone();
    ciel_store::run(&ctx.svc.store, move |s| s.set_container_acl(&acl2, &draft))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => BlobError::container_not_found(),
            other => other.into(),
        })?;
    let mut r = super::empty(StatusCode::OK);
    stamp(&mut r, &acl.etag, acl.last_modified, None);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        let p = parse_policies(b"<SignedIdentifiers><SignedIdentifier><Id>read-only</Id><AccessPolicy><Start>2026-11-01T00:00:00Z</Start><Expiry>2026-12-01T00:00:00.0000000Z</Expiry><Permission>rl</Permission></AccessPolicy></SignedIdentifier></SignedIdentifiers>").unwrap();
        assert_eq!(p[0]["id"], "read-only");
        assert_eq!(p[0]["permission"], "rl");
        assert_eq!(parse_policies(b"").unwrap(), json!([]));
        assert!(parse_policies(b"<SignedIdentifiers><SignedIdentifier><Id>a</Id><AccessPolicy><Permission>rz</Permission></AccessPolicy></SignedIdentifier></SignedIdentifiers>").is_err());
        let six = "<SignedIdentifier><Id>x</Id></SignedIdentifier>".repeat(6);
        assert!(
            parse_policies(format!("<SignedIdentifiers>{six}</SignedIdentifiers>").as_bytes())
                .is_err()
        );
    }
}
