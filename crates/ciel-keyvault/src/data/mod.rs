//! The Key Vault data plane at `https://{vault}.vault.{domain}[:port]`: resolve the vault by
//! host → 401 challenge for a request without a token (the SDKs' first, bodiless request) →
//! bearer token for the vault audience, from the vault's tenant → api-version → operation →
//! authorization (RBAC data actions, or the vault's access policies) → handler. Every refusal
//! is audited, and so is every read of a secret value and every private-key operation.

pub mod backup;
pub mod common;
pub mod error;
pub mod keys;
pub mod secrets;

use crate::custody::Custody;
use crate::vault::access_policies;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_core::{Caller, ResourceId};
use ciel_identity::audiences::Service as Audience;
use ciel_identity::token::TokenService;
use ciel_store::{Resource, Store};
use error::{KvError, KvResult};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// Data-plane api-versions: 7.x used by the CLI, and the dated versions of today's SDKs.
pub const API_VERSIONS: &[&str] = &[
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.4-preview.1",
    "7.5",
    "7.5-preview.1",
    "7.6",
    "7.6-preview.1",
    "7.6-preview.2",
    "2025-07-01",
    "2026-01-01-preview",
    "2026-04-01",
];

/// Largest request body: a key backup or an import is a few KiB; secrets are at most 25 KiB.
const MAX_BODY: usize = 1 << 20;

pub struct KeyVaultService {
    pub store: Store,
    pub tokens: Arc<TokenService>,
    pub custody: Arc<dyn Custody>,
    pub endpoints: Endpoints,
}

