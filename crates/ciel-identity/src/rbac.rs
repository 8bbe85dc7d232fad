//! Azure RBAC: role definitions (built-in and custom), assignments inherited downward from
//! subscription to resource group to resource, and the evaluation done on every ARM call.

use ciel_core::ResourceId;
use ciel_store::{RoleAssignment, RoleDefinitionRec};
use serde_json::json;

pub struct BuiltinRole {
    pub guid: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
    /// Data-plane permissions (blob contents, later secrets and keys). Control-plane `*` does not
    /// grant them: an Owner manages an account but does not read its data, as in Azure.
    pub data_actions: &'static [&'static str],
}

pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
pub const USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
pub const RESOURCE_POLICY_CONTRIBUTOR: &str = "36243c78-bf99-498c-9df9-86d9f8d28608";
pub const STORAGE_BLOB_DATA_OWNER: &str = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b";
pub const STORAGE_BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
pub const STORAGE_BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";
pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
pub const KEY_VAULT_SECRETS_OFFICER: &str = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7";
pub const KEY_VAULT_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";
pub const KEY_VAULT_CRYPTO_OFFICER: &str = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603";
pub const KEY_VAULT_CRYPTO_USER: &str = "12338af0-0e69-4776-bea7-57ae8d297424";
pub const KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";
pub const KEY_VAULT_READER: &str = "21090545-7ca7-4776-b22c-e363652d74d2";

/// The control-plane reads the Key Vault data roles carry, so that their holders can find the
/// vault they work in.
const KV_READS: &[&str] = &[
    "Microsoft.Authorization/*/read",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.KeyVault/checkNameAvailability/read",
    "Microsoft.KeyVault/deletedVaults/read",
    "Microsoft.KeyVault/locations/*/read",
    "Microsoft.KeyVault/vaults/*/read",
    "Microsoft.KeyVault/vaults/read",
    "Microsoft.KeyVault/operations/read",
];

