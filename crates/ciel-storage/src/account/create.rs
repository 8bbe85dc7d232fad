//! Create and update: the account's settings, checked against what this cloud can honour. A
//! setting Ciel cannot enforce is refused with a clear error rather than stored and ignored.

use super::{load, not_found, Secrets, TYPE};
use crate::StorageProvider;
use ciel_arm::cmk::CmkIdentity;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use ciel_store::Resource;
use http::StatusCode;
use serde_json::{json, Map, Value};

/// Serialises account creation: names are unique in the whole cloud (they are DNS labels).
static CREATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone)]
pub struct Settings {
    pub sku: String,
    pub access_tier: String,
    pub allow_blob_public_access: bool,
    pub allow_shared_key_access: bool,
    pub minimum_tls_version: String,
    pub tags: Map<String, Value>,
    /// The object id of the account's system-assigned managed identity, once it has one.
    pub identity: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sku: "Standard_LRS".into(),
            access_tier: "Hot".into(),
            allow_blob_public_access: false,
            allow_shared_key_access: true,
            minimum_tls_version: "TLS1_2".into(),
            tags: Map::new(),
            identity: None,
        }
    }
}

fn bad(code: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, msg)
}

fn not_supported(what: &str) -> ApiError {
    ApiError::bad_request(
        "FeatureNotSupported",
        format!("{what} is not available in this Ciel deployment yet."),
    )
}

fn bool_field(v: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(
            "InvalidRequestContent",
            format!("'{name}' must be true or false."),
        )),
    }
}

/// Storage account names: 3 to 24 characters, digits and lower-case letters only, and not one of
/// the words that path-style URLs on 127.0.0.1 give to other services.
pub fn valid_name(n: &str) -> bool {
    (3..=24).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !crate::blob::RESERVED_PATH_NAMES.contains(&n)
}

impl Settings {
    /// Reads the settings from a stored account body.
    pub fn from_body(b: &Value) -> Self {
        let p = &b["properties"];
        let d = Settings::default();
        Settings {
            sku: b["sku"]["name"].as_str().unwrap_or(&d.sku).to_string(),
            access_tier: p["accessTier"]
                .as_str()
                .unwrap_or(&d.access_tier)
                .to_string(),
            allow_blob_public_access: p["allowBlobPublicAccess"].as_bool().unwrap_or(false),
            allow_shared_key_access: p["allowSharedKeyAccess"].as_bool().unwrap_or(true),
            minimum_tls_version: p["minimumTlsVersion"]
                .as_str()
                .unwrap_or(&d.minimum_tls_version)
                .to_string(),
            tags: b["tags"].as_object().cloned().unwrap_or_default(),
            identity: b["identity"]["principalId"].as_str().map(str::to_string),
        }
    }

    /// Applies the fields present in a PUT or PATCH body, validating each; on error nothing changes.
    pub fn apply(&mut self, body: &Value) -> Result<(), ApiError> {
        let mut next = self.clone();
        next.apply_fields(body)?;
        *self = next;
        Ok(())
    }

