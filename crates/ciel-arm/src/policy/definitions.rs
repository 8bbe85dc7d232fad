//! `Microsoft.Authorization/policyDefinitions`: the built-ins (tenant root and subscription
//! listings) and custom definitions at subscription scope (create_or_update, get, list, delete).

use super::rule::{self, Declared, Rule, RuleError};
use super::{api_check, builtin, name_ok, refuse, PolicyKind};
use crate::error::ArmResult;
use crate::{clip, method_not_allowed, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use ciel_store::{Found, PolicyObject};
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

const READ: &str = "Microsoft.Authorization/policyDefinitions/read";
const WRITE: &str = "Microsoft.Authorization/policyDefinitions/write";
const DELETE: &str = "Microsoft.Authorization/policyDefinitions/delete";

/// A definition ready to evaluate.
pub struct Compiled {
    pub indexed: bool,
    pub declared: Declared,
    pub rule: Rule,
}

const PARAM_TYPES: &[&str] = &[
    "String", "Array", "Object", "Boolean", "Integer", "Float", "DateTime",
];

/// Checks a parameter value against its declared type.
pub fn type_ok(ty: &str, v: &Value) -> bool {
    match ty.to_ascii_lowercase().as_str() {
        "string" | "datetime" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "float" => v.is_number(),
        _ => false,
    }
}

/// Parameter declarations: names lower-cased, each with a known type, a default of that type,
/// and allowedValues as an array.
pub fn declarations(params: Option<&Value>) -> Result<Declared, RuleError> {
    let mut out = Map::new();
    let Some(p) = params.filter(|p| !p.is_null()) else {
        return Ok(out);
    };
    let obj = p.as_object().ok_or_else(|| RuleError {
        code: "InvalidPolicyParameters",
        message: "'parameters' must be an object of parameter declarations.".into(),
    })?;
    for (name, decl) in obj {
        let err = |m: String| RuleError {
            code: "InvalidPolicyParameters",
            message: m,
        };
        let ty = decl
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| PARAM_TYPES.iter().any(|x| x.eq_ignore_ascii_case(t)))
            .ok_or_else(|| {
                err(format!(
                    "The parameter '{}' must have a 'type' among {}.",
                    clip(name),
                    PARAM_TYPES.join(", ")
                ))
            })?;
        if let Some(d) = decl.get("defaultValue") {
            if !type_ok(ty, d) {
                return Err(err(format!(
                    "The default value of the parameter '{}' is not of type '{ty}'.",
                    clip(name)
                )));
            }
        }
        if let Some(a) = decl.get("allowedValues") {
            if !a.is_array() {
                return Err(err(format!(
                    "The allowedValues of the parameter '{}' must be an array.",
                    clip(name)
                )));
            }
        }
        if out
            .insert(name.to_ascii_lowercase(), decl.clone())
            .is_some()
        {
            return Err(err(format!(
                "The parameter '{}' is declared twice.",
                clip(name)
            )));
        }
    }
    Ok(out)
}

/// Everything a definition's `properties` must satisfy before it is stored.
pub fn compile(props: &Value) -> Result<Compiled, RuleError> {
    let mode = props
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("Indexed");
    let indexed = match mode.to_ascii_lowercase().as_str() {
        "indexed" => true,
        "all" => false,
        _ => {
            return Err(RuleError {
                code: "InvalidPolicyMode",
                message: format!(
                    "The policy mode '{}' is not supported (supported: All, Indexed).",
                    clip(mode)
                ),
            })
        }
    };
    let declared = declarations(props.get("parameters"))?;
    let rule_v = props.get("policyRule").ok_or_else(|| RuleError {
        code: "InvalidPolicyRule",
        message: "The policy definition has no 'policyRule'.".into(),
    })?;
    let rule = rule::parse_rule(rule_v, &declared)?;
    Ok(Compiled {
        indexed,
        declared,
        rule,
    })
}

pub fn custom_id(sub: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/providers/Microsoft.Authorization/policyDefinitions/{name}")
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "PolicyDefinitionNotFound",
        format!("The policy definition '{}' could not be found.", clip(name)),
    )
}

pub async fn dispatch(
    ctx: &Ctx<'_>,
    scope: Option<&ResourceId>,
    rest: &[&str],
) -> ArmResult<ArmResponse> {
    api_check(ctx)?;
    let m = &ctx.req.method;
    match scope {
        // Tenant root: the built-ins, read-only.
        None => match rest {
            [] if m == Method::GET => Ok(list_json(ctx, vec![], true)?),
            [name] if m == Method::GET => builtin::find(name)
                .map(|b| ArmResponse::json(StatusCode::OK, builtin::to_json(b)))
                .ok_or_else(|| not_found(name).into()),
            [name] if m == Method::PUT || m == Method::DELETE => Err(read_only(name)),
            _ => Err(method_not_allowed()),
        },
        Some(s) => {
            if s.resource_group.is_some() || !s.segments.is_empty() {
                return Err(ApiError::bad_request(
                    "InvalidPolicyDefinitionScope",
                    "Policy definitions are defined at subscription scope in this cloud (management groups do not exist here).",
                )
                .into());
            }
            let sub = s.subscription.as_str();
            match rest {
                [] if m == Method::GET => {
                    ctx.authorize(s, READ).await?;
                    let custom = list_custom(ctx, sub).await?;
                    list_json(ctx, custom, true)
                }
                [name] if m == Method::GET => {
                    ctx.authorize(s, READ).await?;
                    let o = load(ctx, sub, name).await?.ok_or_else(|| not_found(name))?;
                    Ok(ArmResponse::json(StatusCode::OK, o.body))
                }
                [name] if m == Method::PUT => put(ctx, s, name).await,
                [name] if m == Method::DELETE => delete(ctx, s, name).await,
                _ => Err(method_not_allowed()),
            }
        }
    }
}

