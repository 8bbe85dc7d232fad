//! The operator directory: the platform's own staff, separate from every tenant (SecNumCloud
//! 9.7.d, 12.13). An operator signs in with a password and a mandatory TOTP code at
//! `login.D/operators/oauth2/v2.0/token` and receives a short-lived token with its own issuer
//! (`https://login.D/operators/v2.0`), audience (`https://login.D/operators`) and `idtyp`
//! `operator`. No tenant-side verifier accepts that issuer or audience, so the token carries no
//! standing access: the data planes honour it only where an approved lockbox grant covers the call
//! (`crate::lockbox`).

use crate::directory::{hash_password, new_guid, verify_password};
use crate::mfa::{Enrolment, MfaAttempt, MfaError, MfaStatus};
use crate::token::TokenService;
use crate::{IdentityError, LEEWAY_SECS, LOCKOUT_SECS, LOCKOUT_THRESHOLD};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciel_core::audit::AuditDraft;
use ciel_core::{Caller, PrincipalKind};
use ciel_store::{MetadataStore, OperatorRec, StoreError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;

/// Operator tokens live one hour, like tenant access tokens; there is no refresh token: each new
/// token takes a fresh TOTP code.
pub const OPERATOR_TOKEN_LIFETIME: i64 = 3600;
/// The form field that carries the TOTP code at the operator token endpoint.
pub const TOTP_FIELD: &str = "totp_code";

pub fn subject(name: &str) -> String {
    format!("operator:{}", name.to_ascii_lowercase())
}

/// Operator names: 1 to 64 of `a-z0-9._-`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OperatorClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub sub: String,
    pub oid: String,
    pub name: String,
    /// Always `operator`.
    pub idtyp: String,
    /// How the operator proved who they are: password and one-time code.
    pub amr: Vec<String>,
    pub ver: String,
    pub uti: String,
}

/// What `ciel operator create` shows once.
#[derive(Debug, Serialize)]
pub struct CreatedOperator {
    pub name: String,
    pub id: String,
    /// The initial password, shown once; only its Argon2id hash is kept.
    pub password: String,
    pub totp: Enrolment,
}

#[derive(Debug, Serialize)]
pub struct OperatorView {
    pub name: String,
    pub id: String,
    pub disabled: bool,
    pub locked_until: Option<i64>,
    pub created: i64,
    pub mfa: MfaStatus,
}

fn host_draft(actor: &str, action: &str, target: &str, details: serde_json::Value) -> AuditDraft {
    AuditDraft {
        tenant_id: None,
        actor: actor.to_string(),
        action: format!("Ciel.Operator/operators/{action}"),
        target: target.to_string(),
        outcome: "success".into(),
        details,
        request_id: None,
        client_ip: None,
    }
}

fn random_password() -> String {
    let mut b = [0u8; 18];
    rand::rngs::OsRng.fill_bytes(&mut b);
    // Never starting with '-', so that no command line reads it as an option.
    format!("Op{}", B64URL.encode(b))
}

impl TokenService {
    pub fn operator_issuer(&self) -> String {
        format!("{}/operators/v2.0", self.endpoints.login())
    }
    pub fn operator_audience(&self) -> String {
        format!("{}/operators", self.endpoints.login())
    }