    fn apply_fields(&mut self, body: &Value) -> Result<(), ApiError> {
        if let Some(sku) = body.get("sku").filter(|v| !v.is_null()) {
            let name = sku["name"]
                .as_str()
                .ok_or_else(|| bad("InvalidRequestContent", "'sku.name' is required."))?;
            self.sku = match name {
                "Standard_LRS" | "Standard_ZRS" => name.to_string(),
                "Standard_GRS" | "Standard_RAGRS" | "Standard_GZRS" | "Standard_RAGZRS" => {
                    return Err(bad(
                        "SkuNotAvailable",
                        format!("The SKU '{name}' is not available in this deployment: geo-replication (to a secondary region in France) is not built yet. Use Standard_LRS or Standard_ZRS."),
                    ))
                }
                "Premium_LRS" | "Premium_ZRS" => {
                    return Err(bad("SkuNotAvailable", format!("The SKU '{name}' is not available in this deployment. Use Standard_LRS or Standard_ZRS.")))
                }
                other => return Err(bad("InvalidValue", format!("'{}' is not a valid storage SKU.", ciel_arm::clip(other)))),
            };
        }
        if let Some(kind) = body.get("kind").and_then(|v| v.as_str()) {
            if kind != "StorageV2" {
                return Err(not_supported(&format!(
                    "The account kind '{}' (only StorageV2 is offered)",
                    ciel_arm::clip(kind)
                )));
            }
        }
        // Identity and key source are validated here (so that a refused request changes
        // nothing) and carried out by `create`/`apply_update`, which need the directory and Key Vault.
        super::encryption::requested_identity(body)?;
        super::encryption::requested_key_source(body)?;
        if let Some(t) = body.get("tags") {
            match t {
                Value::Null => self.tags = Map::new(),
                Value::Object(m) => {
                    ciel_core::names::validate_tags(m).map_err(|e| bad("InvalidTag", e))?;
                    self.tags = m.clone();
                }
                _ => {
                    return Err(bad(
                        "InvalidRequestContent",
                        "'tags' must be an object of strings.",
                    ))
                }
            }
        }
        let empty = json!({});
        let p = body
            .get("properties")
            .filter(|v| !v.is_null())
            .unwrap_or(&empty);
        if !p.is_object() {
            return Err(bad(
                "InvalidRequestContent",
                "'properties' must be an object.",
            ));
        }
        if let Some(t) = p.get("accessTier").and_then(|v| v.as_str()) {
            self.access_tier = match t {
                "Hot" | "Cool" | "Cold" => t.to_string(),
                other => {
                    return Err(bad(
                        "InvalidValue",
                        format!(
                            "'{}' is not a valid access tier (Hot, Cool, Cold).",
                            ciel_arm::clip(other)
                        ),
                    ))
                }
            };
        }
        if let Some(b) = bool_field(p, "allowBlobPublicAccess")? {
            self.allow_blob_public_access = b;
        }
        if let Some(b) = bool_field(p, "allowSharedKeyAccess")? {
            self.allow_shared_key_access = b;
        }
        if bool_field(p, "supportsHttpsTrafficOnly")? == Some(false) {
            return Err(bad("InvalidValue", "This cloud serves storage over HTTPS only: 'supportsHttpsTrafficOnly' cannot be false."));
        }
        if let Some(v) = p.get("minimumTlsVersion").and_then(|v| v.as_str()) {
            self.minimum_tls_version = match v {
                "TLS1_2" | "TLS1_3" => v.to_string(),
                "TLS1_0" | "TLS1_1" => return Err(bad("InvalidValue", "This cloud accepts TLS 1.2 and 1.3 only: the minimum TLS version cannot be below TLS1_2.")),
                other => return Err(bad("InvalidValue", format!("'{}' is not a valid TLS version.", ciel_arm::clip(other)))),
            };
        }
        if bool_field(p, "isHnsEnabled")? == Some(true) {
            return Err(not_supported(
                "A hierarchical namespace (Data Lake Storage)",
            ));
        }
        if let Some(e) = p.get("encryption").filter(|v| !v.is_null()) {
            if bool_field(e, "requireInfrastructureEncryption")? == Some(true) {
                return Err(not_supported("Infrastructure (double) encryption"));
            }
        }
        if let Some(n) = p.get("networkAcls").filter(|v| !v.is_null()) {
            if n.get("defaultAction")
                .and_then(|v| v.as_str())
                .map(|a| a.eq_ignore_ascii_case("Deny"))
                .unwrap_or(false)
            {
                return Err(not_supported(
                    "Network rules (networkAcls.defaultAction Deny)",
                ));
            }
        }
        if p.get("customDomain")
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
            .map(|n| !n.is_empty())
            .unwrap_or(false)
        {
            return Err(not_supported("A custom domain"));
        }
        Ok(())
    }
}

