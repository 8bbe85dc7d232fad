//! Access policies, the alternative to RBAC for a vault's data (`enableRbacAuthorization:
//! false`): each entry names a principal (tenant and object id) and the operations it may run on
//! keys, secrets and certificates. `PUT …/vaults/{name}/accessPolicies/{add|replace|remove}`.

use super::create::{render, Settings};
use super::{load, not_found, TYPE};
use crate::KeyVaultProvider;
use ciel_arm::error::ArmResult;
use ciel_arm::provider::{ProviderRequest, ProviderResponse};
use ciel_core::ApiError;
use http::StatusCode;
use serde_json::{json, Value};

pub const KEY_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "update",
    "create",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "decrypt",
    "encrypt",
    "unwrapkey",
    "wrapkey",
    "verify",
    "sign",
    "purge",
    "release",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
];
pub const SECRET_PERMISSIONS: &[&str] = &[
    "all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge",
];
pub const CERTIFICATE_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "update",
    "create",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "managecontacts",
    "manageissuers",
    "getissuers",
    "listissuers",
    "setissuers",
    "deleteissuers",
    "purge",
];
pub const STORAGE_PERMISSIONS: &[&str] = &[
    "all",
    "get",
    "list",
    "delete",
    "set",
    "update",
    "regeneratekey",
    "recover",
    "purge",
    "backup",
    "restore",
    "setsas",
    "listsas",
    "getsas",
    "deletesas",
];

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("BadRequest", msg)
}

/// Checks each entry: a tenant (this one), a GUID object id, known permission names.
pub fn validate_policies(list: &[Value], tenant: &str) -> Result<(), ApiError> {
    if list.len() > 1024 {
        return Err(bad("A vault holds at most 1024 access policies."));
    }
    for e in list {
        let t = e["tenantId"].as_str().unwrap_or("");
        if !t.eq_ignore_ascii_case(tenant) {
            return Err(bad(
                "Each access policy must name the vault's tenant as 'tenantId'.",
            ));
        }
        let oid = e["objectId"].as_str().unwrap_or("");
        if uuid::Uuid::parse_str(oid).is_err() {
            return Err(bad(format!(
                "'{}' is not a valid object id: access policies name principals by their object id (a GUID).",
                ciel_arm::clip(oid)
            )));
        }
        let perms = &e["permissions"];
        if !perms.is_object() {
            return Err(bad("Each access policy needs a 'permissions' object."));
        }
        for (family, allowed) in [
            ("keys", KEY_PERMISSIONS),
            ("secrets", SECRET_PERMISSIONS),
            ("certificates", CERTIFICATE_PERMISSIONS),
            ("storage", STORAGE_PERMISSIONS),
        ] {
            match perms.get(family) {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) => {
                    for p in a {
                        let p = p.as_str().unwrap_or("").to_ascii_lowercase();
                        if !allowed.contains(&p.as_str()) {
                            return Err(bad(format!(
                                "'{}' is not a valid {family} permission.",
                                ciel_arm::clip(&p)
                            )));
                        }
                    }
                }
                Some(_) => return Err(bad(format!("'permissions.{family}' must be an array."))),
            }
        }
    }
    Ok(())
}

