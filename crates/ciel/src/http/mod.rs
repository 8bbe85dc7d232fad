//! The HTTPS edge: one listener for every service host, dispatch by `Host`, common headers
//! (`x-ms-request-id`, `x-ms-correlation-request-id`), body limits, metrics, and the mapping of
//! each layer's errors to Azure's wire shapes.

pub mod devicelogin;
pub mod graph;
pub mod login;
pub mod metrics;
pub mod mfa_api;
pub mod operator;
pub mod server;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ciel_core::config::Endpoints;
use ciel_core::ApiError;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;

pub struct App {
    pub arm: Arc<ciel_arm::Arm>,
    pub blob: Arc<ciel_storage::blob::BlobService>,
    pub vault: Arc<ciel_keyvault::data::KeyVaultService>,
    pub tokens: Arc<ciel_identity::token::TokenService>,
    pub store: ciel_store::Store,
    pub endpoints: Endpoints,
    pub metrics: metrics::Metrics,
    pub max_body: usize,
    /// The sovereignty statement, built at start from the configuration.
    pub sovereignty: serde_json::Value,
    /// What the compliance report needs (GET /providers/Ciel.Compliance/report).
    pub compliance: Arc<crate::compliance_cli::Live>,
    /// What the tenant export API needs (POST /providers/Ciel.Export/exports).
    pub export: Arc<crate::export_api::ExportEnv>,
}

/// The remote address, put in request extensions by the server loop.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Login,
    Arm,
    Graph,
    Blob,
    /// Path-style Blob on 127.0.0.1/localhost: `/{account}/...`.
    BlobPath,
    Vault,
    Ops,
    Unknown,
}

impl Service {
    pub fn label(&self) -> &'static str {
        match self {
            Service::Login => "login",
            Service::Arm => "arm",
            Service::Graph => "graph",
            Service::Blob | Service::BlobPath => "blob",
            Service::Vault => "vault",
            Service::Ops => "ops",
            Service::Unknown => "unknown",
        }
    }
}

/// Which service a request is for: by host name, or by path on 127.0.0.1/localhost.
pub fn classify(host: &str, path: &str, domain: &str) -> Service {
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if path == "/healthz" || path == "/metrics" {
        return Service::Ops;
    }
    let sub = |label: &str| host == format!("{label}.{domain}");
    if sub("login") {
        return Service::Login;
    }
    if sub("management") {
        return Service::Arm;
    }
    if sub("graph") {
        return Service::Graph;
    }
    if host.ends_with(&format!(".blob.core.{domain}")) {
        return Service::Blob;
    }
    if host.ends_with(&format!(".vault.{domain}")) {
        return Service::Vault;
    }
    if host == "127.0.0.1" || host == "localhost" || host == "[::1]" {
        let first = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        return match first.as_str() {
            "metadata" | "tenants" | "subscriptions" | "providers" => Service::Arm,
            "v1.0" => Service::Graph,
            "" => Service::Unknown,
            "organizations" | "common" | "adfs" | "consumers" => Service::Login,
            t if uuid::Uuid::parse_str(t).is_ok() => Service::Login,
            // Anything else names a storage account (account names cannot take the words above).
            _ => Service::BlobPath,
        };
    }
    Service::Unknown
}

fn request_ids(headers: &HeaderMap) -> (String, String) {
    let rid = uuid::Uuid::new_v4().to_string();
    let corr = headers
        .get("x-ms-correlation-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| uuid::Uuid::parse_str(v).is_ok())
        .map(str::to_string)
        .unwrap_or_else(|| rid.clone());
    (rid, corr)
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub fn arm_error(e: &ApiError) -> Response {
    json_response(e.status, &e.arm_body())
}

/// Reads a body up to `limit` bytes. Beyond it the request is refused (413), but the rest of the
/// body is still read and discarded, up to `DRAIN_MAX`: a client that sends its whole body before
/// reading the answer (as `requests` does) would otherwise see the connection cut instead of the
/// error.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    const DRAIN_MAX: usize = 64 * 1024 * 1024;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ApiError::bad_request(
                "InvalidRequestContent",
                "The request body could not be read.",
            )
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit + DRAIN_MAX {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body is larger than the {limit} bytes this endpoint accepts."),
        ));
    }
    Ok(buf.freeze())
}

