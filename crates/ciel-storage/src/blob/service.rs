//! Service-level operations: Get Account Information, Get/Set Blob Service Properties (CORS and
//! the default service version; the analytics features Ciel does not provide are refused when
//! asked to be enabled), Get User Delegation Key, and CORS itself (preflight `OPTIONS` requests
//! and the headers of actual requests).

use super::auth::Principal;
use super::error::{BlobError, BlobResult};
use super::sas::{self, UdkFields};
use super::xml::{self, Node};
use super::{empty, Account, Ctx};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use quick_xml::escape::escape;
use serde_json::{json, Value};

const READ_PROPS: &str = "Microsoft.Storage/storageAccounts/blobServices/read";
const WRITE_PROPS: &str = "Microsoft.Storage/storageAccounts/blobServices/write";
const UDK: &str = "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action";
const CORS_METHODS: &[&str] = &[
    "DELETE", "GET", "HEAD", "MERGE", "POST", "OPTIONS", "PUT", "PATCH",
];

/// Reads a small request body (XML documents), refusing more than `limit` bytes.
pub async fn read_small(body: Body, limit: usize) -> BlobResult<bytes::Bytes> {
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| {
            BlobError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "The request body is too large and exceeds the maximum permissible limit.",
            )
        })
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

/// `GET|HEAD ?restype=account&comp=properties`, at any level of the URL.
pub async fn get_account_info(ctx: &Ctx<'_>) -> BlobResult<Response> {
    let mut r = empty(StatusCode::OK);
    for (k, v) in [
        ("x-ms-sku-name", ctx.account.sku.as_str()),
        ("x-ms-account-kind", "StorageV2"),
        ("x-ms-is-hns-enabled", "false"),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(k, v);
        }
    }
    Ok(r)
}

fn bool_of(n: Option<&Node>, name: &str) -> BlobResult<bool> {
    match n.and_then(|n| n.text_of(name)) {
        None => Ok(false),
        Some(t) if t.eq_ignore_ascii_case("true") => Ok(true),
        Some(t) if t.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(xml::invalid()),
    }
}

fn invalid_value(what: &str) -> BlobError {
    BlobError::bad(
        "InvalidXmlNodeValue",
        format!("The value for one of the XML nodes is not in the correct format: {what}."),
    )
}

