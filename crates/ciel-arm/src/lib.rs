//! Azure Resource Manager front door.
//!
//! Every ARM call goes: parse path → authenticate the bearer token (ARM audience) → validate the
//! api-version → resolve the subscription within the caller's tenant (other tenants' objects do
//! not exist for the caller) → authorize with RBAC (inherited from subscription to resource) →
//! residency → handler → store (with its audit entry, in one transaction) → Azure-shaped response.

pub mod activity_log;
pub mod api_version;
pub mod cmk;
pub mod customer_lockbox;
pub mod error;
pub mod metadata;
pub mod operations;
pub mod policy;
pub mod provider;
pub mod resource_groups;
pub mod resources;
pub mod role_assignments;
pub mod role_definitions;
pub mod subscriptions;

use bytes::Bytes;
use ciel_audit::Auditor;
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_identity::audiences::Service;
use ciel_identity::token::TokenService;
use ciel_store::{Found, RoleAssignment, RoleDefinitionRec, Store, Subscription};
use error::{ArmError, ArmResult};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use provider::ResourceProvider;
use std::sync::Arc;

/// An ARM request as the HTTP edge hands it over (the body already read, within the size limit).
pub struct ArmRequest {
    pub method: Method,
    /// Path segments, percent-decoded, empty ones dropped (clients sometimes send `//`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub request_id: String,
    pub client_ip: Option<String>,
}

impl ArmRequest {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn api_version(&self) -> Option<&str> {
        self.q("api-version")
    }
    /// The JSON body; malformed JSON is `InvalidRequestContent`, as in Azure.
    pub fn json(&self) -> ArmResult<serde_json::Value> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid: the body is empty.",
            )
            .into());
        }
        let v: serde_json::Value = serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        })?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "InvalidRequestContent",
                "The request content must be a JSON object.",
            )
            .into());
        }
        Ok(v)
    }
}

/// What a handler answers; the edge adds the common headers.
pub struct ArmResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Option<serde_json::Value>,
}

impl ArmResponse {
    pub fn json(status: StatusCode, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Some(body),
        }
    }
    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: None,
        }
    }
    pub fn error(e: &ApiError) -> Self {
        let mut r = Self::json(e.status, e.arm_body());
        if let Ok(v) = HeaderValue::from_str(&e.code) {
            r.headers.insert("x-ms-failure-cause", v);
        }
        r
    }
}

pub struct Arm {
    pub store: Store,
    pub tokens: Arc<TokenService>,
    pub auditor: Arc<Auditor>,
    pub endpoints: Endpoints,
    pub providers: Vec<Arc<dyn ResourceProvider>>,
}

/// Per-request state once the caller is known.
pub struct Ctx<'a> {
    pub arm: &'a Arm,
    pub req: &'a ArmRequest,
    pub caller: Caller,
    assignments: tokio::sync::OnceCell<(Vec<RoleAssignment>, Vec<RoleDefinitionRec>)>,
}

