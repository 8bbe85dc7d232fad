//! Microsoft.Storage: storage accounts (a `ResourceProvider` plugged into ARM: create, get, list,
//! update, delete, checkNameAvailability, listKeys, regenerateKey), the Blob data plane (`blob`,
//! first part: containers and block blobs in one piece) and the encrypted byte store under it
//! (`blobstore`).

pub mod account;
pub mod blob;
pub mod blobstore;
pub mod error;

use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse, ResourceProvider, ResourceTypeInfo};
use ciel_core::config::Endpoints;
use ciel_core::seal::MasterKey;
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_store::Store;
use http::Method;
use std::sync::Arc;

/// api-versions of Microsoft.Storage this provider answers (the CLI and SDKs send 2025-08-01).
pub const API_VERSIONS: &[&str] = &[
    "2019-06-01",
    "2021-01-01",
    "2021-02-01",
    "2021-04-01",
    "2021-06-01",
    "2021-08-01",
    "2021-09-01",
    "2022-05-01",
    "2022-09-01",
    "2023-01-01",
    "2023-04-01",
    "2023-05-01",
    "2024-01-01",
    "2025-01-01",
    "2025-06-01",
    "2025-08-01",
];

pub struct StorageProvider {
    pub store: Store,
    pub master: Arc<MasterKey>,
    pub endpoints: Endpoints,
    /// Root of the blob byte store (for erasing a deleted account's files).
    pub blob_root: std::path::PathBuf,
    /// Key Vault, for accounts encrypted with customer-managed keys.
    pub cmk: Option<Arc<dyn ciel_arm::cmk::CustomerKeys>>,
}

impl StorageProvider {
    pub fn new(
        store: Store,
        master: Arc<MasterKey>,
        endpoints: Endpoints,
        blob_root: std::path::PathBuf,
        cmk: Option<Arc<dyn ciel_arm::cmk::CustomerKeys>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            master,
            endpoints,
            blob_root,
            cmk,
        })
    }
}

fn versions() -> Vec<String> {
    API_VERSIONS.iter().map(|s| s.to_string()).collect()
}

#[async_trait::async_trait]
impl ResourceProvider for StorageProvider {
    fn namespace(&self) -> &'static str {
        "Microsoft.Storage"
    }

    fn resource_types(&self) -> Vec<ResourceTypeInfo> {
        vec![
            ResourceTypeInfo {
                resource_type: "storageAccounts".into(),
                api_versions: versions(),
                located: true,
            },
            ResourceTypeInfo {
                resource_type: "checkNameAvailability".into(),
                api_versions: versions(),
                located: false,
            },
            ResourceTypeInfo {
                resource_type: "skus".into(),
                api_versions: versions(),
                located: false,
            },
        ]
    }

    async fn handle(&self, req: ProviderRequest) -> ArmResult<ProviderResponse> {
        let types: Vec<&str> = req.id.segments.iter().map(|(t, _)| t.as_str()).collect();
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match (
            types.as_slice(),
            req.collection_type.as_deref(),
            req.action.as_deref(),
            &req.method,
        ) {
            ([], None, Some(a), &Method::POST) if is(a, "checkNameAvailability") => {
                account::check_name_availability(self, &req).await
            }
            ([], Some(c), None, &Method::GET) if is(c, "skus") => Ok(account::list_skus()),
            ([], Some(c), None, &Method::GET) if is(c, "storageAccounts") => {
                account::list(self, &req).await
            }
            ([t], None, None, m) if is(t, "storageAccounts") => match *m {
                Method::PUT => account::create(self, &req).await,
                Method::GET => account::get_properties(self, &req).await,
                Method::PATCH => account::update(self, &req).await,
                Method::DELETE => account::delete(self, &req).await,
                _ => Err(ciel_arm::method_not_allowed()),
            },
            ([t], None, Some(a), &Method::POST)
                if is(t, "storageAccounts") && is(a, "listKeys") =>
            {
                account::list_keys(self, &req).await
            }
            ([t], None, Some(a), &Method::POST)
                if is(t, "storageAccounts") && is(a, "regenerateKey") =>
            {
                account::regenerate_key(self, &req).await
            }
            ([t], None, Some(a), &Method::POST)
                if is(t, "storageAccounts") && is(a, "revokeUserDelegationKeys") =>
            {
                account::revoke_user_delegation_keys(self, &req).await
            }
            _ => Err(ApiError::feature_not_supported(&format!(
                "The operation {} {}",
                req.method, req.id
            ))
            .into()),
        }
    }

    async fn delete_for_group(&self, id: &ResourceId, caller: &Caller) -> ArmResult<()> {
        account::destroy(self, id, caller).await
    }
}
