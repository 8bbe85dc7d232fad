//! Tenants, subscriptions, locations and the provider registry.

use crate::error::ArmResult;
use crate::{api_version, clip, ArmResponse, Ctx};
use ciel_core::region::REGIONS;
use ciel_core::{ApiError, ResourceId};
use ciel_store::Subscription;
use http::StatusCode;
use serde_json::json;

fn check(ctx: &Ctx<'_>) -> ArmResult<()> {
    api_version::check(
        ctx.req.api_version(),
        api_version::RESOURCES,
        "Microsoft.Resources",
    )?;
    Ok(())
}

pub fn subscription_json(s: &Subscription) -> serde_json::Value {
    json!({
        "id": format!("/subscriptions/{}", s.id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": s.id,
        "tenantId": s.tenant_id,
        "displayName": s.display_name,
        "state": s.state,
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"}
    })
}

pub async fn list_tenants(ctx: &Ctx<'_>) -> ArmResult<ArmResponse> {
    check(ctx)?;
    let tid = ctx.caller.tenant_id.clone();
    let t = ciel_store::run(&ctx.arm.store, move |s| s.get_tenant(&tid)).await?;
    Ok(ArmResponse::json(
        StatusCode::OK,
        json!({"value": [{
            "id": format!("/tenants/{}", t.id), "tenantId": t.id, "countryCode": "FR", "displayName": t.display_name,
            "domains": [t.default_domain], "tenantCategory": "Home", "defaultDomain": t.default_domain, "tenantType": "AAD"
        }]}),
    ))
}

/// Subscriptions of the caller's tenant on which it holds any role, at any scope within.
pub async fn list(ctx: &Ctx<'_>) -> ArmResult<ArmResponse> {
    check(ctx)?;
    let tid = ctx.caller.tenant_id.clone();
    let subs = ciel_store::run(&ctx.arm.store, move |s| s.list_subscriptions(&tid)).await?;
    let mut value = vec![];
    for s in subs {
        if ctx
            .has_any_access_within(&ResourceId::subscription(&s.id))
            .await?
        {
            value.push(subscription_json(&s));
        }
    }
    Ok(ArmResponse::json(
        StatusCode::OK,
        json!({ "count": {"type": "Total", "value": value.len()}, "value": value }),
    ))
}

async fn require_visible(ctx: &Ctx<'_>, s: &Subscription) -> ArmResult<()> {
    if ctx
        .has_any_access_within(&ResourceId::subscription(&s.id))
        .await?
    {
        return Ok(());
    }
    ctx.authorize(
        &ResourceId::subscription(&s.id),
        "Microsoft.Resources/subscriptions/read",
    )
    .await
}

pub async fn get(ctx: &Ctx<'_>, s: &Subscription) -> ArmResult<ArmResponse> {
    check(ctx)?;
    require_visible(ctx, s).await?;
    Ok(ArmResponse::json(StatusCode::OK, subscription_json(s)))
}

pub async fn list_locations(ctx: &Ctx<'_>, s: &Subscription) -> ArmResult<ArmResponse> {
    check(ctx)?;
    require_visible(ctx, s).await?;
    let value: Vec<_> = REGIONS
        .iter()
        .map(|r| {
            json!({
                "id": format!("/subscriptions/{}/locations/{}", s.id, r.name),
                "name": r.name, "type": "Region", "displayName": r.display_name, "regionalDisplayName": r.regional_display_name,
                "metadata": {
                    "regionType": "Physical", "regionCategory": "Recommended", "geographyGroup": "Europe", "geography": "France",
                    "latitude": r.latitude, "longitude": r.longitude, "physicalLocation": r.city,
                    "pairedRegion": [{"name": r.paired, "id": format!("/subscriptions/{}/locations/{}", s.id, r.paired)}]
                }
            })
        })
        .collect();
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}

fn locations_display() -> Vec<&'static str> {
    REGIONS.iter().map(|r| r.display_name).collect()
}

/// Namespaces this cloud serves, with their resource types.
fn providers(ctx: &Ctx<'_>) -> Vec<(String, Vec<serde_json::Value>)> {
    let locs = locations_display();
    let mut out = vec![
        (
            "Microsoft.Resources".to_string(),
            ["resourceGroups", "subscriptions", "tenants", "providers", "locations", "operationresults", "resources"]
                .iter()
                .map(|t| json!({"resourceType": t, "locations": if *t == "resourceGroups" { json!(locs) } else { json!([]) }, "apiVersions": api_version::RESOURCES.iter().rev().collect::<Vec<_>>()}))
                .collect(),
        ),
        (
            "Microsoft.Authorization".to_string(),
            ["roleAssignments", "roleDefinitions"]
                .iter()
                .map(|t| json!({"resourceType": t, "locations": [], "apiVersions": api_version::AUTHORIZATION.iter().rev().collect::<Vec<_>>()}))
                .collect(),
        ),
    ];
    for p in &ctx.arm.providers {
        out.push((
            p.namespace().to_string(),
            p.resource_types()
                .into_iter()
                .map(|t| json!({"resourceType": t.resource_type, "locations": if t.located { json!(locs) } else { json!([]) }, "apiVersions": t.api_versions}))
                .collect(),
        ));
    }
    out
}

fn provider_json(sub: Option<&str>, ns: &str, types: &[serde_json::Value]) -> serde_json::Value {
    let mut v = json!({
        "namespace": ns, "registrationState": "Registered", "registrationPolicy": "RegistrationRequired", "resourceTypes": types
    });
    if let Some(s) = sub {
        v["id"] = json!(format!("/subscriptions/{s}/providers/{ns}"));
    } else {
        v["id"] = json!(format!("/providers/{ns}"));
    }
    v
}

pub async fn list_providers(ctx: &Ctx<'_>, sub: Option<&str>) -> ArmResult<ArmResponse> {
    check(ctx)?;
    let value: Vec<_> = providers(ctx)
        .iter()
        .map(|(ns, t)| provider_json(sub, ns, t))
        .collect();
    Ok(ArmResponse::json(StatusCode::OK, json!({ "value": value })))
}

pub async fn get_provider(ctx: &Ctx<'_>, sub: Option<&str>, ns: &str) -> ArmResult<ArmResponse> {
    check(ctx)?;
    match providers(ctx)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(ns))
    {
        Some((n, t)) => Ok(ArmResponse::json(
            StatusCode::OK,
            provider_json(sub, &n, &t),
        )),
        None => Err(ApiError::not_found(
            "InvalidResourceNamespace",
            format!(
                "The resource namespace '{}' is invalid or not available in this cloud.",
                clip(ns)
            ),
        )
        .into()),
    }
}

/// Every provider of this cloud is always registered; registering is accepted (and authorized)
/// so that scripts that register first keep working.
pub async fn register_provider(ctx: &Ctx<'_>, sub: &str, ns: &str) -> ArmResult<ArmResponse> {
    check(ctx)?;
    ctx.authorize(
        &ResourceId::subscription(sub),
        "Microsoft.Resources/subscriptions/providers/register/action",
    )
    .await?;
    get_provider(ctx, Some(sub), ns).await
}