/// One authenticated request on one vault.
pub struct Ctx<'a> {
    pub svc: &'a KeyVaultService,
    pub vault: Resource,
    pub vault_id: ResourceId,
    /// Lower-cased vault name: the key of the vault's data.
    pub vault_name: String,
    /// `https://{vault}.vault.{domain}[:port]`, the prefix of object ids.
    pub base: String,
    pub caller: Caller,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub api_version: String,
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Ctx<'_> {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> KvResult<Value> {
        if self.body.is_empty() {
            return Err(KvError::bad("The request body is empty."));
        }
        serde_json::from_slice(&self.body)
            .map_err(|_| KvError::bad("The request body is not valid JSON."))
    }

    pub fn draft(&self, action: &str, target: &str, outcome: &str, details: Value) -> AuditDraft {
        AuditDraft {
            tenant_id: Some(self.caller.tenant_id.clone()),
            actor: self.caller.display(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.into(),
            details,
            request_id: Some(self.request_id.clone()),
            client_ip: self.client_ip.clone(),
        }
    }

    pub async fn audit(&self, d: AuditDraft) -> KvResult<()> {
        ciel_store::run(&self.svc.store, move |s| {
            s.append_audit(std::slice::from_ref(&d))
        })
        .await?;
        Ok(())
    }

    pub fn retention_days(&self) -> i64 {
        self.vault.body["properties"]["softDeleteRetentionInDays"]
            .as_i64()
            .unwrap_or(90)
    }

    pub fn purge_protected(&self) -> bool {
        self.vault.body["properties"]["enablePurgeProtection"].as_bool() == Some(true)
    }

    pub fn recovery_level(&self) -> &'static str {
        if self.purge_protected() {
            "Recoverable"
        } else {
            "Recoverable+Purgeable"
        }
    }

    /// Checks that the caller may run `action` (a data action below
    /// `Microsoft.KeyVault/vaults/`, e.g. `secrets/getSecret/action`) on the object `family/name`
    /// — by RBAC, or by the vault's access policies (`policy` is the permission name there).
    /// A refusal is audited and answered 403.
    pub async fn authorize(
        &self,
        family: &str,
        name: Option<&str>,
        action: &str,
        policy: &str,
    ) -> KvResult<()> {
        let full = format!("Microsoft.KeyVault/vaults/{action}");
        if self.caller.kind == ciel_core::PrincipalKind::Operator {
            return self.authorize_operator(family, name, &full).await;
        }
        let rbac = self.vault.body["properties"]["enableRbacAuthorization"]
            .as_bool()
            .unwrap_or(true);
        let ok = if rbac {
            let mut target = self.vault_id.clone();
            if let Some(n) = name {
                target.segments.push((family.to_string(), n.to_string()));
            }
            let (oid, tid) = (self.caller.object_id.clone(), self.caller.tenant_id.clone());
            let (assignments, custom) = ciel_store::run(&self.svc.store, move |s| {
                ciel_identity::rbac::grants(s, &oid, &tid)
            })
            .await?;
            ciel_identity::rbac::is_data_allowed(&assignments, &custom, &target, &full)
        } else {
            let policies = self.vault.body["properties"]["accessPolicies"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            access_policies::allows(
                &policies,
                &self.caller.tenant_id,
                &self.caller.object_id,
                family,
                policy,
            )
        };
        if ok {
            return Ok(());
        }
        let target = match name {
            Some(n) => format!("{}/{family}/{n}", self.vault.id),
            None => self.vault.id.clone(),
        };
        self.audit(self.draft(
            &full,
            &target,
            "denied",
            json!({"reason": if rbac { "ForbiddenByRbac" } else { "AccessDenied" }}),
        ))
        .await?;
        Err(if rbac {
            KvError::forbidden(
                "ForbiddenByRbac",
                format!("The caller is not authorized to perform action '{full}' on this vault (RBAC). Assign a Key Vault data role at the vault or object scope."),
            )
        } else {
            KvError::forbidden(
                "AccessDenied",
                format!("The caller does not have the '{policy}' permission on {family} in this vault's access policies."),
            )
        })
    }

    /// An operator holds no role and is in no access policy: only an approved lockbox grant
    /// covering the action on this vault (or object) lets the call through; the check writes the
    /// tenant's audit entry either way.
    async fn authorize_operator(
        &self,
        family: &str,
        name: Option<&str>,
        full: &str,
    ) -> KvResult<()> {
        let mut target = self.vault_id.clone();
        if let Some(n) = name {
            target.segments.push((family.to_string(), n.to_string()));
        }
        let (c, target, action, rid, ip) = (
            self.caller.clone(),
            target.to_string(),
            full.to_string(),
            self.request_id.clone(),
            self.client_ip.clone(),
        );
        let ok = ciel_store::run(&self.svc.store, move |s| {
            ciel_identity::lockbox::check(s, &c, &target, &action, &rid, ip.as_deref())
        })
        .await?;
        if ok {
            return Ok(());
        }
        Err(KvError::forbidden(
            "Forbidden",
            format!("Operators reach vault data only under an approved, unexpired Customer Lockbox request covering this vault and '{full}'."),
        ))
    }

    /// The vault's own key, opened by custody (on the blocking pool: an HSM call can block).
    pub async fn vault_key(&self) -> KvResult<Vec<u8>> {
        let sealed = self
            .vault
            .sealed
            .clone()
            .ok_or_else(|| KvError::Internal("vault without a sealed key".into()))?;
        let c = self.svc.custody.clone();
        let ctx = self.vault.id.to_ascii_lowercase();
        blocking(move || c.open_vault_key(&ctx, &sealed).map_err(KvError::from)).await
    }
}

/// Runs blocking work (custody, RSA) off the reactor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> KvResult<T> + Send + 'static,
) -> KvResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KvError::Internal(format!("blocking task: {e}")))?
}

pub fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

