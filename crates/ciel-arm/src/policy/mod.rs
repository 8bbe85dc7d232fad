//! Azure Policy (docs/policy.md): definitions, set definitions and assignments
//! (`Microsoft.Authorization`), the evaluation of every resource write against the assignments
//! that reach it (modify, then deny, then audit), and compliance states
//! (`Microsoft.PolicyInsights`).
//!
//! Residency is not a policy: `check_location` runs before the policy engine and nothing here
//! can make a location outside France acceptable.

pub mod aliases;
pub mod assignments;
pub mod builtin;
pub mod definitions;
pub mod rule;
pub mod set_definitions;
pub mod states;

use crate::error::{ArmError, ArmResult};
use crate::{clip, ArmResponse, Ctx};
use ciel_core::audit::AuditDraft;
use ciel_core::{ApiError, ResourceId};
use ciel_store::{Found, PolicyObject, Store};
use definitions::Compiled;
use rule::{Effect, Env, RuleError};
use serde_json::{json, Map, Value};

/// The api-versions of the policy resources (the az CLI sends 2025-11-01, azure-mgmt-resource's
/// PolicyClient 2023-04-01 or older ones).
pub const API_VERSIONS: &[&str] = &[
    "2015-10-01-preview",
    "2015-11-01",
    "2016-04-01",
    "2016-12-01",
    "2017-06-01-preview",
    "2018-03-01",
    "2018-05-01",
    "2019-01-01",
    "2019-06-01",
    "2019-09-01",
    "2020-03-01",
    "2020-07-01-preview",
    "2020-09-01",
    "2021-06-01",
    "2022-06-01",
    "2022-07-01-preview",
    "2022-08-01-preview",
    "2023-04-01",
    "2024-04-01",
    "2024-05-01",
    "2025-01-01",
    "2025-03-01",
    "2025-11-01",
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Definitions,
    SetDefinitions,
    Assignments,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Definitions => "policyDefinitions",
            PolicyKind::SetDefinitions => "policySetDefinitions",
            PolicyKind::Assignments => "policyAssignments",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            PolicyKind::Definitions,
            PolicyKind::SetDefinitions,
            PolicyKind::Assignments,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

fn api_check(ctx: &Ctx<'_>) -> ArmResult<()> {
    crate::api_version::check(
        ctx.req.api_version(),
        API_VERSIONS,
        "Microsoft.Authorization/policyDefinitions",
    )?;
    Ok(())
}

/// `{scope}/providers/Microsoft.Authorization/{kind}[/{name}[/providers/Microsoft.PolicyInsights/...]]`.
pub async fn dispatch(
    ctx: &Ctx<'_>,
    scope: Option<ResourceId>,
    kind: PolicyKind,
    rest: &[&str],
) -> ArmResult<ArmResponse> {
    if let ([name, p, ns, more @ ..], Some(s)) = (rest, &scope) {
        if p.eq_ignore_ascii_case("providers")
            && ns.eq_ignore_ascii_case("Microsoft.PolicyInsights")
        {
            return states::dispatch(ctx, s.clone(), Some((kind, name.to_string())), more).await;
        }
    }
    if let Some(s) = &scope {
        crate::role_assignments::ensure_scope_exists(ctx, s).await?;
    }
    match kind {
        PolicyKind::Definitions => definitions::dispatch(ctx, scope.as_ref(), rest).await,
        PolicyKind::SetDefinitions => set_definitions::dispatch(ctx, scope.as_ref(), rest).await,
        PolicyKind::Assignments => match scope {
            Some(s) => assignments::dispatch(ctx, &s, rest).await,
            None => Err(crate::unknown_path(ctx)),
        },
    }
}

/// Management groups do not exist here; policy paths under one get a clear answer.
pub fn management_groups() -> ArmError {
    ApiError::bad_request(
        "FeatureNotSupported",
        "Management groups are not supported by this cloud: define and assign policies at subscription or resource-group scope.",
    )
    .into()
}

/// Names: 1..=max characters, none of `<>*%&:\?/+` nor control characters, not ending in `.` or space.
fn name_ok(name: &str, max: usize, what: &str) -> ArmResult<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= max
        && !name
            .chars()
            .any(|c| c.is_control() || "<>*%&:\\?/+#".contains(c))
        && !name.ends_with('.')
        && !name.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidPolicyName",
            format!(
                "The {what} name '{}' is invalid: 1 to {max} characters, without <>*%&:\\?/+# and not ending with '.' or a space.",
                clip(name)
            ),
        )
        .into())
    }
}

