//! `Ciel.Identity` on the Resource Manager host (docs/openapi/ciel.json): a user's own second
//! factor (enrol, confirm, remove, status), the tenant's MFA policy, and an Owner's reset of a
//! user's factor. Callers authenticate with an ARM token; every refusal and every change is
//! audited (changes by the store, with their record; TOTP outcomes by `Mfa`).

use super::{arm_error, json_response, read_body, App};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use ciel_core::audit::AuditDraft;
use ciel_core::{ApiError, Caller, PrincipalKind};
use ciel_identity::mfa::{MfaAttempt, MfaError};
use ciel_identity::token::MfaPolicy;
use http::{Method, Request, StatusCode};
use serde_json::json;

pub const PREFIX: &str = "/providers/Ciel.Identity/";
const BODY_LIMIT: usize = 16 * 1024;

/// The operations, by their names in docs/openapi/ciel.json.
enum Op {
    GetMfa,
    EnrollMfa,
    ConfirmMfa,
    RemoveMfa,
    GetPolicy,
    PutPolicy,
    ResetUserMfa(String),
}

fn route(method: &Method, rest: &[&str]) -> Option<Op> {
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    Some(match (method, l.as_slice()) {
        (&Method::GET, ["mfa"]) => Op::GetMfa,
        (&Method::POST, ["mfa", "enroll"]) => Op::EnrollMfa,
        (&Method::POST, ["mfa", "confirm"]) => Op::ConfirmMfa,
        (&Method::POST, ["mfa", "remove"]) => Op::RemoveMfa,
        (&Method::GET, ["mfapolicy"]) => Op::GetPolicy,
        (&Method::PUT, ["mfapolicy"]) => Op::PutPolicy,
        (&Method::POST, ["users", _, "mfa", "reset"]) => Op::ResetUserMfa(rest[1].to_string()),
        _ => return None,
    })
}

pub async fn handle(app: &App, req: Request<Body>, rid: &str, peer: Option<String>) -> Response {
    let caller = match super::arm_caller(app, &req) {
        Ok(c) => c,
        Err(e) => return arm_error(&e),
    };
    let path = req.uri().path().to_string();
    let rest: Vec<&str> = path
        .get(PREFIX.len()..)
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let Some(op) = route(req.method(), &rest) else {
        return arm_error(&ApiError::not_found(
            "NotFound",
            "No such Ciel.Identity operation (see docs/openapi/ciel.json).",
        ));
    };
    if let Err(e) = super::own_api_version(req.uri()) {
        return arm_error(&e);
    }
    let body = match read_body(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return arm_error(&e),
    };
    let json_body: serde_json::Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return arm_error(&ApiError::bad_request(
                    "InvalidRequestContent",
                    "The request body is not valid JSON.",
                ))
            }
        }
    };
    let (tokens, rid_s) = (app.tokens.clone(), rid.to_string());
    let out = tokio::task::spawn_blocking(move || {
        run(&tokens, op, &caller, &json_body, &rid_s, peer.as_deref())
    })
    .await;
    match out {
        Ok(Ok(Some(v))) => json_response(StatusCode::OK, &v),
        Ok(Ok(None)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => arm_error(&e),
        Err(_) => arm_error(&ApiError::internal()),
    }
}

fn internal<E: std::fmt::Display>(e: E) -> ApiError {
    tracing::error!(error = %e, "Ciel.Identity failed");
    ApiError::internal()
}

fn mfa_error(e: MfaError) -> ApiError {
    match e {
        MfaError::NotEnrolled => {
            ApiError::conflict("MfaNotEnrolled", "No second factor is enrolled.")
        }
        MfaError::Invalid | MfaError::Replayed => {
            ApiError::bad_request("InvalidMfaCode", "The code is wrong or was already used.")
        }
        MfaError::Locked(until) => ApiError::forbidden(
            "MfaLocked",
            format!(
                "The second factor is locked after repeated wrong codes until {until} (Unix time)."
            ),
        ),
        MfaError::Internal(m) => internal(m),
    }
}

fn code_of(body: &serde_json::Value) -> Result<String, ApiError> {
    body.get("code")
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidRequestContent",
                "The body must be {\"code\": \"123456\"}.",
            )
        })
}