impl KeyVaultService {
    /// A request context for the platform's own work on a vault (rotation by policy, keys for
    /// other services): `caller` is who acts, recorded in the audit.
    pub async fn internal_ctx(&self, vault: &str, caller: Caller) -> KvResult<Option<Ctx<'_>>> {
        let n = vault.to_ascii_lowercase();
        let found = ciel_store::run(&self.store, move |s| {
            s.find_resources_by_name(crate::vault::TYPE, &n)
        })
        .await?;
        let Some(v) = found.into_iter().next() else {
            return Ok(None);
        };
        let vault_id =
            ResourceId::parse(&v.id).ok_or_else(|| KvError::Internal("vault id".into()))?;
        let name = v.name.to_ascii_lowercase();
        Ok(Some(Ctx {
            svc: self,
            base: format!("https://{}.{}", name, self.endpoints.keyvault_suffix()),
            vault_name: name,
            vault: v,
            vault_id,
            caller,
            request_id: uuid::Uuid::new_v4().to_string(),
            client_ip: None,
            api_version: "internal".into(),
            query: vec![],
            body: Bytes::new(),
        }))
    }

    /// Carries out the `Rotate` actions of rotation policies that are due. Each rotation is
    /// audited as the platform's (`system:key-rotation-policy`).
    pub async fn rotate_due(&self) -> KvResult<usize> {
        let names = ciel_store::run(&self.store, |s| s.kv_with_policy()).await?;
        let now = ciel_core::time::now_unix();
        let mut rotated = 0;
        for n in names {
            let Some(policy) = n.policy.as_ref() else {
                continue;
            };
            let Some(tenant) = self.vault_tenant(&n.vault).await? else {
                continue;
            };
            let caller = Caller {
                tenant_id: tenant,
                object_id: String::new(),
                app_id: String::new(),
                kind: ciel_core::PrincipalKind::ServicePrincipal,
                upn: Some("system:key-rotation-policy".into()),
                audience: String::new(),
            };
            let Some(ctx) = self.internal_ctx(&n.vault, caller).await? else {
                continue;
            };
            let current = common::load_version(&ctx, "key", &n.name, None).await?;
            if keys::rotation_due(policy, &current, now) {
                keys::rotate_key(&ctx, &n.name, "policy").await?;
                rotated += 1;
            }
        }
        Ok(rotated)
    }

    async fn vault_tenant(&self, vault: &str) -> KvResult<Option<String>> {
        let n = vault.to_string();
        let found = ciel_store::run(&self.store, move |s| {
            s.find_resources_by_name(crate::vault::TYPE, &n)
        })
        .await?;
        Ok(found.into_iter().next().map(|r| r.tenant_id))
    }

    /// The `WWW-Authenticate` value: the vault's tenant and the bare vault domain (with its port
    /// unless 443), which the SDKs check against the vault's host.
    fn challenge(&self, tenant: &str) -> String {
        format!(
            "Bearer authorization=\"{}/{}\", resource=\"{}\"",
            self.endpoints.login().trim_end_matches('/'),
            tenant,
            self.endpoints.keyvault_resource()
        )
    }

    fn unauthorized(&self, tenant: &str, message: &str) -> Response {
        let mut r = KvError::Unauthorized(message.to_string()).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.challenge(tenant)) {
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
        r
    }

    pub async fn handle(
        &self,
        req: Request<Body>,
        vault: &str,
        rid: &str,
        ip: Option<String>,
    ) -> Response {
        match self.handle_inner(req, vault, rid, ip).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn handle_inner(
        &self,
        req: Request<Body>,
        vault: &str,
        rid: &str,
        ip: Option<String>,
    ) -> KvResult<Response> {
        let (parts, body) = req.into_parts();
        // The body is read (bounded) before answering anything, so that a refused request
        // never leaves unread bytes on a kept-alive connection.
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(KvError::Client {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    code: "BadParameter",
                    inner: None,
                    message: "The request body is too large.".into(),
                })
            }
        };
        let name = vault.to_ascii_lowercase();
        let n = name.clone();
        let found = ciel_store::run(&self.store, move |s| {
            s.find_resources_by_name(crate::vault::TYPE, &n)
        })
        .await?;
        let Some(v) = found.into_iter().next() else {
            return Err(KvError::not_found(
                "VaultNotFound",
                format!(
                    "No vault named '{}' exists in this cloud.",
                    ciel_arm::clip(vault)
                ),
            ));
        };
        let Some(auth) = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
        else {
            // The SDKs' first request carries no token: answer the challenge.
            return Ok(self.unauthorized(
                &v.tenant_id,
                "This request needs a bearer token for the vault resource.",
            ));
        };
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or("");
        let deny = |reason: String, caller: Option<&Caller>| AuditDraft {
            tenant_id: Some(v.tenant_id.clone()),
            actor: caller
                .map(|c| c.display())
                .unwrap_or_else(|| "anonymous".into()),
            action: "Microsoft.KeyVault/vaults/authenticate".into(),
            target: v.id.clone(),
            outcome: "denied".into(),
            details: json!({ "reason": reason }),
            request_id: Some(rid.to_string()),
            client_ip: ip.clone(),
        };
        let verified = match self.tokens.verify(token, Audience::KeyVault) {
            Ok(c) => Ok(c),
            // An operator's token authenticates; `Ctx::authorize` allows only what an approved
            // lockbox grant of the vault's tenant covers.
            Err(e) => self
                .tokens
                .verify_operator(self.store.as_ref(), token, &v.tenant_id)
                .map_err(|_| e),
        };
        let caller = match verified {
            Ok(c) => c,
            Err(e) => {
                let d = deny(format!("{e}"), None);
                ciel_store::run(&self.store, move |s| {
                    s.append_audit(std::slice::from_ref(&d))
                })
                .await?;
                return Ok(self.unauthorized(&v.tenant_id, "The bearer token was refused: it is expired, not yet valid, badly signed, or not for this vault's audience."));
            }
        };
        if caller.tenant_id != v.tenant_id {
            let d = deny("TenantMismatch".into(), Some(&caller));
            ciel_store::run(&self.store, move |s| {
                s.append_audit(std::slice::from_ref(&d))
            })
            .await?;
            return Ok(self.unauthorized(
                &v.tenant_id,
                "The token was issued by another tenant than the vault's.",
            ));
        }
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let api_version = query
            .iter()
            .find(|(k, _)| k == "api-version")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| KvError::bad("The 'api-version' query parameter is required."))?;
        if !API_VERSIONS.contains(&api_version.as_str()) {
            return Err(KvError::bad(format!(
                "The api-version '{}' is not supported. Supported versions: {}.",
                ciel_arm::clip(&api_version),
                API_VERSIONS.join(", ")
            )));
        }
        let Some(vault_id) = ResourceId::parse(&v.id) else {
            return Err(KvError::Internal("a vault with an unparsable id".into()));
        };
        let base = self.endpoints.keyvault_suffix();
        let ctx = Ctx {
            svc: self,
            base: format!("https://{}.{}", name, base),
            vault_name: name,
            vault: v,
            vault_id,
            caller,
            request_id: rid.to_string(),
            client_ip: ip,
            api_version,
            query,
            body,
        };
        let path = parts.uri.path().to_string();
        let segs: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        route(&ctx, &parts.method, &segs).await
    }
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

