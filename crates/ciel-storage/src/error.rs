use ciel_arm::error::ArmError;
use ciel_core::ApiError;

/// Errors of the Microsoft.Storage provider.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Invalid(ApiError),
    #[error("sealing: {0}")]
    Seal(#[from] ciel_core::seal::SealError),
    #[error("store: {0}")]
    Store(#[from] ciel_store::StoreError),
}

impl From<StorageError> for ArmError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Invalid(a) => ArmError::Api(a),
            StorageError::Store(s) => ArmError::Store(s),
            StorageError::Seal(s) => {
                tracing::error!(error = %s, "storage key material could not be (un)sealed");
                ArmError::Api(ApiError::internal())
            }
        }
    }
}
