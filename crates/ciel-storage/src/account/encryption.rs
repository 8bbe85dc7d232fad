//! Encryption with customer-managed keys and the account's managed identity.
//!
//! Every account has a 256-bit data key (blobs are encrypted under keys derived from it). By
//! default it is sealed under the platform master key. With `encryption.keySource =
//! Microsoft.Keyvault`, it is wrapped instead by the customer's RSA key in a vault of this cloud
//! (RSA-OAEP-256), through the account's system-assigned managed identity, and the plain data key
//! is no longer stored at all: without the customer's key, the account's data cannot be read.
//! The data plane unwraps it on demand and keeps it in memory for at most `cmk_check` (60 s by
//! default): disabling, deleting or withholding the key takes effect within that time.
//! Rotation re-wraps the same data key under the new key version; no blob is rewritten.

use super::Secrets;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ciel_arm::cmk::{CmkError, CmkIdentity, CustomerKeys};
use ciel_core::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The customer key an account uses, as configured and as last used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CmkState {
    /// `https://{vault}.vault.{domain}[:port]/`.
    pub vault_uri: String,
    pub key_name: String,
    /// The version asked for; `None` follows the key's current version (automatic rotation).
    pub key_version: Option<String>,
    /// The versioned key id that wrapped the data key.
    pub kid: String,
    /// The data key, wrapped (RSA-OAEP-256), base64.
    pub wrapped: String,
    /// When the data key was last wrapped (RFC 3339).
    pub wrapped_at: String,
}

/// What a PUT or PATCH asks of the key source: `None` when it does not say.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Platform,
    Customer {
        vault_uri: String,
        key_name: String,
        key_version: Option<String>,
    },
}

fn bad(code: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, msg)
}

/// Reads `properties.encryption.keySource` and `keyvaultproperties`, validating them.
pub fn requested_key_source(body: &Value) -> Result<Option<KeySource>, ApiError> {
    let Some(e) = body["properties"]
        .get("encryption")
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    match e.get("keySource").and_then(|v| v.as_str()) {
        None => Ok(None),
        Some("Microsoft.Storage") => Ok(Some(KeySource::Platform)),
        Some(k) if k.eq_ignore_ascii_case("Microsoft.Keyvault") => {
            let kv = e
                .get("keyvaultproperties")
                .or_else(|| e.get("keyVaultProperties"));
            let field = |n: &str| {
                kv.and_then(|k| k.get(n))
                    .and_then(|v| v.as_str())
                    .filter(|s| !s.is_empty())
            };
            let uri = field("keyvaulturi").or_else(|| field("keyVaultUri")).ok_or_else(|| {
                bad("InvalidValue", "'encryption.keyvaultproperties.keyvaulturi' is required with keySource Microsoft.Keyvault.")
            })?;
            let name = field("keyname").or_else(|| field("keyName")).ok_or_else(|| {
                bad("InvalidValue", "'encryption.keyvaultproperties.keyname' is required with keySource Microsoft.Keyvault.")
            })?;
            if !uri.starts_with("https://") {
                return Err(bad(
                    "InvalidValue",
                    "The key vault URI must be an https:// vault address.",
                ));
            }
            if e.get("identity")
                .and_then(|i| i.get("userAssignedIdentity"))
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.is_empty())
            {
                return Err(bad("FeatureNotSupported", "User-assigned managed identities (Microsoft.ManagedIdentity) are not available in this Ciel deployment yet; use the account's system-assigned identity."));
            }
            let mut vault_uri = uri.to_ascii_lowercase();
            if !vault_uri.ends_with('/') {
                vault_uri.push('/');
            }
            Ok(Some(KeySource::Customer {
                vault_uri,
                key_name: name.to_string(),
                key_version: field("keyversion")
                    .or_else(|| field("keyVersion"))
                    .map(str::to_string),
            }))
        }
        Some(other) => Err(bad(
            "InvalidValue",
            format!("'{}' is not a valid key source.", ciel_arm::clip(other)),
        )),
    }
}

/// Reads `identity.type`: `Some(true)` for a system-assigned identity, `Some(false)` for none.
pub fn requested_identity(body: &Value) -> Result<Option<bool>, ApiError> {
    match body.get("identity").and_then(|i| i.get("type")).and_then(|t| t.as_str()) {
        None => Ok(None),
        Some("None") => Ok(Some(false)),
        Some("SystemAssigned") => Ok(Some(true)),
        Some(_) => Err(bad(
            "FeatureNotSupported",
            "User-assigned managed identities (Microsoft.ManagedIdentity) are not available in this Ciel deployment yet; use 'SystemAssigned'.",
        )),
    }
}