/// Refuses a policy write: audited (bad input to a security control is security-relevant),
/// then answered.
async fn refuse(ctx: &Ctx<'_>, action: &str, target: &str, e: ApiError) -> ArmResult<ArmResponse> {
    ctx.arm
        .auditor
        .record(ctx.draft(
            action,
            target,
            "denied",
            json!({"reason": e.code, "message": clip(&e.message)}),
        ))
        .await?;
    Err(e.into())
}

/// `createdBy`/`createdOn`/`updatedBy`/`updatedOn` in a definition's or assignment's metadata.
fn stamp(metadata: &mut Value, ctx: &Ctx<'_>, previous: Option<&Value>, now: i64) {
    let when = ciel_core::time::unix_to_rfc3339(now);
    let Some(m) = metadata.as_object_mut() else {
        return;
    };
    let prev = previous.and_then(|b| b.pointer("/properties/metadata"));
    match prev {
        Some(p) => {
            m.insert(
                "createdBy".into(),
                p.get("createdBy").cloned().unwrap_or(Value::Null),
            );
            m.insert(
                "createdOn".into(),
                p.get("createdOn").cloned().unwrap_or(Value::Null),
            );
            m.insert("updatedBy".into(), json!(ctx.caller.object_id));
            m.insert("updatedOn".into(), json!(when));
        }
        None => {
            m.insert("createdBy".into(), json!(ctx.caller.object_id));
            m.insert("createdOn".into(), json!(when));
            m.insert("updatedBy".into(), Value::Null);
            m.insert("updatedOn".into(), Value::Null);
        }
    }
}

fn system_data(ctx: &Ctx<'_>, created: i64, changed: i64) -> Value {
    json!({
        "createdBy": ctx.caller.display(),
        "createdByType": if ctx.caller.upn.is_some() { "User" } else { "Application" },
        "createdAt": ciel_core::time::unix_to_rfc3339(created),
        "lastModifiedBy": ctx.caller.display(),
        "lastModifiedByType": if ctx.caller.upn.is_some() { "User" } else { "Application" },
        "lastModifiedAt": ciel_core::time::unix_to_rfc3339(changed),
    })
}

/// `field eq 'value'` → (field, value).
fn eq_clause(f: &str) -> Option<(String, String)> {
    let (field, v) = f.split_once(" eq ")?;
    let v = v.trim();
    let v = v.strip_prefix('\'')?.strip_suffix('\'')?;
    Some((field.trim().to_string(), v.replace("''", "'")))
}

