//! The built-in definitions: Azure's names (GUIDs), display names and parameters, so that
//! scripts and templates naming them work unchanged; the rules are written for Ciel's aliases.
//! They are read-only (`policyType: BuiltIn`).

use serde_json::{json, Value};

pub struct Builtin {
    pub name: &'static str,
    pub display_name: &'static str,
    pub description: &'static str,
    pub category: &'static str,
    pub version: &'static str,
    pub mode: &'static str,
    pub parameters: fn() -> Value,
    pub rule: fn() -> Value,
}

fn effect_param(default: &str, allowed: [&str; 3]) -> Value {
    json!({
        "type": "String",
        "metadata": {"displayName": "Effect", "description": "Enable or disable the execution of the policy"},
        "allowedValues": allowed,
        "defaultValue": default
    })
}

pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "e56962a6-4747-49cd-b67b-bf8b01975c4c",
        display_name: "Allowed locations",
        description: "Restricts the locations an organization can deploy resources to. Resource groups are governed by 'Allowed locations for resource groups'. In this cloud, locations outside France are refused whatever this policy allows.",
        category: "General",
        version: "1.0.0",
        mode: "Indexed",
        parameters: || json!({"listOfAllowedLocations": {"type": "Array", "metadata": {"displayName": "Allowed locations", "description": "The locations that resources may be deployed to.", "strongType": "location"}}}),
        rule: || json!({
            "if": {"allOf": [
                {"field": "location", "notIn": "[parameters('listOfAllowedLocations')]"},
                {"field": "location", "notEquals": "global"}
            ]},
            "then": {"effect": "deny"}
        }),
    },
    Builtin {
        name: "e765b5de-1225-4ba3-bd56-1ac6695af988",
        display_name: "Allowed locations for resource groups",
        description: "Restricts the locations resource groups can be created in. In this cloud, locations outside France are refused whatever this policy allows.",
        category: "General",
        version: "1.0.0",
        mode: "All",
        parameters: || json!({"listOfAllowedLocations": {"type": "Array", "metadata": {"displayName": "Allowed locations", "description": "The locations that resource groups may be created in.", "strongType": "location"}}}),
        rule: || json!({
            "if": {"allOf": [
                {"field": "type", "equals": "Microsoft.Resources/subscriptions/resourceGroups"},
                {"field": "location", "notIn": "[parameters('listOfAllowedLocations')]"}
            ]},
            "then": {"effect": "deny"}
        }),
    },
    Builtin {
        name: "6c112d4e-5bc7-47ae-a041-ea2d9dccd749",
        display_name: "Not allowed resource types",
        description: "Restricts which resource types can be deployed.",
        category: "General",
        version: "2.0.0",
        mode: "All",
        parameters: || json!({
            "listOfResourceTypesNotAllowed": {"type": "Array", "metadata": {"displayName": "Not allowed resource types", "description": "The resource types that cannot be deployed.", "strongType": "resourceTypes"}},
            "effect": effect_param("Deny", ["Audit", "Deny", "Disabled"])
        }),
        rule: || json!({
            "if": {"field": "type", "in": "[parameters('listOfResourceTypesNotAllowed')]"},
            "then": {"effect": "[parameters('effect')]"}
        }),
    },
    Builtin {
        name: "1e30110a-5ceb-460c-a204-c1c3969c6d62",
        display_name: "Require a tag and its value on resources",
        description: "Enforces a required tag and its value. Does not apply to resource groups.",
        category: "Tags",
        version: "1.0.1",
        mode: "Indexed",
        parameters: || json!({
            "tagName": {"type": "String", "metadata": {"displayName": "Tag Name", "description": "Name of the tag, such as 'environment'"}},
            "tagValue": {"type": "String", "metadata": {"displayName": "Tag Value", "description": "Value of the tag, such as 'production'"}}
        }),
        rule: || json!({
            "if": {"not": {"field": "[concat('tags[', parameters('tagName'), ']')]", "equals": "[parameters('tagValue')]"}},
            "then": {"effect": "deny"}
        }),
    },
    Builtin {
        name: "4fa4b6c0-31ca-4c0d-b10d-24b96f62a751",
        display_name: "Storage account public access should be disallowed",
        description: "Anonymous public read access to containers and blobs is convenient but a data-exposure risk; accounts should set allowBlobPublicAccess to false.",
        category: "Storage",
        version: "3.1.1",
        mode: "Indexed",
        parameters: || json!({"effect": effect_param("audit", ["audit", "deny", "disabled"])}),
        rule: || json!({
            "if": {"allOf": [
                {"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
                {"field": "Microsoft.Storage/storageAccounts/allowBlobPublicAccess", "equals": true}
            ]},
            "then": {"effect": "[parameters('effect')]"}
        }),
    },
    Builtin {
        name: "0b60c0b2-2dc2-4e1c-b5c9-abbed971de53",
        display_name: "Key vaults should have deletion protection enabled",
        description: "Purge protection keeps soft-deleted vaults for their whole retention period, protecting against malicious or accidental permanent deletion.",
        category: "Key Vault",
        version: "2.1.0",
        mode: "Indexed",
        parameters: || json!({"effect": effect_param("Audit", ["Audit", "Deny", "Disabled"])}),
        rule: || json!({
            "if": {"allOf": [
                {"field": "type", "equals": "Microsoft.KeyVault/vaults"},
                {"not": {"field": "Microsoft.KeyVault/vaults/createMode", "equals": "recover"}},
                {"anyOf": [
                    {"field": "Microsoft.KeyVault/vaults/enableSoftDelete", "equals": "false"},
                    {"field": "Microsoft.KeyVault/vaults/enablePurgeProtection", "exists": "false"},
                    {"field": "Microsoft.KeyVault/vaults/enablePurgeProtection", "equals": "false"}
                ]}
            ]},
            "then": {"effect": "[parameters('effect')]"}
        }),
    },
    Builtin {
        name: "404c3081-a854-4457-ae30-26a93ef643f9",
        display_name: "Secure transfer to storage accounts should be enabled",
        description: "Storage accounts should accept requests over HTTPS only (supportsHttpsTrafficOnly), protecting data in transit.",
        category: "Storage",
        version: "2.0.0",
        mode: "Indexed",
        parameters: || json!({"effect": effect_param("Audit", ["Audit", "Deny", "Disabled"])}),
        rule: || json!({
            "if": {"allOf": [
                {"field": "type", "equals": "Microsoft.Storage/storageAccounts"},
                {"field": "Microsoft.Storage/storageAccounts/supportsHttpsTrafficOnly", "equals": "false"}
            ]},
            "then": {"effect": "[parameters('effect')]"}
        }),
    },
];

pub fn id(name: &str) -> String {
    format!("/providers/Microsoft.Authorization/policyDefinitions/{name}")
}

pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name.eq_ignore_ascii_case(name))
}

/// The ARM body of a built-in.
pub fn to_json(b: &Builtin) -> Value {
    json!({
        "id": id(b.name),
        "type": "Microsoft.Authorization/policyDefinitions",
        "name": b.name,
        "properties": {
            "displayName": b.display_name,
            "policyType": "BuiltIn",
            "mode": b.mode,
            "description": b.description,
            "metadata": {"version": b.version, "category": b.category},
            "version": b.version,
            "parameters": (b.parameters)(),
            "policyRule": (b.rule)()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in passes the checks custom definitions pass.
    #[test]
    fn builtins_parse() {
        for b in BUILTINS {
            let body = to_json(b);
            super::super::definitions::compile(&body["properties"])
                .unwrap_or_else(|e| panic!("{}: {e:?}", b.display_name));
        }
    }
}