pub async fn dispatch(State(app): State<Arc<App>>, req: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let svc = classify(&host, req.uri().path(), &app.endpoints.domain);
    let (rid, corr) = request_ids(req.headers());
    let client_request_id = req.headers().get("x-ms-client-request-id").cloned();
    let peer = req.extensions().get::<Peer>().map(|p| p.0.ip().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match svc {
        Service::Ops => ops(&app, &path).await,
        Service::Login => login::handle(&app, req, &rid, peer.clone()).await,
        Service::Arm => arm(&app, req, &rid, peer.clone()).await,
        Service::Graph => graph::handle(&app, req, &rid, peer.clone()).await,
        Service::Blob => {
            let account = host_only(&host).split('.').next().unwrap_or("").to_string();
            app.blob
                .handle(req, &account, false, &rid, peer.clone())
                .await
        }
        Service::BlobPath => {
            let account = path
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            app.blob
                .handle(req, &account, true, &rid, peer.clone())
                .await
        }
        Service::Vault => {
            let name = host_only(&host).split('.').next().unwrap_or("").to_string();
            app.vault.handle(req, &name, &rid, peer.clone()).await
        }
        Service::Unknown => arm_error(&ApiError::not_found(
            "UnknownHost",
            format!(
                "This Ciel deployment serves *.{} hosts; '{}' is not one of its services.",
                app.endpoints.domain,
                ciel_arm::clip(&host)
            ),
        )),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        h.insert("x-ms-request-id", v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&corr) {
        h.insert("x-ms-correlation-request-id", v);
    }
    if let Some(c) = client_request_id {
        h.insert("x-ms-client-request-id", c);
    }
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    let status = resp.status().as_u16();
    app.metrics.observe(svc.label(), status, started.elapsed());
    tracing::info!(request_id = %rid, service = svc.label(), %method, path = %ciel_arm::clip(&path), status, elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

fn host_only(host: &str) -> &str {
    host.rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host)
}

async fn ops(app: &App, path: &str) -> Response {
    if path == "/metrics" {
        let mut r = (StatusCode::OK, app.metrics.render()).into_response();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        return r;
    }
    // Health: the store answers a read.
    match ciel_store::run(&app.store, |s| s.audit_head()).await {
        Ok(head) => json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "auditEntries": head.map(|h| h.0).unwrap_or(0)}),
        ),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "unavailable"}),
            )
        }
    }
}

fn decode_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

