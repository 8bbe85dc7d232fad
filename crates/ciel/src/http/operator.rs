//! The operators' own API (docs/openapi/ciel.json, `Ciel.Operator`):
//!
//! - `POST login.D/operators/oauth2/v2.0/token`: password + TOTP (`totp_code`) → operator token.
//! - `POST management.D/providers/Ciel.Operator/lockboxRequests?api-version=…`: file a Customer
//!   Lockbox request for a tenant's scope; the tenant sees it under
//!   `Microsoft.CustomerLockbox/requests` and decides there.
//! - `GET …/lockboxRequests[/{id}]`: the operator's own requests and their status.
//!
//! An operator token gives no right to decide: approval is a tenant API that refuses it.

use super::{arm_error, json_response, read_body, App};
use axum::body::Body;
use axum::response::Response;
use ciel_arm::customer_lockbox::{request_id_path, request_json};
use ciel_core::audit::AuditDraft;
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_identity::lockbox::{
    ACCESS_KINDS, MAX_DURATION_SECS, MIN_DURATION_SECS, PENDING_TTL_SECS,
};
use ciel_store::{Found, LockboxRequestRec};
use http::{HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Value};

pub const PREFIX: &str = "/providers/Ciel.Operator/";
const BODY_LIMIT: usize = 64 * 1024;

/// The operator token endpoint (the `/operators/...` arm of the login host).
pub async fn token(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    let body = match read_body(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return json_response(
                e.status,
                &ApiError::new(e.status, "invalid_request", e.message).oauth_body(&[], rid),
            )
        }
    };
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let (tokens, store, rid2) = (app.tokens.clone(), app.store.clone(), rid.to_string());
    // Argon2, the factor's store writes and the audit fsync run off the reactor.
    let out = tokio::task::spawn_blocking(move || {
        tokens.operator_token(store.as_ref(), &form, &rid2, peer.as_deref())
    })
    .await;
    let mut resp = match out {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => {
            let api = e.to_oauth();
            json_response(api.status, &api.oauth_body(&[e.aadsts()], rid))
        }
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The token service failed.",
            )
            .oauth_body(&[], rid),
        ),
    };
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

async fn audit(app: &App, d: AuditDraft) -> Result<(), ApiError> {
    ciel_store::run(&app.store, move |s| {
        s.append_audit(std::slice::from_ref(&d))
    })
    .await
    .map(|_| ())
    .map_err(|e| {
        tracing::error!(error = %e, "audit append failed");
        ApiError::internal()
    })
}

pub async fn handle(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    match handle_inner(app, req, rid, peer).await {
        Ok(r) => r,
        Err(e) => arm_error(&e),
    }
}

async fn handle_inner(
    app: &App,
    req: Request<Body>,
    rid: &str,
    peer: Option<String>,
) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let (tokens, store) = (app.tokens.clone(), app.store.clone());
    let verified =
        tokio::task::spawn_blocking(move || tokens.verify_operator(store.as_ref(), &token, ""))
            .await
            .map_err(|_| ApiError::internal())?;
    let caller = match verified {
        Ok(c) => c,
        Err(e) => {
            audit(
                app,
                AuditDraft {
                    tenant_id: None,
                    actor: "anonymous".into(),
                    action: "Ciel.Operator/authenticate".into(),
                    target: ciel_arm::clip(req.uri().path()),
                    outcome: "denied".into(),
                    details: json!({"reason": e.to_string()}),
                    request_id: Some(rid.to_string()),
                    client_ip: peer.clone(),
                },
            )
            .await?;
            return Err(ApiError::unauthorized(
                "AuthenticationFailed",
                "An operator token (https://login.D/operators/oauth2/v2.0/token) is required.",
            ));
        }
    };
    super::own_api_version(req.uri())?;
    let path = req.uri().path().to_string();
    let rest: Vec<&str> = path[PREFIX.len()..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let name = ciel_identity::lockbox::operator_name(&caller).to_string();
    let now = ciel_core::time::now_unix();
    match (req.method().clone(), rest.as_slice()) {
        (Method::GET, [c]) if c.eq_ignore_ascii_case("lockboxRequests") => {
            let all = ciel_store::run(&app.store, |s| s.list_lockbox_requests(None))
                .await
                .map_err(|_| ApiError::internal())?;
            let value: Vec<Value> = all
                .iter()
                .filter(|r| r.operator.eq_ignore_ascii_case(&name))
                .map(|r| own_json(r, now))
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "value": value })))
        }
        (Method::GET, [c, id]) if c.eq_ignore_ascii_case("lockboxRequests") => {
            let key = id.to_string();
            let found = ciel_store::run(&app.store, move |s| s.get_lockbox_request(&key).found())
                .await
                .map_err(|_| ApiError::internal())?;
            match found {
                Some(r) if r.operator.eq_ignore_ascii_case(&name) => {
                    Ok(json_response(StatusCode::OK, &own_json(&r, now)))
                }
                _ => Err(ApiError::not_found(
                    "LockboxRequestNotFound",
                    format!("No Lockbox request '{}' of yours.", ciel_arm::clip(id)),
                )),
            }
        }
        (Method::POST, [c]) if c.eq_ignore_ascii_case("lockboxRequests") => {
            let body = read_body(req.into_body(), BODY_LIMIT).await?;
            create(app, &caller, &name, &body, rid, peer.as_deref()).await
        }
        (_, [c, ..]) if c.eq_ignore_ascii_case("lockboxRequests") => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Operators file (POST) and read (GET) their requests; only the tenant decides them.",
        )),
        _ => Err(ApiError::not_found(
            "InvalidResourceType",
            format!(
                "The path '{}' is not part of Ciel.Operator.",
                ciel_arm::clip(&path)
            ),
        )),
    }
}