/// The built-in roles, with Azure's GUIDs so that scripts and templates naming them work.
pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        guid: OWNER,
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        guid: CONTRIBUTOR,
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
    },
    BuiltinRole {
        guid: READER,
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        guid: USER_ACCESS_ADMINISTRATOR,
        name: "User Access Administrator",
        description: "Lets you manage user access to Azure resources.",
        actions: &["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        guid: RESOURCE_POLICY_CONTRIBUTOR,
        name: "Resource Policy Contributor",
        description: "Users with rights to create/modify resource policy, create support ticket and read resources/hierarchy.",
        actions: &[
            "*/read",
            "Microsoft.Authorization/policyassignments/*",
            "Microsoft.Authorization/policydefinitions/*",
            "Microsoft.Authorization/policyexemptions/*",
            "Microsoft.Authorization/policysetdefinitions/*",
            "Microsoft.PolicyInsights/*",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    BuiltinRole {
        guid: STORAGE_BLOB_DATA_OWNER,
        name: "Storage Blob Data Owner",
        description: "Provides full access to Azure Storage blob containers and data, including assigning POSIX access control.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"],
    },
    BuiltinRole {
        guid: STORAGE_BLOB_DATA_CONTRIBUTOR,
        name: "Storage Blob Data Contributor",
        description: "Read, write, and delete Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        ],
    },
    BuiltinRole {
        guid: STORAGE_BLOB_DATA_READER,
        name: "Storage Blob Data Reader",
        description: "Read and list Azure Storage containers and blobs.",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
    },
    BuiltinRole {
        guid: KEY_VAULT_ADMINISTRATOR,
        name: "Key Vault Administrator",
        description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/*"],
    },
    BuiltinRole {
        guid: KEY_VAULT_SECRETS_OFFICER,
        name: "Key Vault Secrets Officer",
        description: "Perform any action on the secrets of a key vault, except manage permissions.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
    },
    BuiltinRole {
        guid: KEY_VAULT_SECRETS_USER,
        name: "Key Vault Secrets User",
        description: "Read secret contents.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    },
    BuiltinRole {
        guid: KEY_VAULT_CRYPTO_OFFICER,
        name: "Key Vault Crypto Officer",
        description: "Perform any action on the keys of a key vault, except manage permissions.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/*",
        ],
    },
    BuiltinRole {
        guid: KEY_VAULT_CRYPTO_USER,
        name: "Key Vault Crypto User",
        description: "Perform cryptographic operations using keys.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/update/action",
            "Microsoft.KeyVault/vaults/keys/backup/action",
            "Microsoft.KeyVault/vaults/keys/encrypt/action",
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            "Microsoft.KeyVault/vaults/keys/sign/action",
            "Microsoft.KeyVault/vaults/keys/verify/action",
        ],
    },
    BuiltinRole {
        guid: KEY_VAULT_CRYPTO_SERVICE_ENCRYPTION_USER,
        name: "Key Vault Crypto Service Encryption User",
        description: "Read metadata of keys and perform wrap/unwrap operations.",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
        ],
    },
    BuiltinRole {
        guid: KEY_VAULT_READER,
        name: "Key Vault Reader",
        description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material.",
        actions: KV_READS,
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    },
];

/// Full id of a role definition at a subscription scope, as Azure renders it.
pub fn role_definition_id(subscription: &str, guid: &str) -> String {
    format!(
        "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
}

/// The GUID at the end of a role definition id (any scope prefix, or a bare GUID).
pub fn role_guid(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
}

/// Case-insensitive glob match of an action against a pattern where `*` matches any run.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let a: Vec<char> = action.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ai, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ai < a.len() {
        if pi < p.len() && p[pi] == a[ai] {
            pi += 1;
            ai += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ai;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ai = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A role's permissions, whether built-in or custom.
#[derive(Debug, Clone)]
pub struct Permissions {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

impl Permissions {
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|p| action_matches(p, action))
            && !self.not_actions.iter().any(|p| action_matches(p, action))
    }
    pub fn allows_data(&self, action: &str) -> bool {
        self.data_actions.iter().any(|p| action_matches(p, action))
            && !self
                .not_data_actions
                .iter()
                .any(|p| action_matches(p, action))
    }
}

pub fn builtin(guid: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES
        .iter()
        .find(|r| r.guid.eq_ignore_ascii_case(guid))
}

pub fn permissions_of(guid: &str, custom: &[RoleDefinitionRec]) -> Option<Permissions> {
    if let Some(b) = builtin(guid) {
        return Some(Permissions {
            actions: b.actions.iter().map(|s| s.to_string()).collect(),
            not_actions: b.not_actions.iter().map(|s| s.to_string()).collect(),
            data_actions: b.data_actions.iter().map(|s| s.to_string()).collect(),
            not_data_actions: vec![],
        });
    }
    let c = custom
        .iter()
        .find(|c| role_guid(&c.id) == guid.to_ascii_lowercase())?;
    let perms = c.body["properties"]["permissions"].as_array()?;
    let mut p = Permissions {
        actions: vec![],
        not_actions: vec![],
        data_actions: vec![],
        not_data_actions: vec![],
    };
    let strings = |perm: &serde_json::Value, k: &str| -> Vec<String> {
        perm[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    for perm in perms {
        p.actions.extend(strings(perm, "actions"));
        p.not_actions.extend(strings(perm, "notActions"));
        p.data_actions.extend(strings(perm, "dataActions"));
        p.not_data_actions.extend(strings(perm, "notDataActions"));
    }
    Some(p)
}

/// What a principal holds in its tenant: its role assignments and the tenant's custom roles, the
/// inputs of `is_allowed` and `is_data_allowed`.
pub fn grants(
    store: &dyn ciel_store::MetadataStore,
    principal_id: &str,
    tenant_id: &str,
) -> ciel_store::Result<(Vec<RoleAssignment>, Vec<RoleDefinitionRec>)> {
    let a = store
        .list_role_assignments_for_principal(principal_id)?
        .into_iter()
        .filter(|a| a.tenant_id == tenant_id)
        .collect();
    Ok((a, store.list_role_definitions(tenant_id)?))
}

/// True when one of `assignments` (the principal's, in its tenant) grants `action` on `target`.
pub fn is_allowed(
    assignments: &[RoleAssignment],
    custom: &[RoleDefinitionRec],
    target: &ResourceId,
    action: &str,
) -> bool {
    assignments.iter().any(|a| {
        let Some(scope) = ResourceId::parse(&a.scope) else {
            return false;
        };
        target.is_within(&scope)
            && permissions_of(&role_guid(&a.role_definition_id), custom)
                .map(|p| p.allows(action))
                .unwrap_or(false)
    })
}

/// The same for a data action (blob contents): only `dataActions` grant it.
pub fn is_data_allowed(
    assignments: &[RoleAssignment],
    custom: &[RoleDefinitionRec],
    target: &ResourceId,
    action: &str,
) -> bool {
    assignments.iter().any(|a| {
        let Some(scope) = ResourceId::parse(&a.scope) else {
            return false;
        };
        target.is_within(&scope)
            && permissions_of(&role_guid(&a.role_definition_id), custom)
                .map(|p| p.allows_data(action))
                .unwrap_or(false)
    })
}

/// The ARM JSON of a built-in role definition, rendered at `scope`.
pub fn builtin_definition_json(scope: &str, r: &BuiltinRole) -> serde_json::Value {
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{}", scope.trim_end_matches('/'), r.guid),
        "type": "Microsoft.Authorization/roleDefinitions",
        "name": r.guid,
        "properties": {
            "roleName": r.name,
            "type": "BuiltInRole",
            "description": r.description,
            "assignableScopes": ["/"],
            "permissions": [{"actions": r.actions, "notActions": r.not_actions, "dataActions": r.data_actions, "notDataActions": []}],
            "createdOn": "2015-02-02T21:55:09.8806423Z",
            "updatedOn": "2024-01-01T00:00:00.0000000Z",
            "createdBy": null,
            "updatedBy": null
        }
    })
}

pub fn assignment_json(a: &RoleAssignment) -> serde_json::Value {
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/{}", a.scope, a.name),
        "type": "Microsoft.Authorization/roleAssignments",
        "name": a.name,
        "properties": {
            "roleDefinitionId": a.role_definition_id,
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
            "description": a.description,
            "condition": null,
            "conditionVersion": null,
            "createdOn": ciel_core::time::unix_to_rfc3339(a.created),
            "updatedOn": ciel_core::time::unix_to_rfc3339(a.created),
            "createdBy": a.created_by,
            "updatedBy": a.created_by,
            "delegatedManagedIdentityResourceId": null
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ra(scope: &str, role: &str) -> RoleAssignment {
        RoleAssignment {
            name: "n".into(),
            tenant_id: "t".into(),
            scope: scope.into(),
            role_definition_id: role_definition_id("S", role),
            principal_id: "p".into(),
            principal_type: "User".into(),
            description: None,
            created_by: "x".into(),
            created: 0,
        }
    }

    #[test]
    fn glob() {
        assert!(action_matches(
            "*",
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        assert!(action_matches(
            "*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        ));
        assert!(!action_matches(
            "*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        assert!(action_matches(
            "Microsoft.Authorization/*/Write",
            "microsoft.authorization/roleAssignments/write"
        ));
        assert!(!action_matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Storage/storageAccounts/write"
        ));
    }

    #[test]
    fn inheritance_and_roles() {
        let rg = ResourceId::parse("/subscriptions/S/resourceGroups/rg").unwrap();
        let other = ResourceId::parse("/subscriptions/S/resourceGroups/rg2").unwrap();
        let sub = ResourceId::subscription("S");
        let reader_on_rg = vec![ra("/subscriptions/S/resourceGroups/rg", READER)];
        assert!(is_allowed(
            &reader_on_rg,
            &[],
            &rg,
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        ));
        assert!(!is_allowed(
            &reader_on_rg,
            &[],
            &rg,
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        assert!(!is_allowed(
            &reader_on_rg,
            &[],
            &other,
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        ));
        assert!(!is_allowed(
            &reader_on_rg,
            &[],
            &sub,
            "Microsoft.Resources/subscriptions/read"
        ));
        let contrib = vec![ra("/subscriptions/S", CONTRIBUTOR)];
        assert!(is_allowed(
            &contrib,
            &[],
            &rg,
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        assert!(!is_allowed(
            &contrib,
            &[],
            &rg,
            "Microsoft.Authorization/roleAssignments/write"
        ));
        let owner = vec![ra("/subscriptions/s", OWNER)];
        assert!(is_allowed(
            &owner,
            &[],
            &rg,
            "Microsoft.Authorization/roleAssignments/write"
        ));
        let blob = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
        assert!(
            !is_data_allowed(&owner, &[], &rg, blob),
            "Owner manages, it does not read data"
        );
        let data_reader = vec![ra(
            "/subscriptions/S/resourceGroups/rg",
            STORAGE_BLOB_DATA_READER,
        )];
        assert!(is_data_allowed(&data_reader, &[], &rg, blob));
        assert!(!is_data_allowed(
            &data_reader,
            &[],
            &rg,
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"
        ));
        let uaa = vec![ra("/subscriptions/S", USER_ACCESS_ADMINISTRATOR)];
        assert!(is_allowed(
            &uaa,
            &[],
            &rg,
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(!is_allowed(
            &uaa,
            &[],
            &rg,
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
    }
}
