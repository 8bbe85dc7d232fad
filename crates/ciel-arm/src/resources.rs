//! Generic resources: list by subscription and by resource group (what `az resource list`
//! reads), and the hand-off of provider paths to the registered resource providers.

use crate::error::ArmResult;
use crate::provider::{ProviderRequest, ProviderResponse, ResourceProvider};
use crate::{api_version, check_location, clip, operations, policy, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use http::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

pub async fn list(ctx: &Ctx<'_>, scope: &ResourceId) -> ArmResult<ArmResponse> {
    api_version::check(
        ctx.req.api_version(),
        api_version::RESOURCES,
        "Microsoft.Resources/resources",
    )?;
    let key = scope.key();
    let filter = match ctx.req.q("$filter") {
        Some(f) => Filter::parse(f)?,
        None => Filter::default(),
    };
    let all = ciel_store::run(&ctx.arm.store, move |s| {
        s.list_resources(&key, None, None, 100_000)
    })
    .await?;
    let mut value = Vec::new();
    for r in all {
        if !filter.matches(&r) {
            continue;
        }
        let Some(id) = ResourceId::parse(&r.id) else {
            continue;
        };
        if !ctx.can(&id, &format!("{}/read", r.rtype)).await? {
            continue;
        }
        value.push(json!({
            "id": r.id, "name": r.name, "type": r.rtype, "location": r.location,
            "tags": r.body.get("tags").cloned().unwrap_or(json!({})),
            "kind": r.body.get("kind"), "sku": r.body.get("sku"),
        }));
    }
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}

/// The `$filter` of a resource listing: clauses `field eq 'value'` joined by `and`, on
/// `resourceType`, `name`, `location`, `tagName` and `tagValue` (values compared without case, as
/// Azure does). Anything else is refused rather than ignored, so a caller never mistakes an
/// unfiltered list for a filtered one.
#[derive(Default)]
struct Filter {
    clauses: Vec<(String, String)>,
}

impl Filter {
    fn parse(f: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "InvalidFilterInQueryString",
                format!(
                    "The $filter '{}' is not supported: use clauses \"field eq 'value'\" joined by 'and', on resourceType, name, location, tagName or tagValue.",
                    clip(f)
                ),
            )
        };
        let mut clauses = Vec::new();
        let lower = f.to_ascii_lowercase();
        let mut rest = f.trim();
        let mut rest_l = lower.trim();
        while !rest.is_empty() {
            let (clause, next, next_l) = match rest_l.find(" and ") {
                Some(i) => (&rest[..i], rest[i + 5..].trim(), rest_l[i + 5..].trim()),
                None => (rest, "", ""),
            };
            let (field, value) = clause.split_once(" eq ").ok_or_else(bad)?;
            let field = field.trim().to_ascii_lowercase();
            let value = value.trim();
            if !matches!(
                field.as_str(),
                "resourcetype" | "name" | "location" | "tagname" | "tagvalue"
            ) || value.len() < 2
                || !value.starts_with('\'')
                || !value.ends_with('\'')
            {
                return Err(bad());
            }
            let value = value[1..value.len() - 1].replace("''", "'");
            clauses.push((field, value));
            rest = next;
            rest_l = next_l;
        }
        Ok(Filter { clauses })
    }

    fn matches(&self, r: &ciel_store::Resource) -> bool {
        let tags = r.body.get("tags").and_then(|t| t.as_object());
        self.clauses.iter().all(|(field, v)| match field.as_str() {
            "resourcetype" => r.rtype.eq_ignore_ascii_case(v),
            "name" => r.name.eq_ignore_ascii_case(v),
            "location" => r
                .location
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(v)),
            "tagname" => tags.is_some_and(|t| t.keys().any(|k| k.eq_ignore_ascii_case(v))),
            "tagvalue" => tags.is_some_and(|t| t.values().any(|x| x.as_str() == Some(v.as_str()))),
            _ => false,
        })
    }
}