impl<'a> Ctx<'a> {
    pub fn draft(
        &self,
        action: &str,
        target: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> AuditDraft {
        AuditDraft {
            tenant_id: Some(self.caller.tenant_id.clone()),
            actor: self.caller.display(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
            details,
            request_id: Some(self.req.request_id.clone()),
            client_ip: self.req.client_ip.clone(),
        }
    }

    async fn permissions(&self) -> ArmResult<&(Vec<RoleAssignment>, Vec<RoleDefinitionRec>)> {
        self.assignments
            .get_or_try_init(|| async {
                let oid = self.caller.object_id.clone();
                let tid = self.caller.tenant_id.clone();
                let out = ciel_store::run(&self.arm.store, move |s| {
                    ciel_identity::rbac::grants(s, &oid, &tid)
                })
                .await?;
                Ok::<_, ArmError>(out)
            })
            .await
    }

    /// True when the caller may perform `action` at `scope` (no audit; for list filtering).
    pub async fn can(&self, scope: &ResourceId, action: &str) -> ArmResult<bool> {
        let (a, d) = self.permissions().await?;
        Ok(ciel_identity::rbac::is_allowed(a, d, scope, action))
    }

    /// True when the caller holds any role at or below `scope` (what makes a subscription visible).
    pub async fn has_any_access_within(&self, scope: &ResourceId) -> ArmResult<bool> {
        let (a, _) = self.permissions().await?;
        Ok(a.iter().any(|x| {
            ResourceId::parse(&x.scope)
                .map(|s| s.is_within(scope) || scope.is_within(&s))
                .unwrap_or(false)
        }))
    }

    /// Authorizes `action` on `scope`; a denial is audited and answered `AuthorizationFailed`.
    pub async fn authorize(&self, scope: &ResourceId, action: &str) -> ArmResult<()> {
        if self.can(scope, action).await? {
            return Ok(());
        }
        self.arm
            .auditor
            .record(self.draft(
                action,
                &scope.to_string(),
                "denied",
                serde_json::json!({"reason": "AuthorizationFailed"}),
            ))
            .await?;
        Err(ApiError::forbidden(
            "AuthorizationFailed",
            format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                self.caller.display(),
                self.caller.object_id
            ),
        )
        .into())
    }

    /// The subscription, if it exists in the caller's tenant. Other tenants' subscriptions do not
    /// exist for the caller (the attempt is audited).
    pub async fn subscription(&self, id: &str) -> ArmResult<Subscription> {
        let sid = id.to_string();
        let found =
            ciel_store::run(&self.arm.store, move |s| s.get_subscription(&sid).found()).await?;
        match found {
            Some(s) if s.tenant_id == self.caller.tenant_id => Ok(s),
            other => {
                if other.is_some() {
                    self.arm
                        .auditor
                        .record(self.draft(
                            "Microsoft.Resources/subscriptions/read",
                            &format!("/subscriptions/{id}"),
                            "denied",
                            serde_json::json!({"reason": "CrossTenant"}),
                        ))
                        .await?;
                }
                Err(ApiError::not_found(
                    "SubscriptionNotFound",
                    format!("The subscription '{}' could not be found.", clip(id)),
                )
                .into())
            }
        }
    }

    pub fn base(&self) -> String {
        self.arm.endpoints.management()
    }
}

pub fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(100).collect()
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Arm {
    pub fn provider(&self, ns: &str) -> Option<&Arc<dyn ResourceProvider>> {
        self.providers
            .iter()
            .find(|p| p.namespace().eq_ignore_ascii_case(ns))
    }

    /// Entry point for every ARM request.
    pub async fn handle(&self, req: ArmRequest) -> ArmResponse {
        match self.route(&req).await {
            Ok(r) => r,
            Err(e) => {
                let info = match &e {
                    ArmError::Disallowed(_, info) => Some(info.clone()),
                    _ => None,
                };
                let api = e.into_api();
                let mut r = ArmResponse::error(&api);
                if let (Some(info), Some(b)) = (info, r.body.as_mut()) {
                    b["error"]["additionalInfo"] = info;
                }
                if api.status == StatusCode::UNAUTHORIZED {
                    let v = format!(
                        "Bearer authorization_uri=\"{}/common/oauth2/authorize\", error=\"invalid_token\", error_description=\"{}\"",
                        self.endpoints.login(),
                        api.code
                    );
                    if let Ok(h) = HeaderValue::from_str(&v) {
                        r.headers.insert(http::header::WWW_AUTHENTICATE, h);
                    }
                }
                r
            }
        }
    }

    async fn authenticate(&self, req: &ArmRequest) -> ArmResult<Caller> {
        let header = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim);
        let result = match token {
            None | Some("") => Err(ciel_identity::IdentityError::TokenRejected(
                ciel_identity::error::TokenRejection::Missing,
            )),
            Some(t) => self.tokens.verify(t, Service::ResourceManager),
        };
        match result {
            Ok(c) => Ok(c),
            Err(e) => {
                let reason = match &e {
                    ciel_identity::IdentityError::TokenRejected(r) => r.to_string(),
                    other => other.to_string(),
                };
                self.auditor
                    .record(AuditDraft {
                        tenant_id: None,
                        actor: "anonymous".into(),
                        action: "arm/authenticate".into(),
                        target: format!("{} /{}", req.method, clip(&req.segments.join("/"))),
                        outcome: "denied".into(),
                        details: serde_json::json!({ "reason": reason }),
                        request_id: Some(req.request_id.clone()),
                        client_ip: req.client_ip.clone(),
                    })
                    .await?;
                Err(e.into())
            }
        }
    }

