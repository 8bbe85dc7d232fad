//! `Microsoft.PolicyInsights`: compliance states (`policyStates/{latest|default}/queryResults`
//! and `summarize`) and `triggerEvaluation`, at subscription, resource-group, resource,
//! assignment or definition scope.
//!
//! States are computed when asked, by evaluating every assignment that reaches each resource
//! as it is stored now: they are always current, so `triggerEvaluation` has nothing left to do
//! and completes at once (it is audited like any request for an evaluation).

use super::{judge, load_all, Applied, PolicyKind, Unit};
use crate::error::ArmResult;
use crate::{clip, method_not_allowed, ArmResponse, Ctx};
use ciel_core::{ApiError, ResourceId};
use ciel_store::Found;
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

pub const API_VERSIONS: &[&str] = &["2018-04-04", "2019-10-01", "2022-04-01", "2024-10-01"];

const QUERY: &str = "Microsoft.PolicyInsights/policyStates/queryResults/read";
const SUMMARIZE: &str = "Microsoft.PolicyInsights/policyStates/summarize/read";
const TRIGGER: &str = "Microsoft.PolicyInsights/policyStates/triggerEvaluation/action";

/// `{scope}/providers/Microsoft.PolicyInsights/{rest}`; `within` narrows to one assignment or
/// definition when the path goes through one.
pub async fn dispatch(
    ctx: &Ctx<'_>,
    scope: ResourceId,
    within: Option<(PolicyKind, String)>,
    rest: &[&str],
) -> ArmResult<ArmResponse> {
    crate::api_version::check(
        ctx.req.api_version(),
        API_VERSIONS,
        "Microsoft.PolicyInsights/policyStates",
    )?;
    let m = &ctx.req.method;
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match rest {
        [ps, which, op] if eq(ps, "policyStates") && (eq(which, "latest") || eq(which, "default")) => {
            crate::role_assignments::ensure_scope_exists(ctx, &scope).await?;
            if eq(op, "queryResults") && (m == Method::POST || m == Method::GET) {
                ctx.authorize(&scope, QUERY).await?;
                let states = compute(ctx, &scope, within.as_ref()).await?;
                query(ctx, states)
            } else if eq(op, "summarize") && m == Method::POST {
                ctx.authorize(&scope, SUMMARIZE).await?;
                let states = compute(ctx, &scope, within.as_ref()).await?;
                Ok(summarize(ctx, &scope, states))
            } else if eq(op, "triggerEvaluation") && m == Method::POST && eq(which, "latest") && within.is_none() {
                ctx.authorize(&scope, TRIGGER).await?;
                let states = compute(ctx, &scope, None).await?;
                let non = states.iter().filter(|s| s["complianceState"] == "NonCompliant").count();
                ctx.arm
                    .auditor
                    .record(ctx.draft(TRIGGER, &scope.to_string(), "success", json!({"evaluated": states.len(), "nonCompliant": non})))
                    .await?;
                Ok(ArmResponse::empty(StatusCode::OK))
            } else {
                Err(method_not_allowed())
            }
        }
        [kind, ..] if eq(kind, "policyEvents") || eq(kind, "remediations") || eq(kind, "attestations") || eq(kind, "policyMetadata") => {
            Err(ApiError::bad_request(
                "FeatureNotSupported",
                format!("Microsoft.PolicyInsights/{} is not supported by this cloud; compliance is read from policyStates.", clip(kind)),
            )
            .into())
        }
        _ => Err(crate::unknown_path(ctx)),
    }
}

/// A resource as rules read it, and whether its type carries tags and location.
struct Candidate {
    body: Value,
    indexed: bool,
}