fn run(
    t: &ciel_identity::token::TokenService,
    op: Op,
    caller: &Caller,
    body: &serde_json::Value,
    rid: &str,
    ip: Option<&str>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let actor = caller.display();
    let a = MfaAttempt {
        actor: &actor,
        request_id: Some(rid),
        client_ip: ip,
    };
    let deny = |action: &str,
                target: &str,
                reason: &str,
                e: ApiError|
     -> Result<Option<serde_json::Value>, ApiError> {
        t.audit(AuditDraft {
            tenant_id: Some(caller.tenant_id.clone()),
            actor: actor.clone(),
            action: format!("Ciel.Identity/{action}"),
            target: target.to_string(),
            outcome: "denied".into(),
            details: json!({"reason": reason}),
            request_id: Some(rid.to_string()),
            client_ip: ip.map(str::to_string),
        })
        .map_err(internal)?;
        Err(e)
    };
    let own = matches!(
        op,
        Op::GetMfa | Op::EnrollMfa | Op::ConfirmMfa | Op::RemoveMfa
    );
    if own && caller.kind != PrincipalKind::User {
        return deny(
            "mfa/action",
            &caller.object_id,
            "not a user",
            ApiError::bad_request(
                "UserRequired",
                "A second factor belongs to a user: call with a user's token.",
            ),
        );
    }
    let me = &caller.object_id;
    match op {
        Op::GetMfa => {
            let s = t.mfa.status(me).map_err(mfa_error)?;
            Ok(Some(
                json!({"enrolled": s.enrolled, "confirmed": s.confirmed, "lockedUntil": s.locked_until}),
            ))
        }
        Op::EnrollMfa => {
            // A confirmed factor is replaced only after its removal with a current code: a stolen
            // token alone cannot swap the victim's factor for the thief's.
            if t.mfa.is_required(me).map_err(mfa_error)? {
                return deny(
                    "mfa/enroll/action",
                    me,
                    "a confirmed factor exists",
                    ApiError::conflict(
                        "MfaAlreadyEnrolled",
                        "A confirmed second factor exists: remove it with a current code first.",
                    ),
                );
            }
            let upn = caller.upn.clone().unwrap_or_default();
            let e = t
                .mfa
                .enroll(me, Some(&caller.tenant_id), &upn, &a)
                .map_err(mfa_error)?;
            Ok(Some(
                json!({"secret": e.secret, "otpauthUri": e.otpauth_uri, "digits": e.digits,
                "period": e.period, "algorithm": e.algorithm, "confirmed": false}),
            ))
        }
        Op::ConfirmMfa => {
            let code = code_of(body)?;
            t.mfa.verify(me, &code, &a).map_err(mfa_error)?;
            Ok(Some(
                json!({"enrolled": true, "confirmed": true, "lockedUntil": null}),
            ))
        }
        Op::RemoveMfa => {
            let code = code_of(body)?;
            let s = t.mfa.status(me).map_err(mfa_error)?;
            if s.confirmed {
                t.mfa.verify(me, &code, &a).map_err(mfa_error)?;
            }
            t.mfa.reset(me, &a).map_err(mfa_error)?;
            Ok(None)
        }
        Op::GetPolicy => {
            let p = t.mfa_policy(&caller.tenant_id).map_err(internal)?;
            Ok(Some(
                json!({"tenantId": caller.tenant_id, "requireMfa": p.as_str()}),
            ))
        }
        Op::PutPolicy => {
            let Some(p) = body
                .get("requireMfa")
                .and_then(|v| v.as_str())
                .and_then(MfaPolicy::parse)
            else {
                return Err(ApiError::bad_request(
                    "InvalidRequestContent",
                    "The body must be {\"requireMfa\": \"off\" | \"admins\" | \"all\"}.",
                ));
            };
            if !is_tenant_owner(t, caller)? {
                return deny(
                    "mfaPolicy/write",
                    &caller.tenant_id,
                    "not an Owner of the tenant",
                    forbidden(caller, "Ciel.Identity/mfaPolicy/write"),
                );
            }
            crate::mfa_cli::set_policy(
                t.store().as_ref(),
                &caller.tenant_id,
                p,
                &actor,
                Some(rid.to_string()),
                ip.map(str::to_string),
            )
            .map_err(internal)?;
            Ok(Some(
                json!({"tenantId": caller.tenant_id, "requireMfa": p.as_str()}),
            ))
        }
        Op::ResetUserMfa(oid) => {
            if !is_tenant_owner(t, caller)? {
                return deny(
                    "users/mfa/reset/action",
                    &oid,
                    "not an Owner of the tenant",
                    forbidden(caller, "Ciel.Identity/users/mfa/reset/action"),
                );
            }
            // Another tenant's user answers exactly as an absent one.
            let target = t
                .store()
                .get_principal(&oid)
                .ok()
                .filter(|p| p.tenant_id.eq_ignore_ascii_case(&caller.tenant_id));
            if target.is_none() {
                return Err(ApiError::not_found(
                    "UserNotFound",
                    "The user does not exist in this tenant.",
                ));
            }
            match t.mfa.reset(&oid, &a) {
                Ok(()) => Ok(None),
                Err(e) => Err(mfa_error(e)),
            }
        }
    }
}

fn forbidden(caller: &Caller, action: &str) -> ApiError {
    ApiError::forbidden(
        "AuthorizationFailed",
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{action}': it needs the Owner role on a subscription of the tenant.",
            caller.display(),
            caller.object_id
        ),
    )
}

/// An Owner at the root or of a whole subscription of the caller's tenant.
fn is_tenant_owner(
    t: &ciel_identity::token::TokenService,
    caller: &Caller,
) -> Result<bool, ApiError> {
    let ras = t
        .store()
        .list_role_assignments_for_principal(&caller.object_id)
        .map_err(internal)?;
    Ok(ras.iter().any(|a| {
        let segs: Vec<&str> = a.scope.split('/').filter(|s| !s.is_empty()).collect();
        a.tenant_id.eq_ignore_ascii_case(&caller.tenant_id)
            && ciel_identity::rbac::role_guid(&a.role_definition_id) == ciel_identity::rbac::OWNER
            && (segs.is_empty()
                || (segs.len() == 2 && segs[0].eq_ignore_ascii_case("subscriptions")))
    }))
}
