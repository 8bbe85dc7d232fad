//! The token endpoint (client credentials, password, refresh token) and bearer-token
//! verification for the resource side (ARM, Graph, later Storage and Key Vault).

use crate::audiences::{Audiences, Service};
use crate::device_code::{DeviceFlows, DeviceRequest, DeviceStart};
use crate::directory::{verify_client_secret, verify_password};
use crate::error::TokenRejection;
use crate::keys::KeyRing;
use crate::mfa::Mfa;
use crate::{
    IdentityError, ACCESS_TOKEN_LIFETIME, LEEWAY_SECS, LOCKOUT_SECS, LOCKOUT_THRESHOLD,
    PUBLIC_CLIENTS, REFRESH_TOKEN_LIFETIME,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_core::{Caller, PrincipalKind};
use ciel_store::{Principal, PrincipalKindRec, RefreshToken, Store};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub oid: String,
    pub sub: String,
    pub appid: String,
    pub azp: String,
    /// `app` for service principals, `user` for users.
    pub idtyp: String,
    pub ver: String,
    /// Unique token id.
    pub uti: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unique_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scp: Option<String>,
    /// How the user signed in: `["pwd"]`, or `["pwd", "mfa"]` after a second factor.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amr: Option<Vec<String>>,
}

/// What a user must give, beyond the password, to sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaNeed {
    None,
    /// A code of the confirmed factor.
    Verify,
    /// The tenant's policy requires a factor the user has not confirmed yet.
    Enrol,
}

/// A tenant's MFA requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaPolicy {
    Off,
    /// Users holding Owner, Contributor or User Access Administrator anywhere in the tenant.
    Admins,
    All,
}

impl MfaPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Some(Self::Off),
            "admins" => Some(Self::Admins),
            "all" => Some(Self::All),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Admins => "admins",
            Self::All => "all",
        }
    }
}

/// Roles whose holders are administrators for the `admins` policy.
pub const ADMIN_ROLES: &[&str] = &[
    crate::rbac::OWNER,
    crate::rbac::CONTRIBUTOR,
    crate::rbac::USER_ACCESS_ADMINISTRATOR,
];

/// A token request as the HTTP layer hands it over.
pub struct TokenRequest {
    /// The first path segment: a tenant GUID, `organizations`, `common` or `adfs`.
    pub tenant: String,
    pub form: HashMap<String, String>,
    /// Client credentials from an `Authorization: Basic` header, if any.
    pub basic: Option<(String, String)>,
    pub client_ip: Option<String>,
    pub request_id: String,
}

pub struct TokenService {
    store: Store,
    keys: Arc<KeyRing>,
    /// Second factors of users (and of operators, through the same service).
    pub mfa: Arc<Mfa>,
    /// Device-code sign-ins in progress (in memory: a restart cancels them).
    pub devices: DeviceFlows,
    pub audiences: Audiences,
    pub endpoints: Endpoints,
}

fn is_alias(t: &str) -> bool {
    matches!(
        t.to_ascii_lowercase().as_str(),
        "organizations" | "common" | "adfs" | "consumers"
    )
}

fn sha256_hex(s: &str) -> String {
    ciel_core::audit::hex_lower(&Sha256::digest(s.as_bytes()))
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}

