//! The Blob data plane at `https://{account}.blob.core.{domain}` and, path-style, at
//! `https://127.0.0.1:{port}/{account}`. It serves the service (properties, CORS, account
//! information, user delegation keys), containers (create, properties, metadata, ACLs, leases,
//! delete, list), block, append and page blobs, leases, snapshots, same-account copies and blob
//! index tags, one module per Azure operation group, behind SharedKey, SAS, bearer tokens or
//! anonymous public reads; every other operation answers `FeatureNotSupported`.
//! Bodies stream through the encrypted byte store (`crate::blobstore`) one chunk at a time.

pub mod acl;
pub mod append;
pub mod auth;
pub mod blob_ops;
pub mod block;
pub mod container;
pub mod copy;
pub mod error;
pub mod gc;
pub mod lease;
pub mod page;
pub mod properties;
pub mod sas;
pub mod service;
pub mod snapshot;
pub mod tags;
pub mod xml;

use crate::account::{Secrets, TYPE};
use auth::Principal;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_core::seal::MasterKey;
use ciel_core::ResourceId;
use ciel_identity::audiences::Service;
use ciel_identity::token::TokenService;
use ciel_store::{Found, Store};
use error::{BlobError, BlobResult};
use http::{HeaderValue, Method, Request, StatusCode};
use std::path::PathBuf;
use std::sync::Arc;

/// The service version answered when the client names none; requests naming any version are
/// answered with that version echoed (the operations here behave alike across versions).
pub const DEFAULT_VERSION: &str = "2026-10-06";

pub struct BlobService {
    pub store: Store,
    pub master: Arc<MasterKey>,
    pub tokens: Arc<TokenService>,
    pub endpoints: Endpoints,
    /// Root of the byte store; each account has a directory below it.
    pub root: PathBuf,
    /// Key Vault, for accounts whose data key a customer-managed key wraps.
    pub cmk: Option<Arc<dyn ciel_arm::cmk::CustomerKeys>>,
    /// Longest time an unwrapped customer-wrapped data key is used before the key is asked
    /// again: revoking, disabling or deleting a customer key takes effect within this time.
    pub cmk_check: std::time::Duration,
    pub cmk_cache: std::sync::Mutex<std::collections::HashMap<String, CachedDataKey>>,
}

/// A data key unwrapped by a customer key, and when.
#[derive(Clone)]
pub struct CachedDataKey {
    key: [u8; 32],
    kid: String,
    at: std::time::Instant,
}

/// An account, resolved and unsealed for one request.
#[derive(Clone)]
pub struct Account {
    pub id: ResourceId,
    pub name: String,
    pub tenant_id: String,
    pub key1: String,
    pub key2: String,
    pub data_key: [u8; 32],
    /// Why the data key is unavailable (a customer-managed key that cannot be used); then
    /// `data_key` is zeros and every operation on data is refused with this error.
    pub key_error: Option<ciel_arm::cmk::CmkError>,
    /// Generation of user delegation keys (see `service::user_delegation_key`).
    pub udk_epoch: u64,
    pub allow_shared_key: bool,
    /// `allowBlobPublicAccess`: public containers are readable anonymously only while true.
    pub allow_public: bool,
    pub sku: String,
    /// `…/blobs/{hash of the account id}`.
    pub dir: PathBuf,
}

/// What a handler sees.
pub struct Ctx<'a> {
    pub svc: &'a BlobService,
    pub account: Account,
    pub principal: Principal,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub service_endpoint: String,
    /// The service version the client asked for (`x-ms-version`).
    pub version: String,
}

