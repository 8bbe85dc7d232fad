//! `Microsoft.Authorization/roleDefinitions`: built-in roles and the tenant's custom roles.

use crate::error::ArmResult;
use crate::{api_version, clip, method_not_allowed, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use ciel_identity::rbac::{self, BUILTIN_ROLES};
use ciel_store::RoleDefinitionRec;
use http::{Method, StatusCode};
use serde_json::json;

const READ: &str = "Microsoft.Authorization/roleDefinitions/read";
const WRITE: &str = "Microsoft.Authorization/roleDefinitions/write";
const DELETE: &str = "Microsoft.Authorization/roleDefinitions/delete";

pub async fn dispatch(
    ctx: &Ctx<'_>,
    scope: Option<ResourceId>,
    rest: &[&str],
) -> ArmResult<ArmResponse> {
    api_version::check(
        ctx.req.api_version(),
        api_version::AUTHORIZATION,
        "Microsoft.Authorization/roleDefinitions",
    )?;
    if let Some(s) = &scope {
        crate::role_assignments::ensure_scope_exists(ctx, s).await?;
    }
    match (rest, &ctx.req.method) {
        ([], &Method::GET) => list(ctx, scope.as_ref()).await,
        ([id], &Method::GET) => get(ctx, scope.as_ref(), id).await,
        ([id], &Method::PUT) => match &scope {
            Some(s) => put(ctx, s, id).await,
            None => Err(method_not_allowed()),
        },
        ([id], &Method::DELETE) => match &scope {
            Some(s) => delete(ctx, s, id).await,
            None => Err(method_not_allowed()),
        },
        _ => Err(method_not_allowed()),
    }
}

/// Role definitions are rendered with a subscription-level id whatever the scope they were
/// listed at (as Azure does), so ids compare equal to assignments' `roleDefinitionId`.
fn scope_str(scope: Option<&ResourceId>) -> String {
    scope
        .map(|s| format!("/subscriptions/{}", s.subscription))
        .unwrap_or_default()
}

fn custom_json(scope: Option<&ResourceId>, d: &RoleDefinitionRec) -> serde_json::Value {
    let mut v = d.body.clone();
    v["id"] = json!(format!(
        "{}/providers/Microsoft.Authorization/roleDefinitions/{}",
        scope_str(scope),
        rbac::role_guid(&d.id)
    ));
    v
}

async fn custom(ctx: &Ctx<'_>) -> ArmResult<Vec<RoleDefinitionRec>> {
    let tid = ctx.caller.tenant_id.clone();
    Ok(ciel_store::run(&ctx.arm.store, move |s| s.list_role_definitions(&tid)).await?)
}

async fn check_read(ctx: &Ctx<'_>, scope: Option<&ResourceId>) -> ArmResult<()> {
    // Role definitions are directory-wide facts: any authenticated principal of the tenant may
    // read them at tenant scope; at a resource scope the usual read permission applies.
    if let Some(s) = scope {
        if !ctx.has_any_access_within(s).await? {
            ctx.authorize(s, READ).await?;
        }
    }
    Ok(())
}

async fn list(ctx: &Ctx<'_>, scope: Option<&ResourceId>) -> ArmResult<ArmResponse> {
    check_read(ctx, scope).await?;
    let filter = ctx.req.q("$filter").unwrap_or("");
    let (by_name, by_type) = if let Some(v) = filter.trim().strip_prefix("roleName eq ") {
        (Some(v.trim().trim_matches('\'').to_string()), None)
    } else if let Some(v) = filter.trim().strip_prefix("type eq ") {
        (None, Some(v.trim().trim_matches('\'').to_string()))
    } else if filter.is_empty() {
        (None, None)
    } else {
        return Err(ApiError::bad_request(
            "InvalidFilter",
            format!("The $filter '{}' is not supported.", clip(filter)),
        )
        .into());
    };
    let mut value: Vec<serde_json::Value> = BUILTIN_ROLES
        .iter()
        .map(|r| rbac::builtin_definition_json(&scope_str(scope), r))
        .collect();
    value.extend(custom(ctx).await?.iter().map(|d| custom_json(scope, d)));
    value.retain(|v| {
        by_name
            .as_ref()
            .map(|n| {
                v["properties"]["roleName"]
                    .as_str()
                    .map(|x| x.eq_ignore_ascii_case(n))
                    .unwrap_or(false)
            })
            .unwrap_or(true)
            && by_type
                .as_ref()
                .map(|t| v["properties"]["type"].as_str() == Some(t.as_str()))
                .unwrap_or(true)
    });
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}

async fn get(ctx: &Ctx<'_>, scope: Option<&ResourceId>, id: &str) -> ArmResult<ArmResponse> {
    check_read(ctx, scope).await?;
    if let Some(b) = rbac::builtin(id) {
        return Ok(ArmResponse::json(
            StatusCode::OK,
            rbac::builtin_definition_json(&scope_str(scope), b),
        ));
    }
    let guid = id.to_ascii_lowercase();
    match custom(ctx)
        .await?
        .into_iter()
        .find(|d| rbac::role_guid(&d.id) == guid)
    {
        Some(d) => Ok(ArmResponse::json(StatusCode::OK, custom_json(scope, &d))),
        None => Err(ApiError::not_found(
            "RoleDefinitionDoesNotExist",
            format!("The role definition '{}' could not be found.", clip(id)),
        )
        .into()),
    }
}

/// Custom roles: `az role definition create/update`.
async fn put(ctx: &Ctx<'_>, scope: &ResourceId, id: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, WRITE).await?;
    if uuid::Uuid::parse_str(id).is_err() || rbac::builtin(id).is_some() {
        return Err(ApiError::bad_request(
            "InvalidRoleDefinitionId",
            "The role definition id must be a new GUID.",
        )
        .into());
    }
    let body = ctx.req.json()?;
    let p = body.get("properties").cloned().unwrap_or(json!({}));
    let name = p
        .get("roleName")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .trim()
        .to_string();
    if name.is_empty() {
        return Err(ApiError::bad_request(
            "RoleDefinitionNameNullOrEmpty",
            "The role definition name cannot be null or empty.",
        )
        .into());
    }
    if BUILTIN_ROLES
        .iter()
        .any(|r| r.name.eq_ignore_ascii_case(&name))
    {
        return Err(ApiError::conflict(
            "RoleDefinitionWithSameNameExists",
            format!(
                "A role definition cannot be created with the name '{}' as it is a built-in role.",
                clip(&name)
            ),
        )
        .into());
    }
    let perms = p
        .get("permissions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if perms.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidActionOrNotAction",
            "A role definition needs at least one permission.",
        )
        .into());
    }
    let mut scopes: Vec<String> = p
        .get("assignableScopes")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if scopes.is_empty() {
        scopes.push(scope.to_string());
    }
    for s in &scopes {
        let Some(sid) = ResourceId::parse(s) else {
            return Err(ApiError::bad_request(
                "InvalidAssignableScope",
                format!("The assignable scope '{}' is not valid.", clip(s)),
            )
            .into());
        };
        ctx.subscription(&sid.subscription).await?;
    }
    let guid = id.to_ascii_lowercase();
    let now = ciel_core::time::now_rfc3339();
    let rec = RoleDefinitionRec {
        id: guid.clone(),
        tenant_id: ctx.caller.tenant_id.clone(),
        body: json!({
            "type": "Microsoft.Authorization/roleDefinitions", "name": guid,
            "properties": {
                "roleName": name, "type": "CustomRole", "description": p.get("description").and_then(|v| v.as_str()).unwrap_or(""),
                "assignableScopes": scopes, "permissions": perms, "createdOn": now, "updatedOn": now,
                "createdBy": ctx.caller.object_id, "updatedBy": ctx.caller.object_id
            }
        }),
    };
    let draft = ctx.draft(
        WRITE,
        &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
        "success",
        json!({"roleName": name}),
    );
    let r2 = rec.clone();
    ciel_store::run(&ctx.arm.store, move |s| s.put_role_definition(&r2, &draft)).await?;
    Ok(ArmResponse::json(
        StatusCode::CREATED,
        custom_json(Some(scope), &rec),
    ))
}

async fn delete(ctx: &Ctx<'_>, scope: &ResourceId, id: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, DELETE).await?;
    let guid = id.to_ascii_lowercase();
    let Some(d) = custom(ctx)
        .await?
        .into_iter()
        .find(|d| rbac::role_guid(&d.id) == guid)
    else {
        return Ok(ArmResponse::empty(StatusCode::NO_CONTENT));
    };
    let tid = ctx.caller.tenant_id.clone();
    let in_use = ciel_store::run(&ctx.arm.store, move |s| s.list_role_assignments(&tid))
        .await?
        .iter()
        .any(|a| rbac::role_guid(&a.role_definition_id) == guid);
    if in_use {
        return Err(ApiError::conflict(
            "RoleDefinitionHasAssignments",
            "There are existing role assignments referencing this role.",
        )
        .into());
    }
    let draft = ctx.draft(
        DELETE,
        &format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
        "success",
        json!({}),
    );
    let i = d.id.clone();
    ciel_store::run(&ctx.arm.store, move |s| {
        s.delete_role_definition(&i, &draft)
    })
    .await?;
    Ok(ArmResponse::json(
        StatusCode::OK,
        custom_json(Some(scope), &d),
    ))
}