impl TokenService {
    pub fn new(store: Store, keys: Arc<KeyRing>, mfa: Arc<Mfa>, endpoints: Endpoints) -> Arc<Self> {
        Arc::new(Self {
            store,
            keys,
            mfa,
            devices: DeviceFlows::new(),
            audiences: Audiences::new(&endpoints),
            endpoints,
        })
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Handles a token request and writes its audit record (issued or refused) before answering.
    pub fn token(&self, req: &TokenRequest) -> Result<serde_json::Value, IdentityError> {
        let grant = req.form.get("grant_type").cloned().unwrap_or_default();
        let claimed = req
            .form
            .get("username")
            .or_else(|| req.form.get("client_id"))
            .cloned()
            .or_else(|| req.basic.as_ref().map(|b| b.0.clone()))
            .unwrap_or_else(|| "anonymous".into());
        let result = self.token_inner(req, &grant);
        let (tenant, actor, target, outcome, details) = match &result {
            Ok((_, p, aud)) => (
                Some(p.tenant_id.clone()),
                actor_of(p),
                aud.clone(),
                "success",
                json!({"grant_type": grant, "client_id": clip(req.form.get("client_id").map(String::as_str).unwrap_or(""))}),
            ),
            Err(e) => (
                if is_alias(&req.tenant) {
                    None
                } else {
                    Some(clip(&req.tenant))
                },
                clip(&claimed),
                "token".to_string(),
                "denied",
                json!({"grant_type": clip(&grant), "error": format!("AADSTS{}", e.aadsts())}),
            ),
        };
        let draft = AuditDraft {
            tenant_id: tenant,
            actor,
            action: "identity/token/issue".into(),
            target,
            outcome: outcome.into(),
            details,
            request_id: Some(req.request_id.clone()),
            client_ip: req.client_ip.clone(),
        };
        self.store.append_audit(std::slice::from_ref(&draft))?;
        result.map(|(v, _, _)| v)
    }

    fn token_inner(
        &self,
        req: &TokenRequest,
        grant: &str,
    ) -> Result<(serde_json::Value, Principal, String), IdentityError> {
        if !is_alias(&req.tenant) {
            self.store
                .get_tenant(&req.tenant)
                .map_err(|_| IdentityError::TenantNotFound(clip(&req.tenant)))?;
        }
        let f = &req.form;
        let (client_id, client_secret) = match (&req.basic, f.get("client_id")) {
            (Some((id, s)), _) => (id.clone(), Some(s.clone())),
            (None, Some(id)) => (id.clone(), f.get("client_secret").cloned()),
            (None, None) => {
                return Err(IdentityError::InvalidRequest(
                    "AADSTS900144: The request body must contain 'client_id'.".into(),
                ))
            }
        };
        // The requested resource: v2 `scope`, or v1 `resource`.
        let resource = match (f.get("scope"), f.get("resource")) {
            (Some(s), _) => {
                Audiences::resource_from_scope(s).map_err(IdentityError::InvalidScope)?
            }
            (None, Some(r)) => Some(r.clone()),
            (None, None) => None,
        };
        let want_refresh = f
            .get("scope")
            .map(|s| s.split_whitespace().any(|x| x == "offline_access"))
            .unwrap_or(true);
        let v1 = f.contains_key("resource") && !f.contains_key("scope");
        match grant {
            "client_credentials" => {
                let resource = resource.ok_or_else(|| {
                    IdentityError::InvalidScope("The request body must contain the 'scope' parameter, e.g. '{resource}/.default'.".into())
                })?;
                let (svc_aud, aud) = self.audience(&resource)?;
                let _ = svc_aud;
                let sp = self
                    .store
                    .find_principal_by_app_id(&client_id)
                    .ok()
                    .filter(|p| p.kind == PrincipalKindRec::ServicePrincipal);
                let sp = match sp {
                    Some(p)
                        if req.tenant.eq_ignore_ascii_case("adfs")
                            || p.tenant_id.eq_ignore_ascii_case(&req.tenant) =>
                    {
                        p
                    }
                    _ => {
                        return Err(IdentityError::InvalidClient(format!(
                            "Application with identifier '{}' was not found in the directory '{}'.",
                            clip(&client_id),
                            clip(&req.tenant)
                        )))
                    }
                };
                let secret = client_secret.ok_or_else(|| {
                    IdentityError::InvalidClient(
                        "The request body must contain 'client_secret' or 'client_assertion'."
                            .into(),
                    )
                })?;
                if !verify_client_secret(self.store.as_ref(), &sp, &secret)? {
                    return Err(IdentityError::InvalidClient(format!(
                        "Invalid client secret provided. Ensure the secret being sent is the client secret value for app '{}'.",
                        clip(&client_id)
                    )));
                }
                let at = self.access_token(&sp, &aud, &client_id, false)?;
                let mut body = json!({
                    "token_type": "Bearer",
                    "expires_in": ACCESS_TOKEN_LIFETIME - 1,
                    "ext_expires_in": ACCESS_TOKEN_LIFETIME - 1,
                    "access_token": at,
                });
                if v1 {
                    body["resource"] = json!(resource);
                    body["expires_on"] = json!((ciel_core::time::now_unix()
                        + ACCESS_TOKEN_LIFETIME
                        - 1)
                    .to_string());
                }
                Ok((body, sp, aud))
            }
            "password" => {
                let username = f.get("username").ok_or_else(|| {
                    IdentityError::InvalidRequest("'username' is required.".into())
                })?;
                let password = f.get("password").ok_or_else(|| {
                    IdentityError::InvalidRequest("'password' is required.".into())
                })?;
                self.check_user_client(&client_id, client_secret.as_deref())?;
                let user = self.check_password(username, password, &req.tenant)?;
                match self.mfa_need(&user)? {
                    MfaNeed::None => {}
                    MfaNeed::Verify => return Err(IdentityError::MfaRequired),
                    MfaNeed::Enrol => return Err(IdentityError::MfaEnrolmentRequired),
                }
                self.user_tokens(
                    &user,
                    &client_id,
                    resource.as_deref(),
                    want_refresh,
                    f,
                    false,
                )
            }
            "urn:ietf:params:oauth:grant-type:device_code" => {
                let code = f
                    .get("device_code")
                    .or_else(|| f.get("code"))
                    .ok_or_else(|| {
                        IdentityError::InvalidRequest("'device_code' is required.".into())
                    })?;
                self.check_user_client(&client_id, client_secret.as_deref())?;
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let (dreq, approval) = self
                    .devices
                    .poll(code, &client_id, now_ms)
                    .map_err(IdentityError::Device)?;
                let user = self.store.get_principal(&approval.object_id).map_err(|_| {
                    IdentityError::InvalidGrant("The account no longer exists.".into())
                })?;
                // The resource of the device authorization request, unless the poll names one.
                let resource = match resource {
                    Some(r) => Some(r),
                    None => match (&dreq.scope, &dreq.resource) {
                        (Some(s), _) => Audiences::resource_from_scope(s)
                            .map_err(IdentityError::InvalidScope)?,
                        (None, r) => r.clone(),
                    },
                };
                let want_refresh = dreq
                    .scope
                    .as_deref()
                    .map(|s| s.split_whitespace().any(|x| x == "offline_access"))
                    .unwrap_or(true);
                self.user_tokens(
                    &user,
                    &client_id,
                    resource.as_deref(),
                    want_refresh,
                    f,
                    approval.mfa,
                )
            }
            "refresh_token" => {
                let rt = f.get("refresh_token").ok_or_else(|| {
                    IdentityError::InvalidRequest("'refresh_token' is required.".into())
                })?;
                self.check_user_client(&client_id, client_secret.as_deref())?;
                let rec = self
                    .store
                    .take_refresh_token(&sha256_hex(rt))
                    .map_err(|_| {
                        IdentityError::InvalidGrant(
                            "The refresh token is invalid, expired or already used.".into(),
                        )
                    })?;
                if rec.expires < ciel_core::time::now_unix() || rec.client_id != client_id {
                    return Err(IdentityError::InvalidGrant(
                        "The refresh token is invalid, expired or already used.".into(),
                    ));
                }
                if !is_alias(&req.tenant) && !rec.tenant_id.eq_ignore_ascii_case(&req.tenant) {
                    return Err(IdentityError::InvalidGrant(
                        "The refresh token was issued for another tenant.".into(),
                    ));
                }
                let user = self.store.get_principal(&rec.object_id).map_err(|_| {
                    IdentityError::InvalidGrant("The account no longer exists.".into())
                })?;
                if user
                    .locked_until
                    .map(|t| t > ciel_core::time::now_unix())
                    .unwrap_or(false)
                {
                    return Err(IdentityError::Locked);
                }
                // A refresh token from a sign-in without a second factor does not outlive a
                // requirement that came later (a factor enrolled, a tenant policy switched on).
                if !rec.mfa {
                    match self.mfa_need(&user)? {
                        MfaNeed::None => {}
                        MfaNeed::Verify => return Err(IdentityError::MfaRequired),
                        MfaNeed::Enrol => return Err(IdentityError::MfaEnrolmentRequired),
                    }
                }
                self.user_tokens(&user, &client_id, resource.as_deref(), true, f, rec.mfa)
            }
            "" => Err(IdentityError::InvalidRequest(
                "AADSTS900144: The request body must contain 'grant_type'.".into(),
            )),
            other => Err(IdentityError::UnsupportedGrantType(clip(other))),
        }
    }

    /// Checks a user's password (Argon2id), counting failures and locking the account after
    /// `LOCKOUT_THRESHOLD` of them; `tenant` is the request's tenant segment (an alias admits
    /// any tenant). Shared by the password grant and the device-login page.
    pub fn check_password(
        &self,
        username: &str,
        password: &str,
        tenant: &str,
    ) -> Result<Principal, IdentityError> {
        let user = self.store.find_user_by_upn(username).ok();
        let now = ciel_core::time::now_unix();
        if let Some(u) = &user {
            if u.locked_until.map(|t| t > now).unwrap_or(false) {
                return Err(IdentityError::Locked);
            }
        }
        let ok = verify_password(
            user.as_ref().and_then(|u| u.password_hash.as_deref()),
            password,
        );
        let user = match (ok, user) {
            (true, Some(u)) => u,
            (false, Some(u)) => {
                let fails = u.failed_logins + 1;
                let lock = if fails >= LOCKOUT_THRESHOLD {
                    Some(now + LOCKOUT_SECS)
                } else {
                    None
                };
                self.store.update_principal_login_state(
                    &u.object_id,
                    if lock.is_some() { 0 } else { fails },
                    lock,
                )?;
                return Err(IdentityError::InvalidGrant(
                    "Error validating credentials due to invalid username or password.".into(),
                ));
            }
            _ => {
                return Err(IdentityError::InvalidGrant(
                    "Error validating credentials due to invalid username or password.".into(),
                ))
            }
        };
        if !is_alias(tenant) && !user.tenant_id.eq_ignore_ascii_case(tenant) {
            return Err(IdentityError::InvalidGrant(format!(
                "User account '{}' does not exist in tenant '{}'.",
                clip(username),
                clip(tenant)
            )));
        }
        if user.failed_logins != 0 || user.locked_until.is_some() {
            self.store
                .update_principal_login_state(&user.object_id, 0, None)?;
        }
        Ok(user)
    }

    /// The tenant's MFA requirement (off when never set).
    pub fn mfa_policy(&self, tenant: &str) -> Result<MfaPolicy, IdentityError> {
        Ok(self
            .store
            .get_tenant_mfa_policy(tenant)?
            .as_deref()
            .and_then(MfaPolicy::parse)
            .unwrap_or(MfaPolicy::Off))
    }

    /// Whether the user holds an administrator role (`ADMIN_ROLES`) at any scope.
    pub fn is_admin(&self, object_id: &str) -> Result<bool, IdentityError> {
        Ok(self
            .store
            .list_role_assignments_for_principal(object_id)?
            .iter()
            .any(|a| {
                let g = crate::rbac::role_guid(&a.role_definition_id);
                ADMIN_ROLES.iter().any(|r| g.eq_ignore_ascii_case(r))
            }))
    }

    /// What the user must give beyond the password: a code of the factor they have, or an
    /// enrolment the tenant requires.
    pub fn mfa_need(&self, user: &Principal) -> Result<MfaNeed, IdentityError> {
        if self
            .mfa
            .is_required(&user.object_id)
            .map_err(mfa_internal)?
        {
            return Ok(MfaNeed::Verify);
        }
        Ok(match self.mfa_policy(&user.tenant_id)? {
            MfaPolicy::All => MfaNeed::Enrol,
            MfaPolicy::Admins if self.is_admin(&user.object_id)? => MfaNeed::Enrol,
            _ => MfaNeed::None,
        })
    }

    /// The device authorization endpoint (`/{tenant}/oauth2[/v2.0]/devicecode`): checks the
    /// tenant, the client and the scope, and starts a flow. Audited.
    pub fn device_authorization(
        &self,
        tenant: &str,
        form: &HashMap<String, String>,
        client_ip: Option<&str>,
        request_id: &str,
    ) -> Result<DeviceStart, IdentityError> {
        let result = (|| {
            if !is_alias(tenant) {
                self.store
                    .get_tenant(tenant)
                    .map_err(|_| IdentityError::TenantNotFound(clip(tenant)))?;
            }
            let client_id = form.get("client_id").ok_or_else(|| {
                IdentityError::InvalidRequest(
                    "AADSTS900144: The request body must contain 'client_id'.".into(),
                )
            })?;
            // Device sign-in is for public clients (a device cannot keep a secret).
            if !PUBLIC_CLIENTS.contains(&client_id.as_str()) {
                return Err(IdentityError::InvalidClient(format!(
                    "Application '{}' is not a public client: the device code flow is not available to it.",
                    clip(client_id)
                )));
            }
            let scope = form.get("scope").cloned();
            if let Some(s) = &scope {
                if let Some(r) =
                    Audiences::resource_from_scope(s).map_err(IdentityError::InvalidScope)?
                {
                    self.audience(&r)?;
                }
            }
            let resource = form.get("resource").cloned();
            if let Some(r) = &resource {
                self.audience(r)?;
            }
            Ok(self.devices.start(
                DeviceRequest {
                    tenant: tenant.to_string(),
                    client_id: client_id.clone(),
                    scope,
                    resource,
                },
                ciel_core::time::now_unix(),
            ))
        })();
        let draft = AuditDraft {
            tenant_id: if is_alias(tenant) {
                None
            } else {
                Some(clip(tenant))
            },
            actor: clip(
                form.get("client_id")
                    .map(String::as_str)
                    .unwrap_or("anonymous"),
            ),
            action: "identity/devicecode/start".into(),
            target: "devicecode".into(),
            outcome: if result.is_ok() { "success" } else { "denied" }.into(),
            details: match &result {
                Ok(_) => json!({}),
                Err(e) => json!({"error": format!("AADSTS{}", e.aadsts())}),
            },
            request_id: Some(request_id.to_string()),
            client_ip: client_ip.map(str::to_string),
        };
        self.store.append_audit(std::slice::from_ref(&draft))?;
        result
    }

    /// Appends an audit entry (the device-login page's sign-in outcomes).
    pub fn audit(&self, draft: AuditDraft) -> Result<(), IdentityError> {
        self.store.append_audit(std::slice::from_ref(&draft))?;
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn audience(&self, resource: &str) -> Result<(Service, String), IdentityError> {
        self.audiences.resolve(resource).ok_or_else(|| {
            IdentityError::InvalidScope(format!(
                "The resource principal named '{}' was not found in this cloud.",
                clip(resource)
            ))
        })
    }

    /// Public clients (the CLI) need no secret; a registered application must present its own.
    fn check_user_client(
        &self,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<(), IdentityError> {
        if PUBLIC_CLIENTS.contains(&client_id) {
            return Ok(());
        }
        let sp = self
            .store
            .find_principal_by_app_id(client_id)
            .map_err(|_| {
                IdentityError::InvalidClient(format!(
                    "Application with identifier '{}' was not found.",
                    clip(client_id)
                ))
            })?;
        match secret {
            Some(s) if verify_client_secret(self.store.as_ref(), &sp, s)? => Ok(()),
            _ => Err(IdentityError::InvalidClient(
                "A confidential client must present its client secret.".into(),
            )),
        }
    }

    fn user_tokens(
        &self,
        user: &Principal,
        client_id: &str,
        resource: Option<&str>,
        want_refresh: bool,
        f: &HashMap<String, String>,
        mfa: bool,
    ) -> Result<(serde_json::Value, Principal, String), IdentityError> {
        let resource = resource
            .map(str::to_string)
            .unwrap_or_else(|| self.audiences.graph.clone());
        let (_, aud) = self.audience(&resource)?;
        let at = self.access_token(user, &aud, client_id, mfa)?;
        let now = ciel_core::time::now_unix();
        let upn = user.upn.clone().unwrap_or_default();
        let id_token = self.keys.sign(&json!({
            "aud": client_id, "iss": self.endpoints.issuer(&user.tenant_id), "iat": now, "nbf": now,
            "exp": now + ACCESS_TOKEN_LIFETIME, "sub": user.object_id, "oid": user.object_id, "tid": user.tenant_id,
            "preferred_username": upn, "upn": upn, "name": user.display_name, "ver": "2.0",
            "amr": amr(mfa),
        }))?;
        let client_info =
            B64URL.encode(json!({"uid": user.object_id, "utid": user.tenant_id}).to_string());
        let mut body = json!({
            "token_type": "Bearer",
            "scope": format!("{}/user_impersonation", aud.trim_end_matches('/')),
            "expires_in": ACCESS_TOKEN_LIFETIME - 1,
            "ext_expires_in": ACCESS_TOKEN_LIFETIME - 1,
            "access_token": at,
            "id_token": id_token,
        });
        if f.get("client_info").map(|v| v == "1").unwrap_or(true) {
            body["client_info"] = json!(client_info);
        }
        if want_refresh {
            let mut b = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let rt = format!("ciel.rt.{}", B64URL.encode(b));
            self.store.put_refresh_token(&RefreshToken {
                hash: sha256_hex(&rt),
                object_id: user.object_id.clone(),
                tenant_id: user.tenant_id.clone(),
                client_id: client_id.to_string(),
                created: now,
                expires: now + REFRESH_TOKEN_LIFETIME,
                mfa,
            })?;
            body["refresh_token"] = json!(rt);
        }
        Ok((body, user.clone(), aud))
    }

    fn access_token(
        &self,
        p: &Principal,
        aud: &str,
        client_id: &str,
        mfa: bool,
    ) -> Result<String, IdentityError> {
        let now = ciel_core::time::now_unix();
        let user = p.kind == PrincipalKindRec::User;
        let claims = AccessClaims {
            aud: aud.to_string(),
            iss: self.endpoints.issuer(&p.tenant_id),
            iat: now,
            nbf: now,
            exp: now + ACCESS_TOKEN_LIFETIME,
            tid: p.tenant_id.clone(),
            oid: p.object_id.clone(),
            sub: p.object_id.clone(),
            appid: client_id.to_string(),
            azp: client_id.to_string(),
            idtyp: if user { "user" } else { "app" }.into(),
            ver: "2.0".into(),
            uti: B64URL.encode(uuid::Uuid::new_v4().as_bytes()),
            upn: if user { p.upn.clone() } else { None },
            unique_name: if user { p.upn.clone() } else { None },
            name: Some(p.display_name.clone()),
            scp: if user {
                Some("user_impersonation".into())
            } else {
                None
            },
            amr: if user { Some(amr(mfa)) } else { None },
        };
        self.keys.sign(&claims)
    }

    /// The audiences a resource service accepts.
    pub fn accepted_audiences(&self, svc: Service) -> Vec<String> {
        match svc {
            Service::ResourceManager => {
                let a = self.audiences.arm.clone();
                vec![a.trim_end_matches('/').to_string(), a]
            }
            Service::Storage => vec![
                self.audiences.storage.clone(),
                format!("{}/", self.audiences.storage),
            ],
            Service::KeyVault => vec![
                self.audiences.keyvault.clone(),
                format!("{}/", self.audiences.keyvault),
            ],
            Service::Graph => vec![
                self.audiences.graph.clone(),
                format!("{}/", self.audiences.graph),
            ],
        }
    }

    /// Verifies a bearer token for a service: RS256 only, signed by one of our keys, within its
    /// validity window, for that service's audience, issued for the tenant it names.
    pub fn verify(&self, token: &str, svc: Service) -> Result<Caller, IdentityError> {
        self.verify_for(token, &self.accepted_audiences(svc))
    }

    /// The same, for an explicit list of audiences (a storage account also accepts its own
    /// `https://{account}.blob.core.{domain}` audience).
    pub fn verify_for(&self, token: &str, audiences: &[String]) -> Result<Caller, IdentityError> {
        let reject = |r| IdentityError::TokenRejected(r);
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| reject(TokenRejection::Malformed))?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err(reject(TokenRejection::Malformed));
        }
        let kid = header.kid.ok_or(reject(TokenRejection::Malformed))?;
        let key = self
            .keys
            .decoding_key(&kid)
            .ok_or(reject(TokenRejection::BadSignature))?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        v.set_audience(audiences);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            reject(match e.kind() {
                K::ExpiredSignature => TokenRejection::Expired,
                K::ImmatureSignature => TokenRejection::NotYetValid,
                K::InvalidAudience => TokenRejection::WrongAudience,
                K::InvalidSignature => TokenRejection::BadSignature,
                _ => TokenRejection::Malformed,
            })
        })?;
        let c = data.claims;
        if c.iss != self.endpoints.issuer(&c.tid) {
            return Err(reject(TokenRejection::WrongIssuer));
        }
        Ok(Caller {
            tenant_id: c.tid,
            object_id: c.oid,
            app_id: c.appid,
            kind: if c.idtyp == "user" {
                PrincipalKind::User
            } else {
                PrincipalKind::ServicePrincipal
            },
            upn: c.upn,
            audience: c.aud,
        })
    }
}

fn mfa_internal(e: crate::mfa::MfaError) -> IdentityError {
    IdentityError::Internal(e.to_string())
}

fn amr(mfa: bool) -> Vec<String> {
    if mfa {
        vec!["pwd".into(), "mfa".into()]
    } else {
        vec!["pwd".into()]
    }
}

fn actor_of(p: &Principal) -> String {
    match (&p.upn, &p.app_id) {
        (Some(u), _) => u.clone(),
        (None, Some(a)) => format!("sp:{a}"),
        _ => p.object_id.clone(),
    }
}

/// Exposed for the store-agnostic benchmark: verify `n` tokens.
pub fn decode_unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&B64URL.decode(payload).ok()?).ok()
}