fn read_only(name: &str) -> crate::error::ArmError {
    ApiError::bad_request(
        "PolicyDefinitionReadOnly",
        format!(
            "The policy definition '{}' is built in and cannot be changed or deleted.",
            clip(name)
        ),
    )
    .into()
}

pub async fn load(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<Option<PolicyObject>> {
    let id = custom_id(sub, name);
    let tenant = ctx.caller.tenant_id.clone();
    let found = ciel_store::run(&ctx.arm.store, move |s| s.policy_get(&id).found()).await?;
    Ok(found.filter(|o| o.tenant_id == tenant && o.kind == PolicyKind::Definitions.as_str()))
}

async fn list_custom(ctx: &Ctx<'_>, sub: &str) -> ArmResult<Vec<Value>> {
    let tenant = ctx.caller.tenant_id.clone();
    let all = ciel_store::run(&ctx.arm.store, move |s| {
        s.policy_list(&tenant, PolicyKind::Definitions.as_str())
    })
    .await?;
    let scope = ResourceId::subscription(sub).key();
    Ok(all
        .into_iter()
        .filter(|o| o.scope == scope)
        .map(|o| o.body)
        .collect())
}

/// Lists custom definitions then the built-ins; `$filter` `policyType eq 'BuiltIn'|'Custom'`
/// or `category eq 'x'`.
fn list_json(ctx: &Ctx<'_>, custom: Vec<Value>, builtins: bool) -> ArmResult<ArmResponse> {
    let mut all = custom;
    if builtins {
        all.extend(builtin::BUILTINS.iter().map(builtin::to_json));
    }
    let value = match ctx
        .req
        .q("$filter")
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        None => all,
        Some(f) => {
            let (field, v) = super::eq_clause(f).ok_or_else(|| bad_filter(f))?;
            let path = match field.to_ascii_lowercase().as_str() {
                "policytype" => "/properties/policyType",
                "category" => "/properties/metadata/category",
                _ => return Err(bad_filter(f)),
            };
            all.into_iter()
                .filter(|d| {
                    d.pointer(path)
                        .and_then(Value::as_str)
                        .is_some_and(|x| x.eq_ignore_ascii_case(&v))
                })
                .collect()
        }
    };
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}

fn bad_filter(f: &str) -> crate::error::ArmError {
    ApiError::bad_request(
        "InvalidFilterInQueryString",
        format!(
            "The $filter '{}' is not supported: use policyType eq '<BuiltIn|Custom>' or category eq '<name>'.",
            clip(f)
        ),
    )
    .into()
}

async fn put(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, WRITE).await?;
    let sub = scope.subscription.as_str();
    name_ok(name, 128, "policy definition")?;
    let body = ctx.req.json()?;
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidRequestContent",
                "The policy definition must have a 'properties' object.",
            )
        })?;
    let id = custom_id(sub, name);
    if let Some(t) = props.get("policyType").and_then(Value::as_str) {
        if !t.eq_ignore_ascii_case("Custom") {
            return refuse(
                ctx,
                WRITE,
                &id,
                ApiError::bad_request(
                    "InvalidPolicyType",
                    format!("The policy type '{}' cannot be created; custom definitions have policyType 'Custom'.", clip(t)),
                ),
            )
            .await;
        }
    }
    if let Err(e) = compile(&props) {
        return refuse(ctx, WRITE, &id, ApiError::bad_request(e.code, e.message)).await;
    }
    let existing = load(ctx, sub, name).await?;
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
        "id": custom_id(sub, &stored_name),
        "type": "Microsoft.Authorization/policyDefinitions",
        "name": stored_name,
        "properties": {
            "policyType": "Custom",
            "mode": props.get("mode").and_then(Value::as_str).unwrap_or("Indexed"),
            "displayName": props.get("displayName"),
            "description": props.get("description"),
            "metadata": metadata,
            "parameters": props.get("parameters").cloned().unwrap_or_else(|| json!({})),
            "policyRule": props.get("policyRule"),
        },
        "systemData": super::system_data(ctx, created, now),
    });
    let obj = PolicyObject {
        id: custom_id(sub, &stored_name),
        tenant_id: ctx.caller.tenant_id.clone(),
        kind: PolicyKind::Definitions.as_str().into(),
        scope: ResourceId::subscription(sub).to_string(),
        name: stored_name,
        body: out.clone(),
        created,
        changed: now,
    };
    let draft = ctx.draft(
        WRITE,
        &obj.id,
        "success",
        json!({"displayName": props.get("displayName")}),
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

async fn delete(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, DELETE).await?;
    let sub = scope.subscription.as_str();
    let Some(o) = load(ctx, sub, name).await? else {
        return Ok(ArmResponse::empty(StatusCode::NO_CONTENT));
    };
    super::ensure_unused(ctx, &o.id, DELETE).await?;
    let draft = ctx.draft(DELETE, &o.id, "success", json!({}));
    let id = o.id.clone();
    ciel_store::run(&ctx.arm.store, move |s| s.policy_delete(&id, &draft)).await?;
    Ok(ArmResponse::empty(StatusCode::OK))
}