async fn candidates(ctx: &Ctx<'_>, scope: &ResourceId) -> ArmResult<Vec<Candidate>> {
    let tenant = ctx.caller.tenant_id.clone();
    let sc = scope.clone();
    let (resources, groups) = ciel_store::run(&ctx.arm.store, move |s| {
        let resources = if sc.segments.is_empty() {
            s.list_resources(&sc.key(), None, None, 100_000)?
        } else {
            s.get_resource(&sc.key()).found()?.into_iter().collect()
        };
        let groups = match (&sc.resource_group, sc.segments.is_empty()) {
            (_, false) => vec![],
            (Some(rg), true) => s
                .get_resource_group(&sc.subscription, rg)
                .found()?
                .into_iter()
                .collect(),
            (None, true) => s.list_resource_groups(&sc.subscription, None, 100_000)?,
        };
        Ok((resources, groups))
    })
    .await?;
    let mut out = Vec::new();
    for g in groups {
        let body = super::group_candidate(&g);
        let id = ResourceId::resource_group(&g.subscription_id, &g.name);
        if ctx
            .can(&id, "Microsoft.Resources/subscriptions/resourceGroups/read")
            .await?
        {
            out.push(Candidate {
                body,
                indexed: false,
            });
        }
    }
    for r in resources.into_iter().filter(|r| r.tenant_id == tenant) {
        let Some(id) = ResourceId::parse(&r.id) else {
            continue;
        };
        if !ctx.can(&id, &format!("{}/read", r.rtype)).await? {
            continue;
        }
        let mut body = r.body.clone();
        if let Some(o) = body.as_object_mut() {
            o.insert("id".into(), json!(r.id));
            o.insert("name".into(), json!(r.name));
            o.insert("type".into(), json!(r.rtype));
        }
        out.push(Candidate {
            body,
            indexed: r.location.is_some(),
        });
    }
    Ok(out)
}

fn state(
    a: &Applied,
    u: &Unit,
    c: &Candidate,
    effect: super::rule::Effect,
    non_compliant: bool,
    now: &str,
) -> Value {
    let rid = c.body["id"].as_str().unwrap_or("");
    let parsed = ResourceId::parse(rid);
    json!({
        "@odata.id": null,
        "@odata.context": "https://management.azure.com/providers/Microsoft.PolicyInsights/policyStates/$metadata#latest/$entity",
        "timestamp": now,
        "resourceId": rid,
        "policyAssignmentId": a.obj.id,
        "policyDefinitionId": u.def_id,
        "effectiveParameters": u.effective_parameters(u.param_decls.as_ref()).to_string(),
        "isCompliant": !non_compliant,
        "subscriptionId": parsed.as_ref().map(|p| p.subscription.clone()),
        "resourceType": c.body["type"],
        "resourceLocation": c.body.get("location").cloned().unwrap_or(Value::Null),
        "resourceGroup": parsed.as_ref().and_then(|p| p.resource_group.clone()).unwrap_or_default(),
        "resourceTags": c.body.get("tags").cloned().unwrap_or_else(|| json!({})).to_string(),
        "policyAssignmentName": a.obj.name,
        "policyAssignmentOwner": "tbd",
        "policyAssignmentParameters": a.parameters().to_string(),
        "policyAssignmentScope": a.obj.body.pointer("/properties/scope").cloned().unwrap_or(Value::Null),
        "policyDefinitionName": u.def_name,
        "policyDefinitionAction": effect.as_str(),
        "policyDefinitionCategory": u.category.clone().unwrap_or_else(|| "tbd".into()),
        "policySetDefinitionId": u.set_id.clone().unwrap_or_default(),
        "policySetDefinitionName": u.set_name.clone().unwrap_or_default(),
        "policySetDefinitionOwner": "",
        "policySetDefinitionCategory": "",
        "policySetDefinitionParameters": "",
        "managementGroupIds": "",
        "policyDefinitionReferenceId": u.reference_id.clone().unwrap_or_default(),
        "complianceState": if non_compliant { "NonCompliant" } else { "Compliant" },
        "policyDefinitionGroupNames": [],
        "policyDefinitionVersion": "",
        "policySetDefinitionVersion": "",
        "policyAssignmentVersion": "",
    })
}

/// One state per (resource, assignment, definition) the assignment reaches.
async fn compute(
    ctx: &Ctx<'_>,
    scope: &ResourceId,
    within: Option<&(PolicyKind, String)>,
) -> ArmResult<Vec<Value>> {
    let all = load_all(&ctx.arm.store, &ctx.caller.tenant_id).await?;
    let assignment_id = match within {
        Some((PolicyKind::Assignments, name)) => {
            Some(super::assignments::id_at(scope, name).to_ascii_lowercase())
        }
        _ => None,
    };
    let definition = match within {
        Some((PolicyKind::Definitions, name)) => Some(name.to_ascii_lowercase()),
        Some((PolicyKind::SetDefinitions, name)) => Some(name.to_ascii_lowercase()),
        _ => None,
    };
    // Resources are looked for at the scope; for an assignment path, the assignment's own scope.
    let resource_scope = match &assignment_id {
        Some(_) => scope.clone(),
        None => scope.clone(),
    };
    let cands = candidates(ctx, &resource_scope).await?;
    let now = ciel_core::time::now_rfc3339();
    let mut out = Vec::new();
    for a in &all {
        if let Some(want) = &assignment_id {
            if a.obj.id.to_ascii_lowercase() != *want {
                continue;
            }
        }
        for u in &a.units {
            if let Some(d) = &definition {
                let by_def = u.def_name.to_ascii_lowercase() == *d;
                let by_set = u
                    .set_name
                    .as_deref()
                    .is_some_and(|s| s.to_ascii_lowercase() == *d);
                if !(by_def || by_set) {
                    continue;
                }
            }
            for c in &cands {
                let rid = c.body["id"].as_str().unwrap_or("");
                if !a.covers(rid) {
                    continue;
                }
                if let Some((effect, matched)) = judge(u, &c.body, c.indexed) {
                    out.push(state(a, u, c, effect, matched, &now));
                }
            }
        }
    }
    Ok(out)
}