    async fn route(&self, req: &ArmRequest) -> ArmResult<ArmResponse> {
        let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        // Unauthenticated: cloud discovery.
        if s.len() == 2 && eq(s[0], "metadata") && eq(s[1], "endpoints") {
            if req.method != Method::GET {
                return Err(method_not_allowed());
            }
            return metadata::endpoints(self, req);
        }
        let caller = self.authenticate(req).await?;
        let ctx = Ctx {
            arm: self,
            req,
            caller,
            assignments: tokio::sync::OnceCell::new(),
        };
        let m = &req.method;
        match s.as_slice() {
            ["tenants"] if m == Method::GET => subscriptions::list_tenants(&ctx).await,
            ["subscriptions"] if m == Method::GET => subscriptions::list(&ctx).await,
            ["providers"] if m == Method::GET => subscriptions::list_providers(&ctx, None).await,
            ["providers", ns] if m == Method::GET => {
                subscriptions::get_provider(&ctx, None, ns).await
            }
            ["providers", p, "roleDefinitions", ..] | ["providers", p, "roledefinitions", ..]
                if eq(p, "Microsoft.Authorization") =>
            {
                role_definitions::dispatch(&ctx, None, &s[3..]).await
            }
            ["providers", p, kind, tail @ ..]
                if eq(p, "Microsoft.Authorization")
                    && policy::PolicyKind::parse(kind).is_some() =>
            {
                let k = policy::PolicyKind::parse(kind).ok_or_else(|| unknown_path(&ctx))?;
                policy::dispatch(&ctx, None, k, tail).await
            }
            ["providers", p, ..] if eq(p, "Microsoft.Management") => {
                Err(policy::management_groups())
            }
            ["subscriptions", sub, rest @ ..] => self.route_subscription(&ctx, sub, rest).await,
            _ => Err(ApiError::not_found(
                "InvalidResourceType",
                format!(
                    "The resource path '/{}' is not known to this Resource Manager.",
                    clip(&s.join("/"))
                ),
            )
            .into()),
        }
    }

    async fn route_subscription(
        &self,
        ctx: &Ctx<'_>,
        sub: &str,
        rest: &[&str],
    ) -> ArmResult<ArmResponse> {
        let m = &ctx.req.method;
        let subscription = ctx.subscription(sub).await?;
        let sub = subscription.id.as_str();
        match rest {
            [] if m == Method::GET => subscriptions::get(ctx, &subscription).await,
            ["locations"] if m == Method::GET => {
                subscriptions::list_locations(ctx, &subscription).await
            }
            ["resources"] if m == Method::GET => {
                resources::list(ctx, &ResourceId::subscription(sub)).await
            }
            ["providers"] if m == Method::GET => {
                subscriptions::list_providers(ctx, Some(sub)).await
            }
            ["providers", ns] if m == Method::GET => {
                subscriptions::get_provider(ctx, Some(sub), ns).await
            }
            ["providers", ns, "register"] if m == Method::POST => {
                subscriptions::register_provider(ctx, sub, ns).await
            }
            [kw] if eq(kw, "resourcegroups") && m == Method::GET => {
                resource_groups::list(ctx, sub).await
            }
            ["operationresults" | "operationResults", id] if m == Method::GET => {
                operations::get_result(ctx, sub, id).await
            }
            [rg_kw, rg, tail @ ..] if eq(rg_kw, "resourcegroups") => {
                if !ciel_core::names::valid_resource_group_name(rg) {
                    return Err(ApiError::bad_request(
                        "InvalidResourceGroupName",
                        format!(
                            "Resource group name '{}' is invalid. The name can include alphanumeric, underscore, parentheses, hyphen, period (except at end), and Unicode characters that match the allowed characters, and must be 1 to 90 characters long.",
                            clip(rg)
                        ),
                    )
                    .into());
                }
                match tail {
                    [] => resource_groups::dispatch(ctx, sub, rg).await,
                    ["resources"] if m == Method::GET => {
                        let g = resource_groups::require(ctx, sub, rg).await?;
                        resources::list(ctx, &ResourceId::resource_group(sub, &g.name)).await
                    }
                    ["providers", ns, more @ ..] => {
                        let g = resource_groups::require_for(ctx, sub, rg).await?;
                        let scope = ResourceId::resource_group(sub, &g.name);
                        self.route_provider(ctx, scope, ns, more).await
                    }
                    _ => Err(unknown_path(ctx)),
                }
            }
            ["providers", ns, a, b, c]
                if eq(ns, "Microsoft.Insights")
                    && eq(a, "eventtypes")
                    && eq(b, "management")
                    && eq(c, "values")
                    && m == Method::GET =>
            {
                activity_log::list(ctx, sub).await
            }
            ["providers", ns, more @ ..] => {
                self.route_provider(ctx, ResourceId::subscription(sub), ns, more)
                    .await
            }
            _ => Err(unknown_path(ctx)),
        }
    }

