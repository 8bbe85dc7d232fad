//! `Microsoft.Authorization/roleAssignments` at subscription, resource-group and resource scope:
//! create, get, delete, list for scope (with `atScope()`, `principalId eq`, `assignedTo()`).

use crate::error::{ArmError, ArmResult};
use crate::{api_version, clip, method_not_allowed, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use ciel_identity::rbac;
use ciel_store::{Found, PrincipalKindRec, RoleAssignment};
use http::{Method, StatusCode};
use serde_json::json;

const READ: &str = "Microsoft.Authorization/roleAssignments/read";
const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

pub async fn dispatch(ctx: &Ctx<'_>, scope: ResourceId, rest: &[&str]) -> ArmResult<ArmResponse> {
    api_version::check(
        ctx.req.api_version(),
        api_version::AUTHORIZATION,
        "Microsoft.Authorization/roleAssignments",
    )?;
    ensure_scope_exists(ctx, &scope).await?;
    match (rest, &ctx.req.method) {
        ([], &Method::GET) => list(ctx, &scope).await,
        ([name], &Method::GET) => get(ctx, &scope, name).await,
        ([name], &Method::PUT) => create(ctx, &scope, name).await,
        ([name], &Method::DELETE) => delete(ctx, &scope, name).await,
        _ => Err(method_not_allowed()),
    }
}

/// A scope must exist: a resource group or resource that is not there is `...NotFound`.
pub async fn ensure_scope_exists(ctx: &Ctx<'_>, scope: &ResourceId) -> ArmResult<()> {
    if let Some(rg) = &scope.resource_group {
        let (s, n) = (scope.subscription.clone(), rg.clone());
        let found = ciel_store::run(&ctx.arm.store, move |st| {
            Ok(st.get_resource_group(&s, &n).found()?.is_some())
        })
        .await?;
        if !found {
            if !ctx.has_any_access_within(scope).await? {
                ctx.authorize(scope, READ).await?;
            }
            return Err(ApiError::not_found(
                "ResourceGroupNotFound",
                format!("Resource group '{}' could not be found.", clip(rg)),
            )
            .into());
        }
    }
    if !scope.segments.is_empty() {
        let key = scope.key();
        let found = ciel_store::run(&ctx.arm.store, move |st| {
            Ok(st.get_resource(&key).found()?.is_some())
        })
        .await?;
        if !found {
            return Err(ApiError::not_found(
                "ResourceNotFound",
                format!("The resource '{}' was not found.", clip(&scope.to_string())),
            )
            .into());
        }
    }
    Ok(())
}

fn not_found(name: &str) -> ArmError {
    ApiError::not_found(
        "RoleAssignmentNotFound",
        format!("The role assignment '{}' is not found.", clip(name)),
    )
    .into()
}

async fn load(ctx: &Ctx<'_>, name: &str) -> ArmResult<Option<RoleAssignment>> {
    let n = name.to_string();
    let tid = ctx.caller.tenant_id.clone();
    Ok(ciel_store::run(&ctx.arm.store, move |s| {
        Ok(s.get_role_assignment(&n)
            .found()?
            .filter(|a| a.tenant_id == tid))
    })
    .await?)
}

fn same_scope(a: &str, b: &ResourceId) -> bool {
    ResourceId::parse(a)
        .map(|x| x.key() == b.key())
        .unwrap_or(false)
}

async fn get(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, READ).await?;
    match load(ctx, name).await? {
        Some(a) if same_scope(&a.scope, scope) => {
            Ok(ArmResponse::json(StatusCode::OK, rbac::assignment_json(&a)))
        }
        _ => Err(not_found(name)),
    }
}

