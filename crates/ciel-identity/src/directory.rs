//! The directory: tenants, service principals, users and their credentials.

use crate::IdentityError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ciel_core::audit::AuditDraft;
use ciel_store::{ClientSecret, MetadataStore, Principal, PrincipalKindRec, Tenant};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Client secrets expire after two years unless reset earlier (Entra's longest recommended).
pub const SECRET_LIFETIME: i64 = 2 * 365 * 24 * 3600;

fn draft(actor: &str, tenant: &str, action: &str, target: &str) -> AuditDraft {
    AuditDraft {
        tenant_id: Some(tenant.to_string()),
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        outcome: "success".into(),
        ..Default::default()
    }
}

pub fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn create_tenant(
    store: &dyn MetadataStore,
    actor: &str,
    name: &str,
    domain: &str,
) -> Result<Tenant, IdentityError> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(IdentityError::InvalidRequest(
            "A tenant needs a display name of 1 to 256 characters.".into(),
        ));
    }
    let t = Tenant {
        id: new_guid(),
        display_name: name.to_string(),
        default_domain: domain.to_ascii_lowercase(),
        created: ciel_core::time::now_unix(),
    };
    store.create_tenant(&t, &draft(actor, &t.id, "identity/tenants/create", &t.id))?;
    Ok(t)
}

fn sha256_hex(s: &str) -> String {
    hex_lower(&Sha256::digest(s.as_bytes()))
}

fn hex_lower(b: &[u8]) -> String {
    ciel_core::audit::hex_lower(b)
}

fn new_secret(object_id: &str) -> (String, ClientSecret) {
    // Entra secrets contain `~`; ours are base64url (always URL- and shell-safe), 43 chars. A
    // secret never starts with `-`: `az login -p -xyz…` would read it as an option (1 draw in 64
    // did, and failed the sign-in). Redrawing keeps the secret uniform over the rest.
    let secret = loop {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let s = B64URL.encode(b);
        if !s.starts_with('-') {
            break s;
        }
    };
    let now = ciel_core::time::now_unix();
    let rec = ClientSecret {
        key_id: new_guid(),
        object_id: object_id.to_string(),
        hint: secret.chars().take(3).collect(),
        hash: sha256_hex(&secret),
        created: now,
        expires: now + SECRET_LIFETIME,
    };
    (secret, rec)
}

#[cfg(test)]
mod secret_tests {
    #[test]
    fn secrets_never_start_with_a_dash() {
        for _ in 0..2_000 {
            let (s, _) = super::new_secret("o");
            assert!(!s.starts_with('-') && s.len() == 43, "{s}");
        }
    }
}

/// A new service principal and its secret (returned once, stored only as a hash).
pub struct NewServicePrincipal {
    pub principal: Principal,
    pub secret: String,
}

pub fn create_service_principal(
    store: &dyn MetadataStore,
    actor: &str,
    tenant_id: &str,
    name: &str,
) -> Result<NewServicePrincipal, IdentityError> {
    store
        .get_tenant(tenant_id)
        .map_err(|_| IdentityError::TenantNotFound(tenant_id.to_string()))?;
    let p = Principal {
        object_id: new_guid(),
        tenant_id: tenant_id.to_string(),
        kind: PrincipalKindRec::ServicePrincipal,
        app_id: Some(new_guid()),
        display_name: name.to_string(),
        upn: None,
        password_hash: None,
        failed_logins: 0,
        locked_until: None,
        created: ciel_core::time::now_unix(),
    };
    store.create_principal(
        &p,
        &draft(
            actor,
            tenant_id,
            "identity/servicePrincipals/create",
            &p.object_id,
        ),
    )?;
    let (secret, rec) = new_secret(&p.object_id);
    store.replace_sp_secrets(
        &p.object_id,
        &rec,
        &draft(
            actor,
            tenant_id,
            "identity/servicePrincipals/credentials/write",
            &p.object_id,
        ),
    )?;
    Ok(NewServicePrincipal {
        principal: p,
        secret,
    })
}