    /// Adds an operator with a random initial password and a new, unconfirmed TOTP factor (the
    /// first sign-in confirms it). `actor` is the host account that ran the command.
    pub fn create_operator(
        &self,
        store: &dyn MetadataStore,
        name: &str,
        actor: &str,
    ) -> Result<CreatedOperator, IdentityError> {
        if !valid_name(name) {
            return Err(IdentityError::InvalidRequest(
                "An operator name is 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit.".into(),
            ));
        }
        let password = random_password();
        let rec = OperatorRec {
            id: new_guid(),
            name: name.to_string(),
            password_hash: hash_password(&password)?,
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created: ciel_core::time::now_unix(),
        };
        store
            .put_operator(
                &rec,
                &host_draft(actor, "write", &subject(name), json!({"id": rec.id})),
            )
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    IdentityError::Conflict(format!("An operator named '{name}' already exists."))
                }
                other => other.into(),
            })?;
        let totp = self
            .mfa
            .enroll(
                &subject(name),
                None,
                name,
                &MfaAttempt {
                    actor,
                    request_id: None,
                    client_ip: None,
                },
            )
            .map_err(mfa_internal)?;
        Ok(CreatedOperator {
            name: rec.name,
            id: rec.id,
            password,
            totp,
        })
    }

    pub fn list_operators(
        &self,
        store: &dyn MetadataStore,
    ) -> Result<Vec<OperatorView>, IdentityError> {
        let mut out = Vec::new();
        for o in store.list_operators()? {
            out.push(OperatorView {
                mfa: self.mfa.status(&subject(&o.name)).map_err(mfa_internal)?,
                name: o.name,
                id: o.id,
                disabled: o.disabled,
                locked_until: o.locked_until,
                created: o.created,
            });
        }
        Ok(out)
    }

    pub fn set_operator_disabled(
        &self,
        store: &dyn MetadataStore,
        name: &str,
        disabled: bool,
        actor: &str,
    ) -> Result<(), IdentityError> {
        let mut o = store
            .get_operator(name)
            .map_err(|_| IdentityError::NotFound(format!("No operator named '{name}'.")))?;
        o.disabled = disabled;
        let action = if disabled { "disable" } else { "enable" };
        store.update_operator(
            &o,
            Some(&host_draft(
                actor,
                &format!("{action}/action"),
                &subject(name),
                json!({}),
            )),
        )?;
        Ok(())
    }

    /// Replaces an operator's factor with a new, unconfirmed one (a lost phone).
    pub fn reset_operator_mfa(
        &self,
        store: &dyn MetadataStore,
        name: &str,
        actor: &str,
    ) -> Result<Enrolment, IdentityError> {
        store
            .get_operator(name)
            .map_err(|_| IdentityError::NotFound(format!("No operator named '{name}'.")))?;
        let a = MfaAttempt {
            actor,
            request_id: None,
            client_ip: None,
        };
        match self.mfa.reset(&subject(name), &a) {
            Ok(()) | Err(MfaError::NotEnrolled) => {}
            Err(e) => return Err(mfa_internal(e)),
        }
        self.mfa
            .enroll(&subject(name), None, name, &a)
            .map_err(mfa_internal)
    }

    /// The operator token endpoint: `grant_type=password`, `username`, `password`, and the TOTP
    /// code in `totp_code`. Every outcome is audited (tenant-less: the operator directory).
    pub fn operator_token(
        &self,
        store: &dyn MetadataStore,
        form: &HashMap<String, String>,
        request_id: &str,
        client_ip: Option<&str>,
    ) -> Result<serde_json::Value, IdentityError> {
        let claimed: String = form
            .get("username")
            .map(|s| s.chars().filter(|c| !c.is_control()).take(64).collect())
            .unwrap_or_else(|| "anonymous".into());
        let result = self.operator_token_inner(store, form, request_id, client_ip);
        let d = AuditDraft {
            tenant_id: None,
            actor: subject(&claimed),
            action: "Ciel.Operator/token/issue".into(),
            target: "operator-token".into(),
            outcome: if result.is_ok() { "success" } else { "denied" }.into(),
            details: match &result {
                Ok(_) => json!({"amr": ["pwd", "otp"]}),
                Err(e) => {
                    json!({"error": format!("AADSTS{}", e.aadsts()), "reason": e.to_string()})
                }
            },
            request_id: Some(request_id.to_string()),
            client_ip: client_ip.map(str::to_string),
        };
        store.append_audit(std::slice::from_ref(&d))?;
        result
    }

    fn operator_token_inner(
        &self,
        store: &dyn MetadataStore,
        form: &HashMap<String, String>,
        request_id: &str,
        client_ip: Option<&str>,
    ) -> Result<serde_json::Value, IdentityError> {
        let bad_credentials = || {
            IdentityError::InvalidGrant(
                "Error validating credentials due to invalid username or password.".into(),
            )
        };
        match form.get("grant_type").map(String::as_str) {
            Some("password") => {}
            None | Some("") => {
                return Err(IdentityError::InvalidRequest(
                    "AADSTS900144: The request body must contain 'grant_type'.".into(),
                ))
            }
            Some(other) => {
                return Err(IdentityError::UnsupportedGrantType(
                    other.chars().take(64).collect(),
                ))
            }
        }
        let username = form
            .get("username")
            .ok_or_else(|| IdentityError::InvalidRequest("'username' is required.".into()))?;
        let password = form
            .get("password")
            .ok_or_else(|| IdentityError::InvalidRequest("'password' is required.".into()))?;
        let code = form.get(TOTP_FIELD).ok_or_else(|| {
            IdentityError::InvalidRequest(format!(
                "Operators must give their one-time code in '{TOTP_FIELD}'."
            ))
        })?;
        let now = ciel_core::time::now_unix();
        let op = match store.get_operator(username) {
            Ok(o) => Some(o),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(o) = &op {
            if o.locked_until.is_some_and(|t| t > now) {
                return Err(IdentityError::Locked);
            }
        }
        let ok = verify_password(op.as_ref().map(|o| o.password_hash.as_str()), password);
        let mut op = match (ok, op) {
            (true, Some(o)) => o,
            (false, Some(mut o)) => {
                let fails = o.failed_logins + 1;
                if fails >= LOCKOUT_THRESHOLD {
                    o.failed_logins = 0;
                    o.locked_until = Some(now + LOCKOUT_SECS);
                } else {
                    o.failed_logins = fails;
                }
                store.update_operator(&o, None)?;
                return Err(bad_credentials());
            }
            _ => return Err(bad_credentials()),
        };
        if op.disabled {
            return Err(IdentityError::InvalidGrant(
                "AADSTS50057: The operator account is disabled.".into(),
            ));
        }
        // The password is right: only now is the code checked, so that the factor's lockout
        // cannot be driven by someone who does not hold the password.
        let attempt = MfaAttempt {
            actor: &subject(&op.name),
            request_id: Some(request_id),
            client_ip,
        };
        self.mfa
            .verify(&subject(&op.name), code, &attempt)
            .map_err(|e| match e {
                MfaError::NotEnrolled => IdentityError::InvalidGrant(
                    "AADSTS50076: The operator has no second factor; an administrator must run 'ciel operator reset-mfa'.".into(),
                ),
                MfaError::Locked(_) => IdentityError::Locked,
                MfaError::Invalid => IdentityError::InvalidGrant(
                    "AADSTS50126: The one-time code is wrong.".into(),
                ),
                MfaError::Replayed => IdentityError::InvalidGrant(
                    "AADSTS50126: The one-time code was already used; wait for the next one.".into(),
                ),
                MfaError::Internal(m) => IdentityError::Internal(m),
            })?;
        if op.failed_logins != 0 || op.locked_until.is_some() {
            op.failed_logins = 0;
            op.locked_until = None;
            store.update_operator(&op, None)?;
        }
        let claims = OperatorClaims {
            aud: self.operator_audience(),
            iss: self.operator_issuer(),
            iat: now,
            nbf: now,
            exp: now + OPERATOR_TOKEN_LIFETIME,
            sub: op.id.clone(),
            oid: op.id.clone(),
            name: op.name.clone(),
            idtyp: "operator".into(),
            amr: vec!["pwd".into(), "otp".into()],
            ver: "2.0".into(),
            uti: B64URL.encode(uuid::Uuid::new_v4().as_bytes()),
        };
        let at = self.keys().sign(&claims)?;
        Ok(json!({
            "token_type": "Bearer",
            "expires_in": OPERATOR_TOKEN_LIFETIME - 1,
            "access_token": at,
            "operator": op.name,
        }))
    }

    /// Verifies an operator token: our signature, the operator issuer and audience, `idtyp`
    /// `operator`, and an operator that still exists and is not disabled. The `Caller` it gives
    /// is bound to `tenant` (the tenant of the resource being reached) and has no role there.
    pub fn verify_operator(
        &self,
        store: &dyn MetadataStore,
        token: &str,
        tenant: &str,
    ) -> Result<Caller, IdentityError> {
        use crate::error::TokenRejection as R;
        let reject = IdentityError::TokenRejected;
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject(R::Malformed))?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err(reject(R::Malformed));
        }
        let kid = header.kid.ok_or(reject(R::Malformed))?;
        let key = self
            .keys()
            .decoding_key(&kid)
            .ok_or(reject(R::BadSignature))?;
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        v.set_audience(&[self.operator_audience()]);
        v.set_issuer(&[self.operator_issuer()]);
        let c = jsonwebtoken::decode::<OperatorClaims>(token, &key, &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                reject(match e.kind() {
                    K::ExpiredSignature => R::Expired,
                    K::ImmatureSignature => R::NotYetValid,
                    K::InvalidAudience => R::WrongAudience,
                    K::InvalidIssuer => R::WrongIssuer,
                    K::InvalidSignature => R::BadSignature,
                    _ => R::Malformed,
                })
            })?
            .claims;
        if c.idtyp != "operator" {
            return Err(reject(R::Malformed));
        }
        let op = store
            .get_operator(&c.name)
            .map_err(|_| reject(R::WrongIssuer))?;
        if op.disabled || op.id != c.oid {
            return Err(reject(R::WrongIssuer));
        }
        Ok(Caller {
            tenant_id: tenant.to_string(),
            object_id: op.id,
            app_id: "ciel-operator".into(),
            kind: PrincipalKind::Operator,
            upn: Some(subject(&op.name)),
            audience: c.aud,
        })
    }
}

/// A factor failure outside sign-in (enrolment, reset) is the platform's fault, not the caller's.
fn mfa_internal(e: MfaError) -> IdentityError {
    IdentityError::Internal(e.to_string())
}
