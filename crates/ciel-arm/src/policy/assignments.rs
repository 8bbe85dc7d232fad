//! `Microsoft.Authorization/policyAssignments` at subscription, resource-group or resource
//! scope: create (parameters, notScopes, enforcementMode, nonComplianceMessages checked before
//! anything is stored), get, list (`atScope()`, `atExactScope()`, `atScopeAndBelow()`,
//! `policyDefinitionId eq '…'`), delete.

use super::{name_ok, refuse, units_for, PolicyKind};
use crate::error::ArmResult;
use crate::{clip, method_not_allowed, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use ciel_store::{Found, PolicyObject};
use http::{Method, StatusCode};
use serde_json::{json, Value};

const READ: &str = "Microsoft.Authorization/policyAssignments/read";
const WRITE: &str = "Microsoft.Authorization/policyAssignments/write";
const DELETE: &str = "Microsoft.Authorization/policyAssignments/delete";

pub fn id_at(scope: &ResourceId, name: &str) -> String {
    format!("{scope}/providers/Microsoft.Authorization/policyAssignments/{name}")
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "PolicyAssignmentNotFound",
        format!("The policy assignment '{}' is not found.", clip(name)),
    )
}

pub async fn dispatch(ctx: &Ctx<'_>, scope: &ResourceId, rest: &[&str]) -> ArmResult<ArmResponse> {
    super::api_check(ctx)?;
    let m = &ctx.req.method;
    match rest {
        [] if m == Method::GET => list(ctx, scope).await,
        [name] if m == Method::GET => {
            ctx.authorize(scope, READ).await?;
            let o = load(ctx, scope, name)
                .await?
                .ok_or_else(|| not_found(name))?;
            Ok(ArmResponse::json(StatusCode::OK, o.body))
        }
        [name] if m == Method::PUT => put(ctx, scope, name).await,
        [name] if m == Method::DELETE => {
            ctx.authorize(scope, DELETE).await?;
            let Some(o) = load(ctx, scope, name).await? else {
                return Ok(ArmResponse::empty(StatusCode::NO_CONTENT));
            };
            let draft = ctx.draft(
                DELETE,
                &o.id,
                "success",
                json!({"policyDefinitionId": o.body.pointer("/properties/policyDefinitionId")}),
            );
            let id = o.id.clone();
            ciel_store::run(&ctx.arm.store, move |s| s.policy_delete(&id, &draft)).await?;
            Ok(ArmResponse::json(StatusCode::OK, o.body))
        }
        _ => Err(method_not_allowed()),
    }
}