impl Ctx<'_> {
    pub fn draft(
        &self,
        action: &str,
        target: &str,
        outcome: &str,
        details: serde_json::Value,
    ) -> AuditDraft {
        AuditDraft {
            tenant_id: Some(self.account.tenant_id.clone()),
            actor: match &self.principal {
                Principal::AccountKey => format!("key:{}", self.account.name),
                Principal::Token(c) => c.display(),
                Principal::Sas(g) => match &g.kind {
                    sas::SasKind::UserDelegation { oid, .. } => {
                        format!("sas:user-delegation:{oid}:{}", g.fingerprint)
                    }
                    sas::SasKind::Account => format!("sas:account:{}", g.fingerprint),
                    sas::SasKind::Service => format!(
                        "sas:service:{}{}",
                        g.fingerprint,
                        g.policy
                            .as_deref()
                            .map(|p| format!(":policy={p}"))
                            .unwrap_or_default()
                    ),
                },
                Principal::Anonymous => "anonymous".to_string(),
            },
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
            details,
            request_id: Some(self.request_id.clone()),
            client_ip: self.client_ip.clone(),
        }
    }

    /// A SAS holding create (`c`) but not write (`w`) may create a blob, never replace one.
    pub fn forbid_overwrite(&self, exists: bool) -> BlobResult<()> {
        match &self.principal {
            Principal::Sas(g) if g.create_only && exists => Err(BlobError::new(
                StatusCode::FORBIDDEN,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission: the SAS may create blobs, not overwrite them.",
            )),
            _ => Ok(()),
        }
    }

    /// The ARM id of a container, the scope RBAC evaluates data actions at.
    pub fn container_scope(&self, container: &str) -> ResourceId {
        let mut id = self.account.id.clone();
        id.segments.push(("blobServices".into(), "default".into()));
        id.segments
            .push(("containers".into(), container.to_string()));
        id
    }

    /// An operator holds no role: only an approved lockbox grant covering the action at this
    /// scope lets the call through (the check writes the tenant's audit entry either way).
    async fn authorize_operator(
        &self,
        c: &ciel_core::Caller,
        scope: &ResourceId,
        action: &str,
    ) -> BlobResult<()> {
        let (c, target, action, rid, ip) = (
            c.clone(),
            scope.to_string(),
            action.to_string(),
            self.request_id.clone(),
            self.client_ip.clone(),
        );
        let ok = ciel_store::run(&self.svc.store, move |s| {
            ciel_identity::lockbox::check(s, &c, &target, &action, &rid, ip.as_deref())
        })
        .await?;
        if ok {
            Ok(())
        } else {
            Err(BlobError::new(
                StatusCode::FORBIDDEN,
                "AuthorizationPermissionMismatch",
                "This request is not authorized: operators reach tenant data only under an approved, unexpired Customer Lockbox request covering this resource and access.",
            ))
        }
    }

    /// RBAC for token callers and for the principal behind a user delegation SAS (whose rights
    /// bound the SAS's). Account-key holders have full access; other SAS and anonymous callers
    /// were checked against the operation before dispatch. Denials are audited.
    pub async fn authorize(&self, scope: &ResourceId, action: &str, data: bool) -> BlobResult<()> {
        let (oid, tid) = match &self.principal {
            Principal::Token(c) if c.kind == ciel_core::PrincipalKind::Operator => {
                return self.authorize_operator(c, scope, action).await;
            }
            Principal::Token(c) => (c.object_id.clone(), c.tenant_id.clone()),
            Principal::Sas(sas::SasGrant {
                kind: sas::SasKind::UserDelegation { oid, tid },
                ..
            }) => (oid.clone(), tid.clone()),
            _ => return Ok(()),
        };
        let (assignments, custom) = ciel_store::run(&self.svc.store, move |s| {
            ciel_identity::rbac::grants(s, &oid, &tid)
        })
        .await?;
        let ok = if data {
            ciel_identity::rbac::is_data_allowed(&assignments, &custom, scope, action)
        } else {
            ciel_identity::rbac::is_allowed(&assignments, &custom, scope, action)
        };
        if ok {
            return Ok(());
        }
        let d = self.draft(
            action,
            &scope.to_string(),
            "denied",
            serde_json::json!({"reason": "AuthorizationPermissionMismatch"}),
        );
        ciel_store::run(&self.svc.store, move |s| {
            s.append_audit(std::slice::from_ref(&d))
        })
        .await?;
        Err(BlobError::forbidden())
    }
}

/// A customer key that cannot be used: the account's data cannot be read or written.
pub(crate) fn customer_key_error(e: ciel_arm::cmk::CmkError) -> BlobError {
    use ciel_arm::cmk::CmkError as E;
    match e {
        E::NotFound(_) => BlobError::new(
            StatusCode::FORBIDDEN,
            "KeyVaultEncryptionKeyNotFound",
            "The account's customer-managed key cannot be found (its vault or key was deleted): the account's data is unreadable until it is restored.",
        ),
        E::AccessDenied(_) => BlobError::new(
            StatusCode::FORBIDDEN,
            "KeyVaultAccessDenied",
            "The account's managed identity may no longer use its customer-managed key: the account's data is unreadable until access is granted again.",
        ),
        E::Unusable(_) => BlobError::new(
            StatusCode::FORBIDDEN,
            "KeyVaultEncryptionKeyDisabled",
            "The account's customer-managed key is disabled or expired: the account's data is unreadable until the key is enabled again.",
        ),
        E::Internal(m) => {
            tracing::error!(error = %m, "customer-managed key failure");
            BlobError::internal()
        }
    }
}

pub(crate) fn account_dir(root: &std::path::Path, id: &ResourceId) -> PathBuf {
    let h = ring::digest::digest(&ring::digest::SHA256, id.key().as_bytes());
    root.join(ciel_core::audit::hex_lower(&h.as_ref()[..16]))
}