async fn create(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, WRITE).await?;
    if uuid::Uuid::parse_str(name).is_err() {
        return Err(ApiError::bad_request(
            "InvalidRoleAssignmentId",
            format!(
                "The role assignment ID '{}' is not valid. The role assignment ID must be a GUID.",
                clip(name)
            ),
        )
        .into());
    }
    let body = ctx.req.json()?;
    let props = body.get("properties").unwrap_or(&body);
    let role_id = props
        .get("roleDefinitionId")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let principal_id = props
        .get("principalId")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if role_id.is_empty() || principal_id.is_empty() {
        return Err(ApiError::bad_request(
            "InvalidRequestContent",
            "roleDefinitionId and principalId are required.",
        )
        .into());
    }
    // The role must exist: a built-in, or a custom role of this tenant.
    let guid = rbac::role_guid(role_id);
    let tid = ctx.caller.tenant_id.clone();
    let custom = ciel_store::run(&ctx.arm.store, move |s| s.list_role_definitions(&tid)).await?;
    if rbac::permissions_of(&guid, &custom).is_none() {
        return Err(ApiError::not_found(
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                clip(&guid)
            ),
        )
        .into());
    }
    // The principal must exist in the caller's tenant.
    let pid = principal_id.clone();
    let principal = ciel_store::run(&ctx.arm.store, move |s| s.get_principal(&pid).found()).await?;
    let principal = match principal {
        Some(p) if p.tenant_id == ctx.caller.tenant_id => p,
        _ => {
            return Err(ApiError::bad_request(
                "PrincipalNotFound",
                format!(
                    "Principal {} does not exist in the directory {}.",
                    clip(&principal_id).replace('-', ""),
                    ctx.caller.tenant_id
                ),
            )
            .into())
        }
    };
    let principal_type = match principal.kind {
        PrincipalKindRec::ServicePrincipal => "ServicePrincipal",
        PrincipalKindRec::User => "User",
    };
    if let Some(given) = props.get("principalType").and_then(|v| v.as_str()) {
        if !given.eq_ignore_ascii_case(principal_type) {
            return Err(ApiError::bad_request(
                "PrincipalTypeNotSupported",
                format!(
                    "The principal {} is a {principal_type}, not a {}.",
                    principal.object_id,
                    clip(given)
                ),
            )
            .into());
        }
    }
    let role_definition_id = rbac::role_definition_id(&scope.subscription, &guid);
    if let Some(existing) = load(ctx, name).await? {
        if same_scope(&existing.scope, scope)
            && existing.principal_id == principal.object_id
            && rbac::role_guid(&existing.role_definition_id) == guid
        {
            // Idempotent PUT of the same assignment.
            return Ok(ArmResponse::json(
                StatusCode::OK,
                rbac::assignment_json(&existing),
            ));
        }
        return Err(ApiError::conflict(
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        )
        .into());
    }
    let tid = ctx.caller.tenant_id.clone();
    let all = ciel_store::run(&ctx.arm.store, move |s| s.list_role_assignments(&tid)).await?;
    if all.iter().any(|a| {
        same_scope(&a.scope, scope)
            && a.principal_id == principal.object_id
            && rbac::role_guid(&a.role_definition_id) == guid
    }) {
        return Err(ApiError::conflict(
            "RoleAssignmentExists",
            "The role assignment already exists.",
        )
        .into());
    }
    let a = RoleAssignment {
        name: name.to_ascii_lowercase(),
        tenant_id: ctx.caller.tenant_id.clone(),
        scope: scope.to_string(),
        role_definition_id,
        principal_id: principal.object_id.clone(),
        principal_type: principal_type.to_string(),
        description: props
            .get("description")
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(1024).collect()),
        created_by: ctx.caller.object_id.clone(),
        created: ciel_core::time::now_unix(),
    };
    let draft = ctx.draft(
        WRITE,
        &format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            a.name
        ),
        "success",
        json!({"role": guid, "principalId": a.principal_id}),
    );
    let a2 = a.clone();
    ciel_store::run(&ctx.arm.store, move |s| s.put_role_assignment(&a2, &draft)).await?;
    Ok(ArmResponse::json(
        StatusCode::CREATED,
        rbac::assignment_json(&a),
    ))
}

async fn delete(ctx: &Ctx<'_>, scope: &ResourceId, name: &str) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, DELETE).await?;
    let Some(a) = load(ctx, name)
        .await?
        .filter(|a| same_scope(&a.scope, scope))
    else {
        return Ok(ArmResponse::empty(StatusCode::NO_CONTENT));
    };
    let draft = ctx.draft(
        DELETE,
        &format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
            a.name
        ),
        "success",
        json!({"role": rbac::role_guid(&a.role_definition_id), "principalId": a.principal_id}),
    );
    let n = a.name.clone();
    ciel_store::run(&ctx.arm.store, move |s| {
        s.delete_role_assignment(&n, &draft)
    })
    .await?;
    Ok(ArmResponse::json(StatusCode::OK, rbac::assignment_json(&a)))
}

enum Filter {
    None,
    AtScope,
    Principal,
}

fn parse_filter(f: Option<&str>) -> ArmResult<(Filter, Option<String>)> {
    let Some(f) = f else {
        return Ok((Filter::None, None));
    };
    let mut scope = Filter::None;
    let mut principal = None;
    for part in f.split(" and ") {
        let p = part.trim();
        if p.eq_ignore_ascii_case("atScope()") {
            scope = Filter::AtScope;
        } else if let Some(v) = p.strip_prefix("principalId eq ") {
            principal = Some(v.trim().trim_matches('\'').to_ascii_lowercase());
        } else if let Some(v) = p
            .strip_prefix("assignedTo(")
            .and_then(|x| x.strip_suffix(')'))
        {
            principal = Some(v.trim().trim_matches('\'').to_ascii_lowercase());
        } else {
            return Err(ApiError::bad_request(
                "InvalidFilter",
                format!("The $filter '{}' is not supported.", clip(f)),
            )
            .into());
        }
    }
    if let Some(p) = &principal {
        if matches!(scope, Filter::None) {
            let _ = p;
            return Ok((Filter::Principal, principal));
        }
    }
    Ok((scope, principal))
}

/// Assignments that apply at the scope (at or above it) and, without `atScope()`, those below it.
async fn list(ctx: &Ctx<'_>, scope: &ResourceId) -> ArmResult<ArmResponse> {
    ctx.authorize(scope, READ).await?;
    let (filter, principal) = parse_filter(ctx.req.q("$filter"))?;
    let tid = ctx.caller.tenant_id.clone();
    let all = ciel_store::run(&ctx.arm.store, move |s| s.list_role_assignments(&tid)).await?;
    let value: Vec<_> = all
        .iter()
        .filter(|a| {
            let Some(s) = ResourceId::parse(&a.scope) else {
                return false;
            };
            if !s.subscription.eq_ignore_ascii_case(&scope.subscription) {
                return false;
            }
            let above = scope.is_within(&s);
            let below = s.is_within(scope);
            let in_scope = match filter {
                Filter::AtScope => above,
                _ => above || below,
            };
            in_scope
                && principal
                    .as_ref()
                    .map(|p| &a.principal_id == p)
                    .unwrap_or(true)
        })
        .map(rbac::assignment_json)
        .collect();
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}