/// OData `$filter` on states: clauses `field eq|ne value` joined by `and` (values quoted
/// strings, true/false or numbers; field names without case).
fn filter(f: &str) -> Result<Vec<(String, bool, Value)>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "InvalidFilterInQueryString",
            format!(
                "The $filter '{}' is not supported: use clauses \"field eq|ne value\" joined by 'and' (for example complianceState eq 'NonCompliant').",
                clip(f)
            ),
        )
    };
    let mut out = Vec::new();
    let lower = f.to_ascii_lowercase();
    let mut start = 0;
    let mut parts = Vec::new();
    // Split on " and " outside quotes.
    let mut in_q = false;
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            in_q = !in_q;
        } else if !in_q && lower[i..].starts_with(" and ") {
            parts.push(&f[start..i]);
            start = i + 5;
            i += 5;
            continue;
        }
        i += 1;
    }
    parts.push(&f[start..]);
    for p in parts {
        let p = p
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .trim();
        let lp = p.to_ascii_lowercase();
        let (pos, neg) = match (lp.find(" eq "), lp.find(" ne ")) {
            (Some(i), _) => (i, false),
            (None, Some(i)) => (i, true),
            _ => return Err(bad()),
        };
        let field = p[..pos].trim().to_string();
        let raw = p[pos + 4..].trim();
        let value = if raw.len() >= 2 && raw.starts_with('\'') && raw.ends_with('\'') {
            json!(raw[1..raw.len() - 1].replace("''", "'"))
        } else if raw.eq_ignore_ascii_case("true") {
            json!(true)
        } else if raw.eq_ignore_ascii_case("false") {
            json!(false)
        } else if let Ok(n) = raw.parse::<i64>() {
            json!(n)
        } else {
            return Err(bad());
        };
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        out.push((field, neg, value));
    }
    Ok(out)
}

fn get_ci<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(x, _)| x.eq_ignore_ascii_case(k))
        .map(|(_, v)| v)
}

fn query(ctx: &Ctx<'_>, mut states: Vec<Value>) -> ArmResult<ArmResponse> {
    for unsupported in ["$apply", "$expand"] {
        if ctx.req.q(unsupported).is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::bad_request(
                "FeatureNotSupported",
                format!("The query option '{unsupported}' is not supported by this cloud's policy states."),
            )
            .into());
        }
    }
    if let Some(f) = ctx
        .req
        .q("$filter")
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        let clauses = filter(f)?;
        if let Some((field, _, _)) = clauses
            .iter()
            .find(|(k, _, _)| states.first().is_some_and(|s| get_ci(s, k).is_none()))
        {
            return Err(ApiError::bad_request(
                "InvalidFilterInQueryString",
                format!(
                    "The property '{}' is not a policy state property.",
                    clip(field)
                ),
            )
            .into());
        }
        states.retain(|s| {
            clauses.iter().all(|(k, neg, v)| {
                let x = get_ci(s, k).cloned().unwrap_or(Value::Null);
                let same = match (x.as_str(), v.as_str()) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => x == *v,
                };
                same != *neg
            })
        });
    }
    if let Some(o) = ctx
        .req
        .q("$orderby")
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let mut it = o.split_whitespace();
        let field = it.next().unwrap_or("").to_string();
        let desc = it.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
        states.sort_by(|a, b| {
            let ka = get_ci(a, &field).map(|v| v.to_string()).unwrap_or_default();
            let kb = get_ci(b, &field).map(|v| v.to_string()).unwrap_or_default();
            if desc {
                kb.cmp(&ka)
            } else {
                ka.cmp(&kb)
            }
        });
    }
    if let Some(t) = ctx.req.q("$top") {
        let n: usize = t.parse().map_err(|_| {
            ApiError::bad_request(
                "InvalidTopParameter",
                "$top must be a non-negative integer.",
            )
        })?;
        states.truncate(n);
    }
    if let Some(sel) = ctx
        .req
        .q("$select")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let fields: Vec<&str> = sel.split(',').map(str::trim).collect();
        states = states
            .into_iter()
            .map(|s| {
                let mut m = Map::new();
                for f in &fields {
                    if let Some((k, v)) = s
                        .as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(f)))
                    {
                        m.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(m)
            })
            .collect();
    }
    Ok(ArmResponse::json(
        StatusCode::OK,
        json!({
            "@odata.context": "https://management.azure.com/providers/Microsoft.PolicyInsights/policyStates/$metadata#latest",
            "@odata.count": states.len(),
            "value": states,
        }),
    ))
}

