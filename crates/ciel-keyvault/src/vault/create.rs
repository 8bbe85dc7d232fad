//! Create, update and recover: a vault's settings, checked against what this cloud can honour.
//! A setting Ciel cannot enforce is refused with a clear error rather than stored and ignored.

use super::access_policies::validate_policies;
use super::{invalid_name, load, not_found, valid_name, TYPE};
use crate::KeyVaultProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use ciel_store::{Found, Resource};
use http::StatusCode;
use serde_json::{json, Map, Value};

/// Serialises vault creation: names are unique in the whole cloud (they are DNS labels) and stay
/// reserved while a deleted vault keeps them.
static CREATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bad(code: &str, msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, msg)
}

fn not_supported(what: &str) -> ApiError {
    ApiError::bad_request(
        "FeatureNotSupported",
        format!("{what} is not available in this Ciel deployment yet."),
    )
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub sku: String,
    pub tenant_id: String,
    pub access_policies: Vec<Value>,
    pub enable_rbac_authorization: bool,
    pub soft_delete_retention_days: i64,
    pub enable_purge_protection: bool,
    pub enabled_for_deployment: bool,
    pub enabled_for_disk_encryption: bool,
    pub enabled_for_template_deployment: bool,
    pub tags: Map<String, Value>,
}

impl Settings {
    fn new(tenant: &str) -> Self {
        Settings {
            sku: "standard".into(),
            tenant_id: tenant.into(),
            access_policies: vec![],
            enable_rbac_authorization: true,
            soft_delete_retention_days: 90,
            enable_purge_protection: false,
            enabled_for_deployment: false,
            enabled_for_disk_encryption: false,
            enabled_for_template_deployment: false,
            tags: Map::new(),
        }
    }

    pub fn from_body(b: &Value) -> Self {
        let p = &b["properties"];
        Settings {
            sku: p["sku"]["name"].as_str().unwrap_or("standard").to_string(),
            tenant_id: p["tenantId"].as_str().unwrap_or("").to_string(),
            access_policies: p["accessPolicies"].as_array().cloned().unwrap_or_default(),
            enable_rbac_authorization: p["enableRbacAuthorization"].as_bool().unwrap_or(true),
            soft_delete_retention_days: p["softDeleteRetentionInDays"].as_i64().unwrap_or(90),
            enable_purge_protection: p["enablePurgeProtection"].as_bool().unwrap_or(false),
            enabled_for_deployment: p["enabledForDeployment"].as_bool().unwrap_or(false),
            enabled_for_disk_encryption: p["enabledForDiskEncryption"].as_bool().unwrap_or(false),
            enabled_for_template_deployment: p["enabledForTemplateDeployment"]
                .as_bool()
                .unwrap_or(false),
            tags: b["tags"].as_object().cloned().unwrap_or_default(),
        }
    }

    /// Applies the fields present in a PUT or PATCH body, validating each; `creating` allows
    /// the settings that Azure fixes at creation. On error nothing changes.
    pub fn apply(
        &mut self,
        body: &Value,
        creating: bool,
        hsm: bool,
        caller_tenant: &str,
    ) -> Result<(), ApiError> {
        let mut next = self.clone();
        next.apply_fields(body, creating, hsm, caller_tenant)?;
        *self = next;
        Ok(())
    }