/// The account's ARM JSON.
#[allow(clippy::too_many_arguments)]
pub fn render(
    p: &StorageProvider,
    tenant: &str,
    id: &str,
    name: &str,
    location: &str,
    created: &str,
    s: &Settings,
    secrets: &Secrets,
) -> Value {
    let blob = format!("https://{name}.blob.{}/", p.endpoints.storage_suffix());
    let mut out = json!({
        "sku": {"name": s.sku, "tier": "Standard"},
        "kind": "StorageV2",
        "id": id,
        "name": name,
        "type": TYPE,
        "location": location,
        "tags": s.tags,
        "properties": {
            "keyCreationTime": {"key1": secrets.key1_created, "key2": secrets.key2_created},
            "allowCrossTenantReplication": false,
            "privateEndpointConnections": [],
            "minimumTlsVersion": s.minimum_tls_version,
            "allowBlobPublicAccess": s.allow_blob_public_access,
            "allowSharedKeyAccess": s.allow_shared_key_access,
            "isHnsEnabled": false,
            "networkAcls": {"bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [], "defaultAction": "Allow"},
            "supportsHttpsTrafficOnly": true,
            "encryption": super::encryption::render(created, secrets),
            "accessTier": s.access_tier,
            "provisioningState": "Succeeded",
            "creationTime": created,
            "primaryEndpoints": {"blob": blob},
            "primaryLocation": location,
            "statusOfPrimary": "available"
        }
    });
    if let Some(principal) = &s.identity {
        out["identity"] =
            json!({"type": "SystemAssigned", "principalId": principal, "tenantId": tenant});
    }
    out
}

/// `PUT`: creates the account, or updates it when it exists (as Azure does).
pub async fn create(p: &StorageProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let name = req.id.name().unwrap_or("").to_string();
    if !valid_name(&name) {
        return Err(bad(
            "AccountNameInvalid",
            format!("'{}' is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only.", ciel_arm::clip(&name)),
        )
        .into());
    }
    let body = req.json()?.clone();
    // The router checked the location against the French regions; normalise its spelling.
    let location = body["location"]
        .as_str()
        .and_then(ciel_core::region::normalize)
        .map(|r| r.name)
        .unwrap_or("francecentral");
    let _guard = CREATE_LOCK.lock().await;
    if let Some(existing) = load(p, &req.id, &req.caller).await? {
        if existing.location.as_deref() != Some(location) {
            return Err(ApiError::conflict(
                "InvalidResourceLocation",
                "The location of an existing storage account cannot be changed.",
            )
            .into());
        }
        return apply_update(p, req, existing, &body).await;
    }
    let (n, t) = (name.clone(), TYPE.to_string());
    let taken = ciel_store::run(&p.store, move |s| s.find_resources_by_name(&t, &n)).await?;
    if !taken.is_empty() {
        return Err(ApiError::conflict(
            "StorageAccountAlreadyTaken",
            format!("The storage account named {name} is already taken."),
        )
        .into());
    }
    let mut s = Settings::default();
    s.apply(&body)?;
    let secrets = Secrets::generate()?;
    let created = ciel_core::time::now_rfc3339();
    let id = req.id.to_string();
    let mut secrets = secrets;
    let mut new_principal = None;
    if super::encryption::requested_identity(&body)? == Some(true) {
        let principal = create_identity(p, req, &name).await?;
        s.identity = Some(principal.clone());
        new_principal = Some(principal);
    }
    if let Some(want) = super::encryption::requested_key_source(&body)? {
        let who = s.identity.as_ref().map(|o| CmkIdentity {
            tenant_id: req.caller.tenant_id.clone(),
            object_id: o.clone(),
            resource_id: req.id.to_string(),
        });
        let res = match p.cmk.as_deref() {
            Some(cmk) => {
                super::encryption::apply_key_source(cmk, who.as_ref(), &mut secrets, &want).await
            }
            None => Err(not_supported("Customer-managed keys")),
        };
        if let Err(e) = res {
            if let Some(o) = new_principal {
                delete_identity(p, req, &o).await;
            }
            return Err(e.into());
        }
    }
    let out = render(
        p,
        &req.caller.tenant_id,
        &id,
        &name,
        location,
        &created,
        &s,
        &secrets,
    );
    let now = ciel_core::time::now_unix();
    let r = Resource {
        id: id.clone(),
        subscription_id: req.id.subscription.clone(),
        resource_group: req.id.resource_group.clone(),
        rtype: TYPE.into(),
        name: name.clone(),
        location: Some(location.to_string()),
        tenant_id: req.caller.tenant_id.clone(),
        body: out.clone(),
        created: now,
        changed: now,
        sealed: Some(secrets.seal(&p.master, &req.id)?),
    };
    let draft = req.draft(
        &format!("{TYPE}/write"),
        &id,
        json!({"sku": s.sku, "location": location, "created": true}),
    );
    ciel_store::run(&p.store, move |st| st.put_resource(&r, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(out),
    })
}

/// Creates the account's system-assigned identity: a service principal of the account's tenant
/// with no credential (nothing can sign in as it; Ciel acts as it, for the account).
async fn create_identity(
    p: &StorageProvider,
    req: &ProviderRequest,
    account: &str,
) -> Result<String, ApiError> {
    let now = ciel_core::time::now_unix();
    let principal = ciel_store::Principal {
        object_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: req.caller.tenant_id.clone(),
        kind: ciel_store::PrincipalKindRec::ServicePrincipal,
        app_id: Some(uuid::Uuid::new_v4().to_string()),
        display_name: account.to_string(),
        upn: None,
        password_hash: None,
        failed_logins: 0,
        locked_until: None,
        created: now,
    };
    let oid = principal.object_id.clone();
    let draft = req.draft(
        "Microsoft.Storage/storageAccounts/identity/write",
        &req.id.to_string(),
        json!({"type": "SystemAssigned", "principalId": oid}),
    );
    ciel_store::run(&p.store, move |s| s.create_principal(&principal, &draft))
        .await
        .map_err(|_| ApiError::internal())?;
    Ok(oid)
}

/// Removes an identity that is no longer the account's (or was made for a refused change).
async fn delete_identity(p: &StorageProvider, req: &ProviderRequest, object_id: &str) {
    let draft = req.draft(
        "Microsoft.Storage/storageAccounts/identity/delete",
        &req.id.to_string(),
        json!({"principalId": object_id}),
    );
    let o = object_id.to_string();
    if let Err(e) = ciel_store::run(&p.store, move |s| s.delete_principal(&o, &draft)).await {
        tracing::warn!(error = %e, "could not remove a storage account's managed identity");
    }
}

/// `PATCH`: changes the settings given, keeps the others.
pub async fn update(p: &StorageProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let existing = load(p, &req.id, &req.caller)
        .await?
        .ok_or_else(|| not_found(&req.id))?;
    let body = req.json()?.clone();
    if let Some(l) = body.get("location").and_then(|v| v.as_str()) {
        if ciel_core::region::normalize(l).map(|r| r.name) != existing.location.as_deref() {
            return Err(ApiError::conflict(
                "InvalidResourceLocation",
                "The location of an existing storage account cannot be changed.",
            )
            .into());
        }
    }
    apply_update(p, req, existing, &body).await
}

async fn apply_update(
    p: &StorageProvider,
    req: &ProviderRequest,
    existing: Resource,
    body: &Value,
) -> ArmResult<ProviderResponse> {
    let mut s = Settings::from_body(&existing.body);
    s.apply(body)?;
    let sealed = existing.sealed.as_deref().ok_or_else(ApiError::internal)?;
    let mut secrets = Secrets::open(&p.master, &req.id, sealed)?;
    let want_identity = super::encryption::requested_identity(body)?;
    let want_source = super::encryption::requested_key_source(body)?;
    let mut new_principal = None;
    let mut drop_principal = None;
    match want_identity {
        Some(true) if s.identity.is_none() => {
            let o = create_identity(p, req, &existing.name).await?;
            s.identity = Some(o.clone());
            new_principal = Some(o);
        }
        Some(false) if s.identity.is_some() => {
            let keeps_cmk = match &want_source {
                Some(super::encryption::KeySource::Platform) => false,
                Some(_) => true,
                None => secrets.cmk.is_some(),
            };
            if keeps_cmk {
                return Err(bad("InvalidValue", "The managed identity cannot be removed while a customer-managed key encrypts the account: switch the key source back to Microsoft.Storage first.").into());
            }
            drop_principal = s.identity.take();
        }
        _ => {}
    }
    let secrets_changed = want_source.is_some();
    if let Some(want) = &want_source {
        // The identity that can unwrap today's data key (before a removal takes effect).
        let who = s
            .identity
            .as_ref()
            .or(drop_principal.as_ref())
            .map(|o| CmkIdentity {
                tenant_id: req.caller.tenant_id.clone(),
                object_id: o.clone(),
                resource_id: req.id.to_string(),
            });
        let res = match p.cmk.as_deref() {
            Some(cmk) => {
                super::encryption::apply_key_source(cmk, who.as_ref(), &mut secrets, want).await
            }
            None => Err(not_supported("Customer-managed keys")),
        };
        if let Err(e) = res {
            if let Some(o) = new_principal {
                delete_identity(p, req, &o).await;
            }
            return Err(e.into());
        }
    }
    let created = existing.body["properties"]["creationTime"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = render(
        p,
        &req.caller.tenant_id,
        &existing.id,
        &existing.name,
        existing.location.as_deref().unwrap_or(""),
        &created,
        &s,
        &secrets,
    );
    let mut r = existing;
    r.body = out.clone();
    r.changed = ciel_core::time::now_unix();
    r.sealed = if secrets_changed {
        Some(secrets.seal(&p.master, &req.id)?)
    } else {
        None
    };
    let draft = req.draft(
        &format!("{TYPE}/write"),
        &r.id,
        json!({"sku": s.sku, "update": true, "keySource": if secrets.cmk.is_some() { "Microsoft.Keyvault" } else { "Microsoft.Storage" }}),
    );
    ciel_store::run(&p.store, move |st| st.put_resource(&r, &draft)).await?;
    if let Some(o) = drop_principal {
        delete_identity(p, req, &o).await;
    }
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names() {
        assert!(valid_name("abc"));
        assert!(valid_name("a1b2c3d4e5f6g7h8i9j0klmn"));
        assert!(!valid_name("ab"));
        assert!(!valid_name("Abc"));
        assert!(!valid_name("a-bc"));
        assert!(!valid_name(&"a".repeat(25)));
        assert!(!valid_name("subscriptions") && !valid_name("common"));
    }
    #[test]
    fn settings_refuse_what_cannot_be_honoured() {
        let mut s = Settings::default();
        assert!(s.apply(&json!({"sku": {"name": "Standard_GRS"}})).is_err());
        assert!(s
            .apply(&json!({"properties": {"supportsHttpsTrafficOnly": false}}))
            .is_err());
        assert!(s
            .apply(&json!({"properties": {"minimumTlsVersion": "TLS1_0"}}))
            .is_err());
        assert!(s
            .apply(&json!({"properties": {"encryption": {"keySource": "Microsoft.Keyvault"}}}))
            .is_err());
        assert!(s
            .apply(&json!({"properties": {"networkAcls": {"defaultAction": "Deny"}}}))
            .is_err());
        assert_eq!(s.sku, "Standard_LRS", "a refused update changes nothing");
        s.apply(&json!({"sku": {"name": "Standard_ZRS"}, "properties": {"allowBlobPublicAccess": true, "accessTier": "Cool"}})).unwrap();
        assert_eq!(
            (
                s.sku.as_str(),
                s.allow_blob_public_access,
                s.access_tier.as_str()
            ),
            ("Standard_ZRS", true, "Cool")
        );
    }
}