async fn load(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<Option<PolicyObject>> {
    let id = id_at(scope, name);
    let tenant = ctx.caller.tenant_id.clone();
    let found = ciel_store::run(&ctx.arm.store, move |s| s.policy_get(&id).found()).await?;
    Ok(found.filter(|o| o.tenant_id == tenant && o.kind == PolicyKind::Assignments.as_str()))
}

async fn list(ctx: &Ctx<'_>, scope: &ResourceId) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, READ).await?;
    let key = scope.key();
    let filter = ctx.req.q("$filter").map(str::trim).unwrap_or("");
    let below = |s: &str| s == key || s.starts_with(&format!("{key}/"));
    let above = |s: &str| s == key || key.starts_with(&format!("{s}/"));
    let f = filter.to_ascii_lowercase();
    let by_def =
        super::eq_clause(filter).filter(|(k, _)| k.eq_ignore_ascii_case("policyDefinitionId"));
    let keep: Box<dyn Fn(&PolicyObject) -> bool + Send> = match f.as_str() {
        "" => Box::new(move |o| above(&o.scope) || below(&o.scope)),
        "atscope()" => Box::new(move |o| above(&o.scope)),
        "atexactscope()" => Box::new(move |o| o.scope == key),
        "atscopeandbelow()" => Box::new(move |o| above(&o.scope) || below(&o.scope)),
        _ => match by_def {
            Some((_, d)) => Box::new(move |o| {
                (above(&o.scope) || below(&o.scope))
                    && o.body
                        .pointer("/properties/policyDefinitionId")
                        .and_then(Value::as_str)
                        .is_some_and(|x| x.eq_ignore_ascii_case(&d))
            }),
            None => {
                return Err(ApiError::bad_request(
                    "InvalidFilterInQueryString",
                    format!(
                        "The $filter '{}' is not supported: use atScope(), atExactScope(), atScopeAndBelow() or policyDefinitionId eq '<id>'.",
                        clip(filter)
                    ),
                )
                .into())
            }
        },
    };
    let tenant = ctx.caller.tenant_id.clone();
    let all = ciel_store::run(&ctx.arm.store, move |s| {
        s.policy_list(&tenant, PolicyKind::Assignments.as_str())
    })
    .await?;
    let value: Vec<Value> = all
        .into_iter()
        .filter(|o| keep(o))
        .map(|o| o.body)
        .collect();
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}

async fn put(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, WRITE).await?;
    name_ok(name, 64, "policy assignment")?;
    let id = id_at(scope, name);
    let body = ctx.req.json()?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidRequestContent",
                "The policy assignment must have a 'properties' object.",
            )
        })?;
    let bad = |code: &str, m: String| ApiError::bad_request(code, m);
    let Some(def_id) = props
        .get("policyDefinitionId")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return refuse(
            ctx,
            WRITE,
            &id,
            bad(
                "InvalidCreatePolicyAssignmentRequest",
                "The policy assignment needs 'properties.policyDefinitionId'.".into(),
            ),
        )
        .await;
    };
    if def_id
        .to_ascii_lowercase()
        .contains("/microsoft.management/managementgroups/")
    {
        return Err(super::management_groups());
    }
    // A custom definition is visible only within its own subscription.
    let def_sub_ok = match ResourceId::parse(&def_id) {
        Some(d) => d.subscription.eq_ignore_ascii_case(&scope.subscription),
        None => true,
    };
    let tenant = ctx.caller.tenant_id.clone();
    let (did, given) = (def_id.clone(), props.get("parameters").cloned());
    let checked = ciel_store::run(&ctx.arm.store, move |s| {
        let Some((kind, def)) = super::definition_by_id(s, &tenant, &did)? else {
            return Ok(Err(None));
        };
        Ok(match units_for(s, &tenant, kind, &def, given.as_ref()) {
            Ok(_) => Ok(def),
            Err(e) => Err(Some(e)),
        })
    })
    .await?;
    let def = match (checked, def_sub_ok) {
        (Ok(d), true) => d,
        (Err(None), _) | (Ok(_), false) => {
            return refuse(
                ctx,
                WRITE,
                &id,
                ApiError::not_found(
                    "PolicyDefinitionNotFound",
                    format!(
                        "The policy definition '{}' could not be found.",
                        clip(&def_id)
                    ),
                ),
            )
            .await
        }
        (Err(Some(e)), _) => return refuse(ctx, WRITE, &id, bad(e.code, e.message)).await,
    };
    let mode = props
        .get("enforcementMode")
        .and_then(Value::as_str)
        .unwrap_or("Default");
    let mode = if mode.eq_ignore_ascii_case("Default") {
        "Default"
    } else if mode.eq_ignore_ascii_case("DoNotEnforce") {
        "DoNotEnforce"
    } else {
        return refuse(
            ctx,
            WRITE,
            &id,
            bad(
                "InvalidEnforcementMode",
                format!(
                    "The enforcement mode '{}' is not valid (Default, DoNotEnforce).",
                    clip(mode)
                ),
            ),
        )
        .await;
    };
    let mut not_scopes = Vec::new();
    if let Some(n) = props.get("notScopes").filter(|n| !n.is_null()) {
        let Some(list) = n.as_array() else {
            return refuse(
                ctx,
                WRITE,
                &id,
                bad(
                    "InvalidNotScopes",
                    "'notScopes' must be an array of resource ids.".into(),
                ),
            )
            .await;
        };
        for s in list {
            match s.as_str().and_then(ResourceId::parse) {
                Some(r) => not_scopes.push(json!(r.to_string())),
                None if s
                    .as_str()
                    .is_some_and(|x| x.to_ascii_lowercase().contains("/microsoft.management/")) =>
                {
                    return Err(super::management_groups());
                }
                None => {
                    return refuse(
                        ctx,
                        WRITE,
                        &id,
                        bad(
                            "InvalidNotScopes",
                            format!(
                                "The excluded scope '{}' is not a resource id.",
                                clip(&s.to_string())
                            ),
                        ),
                    )
                    .await;
                }
            }
        }
    }
    if let Some(msgs) = props.get("nonComplianceMessages").filter(|n| !n.is_null()) {
        let ok = msgs.as_array().is_some_and(|a| {
            a.iter().all(|m| {
                m.get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty() && s.len() <= 1024)
            })
        });
        if !ok {
            return refuse(ctx, WRITE, &id, bad("InvalidNonComplianceMessages", "'nonComplianceMessages' must be an array of {\"message\": text (1 to 1024 characters), \"policyDefinitionReferenceId\"?}.".into())).await;
        }
    }
    let existing = load(ctx, scope, name).await?;
    let now = ciel_core::time::now_unix();
    let created = existing.as_ref().map(|o| o.created).unwrap_or(now);
    let stored_name = existing
        .as_ref()
        .map(|o| o.name.clone())
        .unwrap_or_else(|| name.to_string());
    let mut metadata = props
        .get("metadata")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    super::stamp(&mut metadata, ctx, existing.as_ref().map(|o| &o.body), now);
    let mut out = json!({
        "id": id_at(scope, &stored_name),
        "type": "Microsoft.Authorization/policyAssignments",
        "name": stored_name,
        "properties": {
            "displayName": props.get("displayName"),
            "description": props.get("description"),
            "metadata": metadata,
            "policyDefinitionId": def["id"],
            "scope": scope.to_string(),
            "notScopes": not_scopes,
            "parameters": props.get("parameters").cloned().filter(|p| !p.is_null()).unwrap_or_else(|| json!({})),
            "enforcementMode": mode,
            "nonComplianceMessages": props.get("nonComplianceMessages").cloned().filter(|p| !p.is_null()).unwrap_or_else(|| json!([])),
            "assignmentType": "Custom",
        },
        "systemData": super::system_data(ctx, created, now),
    });
    if let Some(l) = body.get("location").and_then(Value::as_str) {
        out["location"] = json!(l);
    }
    let obj = PolicyObject {
        id: id_at(scope, &stored_name),
        tenant_id: ctx.caller.tenant_id.clone(),
        kind: PolicyKind::Assignments.as_str().into(),
        scope: scope.to_string(),
        name: stored_name,
        body: out.clone(),
        created,
        changed: now,
    };
    let draft = ctx.draft(
        WRITE,
        &obj.id,
        "success",
        json!({"policyDefinitionId": def["id"], "enforcementMode": mode, "notScopes": out["properties"]["notScopes"]}),
    );
    let was_created = ciel_store::run(&ctx.arm.store, move |s| s.policy_put(&obj, &draft)).await?;
    Ok(ArmResponse::json(
        if was_created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        out,
    ))
}
