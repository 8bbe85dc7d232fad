//! Microsoft.KeyVault: vaults as an ARM resource provider (`vault`), the secrets and keys data
//! plane at `https://{vault}.vault.{domain}` (`data`), and key custody behind one interface
//! (`custody`) with a software backend and a PKCS#11 HSM backend.

pub mod cmk;
pub mod custody;
pub mod data;
pub mod vault;

use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse, ResourceProvider, ResourceTypeInfo};
use ciel_core::config::Endpoints;
use ciel_core::{ApiError, Caller, ResourceId};
use ciel_store::Store;
use custody::{Custody, KeyMaterial};
use http::Method;
use std::sync::Arc;

/// api-versions of Microsoft.KeyVault this provider answers (the CLI and SDKs send 2026-02-01).
pub const API_VERSIONS: &[&str] = &[
    "2019-09-01",
    "2021-06-01-preview",
    "2021-10-01",
    "2022-07-01",
    "2023-02-01",
    "2023-07-01",
    "2024-11-01",
    "2024-12-01-preview",
    "2025-05-01",
    "2026-02-01",
];

pub struct KeyVaultProvider {
    pub store: Store,
    pub custody: Arc<dyn Custody>,
    pub endpoints: Endpoints,
}

impl KeyVaultProvider {
    pub fn new(store: Store, custody: Arc<dyn Custody>, endpoints: Endpoints) -> Arc<Self> {
        Arc::new(Self {
            store,
            custody,
            endpoints,
        })
    }

    /// `https://{vault}.vault.{domain}[:port]/`, the vault's data-plane address.
    pub fn vault_uri(&self, name: &str) -> String {
        format!(
            "https://{}.{}/",
            name.to_ascii_lowercase(),
            self.endpoints.keyvault_suffix()
        )
    }
}

pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, ApiError> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| ApiError::internal())?;
    Ok(b)
}

/// A custody failure on the control plane: logged, answered as an internal error.
pub(crate) fn custody_internal(e: custody::CustodyError) -> ApiError {
    tracing::error!(error = %e, "key custody failure");
    ApiError::internal()
}

/// Purges a deleted vault: its record, its sealed key, its secrets and keys, and (on an HSM) the
/// key objects themselves.
pub(crate) async fn purge_vault(
    p: &KeyVaultProvider,
    name: &str,
    draft: ciel_core::audit::AuditDraft,
) -> ArmResult<()> {
    let n = name.to_ascii_lowercase();
    let gone = ciel_store::run(&p.store, move |s| s.purge_vault(&n, &draft)).await?;
    destroy_materials(&p.custody, gone).await;
    Ok(())
}

/// After a purge has committed: destroys HSM objects of purged keys (software material went with
/// the rows). A failure is logged and left to the operator; the record is already gone.
pub(crate) async fn destroy_materials(
    custody: &Arc<dyn Custody>,
    gone: Vec<ciel_store::KvVersion>,
) {
    let materials: Vec<KeyMaterial> = gone
        .into_iter()
        .filter(|v| v.kind == "key")
        .filter_map(|v| serde_json::from_slice(&v.sealed).ok())
        .collect();
    if materials.is_empty() {
        return;
    }
    let c = custody.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for m in materials {
            if let Err(e) = c.destroy(&m) {
                tracing::warn!(error = %e, "could not destroy a purged key in custody");
            }
        }
    })
    .await;
}

fn versions() -> Vec<String> {
    API_VERSIONS.iter().map(|s| s.to_string()).collect()
}

