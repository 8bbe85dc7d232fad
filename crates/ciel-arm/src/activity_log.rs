//! The activity log (`Microsoft.Insights/eventtypes/management/values`), what
//! `az monitor activity-log list` reads: a tenant's own audit entries for a subscription, shaped as
//! Azure activity-log events, newest first. Each event carries its audit sequence number and chain
//! hashes, so that it can be matched against the tamper-evident chain.

use crate::error::ArmResult;
use crate::{clip, ArmResponse, Ctx};
use ciel_core::audit::AuditRecord;
use ciel_core::{ApiError, ResourceId};
use ciel_store::AuditQuery;
use http::StatusCode;
use serde_json::{json, Value};

pub const API_VERSIONS: &[&str] = &["2014-04-01", "2015-04-01", "2017-03-01-preview"];
const READ: &str = "Microsoft.Insights/eventtypes/values/read";
const PAGE: usize = 200;
/// Azure answers at most 90 days per query.
const MAX_WINDOW_DAYS: i64 = 90;

#[derive(Default)]
struct Filter {
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    resource_group: Option<String>,
    resource_id: Option<String>,
    provider: Option<String>,
    correlation_id: Option<String>,
    caller: Option<String>,
    status: Option<String>,
}

fn parse_time(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    // The CLI sends naive UTC times (`datetime.utcnow().isoformat()`).
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S"))
        .ok()
        .map(|n| n.and_utc())
}

