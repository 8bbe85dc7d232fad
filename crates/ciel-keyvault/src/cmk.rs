//! Customer-managed keys for other services (`ciel_arm::cmk::CustomerKeys`): Storage has a
//! customer's vault key wrap and unwrap its data key, acting as the account's managed identity.
//! The identity is authorized exactly like a caller of the data plane (RBAC, typically Key Vault
//! Crypto Service Encryption User, or the vault's access policies), the key's state is checked
//! (enabled, validity, key_ops), and every unwrap is audited.

use crate::custody::{self, EncAlg, KeyMaterial};
use crate::data::error::KvError;
use crate::data::keys::{kid, label, public_key, usable};
use crate::data::{blocking, common, Ctx, KeyVaultService};
use ciel_arm::cmk::{CmkError, CmkIdentity, CustomerKeys};
use ciel_core::{Caller, PrincipalKind};
use serde_json::json;
use std::sync::Arc;

pub struct KeyVaultCmk {
    pub svc: Arc<KeyVaultService>,
}

fn map(e: KvError) -> CmkError {
    match &e {
        KvError::Client {
            status,
            inner,
            message,
            ..
        } => match status.as_u16() {
            404 => CmkError::NotFound(message.clone()),
            403 if matches!(inner, Some("ForbiddenByRbac") | Some("AccessDenied")) => {
                CmkError::AccessDenied(message.clone())
            }
            403 => CmkError::Unusable(message.clone()),
            _ => CmkError::Unusable(message.clone()),
        },
        other => CmkError::Internal(other.to_string()),
    }
}

impl KeyVaultCmk {
    /// The vault named by `uri` (`https://{vault}.vault.{domain}[:port][/...]`), as a request
    /// context for `who`. A vault of another tenant does not exist for it.
    async fn ctx(&self, who: &CmkIdentity, uri: &str) -> Result<Ctx<'_>, CmkError> {
        let suffix = format!(".{}", self.svc.endpoints.keyvault_suffix());
        let host = uri
            .strip_prefix("https://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_ascii_lowercase();
        let not_found = || {
            CmkError::NotFound(format!(
                "'{}' is not a vault of this cloud.",
                ciel_arm::clip(uri)
            ))
        };
        // `:443` may be written or not.
        let host = host.strip_suffix(":443").unwrap_or(&host).to_string();
        let name = host
            .strip_suffix(&suffix)
            .filter(|n| !n.contains('.'))
            .ok_or_else(not_found)?
            .to_string();
        let caller = Caller {
            tenant_id: who.tenant_id.clone(),
            object_id: who.object_id.clone(),
            app_id: String::new(),
            kind: PrincipalKind::ServicePrincipal,
            upn: None,
            audience: self.svc.endpoints.keyvault_resource(),
        };
        let ctx = self
            .svc
            .internal_ctx(&name, caller)
            .await
            .map_err(map)?
            .ok_or_else(not_found)?;
        // A vault of another tenant does not exist for the identity.
        if ctx.vault.tenant_id != who.tenant_id {
            return Err(not_found());
        }
        Ok(ctx)
    }
}

/// `https://{vault}.vault.{domain}/keys/{name}/{version}` → (vault URI, name, version).
fn split_kid(kid: &str) -> Option<(String, String, String)> {
    let (base, path) = kid
        .strip_prefix("https://")
        .and_then(|r| r.split_once('/'))?;
    let mut parts = path.trim_end_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("keys"), Some(n), Some(v), None) if !n.is_empty() && !v.is_empty() => {
            Some((format!("https://{base}/"), n.to_string(), v.to_string()))
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl CustomerKeys for KeyVaultCmk {
    async fn wrap(
        &self,
        who: &CmkIdentity,
        vault_uri: &str,
        key_name: &str,
        version: Option<&str>,
        data_key: &[u8],
    ) -> Result<(String, Vec<u8>), CmkError> {
        let ctx = self.ctx(who, vault_uri).await?;
        ctx.authorize("keys", Some(key_name), "keys/wrap/action", "wrapKey")
            .await
            .map_err(map)?;
        let v = common::load_version(&ctx, "key", key_name, version)
            .await
            .map_err(map)?;
        usable(&v, "wrapKey").map_err(map)?;
        let public = public_key(&v).map_err(map)?;
        let dk = data_key.to_vec();
        let wrapped = blocking(move || {
            custody::encrypt(&public, EncAlg::RsaOaep256, &dk).map_err(KvError::from)
        })
        .await
        .map_err(map)?;
        Ok((kid(&ctx, &v, true), wrapped))
    }

    async fn unwrap(
        &self,
        who: &CmkIdentity,
        kid_uri: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, CmkError> {
        let (vault_uri, name, version) = split_kid(kid_uri).ok_or_else(|| {
            CmkError::NotFound(format!("'{}' is not a key id.", ciel_arm::clip(kid_uri)))
        })?;
        let ctx = self.ctx(who, &vault_uri).await?;
        ctx.authorize("keys", Some(&name), "keys/unwrap/action", "unwrapKey")
            .await
            .map_err(map)?;
        let v = common::load_version(&ctx, "key", &name, Some(&version))
            .await
            .map_err(map)?;
        usable(&v, "unwrapKey").map_err(map)?;
        let material: KeyMaterial = serde_json::from_slice(&v.sealed)
            .map_err(|_| CmkError::Internal("unreadable key material".into()))?;
        let vault_key = ctx.vault_key().await.map_err(map)?;
        let (c, l, w) = (
            ctx.svc.custody.clone(),
            label(&ctx, &v.name, &v.version),
            wrapped.to_vec(),
        );
        let res = blocking(move || {
            c.decrypt_labelled(&vault_key, &l, &material, EncAlg::RsaOaep256, &w)
                .map_err(KvError::from)
        })
        .await;
        ctx.audit(ctx.draft(
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            &format!("{}/keys/{}/{}", ctx.vault.id, v.name, v.version),
            if res.is_ok() { "success" } else { "failure" },
            json!({"alg": "RSA-OAEP-256", "for": who.resource_id}),
        ))
        .await
        .map_err(map)?;
        res.map_err(map)
    }

    async fn current_kid(
        &self,
        who: &CmkIdentity,
        vault_uri: &str,
        key_name: &str,
    ) -> Result<String, CmkError> {
        let ctx = self.ctx(who, vault_uri).await?;
        ctx.authorize("keys", Some(key_name), "keys/read", "get")
            .await
            .map_err(map)?;
        let v = common::load_version(&ctx, "key", key_name, None)
            .await
            .map_err(map)?;
        Ok(kid(&ctx, &v, true))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_ids() {
        assert_eq!(
            super::split_kid("https://v.vault.d:8443/keys/k/0123"),
            Some(("https://v.vault.d:8443/".into(), "k".into(), "0123".into()))
        );
        assert_eq!(super::split_kid("https://v.vault.d/keys/k"), None);
        assert_eq!(super::split_kid("https://v.vault.d/secrets/k/1"), None);
        assert_eq!(super::split_kid("http:/x"), None);
    }
}