/// The CORS rules of a `<Cors>` element, validated as Azure does.
fn cors_rules(cors: &Node) -> BlobResult<Value> {
    let rules: Vec<&Node> = cors.all("CorsRule").collect();
    if rules.len() > 5 {
        return Err(invalid_value("at most five CORS rules"));
    }
    let mut out = Vec::new();
    for r in rules {
        let list = |n: &str| -> Vec<String> {
            r.text_of(n)
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let origins = list("AllowedOrigins");
        let methods = list("AllowedMethods");
        if origins.is_empty() || methods.is_empty() {
            return Err(invalid_value(
                "AllowedOrigins and AllowedMethods are required",
            ));
        }
        if let Some(m) = methods.iter().find(|m| !CORS_METHODS.contains(&m.as_str())) {
            return Err(invalid_value(&format!(
                "'{m}' is not an allowed CORS method"
            )));
        }
        let max_age = r
            .text_of("MaxAgeInSeconds")
            .unwrap_or("0")
            .parse::<u32>()
            .map_err(|_| invalid_value("MaxAgeInSeconds"))?;
        out.push(json!({
            "allowedOrigins": origins,
            "allowedMethods": methods,
            "allowedHeaders": list("AllowedHeaders"),
            "exposedHeaders": list("ExposedHeaders"),
            "maxAgeInSeconds": max_age,
        }));
    }
    Ok(Value::Array(out))
}

pub async fn load_properties(ctx_account: &Account, svc: &super::BlobService) -> BlobResult<Value> {
    let a = ctx_account.id.key();
    Ok(
        ciel_store::run(&svc.store, move |s| s.get_blob_service_properties(&a))
            .await?
            .unwrap_or_else(|| json!({})),
    )
}

/// `PUT ?restype=service&comp=properties`. Elements absent from the request keep their value.
pub async fn set_service_properties(ctx: &Ctx<'_>, body: Body) -> BlobResult<Response> {
    ctx.authorize(&ctx.account.id, WRITE_PROPS, false).await?;
    let doc = xml::parse(&read_small(body, 64 * 1024).await?)?;
    if doc.name != "StorageServiceProperties" {
        return Err(xml::invalid());
    }
    let mut props = load_properties(&ctx.account, ctx.svc).await?;
    // What Ciel does not provide is refused when a client asks to turn it on, never accepted
    // silently; turning it off (what clients send by default) is accepted.
    let logging = doc.child("Logging");
    if ["Read", "Write", "Delete"]
        .iter()
        .any(|k| bool_of(logging, k).unwrap_or(true))
    {
        return Err(BlobError::not_supported(
            "Storage Analytics logging (Ciel's audit log records every data-plane access)",
        ));
    }
    for m in ["HourMetrics", "MinuteMetrics"] {
        if bool_of(doc.child(m), "Enabled")? {
            return Err(BlobError::not_supported("Storage Analytics metrics"));
        }
    }
    if bool_of(doc.child("DeleteRetentionPolicy"), "Enabled")? {
        return Err(BlobError::not_supported("Blob soft delete"));
    }
    if bool_of(doc.child("StaticWebsite"), "Enabled")? {
        return Err(BlobError::not_supported("Static websites"));
    }
    if let Some(cors) = doc.child("Cors") {
        props["cors"] = cors_rules(cors)?;
    }
    if let Some(v) = doc.text_of("DefaultServiceVersion") {
        if chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_err() {
            return Err(invalid_value("DefaultServiceVersion"));
        }
        props["defaultServiceVersion"] = json!(v);
    }
    let a = ctx.account.id.key();
    let draft = ctx.draft(
        WRITE_PROPS,
        &format!("{}/blobServices/default", ctx.account.id),
        "success",
        json!({"cors": props["cors"].as_array().map(|r| r.len()).unwrap_or(0),
               "defaultServiceVersion": props["defaultServiceVersion"]}),
    );
    let p2 = props.clone();
    ciel_store::run(&ctx.svc.store, move |s| {
        s.put_blob_service_properties(&a, &p2, &draft)
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// `GET ?restype=service&comp=properties`.
pub async fn get_service_properties(ctx: &Ctx<'_>) -> BlobResult<Response> {
    ctx.authorize(&ctx.account.id, READ_PROPS, false).await?;
    let props = load_properties(&ctx.account, ctx.svc).await?;
    let off = "<Version>1.0</Version><Enabled>false</Enabled><RetentionPolicy><Enabled>false</Enabled></RetentionPolicy>";
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><StorageServiceProperties><Logging><Version>1.0</Version><Read>false</Read><Write>false</Write><Delete>false</Delete><RetentionPolicy><Enabled>false</Enabled></RetentionPolicy></Logging><HourMetrics>{off}</HourMetrics><MinuteMetrics>{off}</MinuteMetrics><Cors>"
    );
    for r in props["cors"].as_array().into_iter().flatten() {
        let join = |k: &str| {
            r[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        x.push_str(&format!(
            "<CorsRule><AllowedOrigins>{}</AllowedOrigins><AllowedMethods>{}</AllowedMethods><MaxAgeInSeconds>{}</MaxAgeInSeconds><ExposedHeaders>{}</ExposedHeaders><AllowedHeaders>{}</AllowedHeaders></CorsRule>",
            escape(join("allowedOrigins")),
            escape(join("allowedMethods")),
            r["maxAgeInSeconds"].as_u64().unwrap_or(0),
            escape(join("exposedHeaders")),
            escape(join("allowedHeaders")),
        ));
    }
    x.push_str("</Cors>");
    if let Some(v) = props["defaultServiceVersion"].as_str() {
        x.push_str(&format!(
            "<DefaultServiceVersion>{}</DefaultServiceVersion>",
            escape(v)
        ));
    }
    x.push_str("<DeleteRetentionPolicy><Enabled>false</Enabled></DeleteRetentionPolicy><StaticWebsite><Enabled>false</Enabled></StaticWebsite></StorageServiceProperties>");
    Ok(xml_response(StatusCode::OK, x))
}

/// The key a user delegation SAS is signed with: derived, not stored, from the account's data
/// key, the key generation and every field the SAS repeats, so that a changed field changes
/// the key. revokeUserDelegationKeys (a new generation) or deleting the account revokes them.
pub fn user_delegation_key(data_key: &[u8; 32], epoch: u64, f: &UdkFields) -> [u8; 32] {
    let mut label = b"ciel-user-delegation-key-v1".to_vec();
    label.extend_from_slice(&epoch.to_be_bytes());
    let root = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, data_key),
        &label,
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, root.as_ref());
    let msg = [
        f.oid.as_str(),
        &f.tid,
        &f.start,
        &f.expiry,
        &f.service,
        &f.version,
        &f.delegated_tid,
    ]
    .join("\n");
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::hmac::sign(&k, msg.as_bytes()).as_ref());
    out
}

/// `POST ?restype=service&comp=userdelegationkey`: only for bearer-token callers.
pub async fn get_user_delegation_key(ctx: &Ctx<'_>, body: Body) -> BlobResult<Response> {
    let Principal::Token(caller) = &ctx.principal else {
        return Err(BlobError::new(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. A user delegation key can only be requested with an OAuth bearer token.",
        ));
    };
    ctx.authorize(&ctx.account.id, UDK, false).await?;
    let doc = xml::parse(&read_small(body, 16 * 1024).await?)?;
    if doc.name != "KeyInfo" {
        return Err(xml::invalid());
    }
    let now = chrono::Utc::now().timestamp();
    let start = match doc.text_of("Start").filter(|s| !s.is_empty()) {
        Some(s) => sas::parse_time(s).ok_or_else(|| invalid_value("Start"))?,
        None => now,
    };
    let expiry = doc
        .text_of("Expiry")
        .and_then(sas::parse_time)
        .ok_or_else(|| invalid_value("Expiry"))?;
    if expiry <= now || expiry <= start || expiry - now > sas::UDK_MAX_SECONDS {
        return Err(BlobError::bad(
            "InvalidQueryParameterValue",
            "The key expiry must be in the future, after its start, and at most seven days from now.",
        ));
    }
    let fmt = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let f = UdkFields {
        oid: caller.object_id.clone(),
        tid: caller.tenant_id.clone(),
        start: fmt(start),
        expiry: fmt(expiry),
        service: "b".into(),
        version: ctx.version.clone(),
        delegated_tid: doc.text_of("DelegatedUserTid").unwrap_or("").to_string(),
    };
    let value = user_delegation_key(&ctx.account.data_key, ctx.account.udk_epoch, &f);
    let draft = ctx.draft(
        UDK,
        &format!("{}/blobServices/default", ctx.account.id),
        "success",
        json!({"signedStart": f.start, "signedExpiry": f.expiry}),
    );
    ciel_store::run(&ctx.svc.store, move |s| {
        s.append_audit(std::slice::from_ref(&draft))
    })
    .await?;
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey><SignedOid>{}</SignedOid><SignedTid>{}</SignedTid><SignedStart>{}</SignedStart><SignedExpiry>{}</SignedExpiry><SignedService>b</SignedService><SignedVersion>{}</SignedVersion>",
        escape(&f.oid),
        escape(&f.tid),
        f.start,
        f.expiry,
        escape(&f.version)
    );
    if !f.delegated_tid.is_empty() {
        x.push_str(&format!(
            "<SignedDelegatedUserTid>{}</SignedDelegatedUserTid>",
            escape(&f.delegated_tid)
        ));
    }
    x.push_str(&format!(
        "<Value>{}</Value></UserDelegationKey>",
        B64.encode(value)
    ));
    Ok(xml_response(StatusCode::OK, x))
}

fn origin_matches(rule: &Value, origin: &str) -> bool {
    rule["allowedOrigins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        })
        .unwrap_or(false)
}

fn list_has(rule: &Value, key: &str, item: &str) -> bool {
    rule[key]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|v| v.as_str()).any(|h| {
                h == "*"
                    || h.eq_ignore_ascii_case(item)
                    || h.strip_suffix('*').is_some_and(|p| {
                        item.to_ascii_lowercase()
                            .starts_with(&p.to_ascii_lowercase())
                    })
            })
        })
        .unwrap_or(false)
}

