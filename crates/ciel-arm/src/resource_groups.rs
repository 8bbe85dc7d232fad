//! Resource groups: create_or_update, get, check_existence (HEAD), update (PATCH), delete, list.

use crate::error::{ArmError, ArmResult};
use crate::{
    api_version, check_location, clip, method_not_allowed, operations, tags_from, ArmResponse, Ctx,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciel_core::{ApiError, ResourceId};
use ciel_store::{Found, ResourceGroup};
use http::{Method, StatusCode};
use serde_json::json;

const READ: &str = "Microsoft.Resources/subscriptions/resourceGroups/read";
const WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub fn to_json(g: &ResourceGroup) -> serde_json::Value {
    let mut v = json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}", g.subscription_id, g.name),
        "name": g.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": g.location,
        "tags": g.tags,
        "properties": {"provisioningState": "Succeeded"}
    });
    if let Some(m) = &g.managed_by {
        v["managedBy"] = json!(m);
    }
    v
}

fn not_found(name: &str) -> ArmError {
    ApiError::not_found(
        "ResourceGroupNotFound",
        format!("Resource group '{}' could not be found.", clip(name)),
    )
    .into()
}

async fn load(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<Option<ResourceGroup>> {
    let (s, n) = (sub.to_string(), name.to_string());
    Ok(ciel_store::run(&ctx.arm.store, move |st| {
        st.get_resource_group(&s, &n).found()
    })
    .await?)
}

/// The group, for reading below it: authorizes read first (so that existence is not revealed
/// to callers without access), then 404 if absent.
pub async fn require(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<ResourceGroup> {
    ctx.authorize(&ResourceId::resource_group(sub, name), READ)
        .await?;
    load(ctx, sub, name).await?.ok_or_else(|| not_found(name))
}

/// The group, for provider requests below it: the provider authorizes its own action.
pub async fn require_for(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<ResourceGroup> {
    match load(ctx, sub, name).await? {
        Some(g) => Ok(g),
        None => {
            // Without any access, do not reveal whether the group exists.
            if !ctx
                .has_any_access_within(&ResourceId::resource_group(sub, name))
                .await?
            {
                ctx.authorize(&ResourceId::resource_group(sub, name), READ)
                    .await?;
            }
            Err(not_found(name))
        }
    }
}

pub async fn dispatch(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<ArmResponse> {
    api_version::check(
        ctx.req.api_version(),
        api_version::RESOURCES,
        "Microsoft.Resources/resourceGroups",
    )?;
    let scope = ResourceId::resource_group(sub, name);
    match ctx.req.method {
        Method::GET => {
            let g = require(ctx, sub, name).await?;
            Ok(ArmResponse::json(StatusCode::OK, to_json(&g)))
        }
        Method::HEAD => {
            ctx.authorize(&scope, READ).await?;
            Ok(ArmResponse::empty(
                if load(ctx, sub, name).await?.is_some() {
                    StatusCode::NO_CONTENT
                } else {
                    StatusCode::NOT_FOUND
                },
            ))
        }
        Method::PUT => create_or_update(ctx, sub, name).await,
        Method::PATCH => update(ctx, sub, name).await,
        Method::DELETE => delete(ctx, sub, name).await,
        _ => Err(method_not_allowed()),
    }
}

async fn create_or_update(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<ArmResponse> {
    let scope = ResourceId::resource_group(sub, name);
    ctx.authorize(&scope, WRITE).await?;
    let body = ctx.req.json()?;
    let location = body.get("location").and_then(|v| v.as_str());
    let region = match check_location(
        location,
        "LocationNotAvailableForResourceGroup",
        "resource group",
    ) {
        Ok(r) => r,
        Err(e) => {
            ctx.arm
                .auditor
                .record(ctx.draft(
                    WRITE,
                    &scope.to_string(),
                    "denied",
                    json!({"reason": "Residency", "location": clip(location.unwrap_or(""))}),
                ))
                .await?;
            return Err(e);
        }
    };
    let mut tags = tags_from(&body)?;
    let mut candidate = json!({
        "id": scope.to_string(), "name": name, "type": crate::policy::aliases::RESOURCE_GROUP_TYPE,
        "location": region.name, "tags": tags, "managedBy": body.get("managedBy"),
    });
    let pending = crate::policy::enforce(ctx, WRITE, &mut candidate, false).await?;
    if pending.tags_modified {
        tags = candidate["tags"].clone();
    }
    let managed_by = body
        .get("managedBy")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let now = ciel_core::time::now_unix();
    let existing = load(ctx, sub, name).await?;
    if let Some(g) = &existing {
        if g.location != region.name {
            return Err(ApiError::conflict(
                "InvalidResourceGroupLocation",
                format!("Invalid resource group location '{}'. The Resource group already exists in location '{}'.", region.name, g.location),
            )
            .into());
        }
    }
    let g = ResourceGroup {
        subscription_id: sub.to_string(),
        name: existing
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_else(|| name.to_string()),
        location: region.name.to_string(),
        tags,
        managed_by,
        created: existing.as_ref().map(|g| g.created).unwrap_or(now),
        changed: now,
    };
    let draft = ctx.draft(
        WRITE,
        &scope.to_string(),
        "success",
        json!({"location": region.name}),
    );
    let g2 = g.clone();
    let created =
        ciel_store::run(&ctx.arm.store, move |s| s.put_resource_group(&g2, &draft)).await?;
    pending.record(ctx).await?;
    Ok(ArmResponse::json(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        to_json(&g),
    ))
}

async fn update(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<ArmResponse> {
    let scope = ResourceId::resource_group(sub, name);
    ctx.authorize(&scope, WRITE).await?;
    let body = ctx.req.json()?;
    let mut g = load(ctx, sub, name).await?.ok_or_else(|| not_found(name))?;
    if let Some(l) = body.get("location").and_then(|v| v.as_str()) {
        if ciel_core::region::normalize(l).map(|r| r.name) != Some(g.location.as_str()) {
            return Err(ApiError::bad_request(
                "InvalidResourceGroupLocation",
                "The location of a resource group cannot be changed.",
            )
            .into());
        }
    }
    if body.get("tags").is_some() {
        g.tags = tags_from(&body)?;
    }
    if let Some(m) = body.get("managedBy") {
        g.managed_by = m.as_str().map(str::to_string);
    }
    g.changed = ciel_core::time::now_unix();
    let mut candidate = crate::policy::group_candidate(&g);
    let pending = crate::policy::enforce(ctx, WRITE, &mut candidate, false).await?;
    if pending.tags_modified {
        g.tags = candidate["tags"].clone();
    }
    let draft = ctx.draft(WRITE, &scope.to_string(), "success", json!({"patch": true}));
    let g2 = g.clone();
    ciel_store::run(&ctx.arm.store, move |s| s.put_resource_group(&g2, &draft)).await?;
    pending.record(ctx).await?;
    Ok(ArmResponse::json(StatusCode::OK, to_json(&g)))
}

/// Deletes the group and everything in it. Groups without provider data go in one transaction
/// and are answered at once (200); groups whose resources hold data are deleted in the
/// background behind a long-running operation (202 + Location + Retry-After).
async fn delete(ctx: &Ctx<'_>, sub: &str, name: &str) -> ArmResult<ArmResponse> {
    let scope = ResourceId::resource_group(sub, name);
    ctx.authorize(&scope, DELETE).await?;
    let g = load(ctx, sub, name).await?.ok_or_else(|| not_found(name))?;
    let key = ResourceId::resource_group(sub, &g.name).key();
    let resources = ciel_store::run(&ctx.arm.store, move |s| {
        s.list_resources(&key, None, None, 100_000)
    })
    .await?;
    let with_provider: Vec<_> = resources
        .iter()
        .filter_map(|r| ResourceId::parse(&r.id))
        .filter(|id| {
            id.namespace
                .as_deref()
                .map(|ns| ctx.arm.provider(ns).is_some())
                .unwrap_or(false)
        })
        .collect();
    let draft = ctx.draft(
        DELETE,
        &scope.to_string(),
        "success",
        json!({"resources": resources.len()}),
    );
    if with_provider.is_empty() {
        let (s, n) = (sub.to_string(), g.name.clone());
        ciel_store::run(&ctx.arm.store, move |st| {
            st.delete_resource_group(&s, &n, &draft)
        })
        .await?;
        return Ok(ArmResponse::empty(StatusCode::OK));
    }
    let providers: Vec<_> = with_provider
        .into_iter()
        .filter_map(|id| {
            ctx.arm
                .provider(id.namespace.as_deref().unwrap_or(""))
                .map(|p| (p.clone(), id))
        })
        .collect();
    let caller = ctx.caller.clone();
    let store = ctx.arm.store.clone();
    let (s, n) = (sub.to_string(), g.name.clone());
    let op = operations::start(ctx, &scope.to_string(), async move {
        for (p, id) in providers {
            p.delete_for_group(&id, &caller).await?;
        }
        ciel_store::run(&store, move |st| st.delete_resource_group(&s, &n, &draft)).await?;
        Ok(None)
    })
    .await?;
    Ok(operations::accepted(ctx, sub, &op))
}

pub async fn list(ctx: &Ctx<'_>, sub: &str) -> ArmResult<ArmResponse> {
    let v = api_version::check(
        ctx.req.api_version(),
        api_version::RESOURCES,
        "Microsoft.Resources/resourceGroups",
    )?;
    let top = match ctx.req.q("$top") {
        None => DEFAULT_PAGE,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ApiError::bad_request("InvalidTopParameter", "$top must be a positive integer.")
            })?
            .min(MAX_PAGE),
    };
    let after = match ctx.req.q("$skiptoken") {
        None => None,
        Some(t) => Some(
            B64URL
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("InvalidSkipToken", "The $skiptoken is not valid.")
                })?,
        ),
    };
    let filter = parse_tag_filter(ctx.req.q("$filter"))?;
    // Only groups the caller may read are listed; a subscription-wide reader sees all.
    let sub_read = ctx.can(&ResourceId::subscription(sub), READ).await?;
    if !sub_read
        && !ctx
            .has_any_access_within(&ResourceId::subscription(sub))
            .await?
    {
        ctx.authorize(&ResourceId::subscription(sub), READ).await?;
    }
    let mut value = Vec::new();
    let mut cursor = after;
    let mut more = false;
    // Page through the store until `top` visible groups are found.
    'outer: loop {
        let (s, c) = (sub.to_string(), cursor.clone());
        let batch = ciel_store::run(&ctx.arm.store, move |st| {
            st.list_resource_groups(&s, c.as_deref(), top + 1)
        })
        .await?;
        let exhausted = batch.len() <= top;
        for g in batch {
            if value.len() == top {
                more = true;
                break 'outer;
            }
            cursor = Some(g.name.clone());
            if !sub_read
                && !ctx
                    .can(&ResourceId::resource_group(sub, &g.name), READ)
                    .await?
            {
                continue;
            }
            if let Some((k, val)) = &filter {
                let t = g.tags.as_object();
                let hit = t
                    .and_then(|m| m.iter().find(|(tk, _)| tk.eq_ignore_ascii_case(k)))
                    .map(|(_, tv)| {
                        val.as_ref()
                            .map(|want| tv.as_str() == Some(want.as_str()))
                            .unwrap_or(true)
                    })
                    .unwrap_or(false);
                if !hit {
                    continue;
                }
            }
            value.push(to_json(&g));
        }
        if exhausted {
            break;
        }
    }
    let mut body = json!({ "value": value });
    if more {
        if let Some(c) = cursor {
            let mut link = format!(
                "{}subscriptions/{sub}/resourcegroups?api-version={v}&%24top={top}&%24skiptoken={}",
                ctx.base(),
                B64URL.encode(c.as_bytes())
            );
            if let Some(f) = ctx.req.q("$filter") {
                link.push_str("&%24filter=");
                link.push_str(
                    &percent_encoding::utf8_percent_encode(f, percent_encoding::NON_ALPHANUMERIC)
                        .to_string(),
                );
            }
            body["nextLink"] = json!(link);
        }
    }
    Ok(ArmResponse::json(StatusCode::OK, body))
}

/// `tagName eq 'k' [and tagValue eq 'v']`, the filter `az group list --tag` sends.
fn parse_tag_filter(f: Option<&str>) -> ArmResult<Option<(String, Option<String>)>> {
    let Some(f) = f else { return Ok(None) };
    let bad = || {
        ApiError::bad_request(
            "InvalidFilterInQueryString",
            format!("The $filter '{}' is not supported.", clip(f)),
        )
    };
    let quoted = |s: &str| -> Option<String> {
        let s = s.trim();
        s.strip_prefix('\'')
            .and_then(|x| x.strip_suffix('\''))
            .map(|x| x.replace("''", "'"))
    };
    let parts: Vec<&str> = f.splitn(2, " and ").collect();
    let name = parts[0]
        .trim()
        .strip_prefix("tagName eq ")
        .and_then(quoted)
        .ok_or_else(bad)?;
    let value = match parts.get(1) {
        None => None,
        Some(p) => Some(
            p.trim()
                .strip_prefix("tagValue eq ")
                .and_then(quoted)
                .ok_or_else(bad)?,
        ),
    };
    Ok(Some((name, value)))
}