/// Names that path-style URLs on 127.0.0.1 give to other services; no account may take them.
pub const RESERVED_PATH_NAMES: &[&str] = &[
    "metadata",
    "tenants",
    "subscriptions",
    "providers",
    "adfs",
    "common",
    "organizations",
    "consumers",
    "healthz",
    "metrics",
];

/// `maxresults` of a listing: 1 to 5000, 5000 when absent.
pub fn max_results(value: Option<&str>) -> BlobResult<usize> {
    match value {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=5000).contains(n))
            .ok_or_else(|| {
                BlobError::bad(
                    "OutOfRangeQueryParameterValue",
                    "maxresults must be between 1 and 5000.",
                )
            }),
        None => Ok(5000),
    }
}

pub fn http_date(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

pub fn new_etag(micros: i64) -> String {
    let r = uuid::Uuid::new_v4().as_u128() as u16;
    format!("\"0x{micros:X}{r:04X}\"")
}

/// Compare-and-swap attempts of a write that lost a race to another write of the same blob
/// (appends, page writes, Put Blob): each round lets at least one writer through, and a short
/// random pause spreads the retries, so a busy blob serialises its writers instead of failing them.
pub const CAS_ATTEMPTS: usize = 64;

/// The pause before retry `attempt` (1-based): a few random milliseconds, growing a little.
pub async fn cas_pause(attempt: usize) {
    let spread = 1 + (attempt as u64).min(16);
    let ms = (uuid::Uuid::new_v4().as_u128() as u64) % spread;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl BlobService {
    pub(crate) async fn resolve(&self, name: &str) -> BlobResult<Option<Account>> {
        let n = name.to_string();
        let found =
            ciel_store::run(&self.store, move |s| s.find_resources_by_name(TYPE, &n)).await?;
        let Some(r) = found.into_iter().next() else {
            return Ok(None);
        };
        let id = ResourceId::parse(&r.id).ok_or_else(BlobError::internal)?;
        let sealed = r.sealed.as_deref().ok_or_else(BlobError::internal)?;
        let s = Secrets::open(&self.master, &id, sealed).map_err(|_| BlobError::internal())?;
        // A customer key that cannot be used is reported after authentication, so that only
        // an authenticated caller learns the account's key state.
        let (data_key, key_error): ([u8; 32], _) = match &s.cmk {
            None => (
                B64.decode(&s.data_key)
                    .map_err(|_| BlobError::internal())?
                    .try_into()
                    .map_err(|_| BlobError::internal())?,
                None,
            ),
            Some(c) => match self.customer_data_key(&r, &id, &s, c).await {
                Ok(k) => (k, None),
                Err(e) => ([0u8; 32], Some(e)),
            },
        };
        Ok(Some(Account {
            dir: account_dir(&self.root, &id),
            id,
            name: r.name.clone(),
            tenant_id: r.tenant_id.clone(),
            key1: s.key1,
            key2: s.key2,
            data_key,
            key_error,
            udk_epoch: s.udk_epoch,
            allow_shared_key: r.body["properties"]["allowSharedKeyAccess"]
                .as_bool()
                .unwrap_or(true),
            allow_public: r.body["properties"]["allowBlobPublicAccess"]
                .as_bool()
                .unwrap_or(false),
            sku: r.body["sku"]["name"]
                .as_str()
                .unwrap_or("Standard_LRS")
                .to_string(),
        }))
    }

    /// The data key of an account encrypted with a customer-managed key: from the cache while
    /// fresh, else unwrapped by the customer's key (as the account's managed identity). When the
    /// account follows the key's current version and the key was rotated, the data key is
    /// re-wrapped under the new version and the account updated; no blob is rewritten.
    async fn customer_data_key(
        &self,
        r: &ciel_store::Resource,
        id: &ResourceId,
        secrets: &Secrets,
        c: &crate::account::encryption::CmkState,
    ) -> Result<[u8; 32], ciel_arm::cmk::CmkError> {
        use ciel_arm::cmk::CmkError;
        let internal = |m: &str| CmkError::Internal(m.to_string());
        let cache_key = id.key();
        if let Ok(cache) = self.cmk_cache.lock() {
            if let Some(hit) = cache.get(&cache_key) {
                if hit.kid == c.kid && hit.at.elapsed() < self.cmk_check {
                    return Ok(hit.key);
                }
            }
        }
        let cmk = self
            .cmk
            .as_ref()
            .ok_or_else(|| internal("no key service"))?;
        let who = ciel_arm::cmk::CmkIdentity {
            tenant_id: r.tenant_id.clone(),
            object_id: r.body["identity"]["principalId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            resource_id: r.id.clone(),
        };
        let refuse = |e: CmkError| {
            if let Ok(mut cache) = self.cmk_cache.lock() {
                cache.remove(&cache_key);
            }
            e
        };
        let wrapped = B64
            .decode(&c.wrapped)
            .map_err(|_| internal("wrapped key"))?;
        let plain = cmk.unwrap(&who, &c.kid, &wrapped).await.map_err(refuse)?;
        let key: [u8; 32] = plain.try_into().map_err(|_| internal("data key length"))?;
        let mut kid = c.kid.clone();
        if c.key_version.is_none() {
            match cmk.current_kid(&who, &c.vault_uri, &c.key_name).await {
                Ok(current) if current != c.kid => {
                    kid = self
                        .rewrap(r, id, secrets, c, &who, &key)
                        .await
                        .unwrap_or(kid);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, account = %r.name, "could not check the customer key's current version")
                }
            }
        }
        if let Ok(mut cache) = self.cmk_cache.lock() {
            cache.insert(
                cache_key,
                CachedDataKey {
                    key,
                    kid,
                    at: std::time::Instant::now(),
                },
            );
        }
        Ok(key)
    }

    /// Wraps the data key under the key's current version and stores it with the account.
    async fn rewrap(
        &self,
        r: &ciel_store::Resource,
        id: &ResourceId,
        secrets: &Secrets,
        c: &crate::account::encryption::CmkState,
        who: &ciel_arm::cmk::CmkIdentity,
        key: &[u8; 32],
    ) -> Option<String> {
        let cmk = self.cmk.as_ref()?;
        let (kid, wrapped) = match cmk.wrap(who, &c.vault_uri, &c.key_name, None, key).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, account = %r.name, "re-wrapping the data key under the rotated customer key failed");
                return None;
            }
        };
        let mut next = secrets.clone();
        let state = crate::account::encryption::CmkState {
            kid: kid.clone(),
            wrapped: B64.encode(wrapped),
            wrapped_at: ciel_core::time::now_rfc3339(),
            ..c.clone()
        };
        let previous = c.kid.clone();
        next.cmk = Some(state);
        let mut rec = r.clone();
        rec.sealed = Some(next.seal(&self.master, id).ok()?);
        rec.body["properties"]["encryption"]["keyvaultproperties"]
            ["currentVersionedKeyIdentifier"] = serde_json::json!(kid);
        rec.body["properties"]["encryption"]["keyvaultproperties"]["lastKeyRotationTimestamp"] =
            serde_json::json!(ciel_core::time::now_rfc3339());
        rec.changed = ciel_core::time::now_unix();
        let draft = AuditDraft {
            tenant_id: Some(r.tenant_id.clone()),
            actor: "system".into(),
            action: "Microsoft.Storage/storageAccounts/encryption/rewrap".into(),
            target: r.id.clone(),
            outcome: "success".into(),
            details: serde_json::json!({"from": previous, "to": kid}),
            ..Default::default()
        };
        match ciel_store::run(&self.store, move |s| s.put_resource(&rec, &draft)).await {
            Ok(_) => Some(kid),
            Err(e) => {
                tracing::warn!(error = %e, "storing the re-wrapped data key failed");
                None
            }
        }
    }

    async fn deny(&self, account: &Account, rid: &str, ip: &Option<String>, reason: &str) {
        let d = AuditDraft {
            tenant_id: Some(account.tenant_id.clone()),
            actor: "anonymous".into(),
            action: "Microsoft.Storage/storageAccounts/blobServices/authenticate".into(),
            target: account.id.to_string(),
            outcome: "denied".into(),
            details: serde_json::json!({ "reason": reason }),
            request_id: Some(rid.to_string()),
            client_ip: ip.clone(),
        };
        if let Err(e) = ciel_store::run(&self.store, move |s| {
            s.append_audit(std::slice::from_ref(&d))
        })
        .await
        {
            tracing::error!(error = %e, "could not audit a refused blob request");
        }
    }

    /// Entry point. `account` comes from the host name, or from the first path segment when
    /// `path_style`.
    pub async fn handle(
        &self,
        req: Request<Body>,
        account: &str,
        path_style: bool,
        rid: &str,
        ip: Option<String>,
    ) -> Response {
        let version = req
            .headers()
            .get("x-ms-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(DEFAULT_VERSION)
            .to_string();
        let mut resp = match self
            .handle_inner(req, account, path_style, rid, ip, &version)
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&version) {
            h.insert("x-ms-version", v);
        }
        if let Ok(v) = HeaderValue::from_str(&http_date(now_micros())) {
            h.insert(http::header::DATE, v);
        }
        resp
    }

    async fn handle_inner(
        &self,
        req: Request<Body>,
        account_name: &str,
        path_style: bool,
        rid: &str,
        ip: Option<String>,
        version: &str,
    ) -> BlobResult<Response> {
        let account = self.resolve(account_name).await?.ok_or_else(|| {
            BlobError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The specified storage account does not exist.",
            )
        })?;
        let origin = req
            .headers()
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if req.method() == Method::OPTIONS {
            return service::preflight(self, &account, req.headers()).await;
        }
        let method = req.method().clone();
        let mut resp = match self
            .serve(req, account.clone(), path_style, rid, ip, version)
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if let Some(o) = origin {
            let props = service::load_properties(&account, self).await?;
            service::decorate(&props, &method, &o, &mut resp);
        }
        Ok(resp)
    }

    async fn serve(
        &self,
        req: Request<Body>,
        account: Account,
        path_style: bool,
        rid: &str,
        ip: Option<String>,
        version: &str,
    ) -> BlobResult<Response> {
        let raw_path = req.uri().path().to_string();
        let raw_query = req.uri().query().map(str::to_string);
        // The resource path below the account.
        let rel = if path_style {
            raw_path
                .splitn(3, '/')
                .nth(2)
                .map(|r| format!("/{r}"))
                .unwrap_or_else(|| "/".into())
        } else {
            raw_path.clone()
        };
        let decoded = percent_encoding::percent_decode_str(&rel)
            .decode_utf8()
            .map_err(|_| BlobError::bad("InvalidUri", "The request URI is not valid UTF-8."))?;
        let trimmed = decoded.trim_start_matches('/');
        let (container, blob) = match trimmed.split_once('/') {
            Some((c, b)) => (c.to_string(), Some(b.to_string()).filter(|b| !b.is_empty())),
            None => (trimmed.to_string(), None),
        };
        let q: Vec<(String, String)> = raw_query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let get = |k: &str| {
            q.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let restype = get("restype").map(str::to_ascii_lowercase);
        let comp = get("comp").map(str::to_ascii_lowercase);
        let m = req.method().clone();
        let level = match (container.is_empty(), &blob) {
            (true, _) => sas::Level::Service,
            (false, None) => sas::Level::Container,
            (false, Some(_)) => sas::Level::Blob,
        };
        let auth_header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let principal = if sas::is_sas(&q) {
            match self
                .verify_sas(
                    &account,
                    &q,
                    &m,
                    level,
                    &restype,
                    &comp,
                    &container,
                    &blob,
                    &ip,
                    req.headers(),
                    &auth_header,
                )
                .await
            {
                Ok(g) => Principal::Sas(g),
                Err(e) => {
                    self.deny(&account, rid, &ip, &format!("SAS: {}", e.code))
                        .await;
                    return Err(e);
                }
            }
        } else if let Some(token) = auth_header.strip_prefix("Bearer ") {
            match self.verify_bearer(&account, token) {
                Ok(c) => Principal::Token(c),
                Err(reason) if reason == "CrossTenant" => {
                    self.deny(&account, rid, &ip, &reason).await;
                    return Err(BlobError::forbidden());
                }
                Err(reason) => {
                    self.deny(&account, rid, &ip, &reason).await;
                    let mut r = BlobError::new(
                        StatusCode::UNAUTHORIZED,
                        "InvalidAuthenticationInfo",
                        "Server failed to authenticate the request: the bearer token is not valid.",
                    )
                    .into_response();
                    self.challenge(&mut r, &account);
                    return Ok(r);
                }
            }
        } else if auth_header.starts_with("SharedKey ") {
            if !account.allow_shared_key {
                self.deny(&account, rid, &ip, "KeyBasedAuthenticationNotPermitted")
                    .await;
                return Err(key_auth_not_permitted());
            }
            let keys = [account.key1.as_str(), account.key2.as_str()];
            if let Err(e) = auth::verify_shared_key(
                &auth_header,
                req.method(),
                &raw_path,
                raw_query.as_deref(),
                req.headers(),
                &account.name,
                &keys,
            ) {
                self.deny(&account, rid, &ip, "SharedKeySignatureMismatch")
                    .await;
                return Err(e);
            }
            Principal::AccountKey
        } else {
            match self
                .anonymous(&account, &m, level, &restype, &comp, &container)
                .await?
            {
                Ok(()) => Principal::Anonymous,
                Err(e) => {
                    self.deny(&account, rid, &ip, e.code).await;
                    if e.status != StatusCode::UNAUTHORIZED {
                        return Err(e);
                    }
                    let mut r = e.into_response();
                    self.challenge(&mut r, &account);
                    return Ok(r);
                }
            }
        };
        if let Some(e) = account.key_error.clone() {
            return Err(customer_key_error(e));
        }
        let ctx = Ctx {
            svc: self,
            service_endpoint: format!(
                "https://{}.blob.{}/",
                account.name,
                self.endpoints.storage_suffix()
            ),
            account,
            principal,
            request_id: rid.to_string(),
            client_ip: ip,
            version: version.to_string(),
        };
        let mut resp = self
            .dispatch(&ctx, req, &container, &blob, &restype, &comp, &q)
            .await?;
        // A SAS may override the content headers of what it reads (rscc, rscd, ...).
        if let (Principal::Sas(g), sas::Level::Blob, true) =
            (&ctx.principal, level, m == Method::GET || m == Method::HEAD)
        {
            if resp.status().is_success() && comp.is_none() {
                for (k, v) in &g.overrides {
                    if let Ok(v) = HeaderValue::from_str(v) {
                        resp.headers_mut().insert(*k, v);
                    }
                }
            }
        }
        Ok(resp)
    }

    /// Verifies a bearer token for this account: Ciel's storage audiences or the account's own.
    fn verify_bearer(&self, account: &Account, token: &str) -> Result<ciel_core::Caller, String> {
        let mut audiences = self.tokens.accepted_audiences(Service::Storage);
        let own = format!(
            "https://{}.blob.{}",
            account.name,
            self.endpoints.storage_suffix()
        );
        audiences.push(format!("{own}/"));
        audiences.push(own);
        match self.tokens.verify_for(token.trim(), &audiences) {
            Ok(c) if c.tenant_id == account.tenant_id => Ok(c),
            Ok(_) => Err("CrossTenant".into()),
            // An operator's token: it authenticates, and `Ctx::authorize` allows only what an
            // approved lockbox grant of this account's tenant covers.
            Err(e) => self
                .tokens
                .verify_operator(self.store.as_ref(), token.trim(), &account.tenant_id)
                .map_err(|_| format!("{e}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn verify_sas(
        &self,
        account: &Account,
        q: &[(String, String)],
        m: &Method,
        level: sas::Level,
        restype: &Option<String>,
        comp: &Option<String>,
        container: &str,
        blob: &Option<String>,
        ip: &Option<String>,
        headers: &http::HeaderMap,
        auth_header: &str,
    ) -> BlobResult<sas::SasGrant> {
        let need = sas::need(m, level, restype.as_deref(), comp.as_deref()).ok_or_else(|| {
            BlobError::new(
                StatusCode::FORBIDDEN,
                "AuthorizationPermissionMismatch",
                "This operation cannot be authorized by a shared access signature.",
            )
        })?;
        let p = sas::Params::new(q);
        let ud = q.iter().any(|(k, _)| k == "skoid");
        // Disallowing key access also disables the SAS signed with those keys, as in Azure.
        if !ud && !account.allow_shared_key {
            return Err(key_auth_not_permitted());
        }
        let policy = match p.policy() {
            Some(id) if !container.is_empty() => {
                acl::policy(&self.store, &account.id.key(), container, id).await?
            }
            _ => None,
        };
        let snapshot = q
            .iter()
            .find(|(k, _)| k == "snapshot")
            .map(|(_, v)| v.as_str());
        let (data_key, epoch) = (account.data_key, account.udk_epoch);
        let udk = move |f: &sas::UdkFields| service::user_delegation_key(&data_key, epoch, f);
        let grant = sas::verify(
            q,
            &sas::Request {
                account: &account.name,
                container,
                blob: blob.as_deref(),
                snapshot,
                need,
                client_ip: ip.as_deref(),
                headers,
                now: chrono::Utc::now().timestamp(),
            },
            &sas::Keys {
                account_keys: [&account.key1, &account.key2],
                udk: &udk,
            },
            policy.as_ref(),
        )?;
        // A SAS naming a delegated user is only valid with that user's own token beside it.
        if let Some((_, want)) = q
            .iter()
            .find(|(k, _)| k == "sduoid")
            .filter(|(_, v)| !v.is_empty())
        {
            let ok = auth_header
                .strip_prefix("Bearer ")
                .and_then(|t| self.verify_bearer(account, t).ok())
                .map(|c| &c.object_id == want)
                .unwrap_or(false);
            if !ok {
                return Err(BlobError::new(
                    StatusCode::FORBIDDEN,
                    "AuthenticationFailed",
                    "This SAS is delegated to a user: the request must carry that user's bearer token.",
                ));
            }
        }
        Ok(grant)
    }

    /// Anonymous access: reads of public containers, while the account allows public access.
    /// The inner error is the refusal to answer (401 with a challenge, or 409).
    async fn anonymous(
        &self,
        account: &Account,
        m: &Method,
        level: sas::Level,
        restype: &Option<String>,
        comp: &Option<String>,
        container: &str,
    ) -> BlobResult<Result<(), BlobError>> {
        if container.is_empty() || !(m == Method::GET || m == Method::HEAD) {
            return Ok(Err(auth::no_auth()));
        }
        let (a, c) = (account.id.key(), container.to_string());
        let Some(found) =
            ciel_store::run(&self.store, move |s| s.get_container(&a, &c).found()).await?
        else {
            return Ok(Err(auth::no_auth()));
        };
        let allowed = match (found.public_access.as_deref(), level) {
            (Some("blob" | "container"), sas::Level::Blob) => {
                restype.is_none()
                    && matches!(comp.as_deref(), None | Some("metadata") | Some("blocklist"))
            }
            (Some("container"), sas::Level::Container) => {
                restype.as_deref() == Some("container")
                    && matches!(comp.as_deref(), None | Some("metadata") | Some("list"))
            }
            _ => false,
        };
        if !allowed {
            return Ok(Err(auth::no_auth()));
        }
        if !account.allow_public {
            return Ok(Err(acl::public_access_not_permitted()));
        }
        Ok(Ok(()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        ctx: &Ctx<'_>,
        req: Request<Body>,
        container: &str,
        blob: &Option<String>,
        restype: &Option<String>,
        comp: &Option<String>,
        q: &[(String, String)],
    ) -> BlobResult<Response> {
        let get = |k: &str| {
            q.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let container = container.to_string();
        let snapshot = get("snapshot").map(str::to_string);
        let snapshot = snapshot.as_deref();
        // Plain booleans: a closure holding `&req` would keep the handler future from being Send.
        let hdrs = req.headers();
        let copy_source = hdrs.contains_key("x-ms-copy-source");
        let blob_type_given = hdrs.contains_key("x-ms-blob-type");
        let resize_or_sequence = hdrs.contains_key("x-ms-blob-content-length")
            || hdrs.contains_key("x-ms-sequence-number-action");
        let m = req.method().clone();
        // Snapshots are read-only: a write naming one would otherwise reach the blob itself.
        if snapshot.is_some() && m != Method::GET && m != Method::HEAD && m != Method::DELETE {
            return Err(BlobError::bad(
                "InvalidQueryParameterValue",
                "A snapshot cannot be modified: the snapshot parameter is not allowed on this request.",
            ));
        }
        match (
            container.is_empty(),
            &blob,
            restype.as_deref(),
            comp.as_deref(),
            &m,
        ) {
            (_, _, Some("account"), Some("properties"), &Method::GET | &Method::HEAD) => {
                service::get_account_info(ctx).await
            }
            (true, None, _, Some("list"), &Method::GET) => container::list_containers(ctx, q).await,
            (true, None, _, Some("blobs"), &Method::GET) => {
                tags::find_blobs_by_tags(ctx, None, q).await
            }
            (true, None, Some("service"), Some("properties"), &Method::GET) => {
                service::get_service_properties(ctx).await
            }
            (true, None, Some("service"), Some("properties"), &Method::PUT) => {
                service::set_service_properties(ctx, req.into_body()).await
            }
            (true, None, Some("service"), Some("userdelegationkey"), &Method::POST) => {
                service::get_user_delegation_key(ctx, req.into_body()).await
            }
            (true, _, _, _, _) => Err(BlobError::not_supported("This service-level operation")),
            (false, None, Some("container"), None, &Method::PUT) => {
                container::create_container(ctx, &container, req.headers()).await
            }
            (false, None, Some("container"), None, &Method::GET | &Method::HEAD) => {
                container::get_container_properties(ctx, &container).await
            }
            (false, None, Some("container"), None, &Method::DELETE) => {
                container::delete_container(ctx, &container, req.headers()).await
            }
            (false, None, Some("container"), Some("lease"), &Method::PUT) => {
                lease::lease_container(ctx, &container, req.headers()).await
            }
            (false, None, Some("container"), Some("blobs"), &Method::GET) => {
                tags::find_blobs_by_tags(ctx, Some(&container), q).await
            }
            (false, None, Some("container"), Some("list"), &Method::GET) => {
                blob_ops::list_blobs(ctx, &container, q).await
            }
            (false, None, Some("container"), Some("metadata"), &Method::PUT) => {
                properties::set_container_metadata(ctx, &container, req.headers()).await
            }
            (false, None, Some("container"), Some("metadata"), &Method::GET | &Method::HEAD) => {
                properties::get_container_metadata(ctx, &container).await
            }
            (false, None, Some("container"), Some("acl"), &Method::GET | &Method::HEAD) => {
                acl::get_container_acl(ctx, &container).await
            }
            (false, None, Some("container"), Some("acl"), &Method::PUT) => {
                let headers = req.headers().clone();
                acl::set_container_acl(ctx, &container, &headers, req.into_body()).await
            }
            (false, None, _, _, _) => Err(BlobError::not_supported("This container operation")),
            (false, Some(b), None, None, &Method::PUT) if copy_source => {
                copy::copy_blob(ctx, &container, b, req.headers(), blob_type_given).await
            }
            (false, Some(b), None, None, &Method::PUT) => {
                blob_ops::put_blob(ctx, &container, b, req).await
            }
            (false, Some(b), None, Some("block"), &Method::PUT) if copy_source => {
                let id = get("blockid").map(str::to_string).unwrap_or_default();
                block::check_block_id(&id)?;
                copy::put_block_from_url(ctx, &container, b, &id, req).await
            }
            (false, Some(b), None, Some("block"), &Method::PUT) => {
                let id = get("blockid").map(str::to_string);
                block::put_block(ctx, &container, b, id.as_deref(), req).await
            }
            (false, Some(b), None, Some("lease"), &Method::PUT) => {
                lease::lease_blob(ctx, &container, b, req.headers()).await
            }
            (false, Some(b), None, Some("snapshot"), &Method::PUT) => {
                snapshot::create_snapshot(ctx, &container, b, req.headers()).await
            }
            (false, Some(b), None, Some("appendblock"), &Method::PUT) => {
                append::append_block(ctx, &container, b, req).await
            }
            (false, Some(b), None, Some("page"), &Method::PUT) => {
                page::put_page(ctx, &container, b, req).await
            }
            (false, Some(b), None, Some("pagelist"), &Method::GET) => {
                let prev = get("prevsnapshot").map(str::to_string);
                page::get_page_ranges(ctx, &container, b, req.headers(), snapshot, prev.as_deref())
                    .await
            }
            (false, Some(b), None, Some("copy"), &Method::PUT) => {
                copy::abort_copy(ctx, &container, b, get("copyid")).await
            }
            (false, Some(b), None, Some("tags"), &Method::PUT) => {
                tags::set_blob_tags(ctx, &container, b, req).await
            }
            (false, Some(b), None, Some("tags"), &Method::GET) => {
                tags::get_blob_tags(ctx, &container, b, req.headers(), snapshot).await
            }
            (false, Some(b), None, Some("properties"), &Method::PUT) if resize_or_sequence => {
                page::resize_or_sequence(ctx, &container, b, req.headers()).await
            }
            (false, Some(b), None, Some("metadata"), &Method::PUT) => {
                properties::set_blob(ctx, &container, b, req.headers(), true).await
            }
            (false, Some(b), None, Some("metadata"), &Method::GET | &Method::HEAD) => {
                properties::get_blob_metadata(ctx, &container, b, req.headers(), snapshot).await
            }
            (false, Some(b), None, Some("properties"), &Method::PUT) => {
                properties::set_blob(ctx, &container, b, req.headers(), false).await
            }
            (false, Some(b), None, Some("blocklist"), &Method::PUT) => {
                block::put_block_list(ctx, &container, b, req).await
            }
            (false, Some(b), None, Some("blocklist"), &Method::GET) => {
                block::get_block_list(ctx, &container, b, get("blocklisttype"), req.headers()).await
            }
            (false, Some(b), None, None, &Method::GET) => {
                blob_ops::get_blob(ctx, &container, b, req.headers(), false, snapshot).await
            }
            (false, Some(b), None, None, &Method::HEAD) => {
                blob_ops::get_blob(ctx, &container, b, req.headers(), true, snapshot).await
            }
            (false, Some(b), None, None, &Method::DELETE) => {
                blob_ops::delete_blob(ctx, &container, b, req.headers(), snapshot).await
            }
            (false, Some(_), _, _, _) => Err(BlobError::not_supported(
                "This blob operation (tiers, incremental copy, immutability, queries)",
            )),
        }
    }

    fn challenge(&self, r: &mut Response, account: &Account) {
        let v = format!(
            "Bearer authorization_uri={}/{}/oauth2/authorize resource_id=https://storage.azure.com",
            self.endpoints.login(),
            account.tenant_id
        );
        if let Ok(h) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, h);
        }
    }

    /// Removes an account's data when the account is deleted (its key is already gone).
    pub fn destroy_account_files(root: &std::path::Path, id: &ResourceId) {
        let dir = account_dir(root, id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, dir = %dir.display(), "could not remove a deleted account's files");
            }
        }
    }
}

fn key_auth_not_permitted() -> BlobError {
    BlobError::new(
        StatusCode::FORBIDDEN,
        "KeyBasedAuthenticationNotPermitted",
        "Key based authentication is not permitted on this storage account.",
    )
}

pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}