/// Whether the policies let `object_id` of `tenant` run `perm` on `family` (`keys`, `secrets`).
pub fn allows(policies: &[Value], tenant: &str, object_id: &str, family: &str, perm: &str) -> bool {
    policies.iter().any(|e| {
        e["tenantId"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
            && e["objectId"]
                .as_str()
                .is_some_and(|o| o.eq_ignore_ascii_case(object_id))
            && e["permissions"][family].as_array().is_some_and(|a| {
                a.iter()
                    .filter_map(|p| p.as_str())
                    .any(|p| p.eq_ignore_ascii_case(perm) || p.eq_ignore_ascii_case("all"))
            })
    })
}

fn same_principal(a: &Value, b: &Value) -> bool {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_ascii_lowercase();
    s(a, "tenantId") == s(b, "tenantId") && s(a, "objectId") == s(b, "objectId")
}

/// `PUT …/accessPolicies/{add|replace|remove}`.
pub async fn update(p: &KeyVaultProvider, req: &ProviderRequest) -> ArmResult<ProviderResponse> {
    let kind = req
        .id
        .segments
        .get(1)
        .map(|(_, n)| n.to_ascii_lowercase())
        .unwrap_or_default();
    let mut vault_id = req.id.clone();
    vault_id.segments.truncate(1);
    let Some(mut r) = load(p, &vault_id, &req.caller).await? else {
        return Err(not_found(&vault_id).into());
    };
    let body = req.json()?;
    let given = body["properties"]["accessPolicies"]
        .as_array()
        .cloned()
        .ok_or_else(|| bad("'properties.accessPolicies' must be an array."))?;
    validate_policies(&given, &req.caller.tenant_id)?;
    let mut s = Settings::from_body(&r.body);
    match kind.as_str() {
        "replace" => s.access_policies = given.clone(),
        "add" => {
            for g in &given {
                match s.access_policies.iter_mut().find(|e| same_principal(e, g)) {
                    Some(e) => {
                        // Adding to an existing entry merges the permission lists.
                        for fam in ["keys", "secrets", "certificates", "storage"] {
                            let mut have: Vec<Value> = e["permissions"][fam]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            for p in g["permissions"][fam]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                            {
                                if !have.contains(&p) {
                                    have.push(p);
                                }
                            }
                            e["permissions"][fam] = Value::Array(have);
                        }
                    }
                    None => s.access_policies.push(g.clone()),
                }
            }
        }
        "remove" => {
            for g in &given {
                s.access_policies.retain(|e| !same_principal(e, g));
            }
        }
        other => {
            return Err(bad(format!(
                "'{}' is not an access policy operation (add, replace, remove).",
                ciel_arm::clip(other)
            ))
            .into())
        }
    }
    let location = r.location.clone().unwrap_or_default();
    r.body = render(p, &r.id, &r.name, &location, &s);
    r.changed = ciel_core::time::now_unix();
    r.sealed = None;
    let draft = req.draft(
        &format!("{TYPE}/accessPolicies/write"),
        &r.id,
        json!({"operation": kind, "entries": given.len()}),
    );
    let rec = r.clone();
    ciel_store::run(&p.store, move |st| st.put_resource(&rec, &draft)).await?;
    Ok(ProviderResponse::Done {
        status: StatusCode::OK,
        body: Some(json!({
            "id": format!("{}/accessPolicies/{kind}", r.id),
            "type": format!("{TYPE}/accessPolicies"),
            "name": kind,
            "location": location,
            "properties": {"accessPolicies": s.access_policies},
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn policy_checks() {
        let t = "11111111-1111-1111-1111-111111111111";
        let o = "22222222-2222-2222-2222-222222222222";
        let p = vec![
            json!({"tenantId": t, "objectId": o, "permissions": {"secrets": ["Get", "list"], "keys": ["all"]}}),
        ];
        assert!(validate_policies(&p, t).is_ok());
        assert!(allows(&p, t, o, "secrets", "get"));
        assert!(!allows(&p, t, o, "secrets", "set"));
        assert!(allows(&p, t, o, "keys", "sign"));
        assert!(!allows(
            &p,
            t,
            "33333333-3333-3333-3333-333333333333",
            "keys",
            "sign"
        ));
        let bad_perm =
            vec![json!({"tenantId": t, "objectId": o, "permissions": {"secrets": ["fly"]}})];
        assert!(validate_policies(&bad_perm, t).is_err());
        let other_tenant = vec![json!({"tenantId": o, "objectId": o, "permissions": {}})];
        assert!(validate_policies(&other_tenant, t).is_err());
    }
}
