//! `Microsoft.CustomerLockbox` (api-version 2018-02-28-preview): the tenant's side of operator
//! access. A tenant lists the requests operators filed for its subscriptions, reads one, and
//! decides with `POST .../requests/{id}/updateApproval` (`{"status": "Approve"|"Deny"|"Revoke",
//! "reason": ...}`), as `az rest` sends it. The router has already authenticated a tenant token
//! (operator tokens are never accepted here) and authorized `.../requests/read` or
//! `.../requests/updateApproval/action` by RBAC, so a Reader lists but cannot decide.

use crate::error::ArmResult;
use crate::provider::{ProviderRequest, ProviderResponse, ResourceProvider, ResourceTypeInfo};
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_identity::lockbox::{status_at, API_VERSION};
use ciel_store::{Found, LockboxRequestRec, Store};
use http::{Method, StatusCode};
use serde_json::{json, Value};

pub const NAMESPACE: &str = "Microsoft.CustomerLockbox";

pub struct CustomerLockboxProvider {
    pub store: Store,
}

pub fn request_id_path(r: &LockboxRequestRec) -> String {
    format!(
        "/subscriptions/{}/providers/{NAMESPACE}/requests/{}",
        r.subscription_id, r.id
    )
}

/// The request in Azure's `LockboxRequestResponse` shape, with Ciel's additions (`accessTypes`,
/// `scope`, `requestor`, `breakGlass`, `durationSeconds`, the decision) under `properties`.
pub fn request_json(r: &LockboxRequestRec, now: i64) -> Value {
    let rfc = ciel_core::time::unix_to_rfc3339;
    json!({
        "id": request_id_path(r),
        "name": r.id,
        "type": format!("{NAMESPACE}/requests"),
        "properties": {
            "requestId": r.id,
            "justification": r.justification,
            "status": status_at(r, now),
            "createdDateTime": rfc(r.created),
            "expirationDateTime": rfc(r.expires),
            // Azure gives hours; a shorter grant rounds up to one.
            "duration": (r.duration_secs + 3599) / 3600,
            "durationSeconds": r.duration_secs,
            "resourceType": ResourceId::parse(&r.scope).and_then(|i| i.resource_type()).unwrap_or_else(|| "Microsoft.Resources/subscriptions".into()),
            "requestedResourceIds": [r.scope],
            "subscriptionId": r.subscription_id,
            "supportRequest": r.incident,
            "accessTypes": r.access,
            "requestor": format!("operator:{}", r.operator),
            "breakGlass": r.break_glass,
            "decision": r.decided.map(|t| json!({
                "by": r.decided_by, "at": rfc(t), "reason": r.decision_reason,
            })),
        }
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "LockboxRequestNotFound",
        format!(
            "The Lockbox request '{}' was not found in this subscription.",
            crate::clip(id)
        ),
    )
}

impl CustomerLockboxProvider {
    /// The request if it belongs to the caller's tenant and to this subscription; anything else
    /// does not exist for the caller.
    async fn load(&self, req: &ProviderRequest, id: &str) -> ArmResult<LockboxRequestRec> {
        let key = id.to_string();
        let found =
            ciel_store::run(&self.store, move |s| s.get_lockbox_request(&key).found()).await?;
        match found {
            Some(r)
                if r.tenant_id == req.caller.tenant_id
                    && r.subscription_id.eq_ignore_ascii_case(&req.id.subscription) =>
            {
                Ok(r)
            }
            _ => Err(not_found(id).into()),
        }
    }

    async fn update_approval(
        &self,
        req: &ProviderRequest,
        id: &str,
    ) -> ArmResult<ProviderResponse> {
        let body = req.json()?;
        let decision = body
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let reason = body.get("reason").and_then(|s| s.as_str()).map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect::<String>()
        });
        let r = self.load(req, id).await?;
        let now = ciel_core::time::now_unix();
        let current = status_at(&r, now).to_string();
        let (from, to) = match decision.as_str() {
            "approve" | "approved" => ("Pending", "Approved"),
            "deny" | "denied" => ("Pending", "Denied"),
            "revoke" | "revoked" => ("Approved", "Revoked"),
            _ => {
                return Err(ApiError::bad_request(
                    "InvalidRequestContent",
                    "'status' must be 'Approve', 'Deny' or 'Revoke'.",
                )
                .into())
            }
        };
        if current != from {
            return Err(ApiError::conflict(
                "LockboxRequestStateConflict",
                format!("The Lockbox request is {current}: only a {from} request can become {to}."),
            )
            .into());
        }
        let mut next = r.clone();
        next.status = to.into();
        next.decided = Some(now);
        next.decided_by = Some(req.caller.display());
        next.decision_reason = reason.clone();
        next.expires = match to {
            // The access window starts when the tenant approves.
            "Approved" => now + r.duration_secs,
            "Revoked" => now,
            _ => r.expires,
        };
        let mut d = req.draft(
            &format!("{NAMESPACE}/requests/updateApproval/action"),
            &request_id_path(&r),
            json!({"lockboxRequestId": r.id, "decision": to, "operator": r.operator,
                   "scope": r.scope, "accessTypes": r.access, "reason": reason}),
        );
        d.outcome = "success".into();
        let n = next.clone();
        let won =
            ciel_store::run(&self.store, move |s| s.decide_lockbox_request(&n, from, &d)).await?;
        if !won {
            return Err(ApiError::conflict(
                "LockboxRequestStateConflict",
                "The Lockbox request was decided by someone else at the same moment.",
            )
            .into());
        }
        Ok(ProviderResponse::Done {
            status: StatusCode::OK,
            body: Some(json!({"status": to, "reason": reason})),
        })
    }
}