#[async_trait::async_trait]
impl ResourceProvider for KeyVaultProvider {
    fn namespace(&self) -> &'static str {
        "Microsoft.KeyVault"
    }

    fn resource_types(&self) -> Vec<ResourceTypeInfo> {
        let t = |name: &str, located: bool| ResourceTypeInfo {
            resource_type: name.into(),
            api_versions: versions(),
            located,
        };
        vec![
            t("vaults", true),
            t("vaults/accessPolicies", false),
            t("deletedVaults", false),
            t("locations/deletedVaults", false),
            t("checkNameAvailability", false),
            // Managed HSM pools are not offered: their lists are empty (truthfully), and
            // creating one answers FeatureNotSupported.
            t("managedHSMs", true),
            t("deletedManagedHSMs", false),
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
                vault::name::check_name_availability(self, &req).await
            }
            ([], Some(c), None, &Method::GET) if is(c, "vaults") => vault::list(self, &req).await,
            ([], Some(c), None, &Method::GET) if is(c, "deletedVaults") => {
                vault::deleted::list(self, &req).await
            }
            ([], Some(c), None, &Method::GET)
                if is(c, "managedHSMs") || is(c, "deletedManagedHSMs") =>
            {
                Ok(ProviderResponse::Done {
                    status: http::StatusCode::OK,
                    body: Some(serde_json::json!({"value": []})),
                })
            }
            ([t], None, None, m) if is(t, "vaults") => match *m {
                Method::PUT => vault::create::create(self, &req).await,
                Method::GET => vault::get(self, &req).await,
                Method::PATCH => vault::create::update(self, &req).await,
                Method::DELETE => vault::delete(self, &req).await,
                _ => Err(ciel_arm::method_not_allowed()),
            },
            ([t, a], None, None, &Method::PUT) if is(t, "vaults") && is(a, "accessPolicies") => {
                vault::access_policies::update(self, &req).await
            }
            ([l, d], None, None, &Method::GET) if is(l, "locations") && is(d, "deletedVaults") => {
                vault::deleted::get(self, &req).await
            }
            ([l, d], None, Some(a), &Method::POST)
                if is(l, "locations") && is(d, "deletedVaults") && is(a, "purge") =>
            {
                vault::deleted::purge(self, &req).await
            }
            _ => Err(ApiError::feature_not_supported(&format!(
                "The operation {} {}",
                req.method, req.id
            ))
            .into()),
        }
    }

    async fn delete_for_group(&self, id: &ResourceId, caller: &Caller) -> ArmResult<()> {
        vault::destroy(self, id, caller).await
    }
}

/// The platform's periodic Key Vault work, at start and then every ten minutes: purge the
/// deleted vaults, secrets and keys whose retention period has ended (purge protection only
/// forbids purging them earlier), and rotate the keys whose rotation policy says so. Each purge
/// and rotation is audited as the platform's.
pub fn spawn_sweeper(svc: Arc<data::KeyVaultService>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = purge_due(&svc.store, &svc.custody).await {
                tracing::error!(error = %e, "purging expired deleted vaults and objects failed");
            }
            match svc.rotate_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rotated = n, "keys rotated by their rotation policy"),
                Err(e) => tracing::error!(error = %e, "rotating keys by policy failed"),
            }
        }
    })
}

async fn purge_due(
    store: &Store,
    custody: &Arc<dyn Custody>,
) -> Result<(), ciel_store::StoreError> {
    let now = ciel_core::time::now_unix();
    let due = ciel_store::run(store, move |s| s.kv_purge_due(now)).await?;
    for item in due {
        let draft = |target: String| ciel_core::audit::AuditDraft {
            actor: "system".into(),
            action: "Microsoft.KeyVault/purge/retentionEnded".into(),
            target,
            outcome: "success".into(),
            ..Default::default()
        };
        let gone = match item {
            ciel_store::KvPurgeDue::Vault(vault) => {
                let d = draft(format!("vault:{vault}"));
                ciel_store::run(store, move |s| s.purge_vault(&vault, &d)).await?
            }
            ciel_store::KvPurgeDue::Object { vault, kind, name } => {
                let d = draft(format!("vault:{vault}/{kind}s/{name}"));
                ciel_store::run(store, move |s| s.kv_purge(&vault, &kind, &name, &d)).await?
            }
        };
        destroy_materials(custody, gone).await;
    }
    Ok(())
}