async fn route(ctx: &Ctx<'_>, m: &Method, segs: &[&str]) -> KvResult<Response> {
    let segs_lc: Vec<String> = segs.iter().map(|s| lc(s)).collect();
    let s: Vec<&str> = segs_lc.iter().map(String::as_str).collect();
    // Object names keep their spelling from the request.
    let name = |i: usize| segs.get(i).copied().unwrap_or("");
    match (m, s.as_slice()) {
        // --- secrets
        (&Method::GET, ["secrets"]) => secrets::list(ctx).await,
        (&Method::POST, ["secrets", "restore"]) => backup::restore(ctx, "secret").await,
        (&Method::PUT, ["secrets", _]) => secrets::set(ctx, name(1)).await,
        (&Method::GET, ["secrets", _]) => secrets::get(ctx, name(1), None).await,
        (&Method::DELETE, ["secrets", _]) => secrets::delete(ctx, name(1)).await,
        (&Method::GET, ["secrets", _, "versions"]) => secrets::list_versions(ctx, name(1)).await,
        (&Method::POST, ["secrets", _, "backup"]) => backup::backup(ctx, "secret", name(1)).await,
        (&Method::GET, ["secrets", _, _]) => secrets::get(ctx, name(1), Some(name(2))).await,
        (&Method::PATCH, ["secrets", _]) => secrets::update(ctx, name(1), None).await,
        (&Method::PATCH, ["secrets", _, _]) => secrets::update(ctx, name(1), Some(name(2))).await,
        (&Method::GET, ["deletedsecrets"]) => secrets::list_deleted(ctx).await,
        (&Method::GET, ["deletedsecrets", _]) => secrets::get_deleted(ctx, name(1)).await,
        (&Method::DELETE, ["deletedsecrets", _]) => secrets::purge(ctx, name(1)).await,
        (&Method::POST, ["deletedsecrets", _, "recover"]) => secrets::recover(ctx, name(1)).await,
        // --- keys
        (&Method::GET, ["keys"]) => keys::list(ctx).await,
        (&Method::POST, ["keys", "restore"]) => backup::restore(ctx, "key").await,
        (&Method::POST, ["keys", _, "create"]) => keys::create(ctx, name(1)).await,
        (&Method::PUT, ["keys", _]) => keys::import(ctx, name(1)).await,
        (&Method::GET, ["keys", _]) => keys::get(ctx, name(1), None).await,
        (&Method::DELETE, ["keys", _]) => keys::delete(ctx, name(1)).await,
        (&Method::GET, ["keys", _, "versions"]) => keys::list_versions(ctx, name(1)).await,
        (&Method::POST, ["keys", _, "backup"]) => backup::backup(ctx, "key", name(1)).await,
        (&Method::POST, ["keys", _, "rotate"]) => keys::rotate(ctx, name(1)).await,
        (&Method::GET, ["keys", _, "rotationpolicy"]) => {
            keys::get_rotation_policy(ctx, name(1)).await
        }
        (&Method::PUT, ["keys", _, "rotationpolicy"]) => {
            keys::set_rotation_policy(ctx, name(1)).await
        }
        (&Method::GET, ["keys", _, _]) => keys::get(ctx, name(1), Some(name(2))).await,
        (&Method::PATCH, ["keys", _]) => keys::update(ctx, name(1), None).await,
        (&Method::PATCH, ["keys", _, _]) => keys::update(ctx, name(1), Some(name(2))).await,
        (&Method::POST, ["keys", _, op]) => keys::operation(ctx, name(1), None, op).await,
        (&Method::POST, ["keys", _, _, op]) => {
            keys::operation(ctx, name(1), Some(name(2)), op).await
        }
        (&Method::GET, ["deletedkeys"]) => keys::list_deleted(ctx).await,
        (&Method::GET, ["deletedkeys", _]) => keys::get_deleted(ctx, name(1)).await,
        (&Method::DELETE, ["deletedkeys", _]) => keys::purge(ctx, name(1)).await,
        (&Method::POST, ["deletedkeys", _, "recover"]) => keys::recover(ctx, name(1)).await,
        (&Method::POST, ["rng"]) => keys::get_random_bytes(ctx).await,
        (_, ["certificates", ..]) | (_, ["deletedcertificates", ..]) => {
            Err(KvError::not_supported("Certificates"))
        }
        (_, ["storage", ..]) => Err(KvError::not_supported("Managed storage account keys")),
        _ => Err(KvError::Client {
            status: StatusCode::BAD_REQUEST,
            code: "BadParameter",
            inner: None,
            message: format!(
                "The operation {m} /{} is not a Key Vault operation.",
                ciel_arm::clip(&segs.join("/"))
            ),
        }),
    }
}