/// A definition or set definition still named by an assignment or a set cannot be deleted:
/// the assignment would silently stop protecting anything.
async fn ensure_unused(ctx: &Ctx<'_>, id: &str, action: &str) -> ArmResult<()> {
    let tenant = ctx.caller.tenant_id.clone();
    let (assigned, sets) = ciel_store::run(&ctx.arm.store, move |s| {
        Ok((
            s.policy_list(&tenant, PolicyKind::Assignments.as_str())?,
            s.policy_list(&tenant, PolicyKind::SetDefinitions.as_str())?,
        ))
    })
    .await?;
    let user = assigned
        .iter()
        .find(|a| {
            a.body
                .pointer("/properties/policyDefinitionId")
                .and_then(Value::as_str)
                .is_some_and(|d| d.eq_ignore_ascii_case(id))
        })
        .or_else(|| {
            sets.iter().find(|s| {
                s.body
                    .pointer("/properties/policyDefinitions")
                    .and_then(Value::as_array)
                    .is_some_and(|m| {
                        m.iter().any(|r| {
                            r.get("policyDefinitionId")
                                .and_then(Value::as_str)
                                .is_some_and(|d| d.eq_ignore_ascii_case(id))
                        })
                    })
            })
        });
    if let Some(u) = user {
        refuse(
            ctx,
            action,
            id,
            ApiError::bad_request(
                "PolicyDefinitionInUse",
                format!(
                    "The policy definition '{}' is in use by '{}'; delete that first.",
                    clip(id),
                    clip(&u.id)
                ),
            ),
        )
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- definitions by id

/// A definition or set definition body by id, if it exists for the tenant.
pub fn definition_by_id(
    s: &dyn ciel_store::MetadataStore,
    tenant: &str,
    id: &str,
) -> ciel_store::Result<Option<(PolicyKind, Value)>> {
    let parsed: Vec<&str> = id.split('/').filter(|p| !p.is_empty()).collect();
    if let ["providers", ns, kind, name] = parsed.as_slice() {
        if ns.eq_ignore_ascii_case("Microsoft.Authorization")
            && kind.eq_ignore_ascii_case("policyDefinitions")
        {
            return Ok(builtin::find(name).map(|b| (PolicyKind::Definitions, builtin::to_json(b))));
        }
        return Ok(None);
    }
    Ok(s.policy_get(id).found()?.and_then(|o| {
        let kind = PolicyKind::parse(&o.kind)?;
        (o.tenant_id == tenant && kind != PolicyKind::Assignments).then_some((kind, o.body))
    }))
}

// ---------------------------------------------------------------- evaluation units

/// One definition as an assignment applies it: compiled, with its parameters' values.
pub struct Unit {
    /// The definition's parameter declarations as written (for their spelling).
    pub param_decls: Option<Value>,
    pub def_id: String,
    pub def_name: String,
    pub def_display: Option<String>,
    pub category: Option<String>,
    pub compiled: Compiled,
    /// Lower-cased parameter name → value.
    pub params: Map<String, Value>,
    pub set_id: Option<String>,
    pub set_name: Option<String>,
    pub reference_id: Option<String>,
}

impl Unit {
    /// The parameters' values under their declared spelling, as `{"name": {"value": v}}`.
    pub fn effective_parameters(&self, def_params: Option<&Value>) -> Value {
        let spelled = |k: &str| {
            def_params
                .and_then(Value::as_object)
                .and_then(|m| m.keys().find(|x| x.eq_ignore_ascii_case(k)).cloned())
                .unwrap_or_else(|| k.to_string())
        };
        Value::Object(
            self.params
                .iter()
                .map(|(k, v)| (spelled(k), json!({ "value": v })))
                .collect(),
        )
    }
}

/// An assignment and its units.
pub struct Applied {
    pub obj: PolicyObject,
    pub units: Vec<Unit>,
}

impl Applied {
    fn prop(&self, k: &str) -> Option<&Value> {
        self.obj.body.get("properties").and_then(|p| p.get(k))
    }
    pub fn enforced(&self) -> bool {
        !self
            .prop("enforcementMode")
            .and_then(Value::as_str)
            .is_some_and(|m| m.eq_ignore_ascii_case("DoNotEnforce"))
    }
    /// True when the assignment reaches `resource` (within its scope, outside its notScopes).
    pub fn covers(&self, resource: &str) -> bool {
        let r = resource.to_ascii_lowercase();
        let within = |scope: &str| {
            let s = scope.trim_end_matches('/').to_ascii_lowercase();
            r == s || r.starts_with(&format!("{s}/"))
        };
        within(&self.obj.scope)
            && !self
                .prop("notScopes")
                .and_then(Value::as_array)
                .is_some_and(|n| n.iter().filter_map(Value::as_str).any(within))
    }
    pub fn display_name(&self) -> Value {
        self.prop("displayName").cloned().unwrap_or(Value::Null)
    }
    pub fn parameters(&self) -> Value {
        self.prop("parameters")
            .cloned()
            .unwrap_or_else(|| json!({}))
    }
    /// The assignment's non-compliance message for a unit (its reference id first, then the default).
    pub fn message_for(&self, u: &Unit) -> Option<String> {
        let msgs = self.prop("nonComplianceMessages")?.as_array()?;
        let pick = |want: Option<&str>| {
            msgs.iter().find(|m| {
                let r = m.get("policyDefinitionReferenceId").and_then(Value::as_str);
                match (r, want) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => false,
                }
            })
        };
        pick(u.reference_id.as_deref())
            .or_else(|| pick(None))
            .and_then(|m| m.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }
}

/// Effective parameter values: what the assignment (or set) gives, else the declared default.
/// Checks names, presence, types and allowed values.
pub fn effective_params(
    declared: &rule::Declared,
    given: Option<&Value>,
    what: &str,
) -> Result<Map<String, Value>, RuleError> {
    let err = |code: &'static str, m: String| RuleError { code, message: m };
    let mut given_l: Map<String, Value> = Map::new();
    if let Some(g) = given.filter(|g| !g.is_null()) {
        let obj = g.as_object().ok_or_else(|| {
            err(
                "InvalidPolicyParameters",
                "'parameters' must be an object of {\"name\": {\"value\": ...}}.".into(),
            )
        })?;
        for (k, v) in obj {
            let value = v.as_object().and_then(|o| o.get("value")).ok_or_else(|| {
                err(
                    "InvalidPolicyParameters",
                    format!(
                        "The parameter '{}' must be given as {{\"value\": ...}}.",
                        clip(k)
                    ),
                )
            })?;
            if !declared.contains_key(&k.to_ascii_lowercase()) {
                return Err(err(
                    "UndefinedPolicyParameter",
                    format!(
                        "The parameter '{}' is not defined in the policy definition {}.",
                        clip(k),
                        clip(what)
                    ),
                ));
            }
            given_l.insert(k.to_ascii_lowercase(), value.clone());
        }
    }
    let mut out = Map::new();
    for (name, decl) in declared {
        let ty = decl.get("type").and_then(Value::as_str).unwrap_or("String");
        let v = match given_l
            .remove(name)
            .or_else(|| decl.get("defaultValue").cloned())
        {
            Some(v) => v,
            None => {
                return Err(err(
                    "MissingPolicyParameter",
                    format!(
                        "The policy parameter '{name}' of {} has no value and no default value.",
                        clip(what)
                    ),
                ))
            }
        };
        if !definitions::type_ok(ty, &v) {
            return Err(err(
                "InvalidPolicyParameters",
                format!("The value of the parameter '{name}' is not of type '{ty}'."),
            ));
        }
        if let Some(allowed) = decl.get("allowedValues").and_then(Value::as_array) {
            let members: Vec<&Value> = match (&v, ty.eq_ignore_ascii_case("array")) {
                (Value::Array(a), true) => a.iter().collect(),
                _ => vec![&v],
            };
            for m in members {
                if !allowed.iter().any(|a| match (a.as_str(), m.as_str()) {
                    (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                    _ => a == m,
                }) {
                    return Err(err(
                        "InvalidPolicyParameters",
                        format!(
                            "The value '{}' of the parameter '{name}' is not allowed; allowed values: {}.",
                            clip(&m.to_string()),
                            clip(&Value::Array(allowed.clone()).to_string())
                        ),
                    ));
                }
            }
        }
        out.insert(name.clone(), v);
    }
    Ok(out)
}

fn compile_unit(def_body: &Value, params: Map<String, Value>) -> Result<Unit, RuleError> {
    let props = def_body.get("properties").cloned().unwrap_or(Value::Null);
    let compiled = definitions::compile(&props)?;
    // An effect given by a parameter must name an effect the engine applies.
    let env = Env {
        params: &params,
        resource: &Value::Null,
    };
    rule::check_effect(&env.eval(&compiled.rule.effect))?;
    Ok(Unit {
        def_id: def_body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        def_name: def_body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        def_display: props
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string),
        param_decls: props.get("parameters").cloned(),
        category: props
            .pointer("/metadata/category")
            .and_then(Value::as_str)
            .map(str::to_string),
        compiled,
        params,
        set_id: None,
        set_name: None,
        reference_id: None,
    })
}

/// The units an assignment of `target` with `given` parameters evaluates. Errors are the
/// assignment's errors (missing or invalid parameters, a member that no longer exists).
pub fn units_for(
    s: &dyn ciel_store::MetadataStore,
    tenant: &str,
    kind: PolicyKind,
    target: &Value,
    given: Option<&Value>,
) -> Result<Vec<Unit>, RuleError> {
    let tid = target.get("id").and_then(Value::as_str).unwrap_or("");
    let props = target.get("properties").cloned().unwrap_or(Value::Null);
    let declared = definitions::declarations(props.get("parameters"))?;
    let top = effective_params(&declared, given, &format!("'{tid}'"))?;
    if kind == PolicyKind::Definitions {
        return Ok(vec![compile_unit(target, top)?]);
    }
    let members = props
        .get("policyDefinitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let env = Env {
        params: &top,
        resource: &Value::Null,
    };
    let mut out = Vec::new();
    for m in members {
        let mid = m
            .get("policyDefinitionId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let def = match definition_by_id(s, tenant, mid) {
            Ok(Some((PolicyKind::Definitions, d))) => d,
            _ => {
                return Err(RuleError {
                    code: "PolicyDefinitionNotFound",
                    message: format!("The policy definition '{}' could not be found.", clip(mid)),
                })
            }
        };
        // Member parameters may refer to the set's parameters.
        let mut given_m = Map::new();
        if let Some(mp) = m.get("parameters").and_then(Value::as_object) {
            for (k, v) in mp {
                let raw = v.get("value").cloned().unwrap_or(Value::Null);
                let e = match &raw {
                    Value::String(x) => rule::parse_expr(x, &declared)?,
                    other => rule::Expr::Lit(other.clone()),
                };
                given_m.insert(k.clone(), json!({"value": env.eval(&e)}));
            }
        }
        let dprops = def.get("properties").cloned().unwrap_or(Value::Null);
        let ddecl = definitions::declarations(dprops.get("parameters"))?;
        let p = effective_params(&ddecl, Some(&Value::Object(given_m)), &format!("'{mid}'"))?;
        let mut u = compile_unit(&def, p)?;
        u.set_id = Some(tid.to_string());
        u.set_name = target
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        u.reference_id = m
            .get("policyDefinitionReferenceId")
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push(u);
    }
    Ok(out)
}

/// Every assignment of the tenant with its units. An assignment whose definition cannot be
/// evaluated any more is logged and skipped (deleting a definition in use is refused, so this
/// is only reached by a corrupted store).
pub async fn load_all(store: &Store, tenant: &str) -> ArmResult<Vec<Applied>> {
    let t = tenant.to_string();
    Ok(ciel_store::run(store, move |s| {
        let list = s.policy_list(&t, PolicyKind::Assignments.as_str())?;
        let mut out = Vec::new();
        for obj in list {
            let props = obj.body.get("properties").cloned().unwrap_or(Value::Null);
            let did = props
                .get("policyDefinitionId")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some((kind, def)) = definition_by_id(s, &t, did)? else {
                tracing::warn!(assignment = %obj.id, "policy assignment names a missing definition");
                continue;
            };
            match units_for(s, &t, kind, &def, props.get("parameters")) {
                Ok(units) => out.push(Applied { obj, units }),
                Err(e) => {
                    tracing::warn!(assignment = %obj.id, error = %e.message, "policy assignment cannot be evaluated")
                }
            }
        }
        Ok(out)
    })
    .await?)
}

/// How one unit judges one resource: None when it does not apply (disabled, or an Indexed
/// definition and a type without tags and location).
pub fn judge(u: &Unit, resource: &Value, indexed_type: bool) -> Option<(Effect, bool)> {
    if u.compiled.indexed && !indexed_type {
        return None;
    }
    let env = Env {
        params: &u.params,
        resource,
    };
    let effect = rule::check_effect(&env.eval(&u.compiled.rule.effect)).ok()?;
    if effect == Effect::Disabled {
        return None;
    }
    Some((effect, env.test(&u.compiled.rule.cond)))
}

// ---------------------------------------------------------------- enforcement on writes

/// What a write leaves to do once it succeeded: the audit-effect records.
#[derive(Default)]
pub struct Pending {
    drafts: Vec<AuditDraft>,
    /// A `modify` changed the resource's tags: the write must store the candidate's tags.
    pub tags_modified: bool,
}

impl Pending {
    /// Records the non-compliance found on a write that went through.
    pub async fn record(self, ctx: &Ctx<'_>) -> ArmResult<()> {
        for d in self.drafts {
            ctx.arm.auditor.record(d).await?;
        }
        Ok(())
    }
}

fn identifiers(a: &Applied, u: &Unit, effect: Effect) -> Value {
    let mut info = json!({
        "policyDefinitionId": u.def_id,
        "policyDefinitionName": u.def_name,
        "policyDefinitionDisplayName": u.def_display,
        "policyDefinitionEffect": effect.as_str(),
        "policyAssignmentId": a.obj.id,
        "policyAssignmentName": a.obj.name,
        "policyAssignmentDisplayName": a.display_name(),
        "policyAssignmentScope": a.prop("scope"),
        "policyAssignmentParameters": a.parameters(),
        "policyExemptionIds": [],
    });
    if let Some(s) = &u.set_id {
        info["policySetDefinitionId"] = json!(s);
        info["policySetDefinitionName"] = json!(u.set_name);
        info["policyDefinitionReferenceId"] = json!(u.reference_id);
    }
    info
}

/// Evaluates a write of `resource` (the resource as it would be stored: for PUT the request
/// body, for PATCH the stored resource with the patch applied; with `id`, `name` and `type`)
/// against the assignments that reach it. `modify` operations change `resource` in place;
/// a `deny` refuses the write (403 RequestDisallowedByPolicy, audited); `audit` matches are
/// returned, to be recorded once the write succeeded. `indexed_type` says whether the type
/// carries tags and location (Indexed-mode definitions apply only to those).
pub async fn enforce(
    ctx: &Ctx<'_>,
    action: &str,
    resource: &mut Value,
    indexed_type: bool,
) -> ArmResult<Pending> {
    let id = resource
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let all = load_all(&ctx.arm.store, &ctx.caller.tenant_id).await?;
    let applied: Vec<&Applied> = all.iter().filter(|a| a.covers(&id)).collect();
    let mut pending = Pending::default();
    if applied.is_empty() {
        return Ok(pending);
    }
    // modify first, so that deny and audit judge the resource as it will be stored.
    for a in applied.iter().filter(|a| a.enforced()) {
        for u in &a.units {
            if let Some((Effect::Modify, true)) = judge(u, resource, indexed_type) {
                let snapshot = resource.clone();
                let env = Env {
                    params: &u.params,
                    resource: &snapshot,
                };
                if rule::apply_modify(&env, &u.compiled.rule.modify, resource) {
                    pending.tags_modified = true;
                    let mut d = ctx.draft(
                        "Microsoft.Authorization/policies/modify/action",
                        &id,
                        "success",
                        identifiers(a, u, Effect::Modify),
                    );
                    d.details["tags"] = resource.get("tags").cloned().unwrap_or(Value::Null);
                    pending.drafts.push(d);
                }
            }
        }
    }
    let mut violations = Vec::new();
    let mut reasons = Vec::new();
    for a in &applied {
        for u in &a.units {
            match judge(u, resource, indexed_type) {
                Some((Effect::Deny, true)) if a.enforced() => {
                    violations.push(identifiers(a, u, Effect::Deny));
                    if let Some(m) = a.message_for(u) {
                        reasons.push(m);
                    }
                }
                Some((effect @ (Effect::Deny | Effect::Audit), true)) => {
                    let mut info = identifiers(a, u, effect);
                    info["complianceState"] = json!("NonCompliant");
                    info["enforcementMode"] = json!(if a.enforced() {
                        "Default"
                    } else {
                        "DoNotEnforce"
                    });
                    pending.drafts.push(ctx.draft(
                        "Microsoft.Authorization/policies/audit/action",
                        &id,
                        "success",
                        info,
                    ));
                }
                _ => {}
            }
        }
    }
    if violations.is_empty() {
        return Ok(pending);
    }
    let name = resource.get("name").and_then(Value::as_str).unwrap_or("");
    ctx.arm
        .auditor
        .record(ctx.draft(
            action,
            &id,
            "denied",
            json!({"reason": "RequestDisallowedByPolicy", "violations": violations}),
        ))
        .await?;
    let message = if reasons.is_empty() {
        let ids: Vec<Value> = violations
            .iter()
            .map(|v| {
                json!({
                    "policyAssignment": {"name": v["policyAssignmentName"], "id": v["policyAssignmentId"]},
                    "policyDefinition": {"name": v["policyDefinitionName"], "id": v["policyDefinitionId"]}
                })
            })
            .collect();
        format!(
            "Resource '{}' was disallowed by policy. Policy identifiers: '{}'.",
            clip(name),
            Value::Array(ids)
        )
    } else {
        format!(
            "Resource '{}' was disallowed by policy. Reasons: '{}'. See error details for policy resource IDs.",
            clip(name),
            reasons.join("; ")
        )
    };
    let info: Vec<Value> = violations
        .into_iter()
        .map(|v| json!({"type": "PolicyViolation", "info": v}))
        .collect();
    Err(ArmError::Disallowed(
        ApiError::new(
            http::StatusCode::FORBIDDEN,
            "RequestDisallowedByPolicy",
            message,
        )
        .with_target(name),
        Value::Array(info),
    ))
}

/// JSON merge of a PATCH body onto the stored resource: objects merge member by member,
/// anything else (and `tags`, which Azure replaces whole) is replaced.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if k.eq_ignore_ascii_case("tags") || !v.is_object() {
                    t.insert(k.clone(), v.clone());
                } else {
                    merge_patch(t.entry(k.clone()).or_insert_with(|| json!({})), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// A resource group as rules see it: its ARM body, typed as Azure Policy types groups.
pub fn group_candidate(g: &ciel_store::ResourceGroup) -> Value {
    let mut v = crate::resource_groups::to_json(g);
    v["type"] = json!(aliases::RESOURCE_GROUP_TYPE);
    v
}
