//! `Microsoft.Authorization/policySetDefinitions` (initiatives): custom sets at subscription
//! scope. There are no built-in sets in this cloud; the tenant-root listing is empty.

use super::{api_check, definitions, name_ok, refuse, rule, PolicyKind};
use crate::error::ArmResult;
use crate::{clip, method_not_allowed, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use ciel_store::{Found, PolicyObject};
use http::{Method, StatusCode};
use serde_json::{json, Value};

const READ: &str = "Microsoft.Authorization/policySetDefinitions/read";
const WRITE: &str = "Microsoft.Authorization/policySetDefinitions/write";
const DELETE: &str = "Microsoft.Authorization/policySetDefinitions/delete";

pub fn custom_id(sub: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/providers/Microsoft.Authorization/policySetDefinitions/{name}")
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "PolicySetDefinitionNotFound",
        format!(
            "The policy set definition '{}' could not be found.",
            clip(name)
        ),
    )
}

pub async fn dispatch(
    ctx: &Ctx<'_>,
    scope: Option<&ResourceId>,
    rest: &[&str],
) -> ArmResult<ArmResponse> {
    api_check(ctx)?;
    let m = &ctx.req.method;
    let Some(s) = scope else {
        return match rest {
            [] if m == Method::GET => Ok(ArmResponse::json(StatusCode::OK, json!({"value": []}))),
            [name] if m == Method::GET => Err(not_found(name).into()),
            _ => Err(method_not_allowed()),
        };
    };
    if s.resource_group.is_some() || !s.segments.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidPolicySetDefinitionScope",
            "Policy set definitions are defined at subscription scope in this cloud (management groups do not exist here).",
        )
        .into());
    }
    let sub = s.subscription.as_str();
    match rest {
        [] if m == Method::GET => {
            ctx.authorize(s, READ).await?;
            let tenant = ctx.caller.tenant_id.clone();
            let all = ciel_store::run(&ctx.arm.store, move |st| {
                st.policy_list(&tenant, PolicyKind::SetDefinitions.as_str())
            })
            .await?;
            let key = s.key();
            let value: Vec<Value> = all
                .into_iter()
                .filter(|o| o.scope == key)
                .map(|o| o.body)
                .collect();
            Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
        }
        [name] if m == Method::GET => {
            ctx.authorize(s, READ).await?;
            let o = load(ctx, sub, name).await?.ok_or_else(|| not_found(name))?;
            Ok(ArmResponse::json(StatusCode::OK, o.body))
        }
        [name] if m == Method::PUT => put(ctx, s, name).await,
        [name] if m == Method::DELETE => {
            ctx.authorize(s, DELETE).await?;
            let Some(o) = load(ctx, sub, name).await? else {
                return Ok(ArmResponse::empty(StatusCode::NO_CONTENT));
            };
            super::ensure_unused(ctx, &o.id, DELETE).await?;
            let draft = ctx.draft(DELETE, &o.id, "success", json!({}));
            let id = o.id.clone();
            ciel_store::run(&ctx.arm.store, move |st| st.policy_delete(&id, &draft)).await?;
            Ok(ArmResponse::empty(StatusCode::OK))
        }
        _ => Err(method_not_allowed()),
    }
}