/// Hands `{scope}/providers/{ns}/{type}/{name}[/...]` to the provider after the common checks:
/// api-version known for the type, RBAC for the action, residency for located types.
pub async fn dispatch_provider(
    ctx: &Ctx<'_>,
    p: Arc<dyn ResourceProvider>,
    scope: ResourceId,
    rest: &[&str],
) -> ArmResult<ArmResponse> {
    if rest.is_empty() {
        return Err(crate::unknown_path(ctx));
    }
    let m = ctx.req.method.clone();
    let mut id = scope.clone();
    id.namespace = Some(p.namespace().to_string());
    // Split into (type, name) pairs; an odd count means a collection (GET list) or a POST action.
    let mut collection_type = None;
    let mut action = None;
    let pairs = rest.len() / 2;
    id.segments = rest[..pairs * 2]
        .chunks(2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect();
    if rest.len() % 2 == 1 {
        let last = rest[rest.len() - 1].to_string();
        if m == Method::POST {
            // `POST .../storageAccounts/a/listKeys`, or a scope-level action such as
            // `POST /subscriptions/S/providers/Microsoft.Storage/checkNameAvailability`.
            action = Some(last);
        } else {
            collection_type = Some(last);
        }
    }
    let mut type_path: Vec<String> = id.segments.iter().map(|(t, _)| t.clone()).collect();
    if let Some(c) = &collection_type {
        type_path.push(c.clone());
    }
    if let (Some(a), true) = (&action, id.segments.is_empty()) {
        type_path.push(a.clone());
    }
    let type_path = type_path.join("/");
    let info = p
        .resource_types()
        .into_iter()
        .find(|t| t.resource_type.eq_ignore_ascii_case(&type_path))
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidResourceType",
                format!(
                    "The resource type '{}' could not be found in the namespace '{}'.",
                    clip(&type_path),
                    p.namespace()
                ),
            )
        })?;
    let versions: Vec<&str> = info.api_versions.iter().map(String::as_str).collect();
    let v = api_version::check(
        ctx.req.api_version(),
        &versions,
        &format!("{}/{}", p.namespace(), type_path),
    )?
    .to_string();
    let full_type = format!("{}/{}", p.namespace(), type_path);
    let rbac_action = match (&m, &action) {
        (_, Some(_)) if id.segments.is_empty() => format!("{full_type}/action"),
        (_, Some(a)) => format!("{full_type}/{a}/action"),
        (&Method::GET, _) | (&Method::HEAD, _) => format!("{full_type}/read"),
        (&Method::DELETE, _) => format!("{full_type}/delete"),
        _ => format!("{full_type}/write"),
    };
    let target = if id.segments.is_empty() {
        scope.clone()
    } else {
        id.clone()
    };
    ctx.authorize(&target, &rbac_action).await?;
    let body = if ctx.req.body.is_empty() {
        None
    } else {
        Some(ctx.req.json()?)
    };
    if info.located && m == Method::PUT {
        let loc = body
            .as_ref()
            .and_then(|b| b.get("location"))
            .and_then(|l| l.as_str());
        if let Err(e) = check_location(
            loc,
            "LocationNotAvailableForResourceType",
            &format!("resource type '{full_type}'"),
        ) {
            ctx.arm
                .auditor
                .record(ctx.draft(
                    &rbac_action,
                    &id.to_string(),
                    "denied",
                    json!({"reason": "Residency", "location": clip(loc.unwrap_or(""))}),
                ))
                .await?;
            return Err(e);
        }
    }
    // Policy: against the resource as it would be stored, after residency (which no policy
    // can relax) and before the provider writes anything.
    let mut body = body;
    let mut pending = None;
    if (m == Method::PUT || m == Method::PATCH)
        && action.is_none()
        && collection_type.is_none()
        && !id.segments.is_empty()
    {
        let mut candidate = match (
            &m,
            ciel_store::run(&ctx.arm.store, {
                let key = id.key();
                move |s| ciel_store::Found::found(s.get_resource(&key))
            })
            .await?,
        ) {
            (&Method::PATCH, Some(r)) if r.tenant_id == ctx.caller.tenant_id => {
                let mut b = r.body.clone();
                policy::merge_patch(&mut b, body.as_ref().unwrap_or(&json!({})));
                b
            }
            _ => body.clone().unwrap_or_else(|| json!({})),
        };
        if let Some(o) = candidate.as_object_mut() {
            o.insert("id".into(), json!(id.to_string()));
            o.insert("name".into(), json!(id.name().unwrap_or("")));
            o.insert("type".into(), json!(full_type));
        }
        let pend = policy::enforce(ctx, &rbac_action, &mut candidate, info.located).await?;
        if pend.tags_modified {
            if let Some(b) = body.as_mut().and_then(|b| b.as_object_mut()) {
                b.insert("tags".into(), candidate["tags"].clone());
            }
        }
        pending = Some(pend);
    }
    let resp = p
        .handle(ProviderRequest {
            method: m,
            id,
            collection_type,
            action,
            api_version: v,
            query: ctx.req.query.clone(),
            body,
            caller: ctx.caller.clone(),
            request_id: ctx.req.request_id.clone(),
            client_ip: ctx.req.client_ip.clone(),
        })
        .await?;
    if let Some(pend) = pending {
        pend.record(ctx).await?;
    }
    Ok(match resp {
        ProviderResponse::Done {
            status,
            body: Some(b),
        } => ArmResponse::json(status, b),
        ProviderResponse::Done { status, body: None } => ArmResponse::empty(status),
        ProviderResponse::Accepted { operation_id } => {
            let oid = operation_id.clone();
            let op = ciel_store::run(&ctx.arm.store, move |s| s.get_operation(&oid)).await?;
            operations::accepted(ctx, &scope.subscription, &op)
        }
    })
}