#[async_trait::async_trait]
impl ResourceProvider for CustomerLockboxProvider {
    fn namespace(&self) -> &'static str {
        NAMESPACE
    }

    fn resource_types(&self) -> Vec<ResourceTypeInfo> {
        vec![ResourceTypeInfo {
            resource_type: "requests".into(),
            api_versions: vec![API_VERSION.into()],
            located: false,
        }]
    }

    async fn handle(&self, req: ProviderRequest) -> ArmResult<ProviderResponse> {
        // Requests live at the subscription only (Azure's shape).
        if req.id.resource_group.is_some() {
            return Err(ApiError::bad_request(
                "InvalidResourceType",
                "Lockbox requests are listed per subscription: /subscriptions/{id}/providers/Microsoft.CustomerLockbox/requests.",
            )
            .into());
        }
        let named = req.id.segments.first().map(|(_, n)| n.clone());
        match (&req.method, named, req.action.as_deref(), req.collection_type.is_some()) {
            (&Method::GET, None, None, true) => {
                let tenant = req.caller.tenant_id.clone();
                let sub = req.id.subscription.clone();
                let all = ciel_store::run(&self.store, move |s| {
                    s.list_lockbox_requests(Some(&tenant))
                })
                .await?;
                let now = ciel_core::time::now_unix();
                let value: Vec<Value> = all
                    .iter()
                    .filter(|r| r.subscription_id.eq_ignore_ascii_case(&sub))
                    .map(|r| request_json(r, now))
                    .collect();
                Ok(ProviderResponse::Done {
                    status: StatusCode::OK,
                    body: Some(json!({ "value": value })),
                })
            }
            (&Method::GET, Some(id), None, false) => {
                let r = self.load(&req, &id).await?;
                Ok(ProviderResponse::Done {
                    status: StatusCode::OK,
                    body: Some(request_json(&r, ciel_core::time::now_unix())),
                })
            }
            (&Method::POST, Some(id), Some(a), false) if a.eq_ignore_ascii_case("updateApproval") => {
                self.update_approval(&req, &id).await
            }
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "FeatureNotSupported",
                "Lockbox requests are filed by operators (Ciel.Operator) and decided with updateApproval; this operation is not supported.",
            )
            .into()),
        }
    }

    async fn delete_for_group(&self, _id: &ResourceId, _caller: &Caller) -> ArmResult<()> {
        Ok(())
    }
}