    fn apply_fields(
        &mut self,
        body: &Value,
        creating: bool,
        hsm: bool,
        caller_tenant: &str,
    ) -> Result<(), ApiError> {
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
        if let Some(t) = p.get("tenantId").filter(|v| !v.is_null()) {
            let t = t
                .as_str()
                .ok_or_else(|| bad("InvalidRequestContent", "'tenantId' must be a string."))?;
            if !t.eq_ignore_ascii_case(caller_tenant) {
                return Err(bad(
                    "BadRequest",
                    "A vault belongs to the tenant of its subscription: 'properties.tenantId' must be that tenant.",
                ));
            }
            self.tenant_id = caller_tenant.to_string();
        }
        if let Some(sku) = p.get("sku").filter(|v| !v.is_null()) {
            let name = sku["name"]
                .as_str()
                .ok_or_else(|| bad("InvalidRequestContent", "'sku.name' is required."))?;
            if let Some(f) = sku.get("family").and_then(|f| f.as_str()) {
                if f != "A" {
                    return Err(bad("BadRequest", "'sku.family' must be 'A'."));
                }
            }
            self.sku = match name.to_ascii_lowercase().as_str() {
                "standard" => "standard".into(),
                "premium" if hsm => "premium".into(),
                "premium" => return Err(bad(
                    "SkuNotAvailable",
                    "The premium SKU (HSM-protected keys) needs an HSM behind this cloud's key custody; this deployment keeps keys in software custody. Use 'standard'.",
                )),
                other => {
                    return Err(bad(
                        "BadRequest",
                        format!("'{}' is not a valid vault SKU (standard, premium).", ciel_arm::clip(other)),
                    ))
                }
            };
        }
        let flag = |name: &str| -> Result<Option<bool>, ApiError> {
            match p.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(bad(
                    "InvalidRequestContent",
                    format!("'{name}' must be true or false."),
                )),
            }
        };
        if let Some(b) = flag("enableRbacAuthorization")? {
            self.enable_rbac_authorization = b;
        }
        if flag("enableSoftDelete")? == Some(false) {
            return Err(bad(
                "BadRequest",
                "Soft delete cannot be turned off: every vault keeps deleted secrets and keys for its retention period.",
            ));
        }
        if let Some(d) = p.get("softDeleteRetentionInDays").filter(|v| !v.is_null()) {
            let d = d.as_i64().filter(|d| (7..=90).contains(d)).ok_or_else(|| {
                bad(
                    "BadRequest",
                    "'softDeleteRetentionInDays' must be a whole number of days from 7 to 90.",
                )
            })?;
            if !creating && d != self.soft_delete_retention_days {
                return Err(bad(
                    "BadRequest",
                    "The soft delete retention period is set when the vault is created and cannot be changed.",
                ));
            }
            self.soft_delete_retention_days = d;
        }
        match flag("enablePurgeProtection")? {
            Some(true) => self.enable_purge_protection = true,
            Some(false) if self.enable_purge_protection => {
                return Err(bad(
                    "BadRequest",
                    "Purge protection cannot be turned off once it is on.",
                ))
            }
            _ => {}
        }
        if let Some(b) = flag("enabledForDeployment")? {
            self.enabled_for_deployment = b;
        }
        if let Some(b) = flag("enabledForDiskEncryption")? {
            self.enabled_for_disk_encryption = b;
        }
        if let Some(b) = flag("enabledForTemplateDeployment")? {
            self.enabled_for_template_deployment = b;
        }
        if let Some(ap) = p.get("accessPolicies").filter(|v| !v.is_null()) {
            let list = ap.as_array().ok_or_else(|| {
                bad(
                    "InvalidRequestContent",
                    "'accessPolicies' must be an array.",
                )
            })?;
            validate_policies(list, caller_tenant)?;
            self.access_policies = list.clone();
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
        if p.get("publicNetworkAccess")
            .and_then(|v| v.as_str())
            .map(|v| v.eq_ignore_ascii_case("Disabled"))
            .unwrap_or(false)
        {
            return Err(not_supported(
                "Disabling public network access (private endpoints)",
            ));
        }
        Ok(())
    }
}

/// The vault's ARM JSON.
pub fn render(p: &KeyVaultProvider, id: &str, name: &str, location: &str, s: &Settings) -> Value {
    let mut props = json!({
        "sku": {"family": "A", "name": s.sku},
        "tenantId": s.tenant_id,
        "accessPolicies": s.access_policies,
        "enabledForDeployment": s.enabled_for_deployment,
        "enabledForDiskEncryption": s.enabled_for_disk_encryption,
        "enabledForTemplateDeployment": s.enabled_for_template_deployment,
        "enableSoftDelete": true,
        "softDeleteRetentionInDays": s.soft_delete_retention_days,
        "enableRbacAuthorization": s.enable_rbac_authorization,
        "vaultUri": p.vault_uri(name),
        "provisioningState": "Succeeded",
        "publicNetworkAccess": "Enabled",
        "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": []},
    });
    if s.enable_purge_protection {
        props["enablePurgeProtection"] = json!(true);
    }
    json!({
        "id": id,
        "name": name,
        "type": TYPE,
        "location": location,
        "tags": s.tags,
        "properties": props,
    })
}