/// The operator's view: the tenant's shape plus the tenant id.
fn own_json(r: &LockboxRequestRec, now: i64) -> Value {
    let mut v = request_json(r, now);
    v["properties"]["tenantId"] = json!(r.tenant_id);
    v
}

async fn create(
    app: &App,
    caller: &Caller,
    name: &str,
    body: &[u8],
    rid: &str,
    ip: Option<&str>,
) -> Result<Response, ApiError> {
    let bad = |m: &str| ApiError::bad_request("InvalidRequestContent", m.to_string());
    let b: Value =
        serde_json::from_slice(body).map_err(|_| bad("The request body must be a JSON object."))?;
    let s = |k: &str| b.get(k).and_then(|v| v.as_str()).map(str::trim);
    let tenant = s("tenantId").ok_or_else(|| bad("'tenantId' is required."))?;
    let sub = s("subscriptionId").ok_or_else(|| bad("'subscriptionId' is required."))?;
    let justification = s("justification")
        .filter(|j| !j.is_empty() && j.len() <= 1000)
        .ok_or_else(|| bad("'justification' is required (1 to 1000 characters)."))?;
    let duration = match (b.get("durationSeconds"), b.get("duration")) {
        (Some(v), _) => v.as_i64(),
        (None, Some(h)) => h.as_i64().map(|h| h.saturating_mul(3600)),
        (None, None) => None,
    }
    .filter(|d| (MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(d))
    .ok_or_else(|| {
        bad(&format!(
            "'durationSeconds' (or 'duration' in hours) is required, between {MIN_DURATION_SECS} seconds and {} hours.",
            MAX_DURATION_SECS / 3600
        ))
    })?;
    let mut access: Vec<String> = b
        .get("accessTypes")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    access.sort();
    access.dedup();
    if access.is_empty() || access.iter().any(|a| !ACCESS_KINDS.contains(&a.as_str())) {
        return Err(bad(&format!(
            "'accessTypes' must list one or more of {}.",
            ACCESS_KINDS.join(", ")
        )));
    }
    let scope_s = s("scope")
        .map(str::to_string)
        .unwrap_or_else(|| format!("/subscriptions/{sub}"));
    let scope = ResourceId::parse(&scope_s)
        .filter(|i| i.subscription.eq_ignore_ascii_case(sub))
        .ok_or_else(|| bad("'scope' must be a resource id within the subscription (the subscription, a resource group, a storage account, a container or a vault)."))?;
    let (t, sid) = (tenant.to_string(), sub.to_string());
    let sub_rec = ciel_store::run(&app.store, move |s| s.get_subscription(&sid).found())
        .await
        .map_err(|_| ApiError::internal())?;
    let Some(sub_rec) = sub_rec.filter(|x| x.tenant_id == t) else {
        return Err(ApiError::not_found(
            "SubscriptionNotFound",
            format!(
                "The subscription '{}' is not a subscription of tenant '{}'.",
                ciel_arm::clip(sub),
                ciel_arm::clip(tenant)
            ),
        ));
    };
    let now = ciel_core::time::now_unix();
    let r = LockboxRequestRec {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: sub_rec.tenant_id.clone(),
        subscription_id: sub_rec.id.clone(),
        operator: name.to_string(),
        scope: scope.to_string(),
        access,
        justification: justification.to_string(),
        duration_secs: duration,
        status: "Pending".into(),
        created: now,
        decided: None,
        decided_by: None,
        decision_reason: None,
        expires: now + PENDING_TTL_SECS,
        break_glass: false,
        incident: s("supportRequest").map(|x| x.chars().take(128).collect()),
    };
    let d = AuditDraft {
        tenant_id: Some(r.tenant_id.clone()),
        actor: caller.display(),
        action: "Microsoft.CustomerLockbox/requests/write".into(),
        target: request_id_path(&r),
        outcome: "success".into(),
        details: json!({"lockboxRequestId": r.id, "operator": r.operator, "scope": r.scope,
               "accessTypes": r.access, "durationSeconds": r.duration_secs, "justification": r.justification}),
        request_id: Some(rid.to_string()),
        client_ip: ip.map(str::to_string),
    };
    let rec = r.clone();
    ciel_store::run(&app.store, move |s| s.put_lockbox_request(&rec, &d))
        .await
        .map_err(|_| ApiError::internal())?;
    Ok(json_response(StatusCode::CREATED, &own_json(&r, now)))
}
