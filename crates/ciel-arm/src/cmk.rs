//! Customer-managed keys: how one service (Storage) has a key held by another (Key Vault) wrap
//! and unwrap its data key, on behalf of a resource's managed identity. The storage crate sees
//! only this trait; `ciel-keyvault` implements it, and `main.rs` connects the two.

/// The managed identity a resource acts as: Key Vault authorizes it like any principal.
#[derive(Debug, Clone)]
pub struct CmkIdentity {
    pub tenant_id: String,
    pub object_id: String,
    /// The resource acting (for the audit record).
    pub resource_id: String,
}

/// Why a key could not be used. Each maps to a clear client error on the using service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CmkError {
    /// The vault URI is not a vault of this cloud, or the vault or key does not exist (deleted).
    #[error("the key is not found: {0}")]
    NotFound(String),
    /// The identity lacks the permission (RBAC or access policy) on the key.
    #[error("the identity may not use the key: {0}")]
    AccessDenied(String),
    /// The key is disabled, expired, not yet valid, or its key_ops forbid wrapping.
    #[error("the key cannot be used now: {0}")]
    Unusable(String),
    #[error("key service failure: {0}")]
    Internal(String),
}

#[async_trait::async_trait]
pub trait CustomerKeys: Send + Sync + 'static {
    /// Wraps `data_key` (RSA-OAEP-256) with `key_name` of the vault at `vault_uri`, at
    /// `version` or the current one; returns the versioned key id used and the wrapped bytes.
    async fn wrap(
        &self,
        who: &CmkIdentity,
        vault_uri: &str,
        key_name: &str,
        version: Option<&str>,
        data_key: &[u8],
    ) -> Result<(String, Vec<u8>), CmkError>;

    /// Unwraps with the versioned key id `kid` that `wrap` returned.
    async fn unwrap(
        &self,
        who: &CmkIdentity,
        kid: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, CmkError>;

    /// The versioned id of the key's current version (to follow automatic rotation).
    async fn current_kid(
        &self,
        who: &CmkIdentity,
        vault_uri: &str,
        key_name: &str,
    ) -> Result<String, CmkError>;
}