/// `PUT`: creates the vault, updates it when it exists (as Azure does), or recovers a deleted
/// one (`properties.createMode = recover`).
pub async fn create(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let name = req.id.name().unwrap_or("").to_string();
    if !valid_name(&name) {
        return Err(invalid_name(&name).into());
    }
    let body = req.json()?.clone();
    let location = body["location"]
        .as_str()
        .and_then(ciel_core::region::normalize)
        .map(|r| r.name)
        .unwrap_or("francecentral");
    let mode = body["properties"]["createMode"]
        .as_str()
        .unwrap_or("default")
        .to_ascii_lowercase();
    let _guard = CREATE_LOCK.lock().await;
    if mode == "recover" {
        return recover(p, req, &name).await;
    }
    if mode != "default" {
        return Err(bad(
            "BadRequest",
            format!(
                "'{}' is not a valid createMode (default, recover).",
                ciel_arm::clip(&mode)
            ),
        )
        .into());
    }
    if let Some(existing) = load(p, &req.id, &req.caller).await? {
        return update_record(p, req, existing, &body, true).await;
    }
    let (lname, lname2) = (name.to_ascii_lowercase(), name.clone());
    let (taken, deleted) = ciel_store::run(&p.store, move |s| {
        Ok((
            s.find_resources_by_name(TYPE, &lname2)?,
            s.get_deleted_vault(&lname).found()?,
        ))
    })
    .await?;
    if !taken.is_empty() {
        return Err(ApiError::conflict(
            "VaultAlreadyExists",
            format!(
                "The vault name '{name}' is already in use. Vault names are unique in this cloud."
            ),
        )
        .into());
    }
    if deleted.is_some() {
        return Err(ApiError::conflict(
            "ConflictError",
            format!("A deleted vault named '{name}' still holds this name: recover it (createMode recover) or purge it first."),
        )
        .into());
    }
    let mut s = Settings::new(&req.caller.tenant_id);
    if body["properties"]["tenantId"].is_null() || body["properties"]["sku"].is_null() {
        return Err(bad(
            "BadRequest",
            "'properties.tenantId' and 'properties.sku' are required to create a vault.",
        )
        .into());
    }
    s.apply(&body, true, p.custody.is_hsm(), &req.caller.tenant_id)?;
    let id = req.id.to_string();
    let vault_key = crate::random_bytes(32)?;
    let custody = p.custody.clone();
    let ctx = id.to_ascii_lowercase();
    let sealed = tokio::task::spawn_blocking(move || custody.seal_vault_key(&ctx, &vault_key))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(crate::custody_internal)?;
    let now = ciel_core::time::now_unix();
    let r = Resource {
        id: id.clone(),
        subscription_id: req.id.subscription.clone(),
        resource_group: req.id.resource_group.clone(),
        rtype: TYPE.into(),
        name: name.clone(),
        location: Some(location.into()),
        tenant_id: req.caller.tenant_id.clone(),
        body: render(p, &id, &name, location, &s),
        created: now,
        changed: now,
        sealed: Some(sealed),
    };
    let draft = req.draft(
        &format!("{TYPE}/write"),
        &id,
        json!({"created": true, "sku": s.sku, "custody": p.custody.backend(), "rbac": s.enable_rbac_authorization}),
    );
    let rec = r.clone();
    ciel_store::run(&p.store, move |st| st.put_resource(&rec, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(r.body),
    })
}

/// `PATCH`: tags and properties present in the body; the rest is kept.
pub async fn update(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let Some(existing) = load(p, &req.id, &req.caller).await? else {
        return Err(not_found(&req.id).into());
    };
    let body = req.json()?.clone();
    update_record(p, req, existing, &body, false).await
}

async fn update_record(
    p: &KeyVaultProvider,
    req: &ProviderRequest,
    existing: Resource,
    body: &Value,
    put: bool,
) -> ArmResult<ProviderResponse> {
    let mut s = Settings::from_body(&existing.body);
    s.apply(body, false, p.custody.is_hsm(), &req.caller.tenant_id)?;
    if put && body.get("tags").is_none() {
        // A PUT replaces the tags it does not name, as in Azure.
        s.tags = Map::new();
    }
    let location = existing.location.clone().unwrap_or_default();
    let mut r = existing;
    r.body = render(p, &r.id, &r.name, &location, &s);
    r.changed = ciel_core::time::now_unix();
    r.sealed = None;
    let draft = req.draft(&format!("{TYPE}/write"), &r.id, json!({"updated": true}));
    let rec = r.clone();
    ciel_store::run(&p.store, move |st| st.put_resource(&rec, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(r.body),
    })
}

async fn recover(
    p: &KeyVaultProvider,
    req: &ProviderRequest,
    name: &str,
) -> ArmResult<ProviderResponse> {
    let lname = name.to_ascii_lowercase();
    let d = ciel_store::run(&p.store, move |s| s.get_deleted_vault(&lname).found()).await?;
    let Some(d) = d.filter(|d| {
        d.resource.tenant_id == req.caller.tenant_id
            && d.resource.id.eq_ignore_ascii_case(&req.id.to_string())
    }) else {
        return Err(ApiError::not_found(
            "ResourceNotFound",
            format!(
                "No deleted vault named '{}' can be recovered at this id.",
                ciel_arm::clip(name)
            ),
        )
        .into());
    };
    let draft = req.draft(
        &format!("{TYPE}/write"),
        &d.resource.id,
        json!({"recovered": true}),
    );
    let lname = name.to_ascii_lowercase();
    let r = ciel_store::run(&p.store, move |s| s.recover_vault(&lname, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(r.body),
    })
}
