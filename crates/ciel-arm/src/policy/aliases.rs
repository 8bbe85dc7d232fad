//! The fields a policy rule may name: the generic ones every resource has, and the aliases Ciel
//! understands for its resource types (Azure's alias names, mapped to where the property lives
//! in the resource's ARM body). A name not in this table is refused when a definition is
//! created, so a rule can never silently test a property Ciel does not know.

use serde_json::Value;

#[derive(Debug, PartialEq)]
/// An alias: Azure's name, the type it belongs to, and its path in the ARM body. `[*]` in a path
/// walks every member of an array.
pub struct Alias {
    pub name: &'static str,
    pub rtype: &'static str,
    pub path: &'static str,
}

const SA: &str = "Microsoft.Storage/storageAccounts";
const KV: &str = "Microsoft.KeyVault/vaults";
pub const RESOURCE_GROUP_TYPE: &str = "Microsoft.Resources/subscriptions/resourceGroups";

macro_rules! alias {
    ($t:expr, $n:literal, $p:literal) => {
        Alias {
            name: concat!($n),
            rtype: $t,
            path: $p,
        }
    };
}

/// The alias table (documented in docs/policy.md; keep both in step).
pub const ALIASES: &[Alias] = &[
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/allowBlobPublicAccess",
        "properties.allowBlobPublicAccess"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/supportsHttpsTrafficOnly",
        "properties.supportsHttpsTrafficOnly"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/minimumTlsVersion",
        "properties.minimumTlsVersion"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/allowSharedKeyAccess",
        "properties.allowSharedKeyAccess"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/publicNetworkAccess",
        "properties.publicNetworkAccess"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/allowCrossTenantReplication",
        "properties.allowCrossTenantReplication"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/defaultToOAuthAuthentication",
        "properties.defaultToOAuthAuthentication"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/accessTier",
        "properties.accessTier"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/isHnsEnabled",
        "properties.isHnsEnabled"
    ),
    alias!(SA, "Microsoft.Storage/storageAccounts/sku.name", "sku.name"),
    alias!(SA, "Microsoft.Storage/storageAccounts/sku.tier", "sku.tier"),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/encryption.keySource",
        "properties.encryption.keySource"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/encryption.requireInfrastructureEncryption",
        "properties.encryption.requireInfrastructureEncryption"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/networkAcls.defaultAction",
        "properties.networkAcls.defaultAction"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/networkAcls.bypass",
        "properties.networkAcls.bypass"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/networkAcls.ipRules[*]",
        "properties.networkAcls.ipRules[*]"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/networkAcls.ipRules[*].value",
        "properties.networkAcls.ipRules[*].value"
    ),
    alias!(
        SA,
        "Microsoft.Storage/storageAccounts/networkAcls.ipRules[*].action",
        "properties.networkAcls.ipRules[*].action"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/enablePurgeProtection",
        "properties.enablePurgeProtection"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/enableSoftDelete",
        "properties.enableSoftDelete"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/softDeleteRetentionInDays",
        "properties.softDeleteRetentionInDays"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/enableRbacAuthorization",
        "properties.enableRbacAuthorization"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/publicNetworkAccess",
        "properties.publicNetworkAccess"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/createMode",
        "properties.createMode"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/tenantId",
        "properties.tenantId"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/sku.name",
        "properties.sku.name"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/enabledForDeployment",
        "properties.enabledForDeployment"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/enabledForDiskEncryption",
        "properties.enabledForDiskEncryption"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/enabledForTemplateDeployment",
        "properties.enabledForTemplateDeployment"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/networkAcls.defaultAction",
        "properties.networkAcls.defaultAction"
    ),
    alias!(
        KV,
        "Microsoft.KeyVault/vaults/networkAcls.ipRules[*].value",
        "properties.networkAcls.ipRules[*].value"
    ),
    alias!(
        RESOURCE_GROUP_TYPE,
        "Microsoft.Resources/subscriptions/resourceGroups/managedBy",
        "managedBy"
    ),
];

/// A field a rule names, resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Name,
    FullName,
    Type,
    Location,
    Kind,
    Id,
    Tags,
    Tag(String),
    IdentityType,
    Alias(&'static Alias),
}

/// Resolves a field name (case-insensitive, as in Azure); `None` for an unknown name.
pub fn resolve(name: &str) -> Option<Field> {
    let l = name.trim().to_ascii_lowercase();
    Some(match l.as_str() {
        "name" => Field::Name,
        "fullname" => Field::FullName,
        "type" => Field::Type,
        "location" => Field::Location,
        "kind" => Field::Kind,
        "id" => Field::Id,
        "tags" => Field::Tags,
        "identity.type" => Field::IdentityType,
        _ => {
            if let Some(t) = tag_name(name.trim()) {
                return Some(Field::Tag(t));
            }
            return ALIASES
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(&l))
                .map(Field::Alias);
        }
    })
}

