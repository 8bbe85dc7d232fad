//! The login host: OIDC discovery, JWKS, the token endpoint, the ADFS-style authority, user realm.

use super::{json_response, read_body, App};
use axum::body::Body;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_identity::oidc;
use ciel_identity::token::TokenRequest;
use http::{HeaderValue, Method, Request, StatusCode};
use serde_json::json;

pub(super) const FORM_LIMIT: usize = 64 * 1024;

pub(super) fn oauth_error(status: StatusCode, code: &str, msg: &str, rid: &str) -> Response {
    let e = ciel_core::ApiError::new(status, code, msg);
    json_response(status, &e.oauth_body(&[], rid))
}

fn is_tenant_segment(t: &str) -> bool {
    matches!(
        t.to_ascii_lowercase().as_str(),
        "organizations" | "common" | "adfs" | "consumers"
    ) || uuid::Uuid::parse_str(t).is_ok()
}

pub async fn handle(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let m = req.method().clone();
    let e = &app.endpoints;
    match (m, segs.as_slice()) {
        (Method::GET, [t, "v2.0", ".well-known", "openid-configuration"]) | (Method::GET, [t, ".well-known", "openid-configuration"])
            if is_tenant_segment(t) && !t.eq_ignore_ascii_case("adfs") =>
        {
            if uuid::Uuid::parse_str(t).is_ok() {
                let tid = t.to_string();
                if ciel_store::run(&app.store, move |s| s.get_tenant(&tid)).await.is_err() {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_tenant", &format!("AADSTS90002: Tenant '{t}' not found."), rid);
                }
            }
            json_response(StatusCode::OK, &oidc::openid_configuration(e, t))
        }
        (Method::GET, ["adfs", ".well-known", "openid-configuration"]) => json_response(StatusCode::OK, &oidc::adfs_configuration(e)),
        (Method::GET, [t, "discovery", "v2.0", "keys"]) | (Method::GET, [t, "discovery", "keys"]) if is_tenant_segment(t) => {
            json_response(StatusCode::OK, &app.tokens.keys().jwks())
        }
        (Method::GET, ["common", "discovery", "instance"]) => {
            let tenant_doc = format!("{}/common/v2.0/.well-known/openid-configuration", e.login());
            let host = e.host("login");
            json_response(
                StatusCode::OK,
                &json!({"tenant_discovery_endpoint": tenant_doc, "api-version": "1.1",
                        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}]}),
            )
        }
        (Method::GET, [_, "userrealm", user]) => json_response(
            StatusCode::OK,
            &json!({"ver": "1.0", "account_type": "Managed", "domain_name": user.rsplit('@').next().unwrap_or(""),
                    "cloud_instance_name": e.domain, "cloud_audience_urn": "urn:federation:MicrosoftOnline"}),
        ),
        (Method::POST, ["operators", "oauth2", "v2.0", "token"]) => super::operator::token(app, req, rid, peer).await,
        (Method::POST, [t, "oauth2", "v2.0", "token"]) | (Method::POST, [t, "oauth2", "token"]) if is_tenant_segment(t) => {
            let t = t.to_string();
            token(app, req, t, rid, peer).await
        }
        (Method::POST, [t, "oauth2", "v2.0", "devicecode"]) if is_tenant_segment(t) => {
            let t = t.to_string();
            super::devicelogin::devicecode(app, req, t, false, rid, peer).await
        }
        (Method::POST, [t, "oauth2", "devicecode"]) if is_tenant_segment(t) => {
            let t = t.to_string();
            super::devicelogin::devicecode(app, req, t, true, rid, peer).await
        }
        (Method::GET | Method::POST, ["devicelogin"]) => super::devicelogin::page(app, req, rid, peer).await,
        (_, [t, "oauth2", "v2.0", "authorize" | "logout"]) | (_, [t, "oauth2", "authorize"])
            if is_tenant_segment(t) =>
        {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "AADSTS70000: Browser sign-in is not available in this Ciel deployment; use the device code flow (az login --use-device-code), a service principal (client_credentials) or a user password (az login -u).",
                rid,
            )
        }
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "This login endpoint does not exist.", rid),
    }
}

async fn token(
    app: &App,
    req: Request<Body>,
    tenant: String,
    rid: &str,
    peer: Option<String>,
) -> Response {
    let basic = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':').map(|(u, p)| {
                let dec = |x: &str| {
                    form_urlencoded::parse(format!("a={x}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                (dec(u), dec(p))
            })
        });
    let body = match read_body(req.into_body(), FORM_LIMIT).await {
        Ok(b) => b,
        Err(e) => return oauth_error(e.status, "invalid_request", &e.message, rid),
    };
    let form: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let treq = TokenRequest {
        tenant,
        form,
        basic,
        client_ip: peer,
        request_id: rid.to_string(),
    };
    let tokens = app.tokens.clone();
    // Password hashing and the audit fsync run off the reactor.
    let out = tokio::task::spawn_blocking(move || tokens.token(&treq)).await;
    let mut resp = match out {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => {
            let api = e.to_oauth();
            let mut body = api.oauth_body(&[e.aadsts()], rid);
            if let Some(sub) = e.suberror() {
                body["suberror"] = json!(sub);
            }
            json_response(api.status, &body)
        }
        Err(_) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The token service failed.",
            rid,
        ),
    };
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp.headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