/// Replaces the secrets of a service principal; the old ones stop working at once.
pub fn reset_secret(
    store: &dyn MetadataStore,
    actor: &str,
    tenant_id: &str,
    app_id: &str,
) -> Result<NewServicePrincipal, IdentityError> {
    let p = store
        .find_principal_by_app_id(app_id)
        .map_err(|_| IdentityError::NotFound(format!("service principal {app_id}")))?;
    if p.tenant_id != tenant_id {
        return Err(IdentityError::NotFound(format!(
            "service principal {app_id}"
        )));
    }
    let (secret, rec) = new_secret(&p.object_id);
    store.replace_sp_secrets(
        &p.object_id,
        &rec,
        &draft(
            actor,
            tenant_id,
            "identity/servicePrincipals/credentials/write",
            &p.object_id,
        ),
    )?;
    Ok(NewServicePrincipal {
        principal: p,
        secret,
    })
}

pub fn delete_service_principal(
    store: &dyn MetadataStore,
    actor: &str,
    tenant_id: &str,
    app_id: &str,
) -> Result<(), IdentityError> {
    let p = store
        .find_principal_by_app_id(app_id)
        .map_err(|_| IdentityError::NotFound(format!("service principal {app_id}")))?;
    if p.tenant_id != tenant_id {
        return Err(IdentityError::NotFound(format!(
            "service principal {app_id}"
        )));
    }
    store.delete_principal(
        &p.object_id,
        &draft(
            actor,
            tenant_id,
            "identity/servicePrincipals/delete",
            &p.object_id,
        ),
    )?;
    Ok(())
}

/// Checks a client secret in constant time against every live secret of the principal.
pub fn verify_client_secret(
    store: &dyn MetadataStore,
    p: &Principal,
    secret: &str,
) -> Result<bool, IdentityError> {
    let now = ciel_core::time::now_unix();
    let given = sha256_hex(secret);
    let mut ok = false;
    for s in store.list_sp_secrets(&p.object_id)? {
        let eq: bool = s.hash.as_bytes().ct_eq(given.as_bytes()).into();
        ok |= eq && s.expires > now;
    }
    Ok(ok)
}

pub fn valid_upn(upn: &str) -> bool {
    let mut parts = upn.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && domain.len() <= 255
        && upn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_'+".contains(c))
}

pub fn hash_password(password: &str) -> Result<String, IdentityError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| IdentityError::Internal(e.to_string()))?
        .to_string())
}

/// Verifies a password against a stored Argon2id hash. With no hash (unknown user) it still
/// spends the same work, so that timing does not reveal which accounts exist.
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2Y4dOEGzXzcfG0Gz+vvdT0N8HBAHuiB0Ex8fK2E3WjA";
    let h = hash.unwrap_or(DUMMY);
    let Ok(parsed) = PasswordHash::new(h) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && hash.is_some()
}

pub fn create_user(
    store: &dyn MetadataStore,
    actor: &str,
    tenant_id: &str,
    upn: &str,
    display_name: &str,
    password: &str,
) -> Result<Principal, IdentityError> {
    store
        .get_tenant(tenant_id)
        .map_err(|_| IdentityError::TenantNotFound(tenant_id.to_string()))?;
    if !valid_upn(upn) {
        return Err(IdentityError::InvalidRequest(format!(
            "'{upn}' is not a valid user principal name (name@domain)."
        )));
    }
    if password.chars().count() < 12 {
        return Err(IdentityError::InvalidRequest(
            "Passwords must have at least 12 characters.".into(),
        ));
    }
    let p = Principal {
        object_id: new_guid(),
        tenant_id: tenant_id.to_string(),
        kind: PrincipalKindRec::User,
        app_id: None,
        display_name: display_name.to_string(),
        upn: Some(upn.to_ascii_lowercase()),
        password_hash: Some(hash_password(password)?),
        failed_logins: 0,
        locked_until: None,
        created: ciel_core::time::now_unix(),
    };
    store.create_principal(
        &p,
        &draft(actor, tenant_id, "identity/users/create", &p.object_id),
    )?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn upn_rules() {
        assert!(valid_upn("alice@example.fr"));
        assert!(!valid_upn("alice"));
        assert!(!valid_upn("a@b@c.fr"));
        assert!(!valid_upn("a b@c.fr"));
    }
    #[test]
    fn password_hash_roundtrip() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(verify_password(Some(&h), "correct horse battery"));
        assert!(!verify_password(Some(&h), "wrong"));
        assert!(!verify_password(None, "anything"));
    }
}