pub fn query_pairs(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

async fn arm(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    let path = req.uri().path();
    if path
        .get(..operator::PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(operator::PREFIX))
    {
        return operator::handle(app, req, rid, peer).await;
    }
    if path
        .get(..mfa_api::PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(mfa_api::PREFIX))
    {
        return mfa_api::handle(app, req, rid, peer).await;
    }
    for own in [
        OwnApi::SovereigntyStatement,
        OwnApi::AuditExport,
        OwnApi::ComplianceReport,
    ] {
        if path.eq_ignore_ascii_case(own.path()) {
            return own_api(app, own, req, rid, peer).await;
        }
    }
    if path
        .get(..crate::export_api::PATH.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(crate::export_api::PATH))
        && matches!(
            path.as_bytes().get(crate::export_api::PATH.len()),
            None | Some(b'/')
        )
    {
        let caller = match arm_caller(app, &req) {
            Ok(c) => c,
            Err(e) => return arm_error(&e),
        };
        let env = app.export.clone();
        return crate::export_api::handle(app, &env, caller, req, rid, peer).await;
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body, app.max_body).await {
        Ok(b) => b,
        Err(e) => return arm_error(&e),
    };
    let r = app
        .arm
        .handle(ciel_arm::ArmRequest {
            method: parts.method.clone(),
            segments: decode_segments(parts.uri.path()),
            query: query_pairs(&parts.uri),
            headers: parts.headers,
            body,
            request_id: rid.to_string(),
            client_ip: peer,
        })
        .await;
    let mut resp = match (&r.body, parts.method == http::Method::HEAD) {
        (Some(b), false) => json_response(r.status, b),
        _ => r.status.into_response(),
    };
    resp.headers_mut().extend(r.headers);
    resp
}

/// Ciel's own APIs on the Resource Manager host (docs/openapi/ciel.json).
#[derive(Clone, Copy)]
enum OwnApi {
    SovereigntyStatement,
    AuditExport,
    ComplianceReport,
}

impl OwnApi {
    fn path(self) -> &'static str {
        match self {
            OwnApi::SovereigntyStatement => "/providers/Ciel.Sovereignty/statement",
            OwnApi::AuditExport => "/providers/Ciel.Audit/export",
            OwnApi::ComplianceReport => "/providers/Ciel.Compliance/report",
        }
    }
}

/// The caller behind an ARM bearer token, if it verifies.
/// The caller of one of Ciel's own APIs: an ARM bearer token, or the 401 they all answer.
pub(crate) fn arm_caller(app: &App, req: &Request<Body>) -> Result<ciel_core::Caller, ApiError> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| {
            app.tokens
                .verify(t.trim(), ciel_identity::audiences::Service::ResourceManager)
                .ok()
        })
        .ok_or_else(|| {
            ApiError::unauthorized(
                "AuthenticationFailed",
                "A valid bearer token for Resource Manager is required.",
            )
        })
}

/// Ciel's own APIs have one api-version; any other is Azure's `InvalidApiVersionParameter`.
pub(crate) fn own_api_version(uri: &http::Uri) -> Result<(), ApiError> {
    let version = query_pairs(uri)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v);
    if version.as_deref() == Some(crate::sovereignty::API_VERSION) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "InvalidApiVersionParameter",
        format!(
            "The api-version '{}' is invalid. The supported version is '{}'.",
            ciel_arm::clip(&version.unwrap_or_default()),
            crate::sovereignty::API_VERSION
        ),
    ))
}

/// The checks every one of Ciel's own APIs shares: an ARM bearer token, GET, the api-version.
async fn own_api(
    app: &App,
    api: OwnApi,
    req: Request<Body>,
    rid: &str,
    peer: Option<String>,
) -> Response {
    let caller = match arm_caller(app, &req) {
        Ok(c) => c,
        Err(e) => return arm_error(&e),
    };
    if req.method() != http::Method::GET {
        return arm_error(&ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{} is read with GET.", api.path()),
        ));
    }
    if let Err(e) = own_api_version(req.uri()) {
        return arm_error(&e);
    }
    let q = query_pairs(req.uri());
    // The body is not needed: dropping the request keeps the future Send.
    drop(req);
    match api {
        // Any authenticated caller may read where its data and keys are.
        OwnApi::SovereigntyStatement => json_response(StatusCode::OK, &app.sovereignty),
        OwnApi::AuditExport => audit_export(app, caller, &q, rid, peer).await,
        OwnApi::ComplianceReport => compliance_report(app, caller, &q, rid, peer).await,
    }
}