/// A customer-key failure on the control plane, as a 400 naming the cause.
pub fn control_error(e: CmkError) -> ApiError {
    match e {
        CmkError::NotFound(m) => bad("KeyVaultEncryptionKeyNotFound", format!("The customer-managed key cannot be found: {m}")),
        CmkError::AccessDenied(m) => bad("KeyVaultAccessDenied", format!("The account's managed identity may not use the key (grant it Key Vault Crypto Service Encryption User on the key or vault): {m}")),
        CmkError::Unusable(m) => bad("KeyVaultEncryptionKeyNotUsable", format!("The customer-managed key cannot be used: {m}")),
        CmkError::Internal(m) => {
            tracing::error!(error = %m, "customer-managed key service failure");
            ApiError::internal()
        }
    }
}

/// Moves the account's data key to the key source asked for: wraps it under a customer key,
/// re-wraps it under another key or version, or brings it back under the platform master key.
pub async fn apply_key_source(
    cmk: &dyn CustomerKeys,
    who: Option<&CmkIdentity>,
    secrets: &mut Secrets,
    want: &KeySource,
) -> Result<(), ApiError> {
    let data_key = current_data_key(cmk, who, secrets).await?;
    match want {
        KeySource::Platform => {
            secrets.data_key = B64.encode(&data_key);
            secrets.cmk = None;
        }
        KeySource::Customer {
            vault_uri,
            key_name,
            key_version,
        } => {
            let who = who.ok_or_else(|| bad(
                "InvalidValue",
                "Customer-managed keys need the account's managed identity: set identity.type SystemAssigned and grant it access to the key first.",
            ))?;
            let (kid, wrapped) = cmk
                .wrap(who, vault_uri, key_name, key_version.as_deref(), &data_key)
                .await
                .map_err(control_error)?;
            secrets.data_key = String::new();
            secrets.cmk = Some(CmkState {
                vault_uri: vault_uri.clone(),
                key_name: key_name.clone(),
                key_version: key_version.clone(),
                kid,
                wrapped: B64.encode(wrapped),
                wrapped_at: ciel_core::time::now_rfc3339(),
            });
        }
    }
    Ok(())
}

/// The plain data key: from the sealed secrets, or unwrapped by the customer key.
async fn current_data_key(
    cmk: &dyn CustomerKeys,
    who: Option<&CmkIdentity>,
    secrets: &Secrets,
) -> Result<Vec<u8>, ApiError> {
    match &secrets.cmk {
        None => B64
            .decode(&secrets.data_key)
            .map_err(|_| ApiError::internal()),
        Some(c) => {
            let who = who.ok_or_else(ApiError::internal)?;
            let wrapped = B64.decode(&c.wrapped).map_err(|_| ApiError::internal())?;
            cmk.unwrap(who, &c.kid, &wrapped)
                .await
                .map_err(control_error)
        }
    }
}

/// `properties.encryption` as rendered.
pub fn render(created: &str, secrets: &Secrets) -> Value {
    let services =
        json!({"blob": {"keyType": "Account", "enabled": true, "lastEnabledTime": created}});
    match &secrets.cmk {
        None => {
            json!({"requireInfrastructureEncryption": false, "services": services, "keySource": "Microsoft.Storage"})
        }
        Some(c) => json!({
            "requireInfrastructureEncryption": false,
            "services": services,
            "keySource": "Microsoft.Keyvault",
            "keyvaultproperties": {
                "keyvaulturi": c.vault_uri,
                "keyname": c.key_name,
                "keyversion": c.key_version.clone().unwrap_or_default(),
                "currentVersionedKeyIdentifier": c.kid,
                "lastKeyRotationTimestamp": c.wrapped_at,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn key_source_requests() {
        assert_eq!(requested_key_source(&json!({})).unwrap(), None);
        assert_eq!(
            requested_key_source(
                &json!({"properties": {"encryption": {"keySource": "Microsoft.Storage"}}})
            )
            .unwrap(),
            Some(KeySource::Platform)
        );
        let c = requested_key_source(
            &json!({"properties": {"encryption": {"keySource": "Microsoft.Keyvault",
            "keyvaultproperties": {"keyvaulturi": "https://V.vault.d:8443", "keyname": "k"}}}}),
        )
        .unwrap();
        assert_eq!(
            c,
            Some(KeySource::Customer {
                vault_uri: "https://v.vault.d:8443/".into(),
                key_name: "k".into(),
                key_version: None
            })
        );
        assert!(requested_key_source(
            &json!({"properties": {"encryption": {"keySource": "Microsoft.Keyvault"}}})
        )
        .is_err());
        assert!(requested_key_source(
            &json!({"properties": {"encryption": {"keySource": "Other"}}})
        )
        .is_err());
        assert_eq!(
            requested_identity(&json!({"identity": {"type": "SystemAssigned"}})).unwrap(),
            Some(true)
        );
        assert!(requested_identity(&json!({"identity": {"type": "UserAssigned"}})).is_err());
    }
}