    /// `{scope}/providers/{ns}/...`: Microsoft.Authorization extension resources at any scope,
    /// or a registered provider's resources.
    async fn route_provider(
        &self,
        ctx: &Ctx<'_>,
        scope: ResourceId,
        ns: &str,
        rest: &[&str],
    ) -> ArmResult<ArmResponse> {
        // Extension resources on a provider resource: `.../providers/NS/type/name/providers/Microsoft.Authorization/...`
        // (or Microsoft.PolicyInsights, the compliance of that resource).
        if let Some(pos) = rest.iter().position(|x| eq(x, "providers")) {
            let ext = rest.get(pos + 1).copied().unwrap_or("");
            if pos % 2 == 0
                && !eq(ns, "Microsoft.Authorization")
                && (eq(ext, "Microsoft.Authorization") || eq(ext, "Microsoft.PolicyInsights"))
            {
                let mut id = scope.clone();
                id.namespace = Some(ns.to_string());
                id.segments = rest[..pos]
                    .chunks(2)
                    .map(|c| (c[0].to_string(), c[1].to_string()))
                    .collect();
                if id.segments.is_empty() {
                    return Err(unknown_path(ctx));
                }
                if eq(ext, "Microsoft.PolicyInsights") {
                    return policy::states::dispatch(ctx, id, None, &rest[pos + 2..]).await;
                }
                return self.route_authorization(ctx, id, &rest[pos + 2..]).await;
            }
        }
        if eq(ns, "Microsoft.Authorization") {
            return self.route_authorization(ctx, scope, rest).await;
        }
        if eq(ns, "Microsoft.PolicyInsights") {
            return policy::states::dispatch(ctx, scope, None, rest).await;
        }
        let Some(p) = self.provider(ns) else {
            return Err(ApiError::bad_request(
                "InvalidResourceNamespace",
                format!(
                    "The resource namespace '{}' is invalid or not available in this cloud.",
                    clip(ns)
                ),
            )
            .into());
        };
        resources::dispatch_provider(ctx, p.clone(), scope, rest).await
    }

    async fn route_authorization(
        &self,
        ctx: &Ctx<'_>,
        scope: ResourceId,
        rest: &[&str],
    ) -> ArmResult<ArmResponse> {
        match rest {
            [kind, tail @ ..] if eq(kind, "roleAssignments") => {
                role_assignments::dispatch(ctx, scope, tail).await
            }
            [kind, tail @ ..] if eq(kind, "roleDefinitions") => {
                role_definitions::dispatch(ctx, Some(scope), tail).await
            }
            [kind, tail @ ..] if policy::PolicyKind::parse(kind).is_some() => {
                let k = policy::PolicyKind::parse(kind).ok_or_else(|| unknown_path(ctx))?;
                policy::dispatch(ctx, Some(scope), k, tail).await
            }
            _ => Err(unknown_path(ctx)),
        }
    }
}

pub fn method_not_allowed() -> ArmError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The HTTP method is not supported for this resource.",
    )
    .into()
}

pub fn unknown_path(ctx: &Ctx<'_>) -> ArmError {
    ApiError::not_found(
        "InvalidResourceType",
        format!(
            "The resource path '/{}' is not known to this Resource Manager.",
            clip(&ctx.req.segments.join("/"))
        ),
    )
    .into()
}

/// Tags from a request body: an object of strings, Azure's limits checked.
pub fn tags_from(body: &serde_json::Value) -> ArmResult<serde_json::Value> {
    match body.get("tags") {
        None | Some(serde_json::Value::Null) => Ok(serde_json::json!({})),
        Some(serde_json::Value::Object(m)) => {
            ciel_core::names::validate_tags(m)
                .map_err(|e| ApiError::bad_request("InvalidTag", e))?;
            Ok(serde_json::Value::Object(m.clone()))
        }
        Some(_) => Err(ApiError::bad_request(
            "InvalidRequestContent",
            "'tags' must be an object of strings.",
        )
        .into()),
    }
}

/// Residency: the location must be one of the French regions; the error names them.
pub fn check_location(
    loc: Option<&str>,
    code: &str,
    what: &str,
) -> ArmResult<&'static ciel_core::region::Region> {
    let l = loc.ok_or_else(|| {
        ApiError::bad_request(
            "LocationRequired",
            "The location property is required for this definition.",
        )
    })?;
    ciel_core::region::normalize(l).ok_or_else(|| {
        ApiError::bad_request(
            code,
            format!(
                "The provided location '{}' is not available for {what}. List of available regions is '{}'. This cloud keeps all resources in France.",
                clip(l),
                ciel_core::region::allowed_names()
            ),
        )
        .into()
    })
}