fn parse_filter(f: &str) -> Result<Filter, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "BadRequest",
            format!("The $filter '{}' is not supported: use eventTimestamp ge/le with optional resourceGroupName, resourceId, resourceProvider, correlationId, caller or status eq.", clip(f)),
        )
    };
    let mut out = Filter::default();
    for cond in f.split(" and ") {
        let parts: Vec<&str> = cond.trim().splitn(3, ' ').collect();
        let [field, op, value] = parts.as_slice() else {
            return Err(bad());
        };
        let value = value.trim().trim_matches('\'').to_string();
        match (field.to_ascii_lowercase().as_str(), *op) {
            ("eventtimestamp", "ge") => out.from = Some(parse_time(&value).ok_or_else(bad)?),
            ("eventtimestamp", "le") => out.to = Some(parse_time(&value).ok_or_else(bad)?),
            ("resourcegroupname", "eq") => out.resource_group = Some(value),
            ("resourceid", "eq") | ("resourceuri", "eq") => out.resource_id = Some(value),
            ("resourceprovider", "eq") => out.provider = Some(value),
            ("correlationid", "eq") => out.correlation_id = Some(value),
            ("caller", "eq") => out.caller = Some(value),
            ("status", "eq") => out.status = Some(value),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn fmt(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn guid_of(hash: &str) -> String {
    let h = if hash.len() >= 32 {
        &hash[..32]
    } else {
        "00000000000000000000000000000000"
    };
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn caller_of(actor: &str) -> String {
    actor.strip_prefix("sp:").unwrap_or(actor).to_string()
}

fn status_of(outcome: &str) -> &'static str {
    match outcome {
        "success" => "Succeeded",
        _ => "Failed",
    }
}

pub fn event(r: &AuditRecord, subscription: &str) -> Value {
    let id = ResourceId::parse(&r.target);
    let rg = id.as_ref().and_then(|i| i.resource_group.clone());
    let provider = r.action.split('/').next().unwrap_or("").to_string();
    let rtype = id
        .as_ref()
        .and_then(|i| i.resource_type())
        .unwrap_or_else(|| {
            if rg.is_some() {
                "Microsoft.Resources/resourceGroups".into()
            } else {
                "Microsoft.Resources/subscriptions".into()
            }
        });
    let details: Value = serde_json::from_str(&r.details).unwrap_or(json!({}));
    let mut props = serde_json::Map::new();
    if let Value::Object(m) = details {
        for (k, v) in m {
            props.insert(
                k,
                Value::String(match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }),
            );
        }
    }
    props.insert("auditSequence".into(), json!(r.seq.to_string()));
    props.insert("auditHash".into(), json!(r.hash));
    props.insert("auditPreviousHash".into(), json!(r.prev_hash));
    let data_id = guid_of(&r.hash);
    let status = status_of(&r.outcome);
    json!({
        "authorization": {"action": r.action, "scope": r.target},
        "caller": caller_of(&r.actor),
        "channels": "Operation",
        "claims": {},
        "correlationId": r.request_id.clone().unwrap_or_default(),
        "description": "",
        "eventDataId": data_id,
        "eventName": {"value": "EndRequest", "localizedValue": "End request"},
        "category": {"value": "Administrative", "localizedValue": "Administrative"},
        "eventTimestamp": r.ts,
        "id": format!("{}/events/{data_id}/ticks/{}", r.target, r.seq),
        "level": if status == "Succeeded" { "Informational" } else { "Warning" },
        "operationId": r.request_id.clone().unwrap_or_default(),
        "operationName": {"value": r.action, "localizedValue": r.action},
        "resourceGroupName": rg,
        "resourceProviderName": {"value": provider, "localizedValue": provider},
        "resourceType": {"value": rtype, "localizedValue": rtype},
        "resourceId": r.target,
        "status": {"value": status, "localizedValue": status},
        "subStatus": {"value": if r.outcome == "denied" { "Forbidden" } else { "" }, "localizedValue": if r.outcome == "denied" { "Forbidden" } else { "" }},
        "submissionTimestamp": r.ts,
        "subscriptionId": subscription,
        "tenantId": r.tenant_id,
        "properties": props,
        "httpRequest": {"clientIpAddress": r.client_ip, "clientRequestId": r.request_id},
        "relatedEvents": []
    })
}

pub async fn list(ctx: &Ctx<'_>, sub: &str) -> ArmResult<ArmResponse> {
    crate::api_version::check(
        ctx.req.api_version(),
        API_VERSIONS,
        "Microsoft.Insights/eventtypes",
    )?;
    let f = parse_filter(ctx.req.q("$filter").ok_or_else(|| {
        ApiError::bad_request(
            "BadRequest",
            "The $filter parameter is required and must give at least eventTimestamp ge.",
        )
    })?)?;
    let from = f.from.ok_or_else(|| {
        ApiError::bad_request("BadRequest", "The $filter must give 'eventTimestamp ge'.")
    })?;
    let to = f.to.unwrap_or_else(chrono::Utc::now);
    if to < from || (to - from).num_days() > MAX_WINDOW_DAYS {
        return Err(ApiError::bad_request(
            "BadRequest",
            format!("The time window must be positive and at most {MAX_WINDOW_DAYS} days."),
        )
        .into());
    }
    let mut scope = ResourceId::subscription(sub);
    if let Some(rg) = &f.resource_group {
        scope = ResourceId::resource_group(sub, rg);
    }
    if let Some(rid) = &f.resource_id {
        let id = ResourceId::parse(rid)
            .filter(|i| i.subscription.eq_ignore_ascii_case(sub))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "BadRequest",
                    format!("'{}' is not a resource id of this subscription.", clip(rid)),
                )
            })?;
        scope = id;
    }
    ctx.authorize(&scope, READ).await?;
    let before = match ctx.req.q("$skipToken").or_else(|| ctx.req.q("$skiptoken")) {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("BadRequest", "The $skipToken is not valid."))?,
        None => i64::MAX,
    };
    let q = AuditQuery {
        tenant_id: ctx.caller.tenant_id.clone(),
        from: fmt(&from),
        to: fmt(&to),
        target_prefix: scope.key(),
        before_seq: before,
        limit: PAGE + 1,
    };
    let mut rows = ciel_store::run(&ctx.arm.store, move |s| s.query_audit(&q)).await?;
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let keep = |r: &AuditRecord| {
        f.provider
            .as_ref()
            .map(|p| {
                r.action
                    .to_ascii_lowercase()
                    .starts_with(&format!("{}/", p.to_ascii_lowercase()))
            })
            .unwrap_or(true)
            && f.correlation_id
                .as_ref()
                .map(|c| r.request_id.as_deref() == Some(c.as_str()))
                .unwrap_or(true)
            && f.caller
                .as_ref()
                .map(|c| caller_of(&r.actor).eq_ignore_ascii_case(c))
                .unwrap_or(true)
            && f.status
                .as_ref()
                .map(|s| status_of(&r.outcome).eq_ignore_ascii_case(s))
                .unwrap_or(true)
    };
    let value: Vec<Value> = rows
        .iter()
        .filter(|r| keep(r))
        .map(|r| event(r, sub))
        .collect();
    let mut body = json!({ "value": value });
    if more {
        if let Some(last) = rows.last() {
            let filter = ctx.req.q("$filter").unwrap_or("");
            body["nextLink"] = json!(format!(
                "{}subscriptions/{sub}/providers/microsoft.insights/eventtypes/management/values?api-version={}&%24filter={}&%24skipToken={}",
                ctx.base(),
                ctx.req.api_version().unwrap_or("2015-04-01"),
                percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC),
                last.seq
            ));
        }
    }
    Ok(ArmResponse::json(StatusCode::OK, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn filters_as_the_cli_sends_them() {
        let f = parse_filter("eventTimestamp ge 2026-11-28T16:00:00.123456 and eventTimestamp le 2026-11-28T22:00:00.123456 and resourceGroupName eq 'rg1'").unwrap();
        assert_eq!(f.resource_group.as_deref(), Some("rg1"));
        assert!(f.from.unwrap() < f.to.unwrap());
        let f = parse_filter("eventTimestamp ge '2026-11-28T16:00:00Z' and caller eq 'alice@x.fr'")
            .unwrap();
        assert_eq!(f.caller.as_deref(), Some("alice@x.fr"));
        assert!(parse_filter("eventTimestamp gt 2026-11-28").is_err());
        assert!(parse_filter("nonsense").is_err());
    }
}