async fn load(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<Option<PolicyObject>> {
    let id = custom_id(sub, name);
    let tenant = ctx.caller.tenant_id.clone();
    let found = ciel_store::run(&ctx.arm.store, move |s| s.policy_get(&id).found()).await?;
    Ok(found.filter(|o| o.tenant_id == tenant && o.kind == PolicyKind::SetDefinitions.as_str()))
}

async fn put(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, WRITE).await?;
    let sub = scope.subscription.clone();
    name_ok(name, 128, "policy set definition")?;
    let id = custom_id(&sub, name);
    let body = ctx.req.json()?;
    let mut props = body
        .get("properties")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidRequestContent",
                "The policy set definition must have a 'properties' object.",
            )
        })?;
    let declared = match definitions::declarations(props.get("parameters")) {
        Ok(d) => d,
        Err(e) => return refuse(ctx, WRITE, &id, ApiError::bad_request(e.code, e.message)).await,
    };
    let members = match props.get("policyDefinitions").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => {
            return refuse(
                ctx,
                WRITE,
                &id,
                ApiError::bad_request(
                    "InvalidPolicySetDefinition",
                    "A policy set definition needs a non-empty 'policyDefinitions' array.",
                ),
            )
            .await
        }
    };
    // Every member must exist, and its parameters must be given (or defaulted) by names it declares.
    let tenant = ctx.caller.tenant_id.clone();
    let ids: Vec<String> = members
        .iter()
        .map(|m| {
            m.get("policyDefinitionId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let defs = ciel_store::run(&ctx.arm.store, move |s| {
        ids.iter()
            .map(|i| super::definition_by_id(s, &tenant, i))
            .collect::<ciel_store::Result<Vec<_>>>()
    })
    .await?;
    let mut fixed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, (m, d)) in members.iter().zip(defs).enumerate() {
        let mid = m
            .get("policyDefinitionId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some((PolicyKind::Definitions, def)) = d else {
            return refuse(
                ctx,
                WRITE,
                &id,
                ApiError::bad_request(
                    "PolicyDefinitionNotFound",
                    format!("The policy definition '{}' could not be found.", clip(mid)),
                ),
            )
            .await;
        };
        let ddecl = match definitions::declarations(def.pointer("/properties/parameters")) {
            Ok(d) => d,
            Err(e) => {
                return refuse(ctx, WRITE, &id, ApiError::bad_request(e.code, e.message)).await
            }
        };
        let given = m
            .get("parameters")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in &given {
            let problem = if !ddecl.contains_key(&k.to_ascii_lowercase()) {
                Some(rule::RuleError {
                    code: "UndefinedPolicyParameter",
                    message: format!(
                        "The parameter '{}' is not defined in the policy definition '{}'.",
                        clip(k),
                        clip(mid)
                    ),
                })
            } else if let Some(Value::String(x)) = v.get("value") {
                rule::parse_expr(x, &declared).err()
            } else if v.get("value").is_none() {
                Some(rule::RuleError {
                    code: "InvalidPolicyParameters",
                    message: format!(
                        "The parameter '{}' must be given as {{\"value\": ...}}.",
                        clip(k)
                    ),
                })
            } else {
                None
            };
            if let Some(e) = problem {
                return refuse(ctx, WRITE, &id, ApiError::bad_request(e.code, e.message)).await;
            }
        }
        for (pname, pdecl) in &ddecl {
            if pdecl.get("defaultValue").is_none()
                && !given.keys().any(|k| k.eq_ignore_ascii_case(pname))
            {
                return refuse(
                    ctx,
                    WRITE,
                    &id,
                    ApiError::bad_request(
                        "MissingPolicyParameter",
                        format!(
                            "The policy parameter '{pname}' of '{}' has no value in the set.",
                            clip(mid)
                        ),
                    ),
                )
                .await;
            }
        }
        let mut m2 = m.clone();
        let rid = m
            .get("policyDefinitionReferenceId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}_{}", def["name"].as_str().unwrap_or("policy"), i + 1));
        if !seen.insert(rid.to_ascii_lowercase()) {
            return refuse(
                ctx,
                WRITE,
                &id,
                ApiError::bad_request(
                    "InvalidPolicySetDefinition",
                    format!(
                        "The policyDefinitionReferenceId '{}' is used twice.",
                        clip(&rid)
                    ),
                ),
            )
            .await;
        }
        m2["policyDefinitionReferenceId"] = json!(rid);
        // Keep the definition's canonical id.
        m2["policyDefinitionId"] = def["id"].clone();
        fixed.push(m2);
    }
    props["policyDefinitions"] = Value::Array(fixed);
    let existing = load(ctx, &sub, name).await?;
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
    let out = json!({
        "id": custom_id(&sub, &stored_name),
        "type": "Microsoft.Authorization/policySetDefinitions",
        "name": stored_name,
        "properties": {
            "policyType": "Custom",
            "displayName": props.get("displayName"),
            "description": props.get("description"),
            "metadata": metadata,
            "parameters": props.get("parameters").cloned().unwrap_or_else(|| json!({})),
            "policyDefinitions": props["policyDefinitions"],
            "policyDefinitionGroups": props.get("policyDefinitionGroups").cloned().unwrap_or_else(|| json!([])),
        },
        "systemData": super::system_data(ctx, created, now),
    });
    let obj = PolicyObject {
        id: custom_id(&sub, &stored_name),
        tenant_id: ctx.caller.tenant_id.clone(),
        kind: PolicyKind::SetDefinitions.as_str().into(),
        scope: ResourceId::subscription(&sub).to_string(),
        name: stored_name,
        body: out.clone(),
        created,
        changed: now,
    };
    let draft = ctx.draft(
        WRITE,
        &obj.id,
        "success",
        json!({"members": out["properties"]["policyDefinitions"].as_array().map(Vec::len)}),
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
