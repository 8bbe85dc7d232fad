//! The resource-provider plug: Microsoft.Storage, Microsoft.KeyVault and later providers
//! implement [`ResourceProvider`] and are registered with the router; the router authenticates,
//! checks the api-version list, authorizes with RBAC and enforces residency before calling them.

use crate::error::ArmResult;
use ciel_core::{Caller, ResourceId};
use serde_json::Value;

/// A resource type the provider serves, for `/providers` and for api-version checks.
#[derive(Debug, Clone)]
pub struct ResourceTypeInfo {
    /// Type path below the namespace, e.g. `storageAccounts` or `storageAccounts/blobServices`.
    pub resource_type: String,
    pub api_versions: Vec<String>,
    /// Whether the type carries a location (residency applies).
    pub located: bool,
}

pub struct ProviderRequest {
    pub method: http::Method,
    /// The target id (a resource, or a collection when the last segment has no name: then
    /// `collection_type` is set).
    pub id: ResourceId,
    pub collection_type: Option<String>,
    /// POST actions: `listKeys`, `regenerateKey`...
    pub action: Option<String>,
    pub api_version: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub caller: Caller,
    pub request_id: String,
    pub client_ip: Option<String>,
}

impl ProviderRequest {
    /// An audit draft for this request, to store with the change it records.
    pub fn draft(
        &self,
        action: &str,
        target: &str,
        details: Value,
    ) -> ciel_core::audit::AuditDraft {
        ciel_core::audit::AuditDraft {
            tenant_id: Some(self.caller.tenant_id.clone()),
            actor: self.caller.display(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: "success".into(),
            details,
            request_id: Some(self.request_id.clone()),
            client_ip: self.client_ip.clone(),
        }
    }

    /// The JSON body, or `InvalidRequestContent`.
    pub fn json(&self) -> Result<&Value, ciel_core::ApiError> {
        self.body.as_ref().ok_or_else(|| {
            ciel_core::ApiError::bad_request(
                "InvalidRequestContent",
                "The request content was invalid: the body is empty.",
            )
        })
    }
}

pub enum ProviderResponse {
    /// Done: status and JSON body (None for 204-style answers).
    Done {
        status: http::StatusCode,
        body: Option<Value>,
    },
    /// Accepted: the router answers 202 with Location/Azure-AsyncOperation pointing at `operation_id`.
    Accepted { operation_id: String },
}

#[async_trait::async_trait]
pub trait ResourceProvider: Send + Sync + 'static {
    /// `Microsoft.Storage`.
    fn namespace(&self) -> &'static str;
    fn resource_types(&self) -> Vec<ResourceTypeInfo>;
    async fn handle(&self, req: ProviderRequest) -> ArmResult<ProviderResponse>;
    /// Called when a resource group is deleted, for each of the provider's resources in it, so
    /// that data is destroyed with the metadata.
    async fn delete_for_group(&self, id: &ResourceId, caller: &Caller) -> ArmResult<()>;
}

/// A provider's record of type `rtype` at `id`, if it exists in the caller's tenant (another
/// tenant's resource does not exist for the caller).
pub async fn load_own(
    store: &ciel_store::Store,
    id: &ResourceId,
    caller: &Caller,
    rtype: &'static str,
) -> ArmResult<Option<ciel_store::Resource>> {
    use ciel_store::Found;
    let key = id.key();
    let found = ciel_store::run(store, move |s| s.get_resource(&key).found()).await?;
    Ok(found.filter(|r| r.tenant_id == caller.tenant_id && r.rtype.eq_ignore_ascii_case(rtype)))
}

/// `GET` of a collection of `rtype` by subscription or resource group (the router authorized
/// read at that scope): the caller's tenant's records, as their ARM bodies.
pub async fn list_own(
    store: &ciel_store::Store,
    req: &ProviderRequest,
    rtype: &'static str,
) -> ArmResult<ProviderResponse> {
    let mut scope = req.id.clone();
    scope.namespace = None;
    scope.segments.clear();
    let key = scope.key();
    let tenant = req.caller.tenant_id.clone();
    let all = ciel_store::run(store, move |s| {
        s.list_resources(&key, Some(rtype), None, 100_000)
    })
    .await?;
    let value: Vec<_> = all
        .into_iter()
        .filter(|r| r.tenant_id == tenant)
        .map(|r| r.body)
        .collect();
    Ok(ProviderResponse::Done {
        status: http::StatusCode::OK,
        body: Some(serde_json::json!({ "value": value })),
    })
}