fn summarize(ctx: &Ctx<'_>, scope: &ResourceId, states: Vec<Value>) -> ArmResponse {
    let non: Vec<&Value> = states
        .iter()
        .filter(|s| s["complianceState"] == "NonCompliant")
        .collect();
    let count_unique = |v: &[&Value], k: &str| {
        v.iter()
            .filter_map(|s| s[k].as_str())
            .map(str::to_ascii_lowercase)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let details = |v: &[&Value], k: &str| {
        let nc = v
            .iter()
            .filter(|s| s["complianceState"] == "NonCompliant")
            .filter_map(|s| s[k].as_str())
            .map(str::to_ascii_lowercase)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let all = count_unique(v, k);
        json!([{"complianceState": "noncompliant", "count": nc}, {"complianceState": "compliant", "count": all - nc}])
    };
    let all_refs: Vec<&Value> = states.iter().collect();
    let mut by_assignment: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
    for s in &states {
        by_assignment
            .entry(s["policyAssignmentId"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(s);
    }
    let assignments: Vec<Value> = by_assignment
        .iter()
        .map(|(aid, v)| {
            let mut by_def: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
            for s in v {
                by_def.entry(format!("{}|{}", s["policyDefinitionId"].as_str().unwrap_or(""), s["policyDefinitionReferenceId"].as_str().unwrap_or(""))).or_default().push(s);
            }
            let nc_v: Vec<&Value> = v.iter().copied().filter(|s| s["complianceState"] == "NonCompliant").collect();
            json!({
                "policyAssignmentId": aid,
                "policySetDefinitionId": v.first().map(|s| s["policySetDefinitionId"].clone()).unwrap_or(Value::Null),
                "results": {
                    "nonCompliantResources": count_unique(&nc_v, "resourceId"),
                    "nonCompliantPolicies": nc_v.iter().map(|s| format!("{}|{}", s["policyDefinitionId"], s["policyDefinitionReferenceId"])).collect::<std::collections::BTreeSet<_>>().len(),
                    "resourceDetails": details(v, "resourceId"),
                    "policyDetails": [],
                    "policyGroupDetails": [],
                },
                "policyDefinitions": by_def.values().map(|d| {
                    let nc_d: Vec<&Value> = d.iter().copied().filter(|s| s["complianceState"] == "NonCompliant").collect();
                    json!({
                        "policyDefinitionId": d[0]["policyDefinitionId"],
                        "policyDefinitionReferenceId": d[0]["policyDefinitionReferenceId"],
                        "effect": d[0]["policyDefinitionAction"],
                        "results": {"nonCompliantResources": count_unique(&nc_d, "resourceId"), "resourceDetails": details(d, "resourceId")},
                    })
                }).collect::<Vec<_>>(),
                "policyGroups": [],
            })
        })
        .collect();
    let uri = format!(
        "{}{scope}/providers/Microsoft.PolicyInsights/policyStates/latest/queryResults?api-version=2019-10-01",
        ctx.base()
    );
    ArmResponse::json(
        StatusCode::OK,
        json!({
            "@odata.context": "https://management.azure.com/providers/Microsoft.PolicyInsights/policyStates/$metadata#summary",
            "@odata.count": 1,
            "value": [{
                "@odata.id": null,
                "@odata.context": "https://management.azure.com/providers/Microsoft.PolicyInsights/policyStates/$metadata#summary/$entity",
                "results": {
                    "queryResultsUri": uri,
                    "nonCompliantResources": count_unique(&non, "resourceId"),
                    "nonCompliantPolicies": non.iter().map(|s| format!("{}|{}|{}", s["policyAssignmentId"], s["policyDefinitionId"], s["policyDefinitionReferenceId"])).collect::<std::collections::BTreeSet<_>>().len(),
                    "resourceDetails": details(&all_refs, "resourceId"),
                    "policyDetails": [],
                    "policyGroupDetails": [],
                },
                "policyAssignments": assignments,
            }],
        }),
    )
}