fn wildcard(rule: &Value) -> bool {
    rule["allowedOrigins"]
        .as_array()
        .map(|a| a.iter().any(|v| v.as_str() == Some("*")))
        .unwrap_or(false)
}

/// A preflight request: answered from the account's CORS rules, without authentication.
pub async fn preflight(
    svc: &super::BlobService,
    account: &Account,
    headers: &HeaderMap,
) -> BlobResult<Response> {
    let fail = || {
        BlobError::new(
            StatusCode::FORBIDDEN,
            "CorsPreflightFailure",
            "CORS not enabled or no matching rule found for this request.",
        )
    };
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (origin, method) = (h("origin"), h("access-control-request-method"));
    if origin.is_empty() || method.is_empty() {
        return Err(BlobError::bad(
            "InvalidCorsHeaderValue",
            "A preflight request needs Origin and Access-Control-Request-Method headers.",
        ));
    }
    let requested: Vec<&str> = h("access-control-request-headers")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let props = load_properties(account, svc).await?;
    let rule = props["cors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            origin_matches(r, origin)
                && list_has(r, "allowedMethods", method)
                && requested.iter().all(|x| list_has(r, "allowedHeaders", x))
        })
        .ok_or_else(fail)?;
    let mut r = empty(StatusCode::OK);
    let hm = r.headers_mut();
    let allow_origin = if wildcard(rule) { "*" } else { origin };
    for (k, v) in [
        ("access-control-allow-origin", allow_origin.to_string()),
        ("access-control-allow-methods", method.to_string()),
        ("access-control-allow-headers", requested.join(",")),
        (
            "access-control-max-age",
            rule["maxAgeInSeconds"].as_u64().unwrap_or(0).to_string(),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            hm.insert(k, v);
        }
    }
    if !wildcard(rule) {
        hm.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
    Ok(r)
}

/// Adds CORS headers to the answer of an actual cross-origin request that a rule allows.
pub fn decorate(props: &Value, method: &Method, origin: &str, r: &mut Response) {
    let Some(rule) = props["cors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| origin_matches(r, origin) && list_has(r, "allowedMethods", method.as_str()))
    else {
        return;
    };
    let exposed = rule["exposedHeaders"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let hm = r.headers_mut();
    let allow_origin = if wildcard(rule) { "*" } else { origin };
    if let Ok(v) = HeaderValue::from_str(allow_origin) {
        hm.insert("access-control-allow-origin", v);
    }
    if let Ok(v) = HeaderValue::from_str(&exposed) {
        hm.insert("access-control-expose-headers", v);
    }
    if !wildcard(rule) {
        hm.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
    hm.append(http::header::VARY, HeaderValue::from_static("Origin"));
}