/// `GET /providers/Ciel.Compliance/report?api-version=2026-11-01[&format=json|html]`: the
/// SecNumCloud 3.2 report, built on request (the checks scan this listener and read the data
/// directory). It describes the whole platform, so it is the operator's: only an Owner of the
/// bootstrap subscription, in the bootstrap tenant, may read it. Every request is audited,
/// granted or not.
async fn compliance_report(
    app: &App,
    caller: ciel_core::Caller,
    q: &[(String, String)],
    rid: &str,
    peer: Option<String>,
) -> Response {
    let format = q
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("format"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_else(|| "json".into());
    if format != "json" && format != "html" {
        return arm_error(&ApiError::bad_request(
            "InvalidParameter",
            "format must be json or html.",
        ));
    }
    let (oid, tid) = (caller.object_id.clone(), caller.tenant_id.clone());
    let allowed = ciel_store::run(&app.store, move |s| {
        let (Some(bt), Some(bs)) = (
            s.get_setting("bootstrap.tenant")?,
            s.get_setting("bootstrap.subscription")?,
        ) else {
            return Ok(false);
        };
        if !tid.eq_ignore_ascii_case(&bt) {
            return Ok(false);
        }
        let sub_scope = format!("/subscriptions/{bs}");
        Ok(s.list_role_assignments_for_principal(&oid)?
            .iter()
            .any(|a| {
                a.role_definition_id
                    .to_ascii_lowercase()
                    .ends_with(ciel_identity::rbac::OWNER)
                    && (a.scope == "/" || a.scope.eq_ignore_ascii_case(&sub_scope))
            }))
    })
    .await;
    let ok = matches!(allowed, Ok(true));
    let d = ciel_core::audit::AuditDraft {
        tenant_id: Some(caller.tenant_id.clone()),
        actor: caller.display(),
        action: "Ciel.Compliance/report/action".into(),
        target: OwnApi::ComplianceReport.path().into(),
        outcome: if ok { "success" } else { "denied" }.into(),
        details: serde_json::json!({"format": format}),
        request_id: Some(rid.to_string()),
        client_ip: peer,
    };
    if let Err(e) = ciel_store::run(&app.store, move |s| {
        s.append_audit(std::slice::from_ref(&d))
    })
    .await
    {
        tracing::error!(error = %e, "could not audit a compliance report request");
        return arm_error(&ApiError::internal());
    }
    if !ok {
        return arm_error(&ApiError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "The compliance report is the operator's: it needs the Owner role on the bootstrap subscription, in the bootstrap tenant.",
        ));
    }
    let (live, store) = (app.compliance.clone(), app.store.clone());
    // Blocking work: TLS probes of this very listener (served by other tasks meanwhile) and
    // store reads.
    let report = match tokio::task::spawn_blocking(move || live.report(store.as_ref())).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the compliance report task failed");
            return arm_error(&ApiError::internal());
        }
    };
    if format == "html" {
        let mut r = (StatusCode::OK, ciel_compliance::html::render(&report)).into_response();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return r;
    }
    match serde_json::to_value(&report) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => {
            tracing::error!(error = %e, "the compliance report did not serialise");
            arm_error(&ApiError::internal())
        }
    }
}

