//! The part of Microsoft Graph the Azure CLI reads to resolve principals (`az role assignment
//! create --assignee`, `az keyvault create` with access policies): `/me`, service principals
//! and users by filter or id, and `directoryObjects/getByIds`. Read-only, within the caller's tenant.

use super::{json_response, query_pairs, read_body, App};
use axum::body::Body;
use axum::response::Response;
use ciel_core::{ApiError, Caller};
use ciel_identity::audiences::Service;
use ciel_store::{Principal, PrincipalKindRec};
use http::{Method, Request, StatusCode};
use serde_json::json;

fn graph_error(status: StatusCode, code: &str, msg: &str) -> Response {
    json_response(status, &ApiError::new(status, code, msg).arm_body())
}

fn principal_json(e: &ciel_core::config::Endpoints, p: &Principal) -> serde_json::Value {
    let _ = e;
    match p.kind {
        PrincipalKindRec::ServicePrincipal => {
            let app = p.app_id.clone().unwrap_or_default();
            json!({"@odata.type": "#microsoft.graph.servicePrincipal", "id": p.object_id, "appId": app,
                   "displayName": p.display_name, "servicePrincipalNames": [app], "servicePrincipalType": "Application",
                   "accountEnabled": true, "appOwnerOrganizationId": p.tenant_id})
        }
        PrincipalKindRec::User => json!({"@odata.type": "#microsoft.graph.user", "id": p.object_id,
                   "userPrincipalName": p.upn, "displayName": p.display_name, "mail": p.upn, "accountEnabled": true}),
    }
}

fn quoted_after(f: &str, prefix: &str) -> Option<String> {
    let rest = f.trim().strip_prefix(prefix)?;
    let rest = rest.trim().trim_end_matches(')');
    Some(rest.trim().trim_matches('\'').replace("''", "'"))
}