/// `tags['x']`, `tags[x]` or `tags.x` → `x`.
fn tag_name(s: &str) -> Option<String> {
    let head = s.get(..4)?;
    if !head.eq_ignore_ascii_case("tags") {
        return None;
    }
    let rest = &s[4..];
    if let Some(dot) = rest.strip_prefix('.') {
        return (!dot.is_empty()).then(|| dot.to_string());
    }
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix('\'')
        .and_then(|i| i.strip_suffix('\''))
        .unwrap_or(inner);
    (!inner.is_empty()).then(|| inner.to_string())
}

/// What a field holds on a resource: one value (None when absent), or the members reached
/// through `[*]` (a condition on them holds when it holds for every member).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    One(Option<Value>),
    Each(Vec<Value>),
}

/// Reads `field` from `r`, the resource as ARM renders it (id, name, type, location, tags,
/// kind, sku, properties...).
pub fn read(field: &Field, r: &Value) -> FieldValue {
    let s = |k: &str| r.get(k).filter(|v| !v.is_null()).cloned();
    FieldValue::One(match field {
        Field::Name => s("name"),
        Field::Type => s("type"),
        Field::Location => s("location"),
        Field::Kind => s("kind"),
        Field::Id => s("id"),
        Field::Tags => Some(s("tags").unwrap_or_else(|| Value::Object(Default::default()))),
        Field::IdentityType => r.pointer("/identity/type").cloned(),
        Field::FullName => r
            .get("id")
            .and_then(Value::as_str)
            .map(|id| Value::String(full_name(id))),
        Field::Tag(t) => r.get("tags").and_then(Value::as_object).and_then(|m| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(t))
                .map(|(_, v)| v.clone())
        }),
        Field::Alias(a) => {
            let ty = r.get("type").and_then(Value::as_str).unwrap_or("");
            if !ty.eq_ignore_ascii_case(a.rtype) {
                // An alias of another type is absent on this resource.
                return if a.path.contains("[*]") {
                    FieldValue::Each(vec![])
                } else {
                    FieldValue::One(None)
                };
            }
            return walk(r, a.path);
        }
    })
}

/// The names of a resource and its parents joined by `/` (`account/default/container`).
fn full_name(id: &str) -> String {
    match ciel_core::ResourceId::parse(id) {
        Some(rid) if !rid.segments.is_empty() => rid
            .segments
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join("/"),
        Some(rid) => rid.resource_group.unwrap_or(rid.subscription),
        None => String::new(),
    }
}

fn walk(r: &Value, path: &str) -> FieldValue {
    let mut current: Vec<Value> = vec![r.clone()];
    let mut many = false;
    for part in path.split('.') {
        let (key, star) = match part.strip_suffix("[*]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        let mut next = Vec::new();
        for v in &current {
            let Some(x) = get_ci(v, key) else { continue };
            if star {
                if let Some(a) = x.as_array() {
                    next.extend(a.iter().cloned());
                }
            } else {
                next.push(x.clone());
            }
        }
        many |= star;
        current = next;
    }
    if many {
        FieldValue::Each(current)
    } else {
        FieldValue::One(current.into_iter().next().filter(|v| !v.is_null()))
    }
}

/// Property names in ARM bodies are matched without case, as Azure's aliases are.
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let m = v.as_object()?;
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tag_forms() {
        for f in ["tags['env']", "tags[env]", "tags.env", "TAGS['env']"] {
            assert_eq!(resolve(f), Some(Field::Tag("env".into())), "{f}");
        }
        assert_eq!(resolve("tags"), Some(Field::Tags));
        assert_eq!(resolve("tags[]"), None);
        assert_eq!(resolve("Microsoft.Storage/storageAccounts/nope"), None);
    }

    #[test]
    fn alias_reads_only_its_type() {
        let f = resolve("microsoft.storage/storageaccounts/allowblobpublicaccess").unwrap();
        let sa = json!({"type": "Microsoft.Storage/storageAccounts", "properties": {"allowBlobPublicAccess": true}});
        assert_eq!(read(&f, &sa), FieldValue::One(Some(json!(true))));
        let kv = json!({"type": "Microsoft.KeyVault/vaults", "properties": {"allowBlobPublicAccess": true}});
        assert_eq!(read(&f, &kv), FieldValue::One(None));
    }

    #[test]
    fn star_paths() {
        let f = resolve("Microsoft.Storage/storageAccounts/networkAcls.ipRules[*].value").unwrap();
        let sa = json!({"type": "Microsoft.Storage/storageAccounts", "properties": {"networkAcls": {"ipRules": [{"value": "1.2.3.4"}, {"value": "5.6.7.8"}]}}});
        assert_eq!(
            read(&f, &sa),
            FieldValue::Each(vec![json!("1.2.3.4"), json!("5.6.7.8")])
        );
    }
}