/// `GET /providers/Ciel.Audit/export?api-version=2026-11-01[&from=N]`: the caller's tenant's audit
/// entries with their chain proofs (`ciel-audit-export/1`, JSON lines, streamed). The export
/// spans the whole tenant, so the caller must be allowed to read the activity log of every
/// subscription of the tenant. Each export is itself audited.
async fn audit_export(
    app: &App,
    caller: ciel_core::Caller,
    q: &[(String, String)],
    rid: &str,
    peer: Option<String>,
) -> Response {
    use ciel_identity::rbac;
    const READ: &str = "Microsoft.Insights/eventtypes/values/read";
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let from = match get("from").map(|f| f.parse::<i64>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return arm_error(&ApiError::bad_request(
                "InvalidParameter",
                "from must be a sequence number of at least 1.",
            ))
        }
    };
    let (oid, tid) = (caller.object_id.clone(), caller.tenant_id.clone());
    let allowed = ciel_store::run(&app.store, move |s| {
        let (assignments, custom) = rbac::grants(s, &oid, &tid)?;
        let subs = s.list_subscriptions(&tid)?;
        Ok(!subs.is_empty()
            && subs.iter().all(|sub| {
                ciel_core::ResourceId::parse(&format!("/subscriptions/{}", sub.id))
                    .map(|id| rbac::is_allowed(&assignments, &custom, &id, READ))
                    .unwrap_or(false)
            }))
    })
    .await;
    let draft = |outcome: &str| ciel_core::audit::AuditDraft {
        tenant_id: Some(caller.tenant_id.clone()),
        actor: caller.display(),
        action: "Ciel.Audit/export/action".into(),
        target: format!("/tenants/{}", caller.tenant_id),
        outcome: outcome.into(),
        details: serde_json::json!({"from": from}),
        request_id: Some(rid.to_string()),
        client_ip: peer.clone(),
    };
    let ok = matches!(allowed, Ok(true));
    let d = draft(if ok { "success" } else { "denied" });
    if let Err(e) = ciel_store::run(&app.store, move |s| {
        s.append_audit(std::slice::from_ref(&d))
    })
    .await
    {
        tracing::error!(error = %e, "could not audit an audit export");
        return arm_error(&ApiError::internal());
    }
    if !ok {
        return arm_error(&ApiError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            "Exporting the tenant's audit log needs Microsoft.Insights/eventtypes/values/read on every subscription of the tenant.",
        ));
    }
    let public_key = match ciel_store::run(&app.store, |s| s.get_setting("audit.public_key")).await
    {
        Ok(Some(k)) => k,
        _ => return arm_error(&ApiError::internal()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let (store, tenant) = (app.store.clone(), caller.tenant_id.clone());
    tokio::task::spawn_blocking(move || {
        let res = ciel_audit::export::export(store.as_ref(), &tenant, from, &public_key, |line| {
            let mut v = serde_json::to_vec(line).map_err(std::io::Error::other)?;
            v.push(b'\n');
            tx.blocking_send(Ok(bytes::Bytes::from(v)))
                .map_err(|_| std::io::Error::other("client went away"))
        });
        if let Err(e) = res {
            tracing::error!(error = %e, "audit export failed");
            let _ = tx.blocking_send(Err(std::io::Error::other("audit export failed")));
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut r = (StatusCode::OK, Body::from_stream(stream)).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn classifies_hosts_and_paths() {
        let d = "ciel.localhost";
        assert_eq!(
            classify("login.ciel.localhost:8443", "/x/oauth2/v2.0/token", d),
            Service::Login
        );
        assert_eq!(
            classify("management.ciel.localhost", "/subscriptions", d),
            Service::Arm
        );
        assert_eq!(
            classify("acct.blob.core.ciel.localhost:8443", "/c/b", d),
            Service::Blob
        );
        assert_eq!(
            classify("v1.vault.ciel.localhost:8443", "/secrets/s", d),
            Service::Vault
        );
        assert_eq!(
            classify("127.0.0.1:8443", "/subscriptions/x", d),
            Service::Arm
        );
        assert_eq!(
            classify(
                "127.0.0.1:8443",
                "/organizations/v2.0/.well-known/openid-configuration",
                d
            ),
            Service::Login
        );
        assert_eq!(
            classify(
                "127.0.0.1:8443",
                "/8f1a4f3e-59ad-4a8c-8cf3-5d1f2f0b7a10/oauth2/v2.0/token",
                d
            ),
            Service::Login
        );
        assert_eq!(
            classify("127.0.0.1:8443", "/acct/container/blob", d),
            Service::BlobPath
        );
        assert_eq!(
            classify("evil.example", "/subscriptions", d),
            Service::Unknown
        );
        assert_eq!(
            classify("management.ciel.localhost.evil.example", "/", d),
            Service::Unknown
        );
        assert_eq!(classify("x", "/healthz", d), Service::Ops);
    }
}