pub async fn handle(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let caller = match token.map(|t| app.tokens.verify(&t, Service::Graph)) {
        Some(Ok(c)) => c,
        other => {
            // Every refused authentication is on the audit record, as for ARM.
            let reason = match &other {
                Some(Err(ciel_identity::IdentityError::TokenRejected(r))) => r.to_string(),
                _ => "Missing".to_string(),
            };
            let draft = ciel_core::audit::AuditDraft {
                actor: "anonymous".into(),
                action: "graph/authenticate".into(),
                target: format!("{} {}", req.method(), ciel_arm::clip(req.uri().path())),
                outcome: "denied".into(),
                details: json!({ "reason": reason }),
                request_id: Some(rid.to_string()),
                client_ip: peer,
                ..Default::default()
            };
            if let Err(e) = app.arm.auditor.record(draft).await {
                tracing::error!(error = %e, "could not audit a refused Graph call");
                return graph_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The request could not be recorded.",
                );
            }
            return match other {
                Some(Err(e)) => {
                    let a = e.to_arm();
                    graph_error(a.status, "InvalidAuthenticationToken", &a.message)
                }
                _ => graph_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "Access token is empty.",
                ),
            };
        }
    };
    let (parts, body) = req.into_parts();
    let segs: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let q = query_pairs(&parts.uri);
    let filter = q
        .iter()
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.clone());
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let tenant = caller.tenant_id.clone();
    let principals =
        match ciel_store::run(&app.store, move |s| s.list_principals(&tenant, None)).await {
            Ok(p) => p,
            Err(_) => {
                return graph_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "The directory could not be read.",
                )
            }
        };
    let e = &app.endpoints;
    let list = |v: Vec<&Principal>| {
        json_response(
            StatusCode::OK,
            &json!({"value": v.iter().map(|p| principal_json(e, p)).collect::<Vec<_>>()}),
        )
    };
    match (&parts.method, segs.as_slice()) {
        (&Method::GET, ["v1.0", "me"]) => me(app, &caller, &principals),
        (&Method::GET, ["v1.0", "servicePrincipals"]) => {
            let sps = principals
                .iter()
                .filter(|p| p.kind == PrincipalKindRec::ServicePrincipal);
            match filter.as_deref() {
                None => list(sps.collect()),
                Some(f) => {
                    let want = quoted_after(f, "servicePrincipalNames/any(c:c eq")
                        .or_else(|| quoted_after(f, "appId eq"))
                        .or_else(|| quoted_after(f, "displayName eq"));
                    match want {
                        Some(w) => list(
                            sps.filter(|p| {
                                p.app_id
                                    .as_deref()
                                    .map(|a| a.eq_ignore_ascii_case(&w))
                                    .unwrap_or(false)
                                    || p.display_name == w
                            })
                            .collect(),
                        ),
                        None => graph_error(
                            StatusCode::BAD_REQUEST,
                            "Request_UnsupportedQuery",
                            "This $filter is not supported.",
                        ),
                    }
                }
            }
        }
        (&Method::GET, ["v1.0", "servicePrincipals", id]) => {
            match principals.iter().find(|p| {
                p.kind == PrincipalKindRec::ServicePrincipal
                    && (p.object_id.eq_ignore_ascii_case(id)
                        || p.app_id
                            .as_deref()
                            .map(|a| a.eq_ignore_ascii_case(id))
                            .unwrap_or(false))
            }) {
                Some(p) => json_response(StatusCode::OK, &principal_json(e, p)),
                None => graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!("Resource '{}' does not exist.", ciel_arm::clip(id)),
                ),
            }
        }
        (&Method::GET, ["v1.0", "users"]) => {
            let users = principals
                .iter()
                .filter(|p| p.kind == PrincipalKindRec::User);
            match filter.as_deref() {
                None => list(users.collect()),
                Some(f) => match quoted_after(f, "userPrincipalName eq")
                    .or_else(|| quoted_after(f, "mail eq"))
                {
                    Some(w) => list(
                        users
                            .filter(|p| {
                                p.upn
                                    .as_deref()
                                    .map(|u| u.eq_ignore_ascii_case(&w))
                                    .unwrap_or(false)
                            })
                            .collect(),
                    ),
                    None => graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        "This $filter is not supported.",
                    ),
                },
            }
        }
        (&Method::GET, ["v1.0", "users", id]) => {
            match principals.iter().find(|p| {
                p.kind == PrincipalKindRec::User
                    && (p.object_id.eq_ignore_ascii_case(id)
                        || p.upn
                            .as_deref()
                            .map(|u| u.eq_ignore_ascii_case(id))
                            .unwrap_or(false))
            }) {
                Some(p) => json_response(StatusCode::OK, &principal_json(e, p)),
                None => graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!("Resource '{}' does not exist.", ciel_arm::clip(id)),
                ),
            }
        }
        (&Method::GET, ["v1.0", "groups"]) => list(vec![]),
        (&Method::POST, ["v1.0", "directoryObjects", "getByIds"]) => {
            let body = match read_body(body, 1024 * 1024).await {
                Ok(b) => b,
                Err(e) => return graph_error(e.status, "Request_BadRequest", &e.message),
            };
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        "The request body is not valid JSON.",
                    )
                }
            };
            let ids: Vec<String> = v["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(|s| s.to_ascii_lowercase()))
                .collect();
            list(
                principals
                    .iter()
                    .filter(|p| ids.contains(&p.object_id))
                    .collect(),
            )
        }
        _ => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "This Graph resource is not available in this cloud.",
        ),
    }
}

fn me(app: &App, caller: &Caller, principals: &[Principal]) -> Response {
    if caller.kind != ciel_core::PrincipalKind::User {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        );
    }
    match principals.iter().find(|p| p.object_id == caller.object_id) {
        Some(p) => json_response(StatusCode::OK, &principal_json(&app.endpoints, p)),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "The signed-in user no longer exists.",
        ),
    }
}
