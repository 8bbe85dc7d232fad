use ciel_core::ApiError;

/// Errors of the ARM layer; mapped to Azure's wire shape by `into_api`.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    #[error("{0}")]
    Api(ApiError),
    #[error("store: {0}")]
    Store(#[from] ciel_store::StoreError),
    #[error("identity: {0}")]
    Identity(#[from] ciel_identity::IdentityError),
    #[error("audit: {0}")]
    Audit(#[from] ciel_audit::AuditError),
    /// A write refused by a policy: the error and its `additionalInfo` (PolicyViolation entries).
    #[error("{0}")]
    Disallowed(ApiError, serde_json::Value),
}

impl From<ApiError> for ArmError {
    fn from(e: ApiError) -> Self {
        ArmError::Api(e)
    }
}

impl ArmError {
    pub fn into_api(self) -> ApiError {
        match self {
            ArmError::Api(e) | ArmError::Disallowed(e, _) => e,
            ArmError::Identity(e) => e.to_arm(),
            ArmError::Store(ciel_store::StoreError::NotFound) => {
                ApiError::not_found("ResourceNotFound", "The resource was not found.")
            }
            ArmError::Store(ciel_store::StoreError::Conflict(w)) => {
                ApiError::conflict("Conflict", format!("The {w} already exists."))
            }
            other => {
                tracing::error!(error = %other, "internal error in ARM");
                ApiError::internal()
            }
        }
    }
}

pub type ArmResult<T> = Result<T, ArmError>;
