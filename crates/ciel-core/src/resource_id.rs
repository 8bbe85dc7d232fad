//! ARM resource ids: `/subscriptions/{s}[/resourceGroups/{rg}][/providers/{ns}/{type}/{name}[/{type}/{name}]...]`.
//! Keywords are matched case-insensitively (clients send `resourcegroups`), and the id is
//! always rendered in the canonical casing the CLI parses back (`resourceGroups`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: Option<String>,
    /// Provider namespace, e.g. `Microsoft.Storage`.
    pub namespace: Option<String>,
    /// (type, name) pairs: `[("storageAccounts","a"),("blobServices","default")]`.
    pub segments: Vec<(String, String)>,
}

impl ResourceId {
    pub fn subscription(sub: &str) -> Self {
        Self {
            subscription: sub.to_string(),
            resource_group: None,
            namespace: None,
            segments: vec![],
        }
    }
    pub fn resource_group(sub: &str, rg: &str) -> Self {
        Self {
            resource_group: Some(rg.to_string()),
            ..Self::subscription(sub)
        }
    }

    /// Parse an id or a scope. Returns None when the string is not an ARM id.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s
            .trim_end_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("subscriptions") {
            return None;
        }
        let mut id = Self::subscription(parts[1]);
        let mut i = 2;
        if parts.len() > i && parts[i].eq_ignore_ascii_case("resourcegroups") {
            id.resource_group = Some((*parts.get(i + 1)?).to_string());
            i += 2;
        }
        if parts.len() > i {
            if !parts[i].eq_ignore_ascii_case("providers") {
                return None;
            }
            id.namespace = Some((*parts.get(i + 1)?).to_string());
            i += 2;
            let rest = &parts[i..];
            if !rest.len().is_multiple_of(2) || rest.is_empty() {
                return None;
            }
            id.segments = rest
                .chunks(2)
                .map(|c| (c[0].to_string(), c[1].to_string()))
                .collect();
        }
        Some(id)
    }

    /// `Microsoft.Storage/storageAccounts/blobServices`.
    pub fn resource_type(&self) -> Option<String> {
        let ns = self.namespace.as_ref()?;
        let mut t = ns.clone();
        for (ty, _) in &self.segments {
            t.push('/');
            t.push_str(ty);
        }
        Some(t)
    }

    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(|(_, n)| n.as_str())
    }

    /// The id of the parent scope: resource → parent resource → resource group → subscription.
    pub fn parent(&self) -> Option<Self> {
        let mut p = self.clone();
        if !p.segments.is_empty() {
            p.segments.pop();
            if p.segments.is_empty() {
                p.namespace = None;
            }
            return Some(p);
        }
        if p.resource_group.is_some() {
            p.resource_group = None;
            return Some(p);
        }
        None
    }

    /// Lower-cased key used for storage and comparisons (ARM ids are case-insensitive).
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }

    /// True when `self` is `other` or lies below it.
    pub fn is_within(&self, other: &ResourceId) -> bool {
        let a = self.key();
        let b = other.key();
        a == b || a.starts_with(&(b + "/"))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/subscriptions/{}", self.subscription)?;
        if let Some(rg) = &self.resource_group {
            write!(f, "/resourceGroups/{rg}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/providers/{ns}")?;
            for (t, n) in &self.segments {
                write!(f, "/{t}/{n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_and_renders_canonically() {
        let id = ResourceId::parse(
            "/subscriptions/S/resourcegroups/rg/providers/Microsoft.Storage/storageAccounts/a",
        )
        .unwrap();
        assert_eq!(
            id.to_string(),
            "/subscriptions/S/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
        );
        assert_eq!(
            id.resource_type().unwrap(),
            "Microsoft.Storage/storageAccounts"
        );
        assert_eq!(id.name(), Some("a"));
        let rg = id.parent().unwrap();
        assert_eq!(rg.to_string(), "/subscriptions/S/resourceGroups/rg");
        assert!(id.is_within(&rg));
        assert!(!rg.is_within(&id));
        assert!(ResourceId::parse("/subscriptions/S/resourceGroups/rg2")
            .unwrap()
            .is_within(&ResourceId::subscription("s")));
        assert!(!ResourceId::parse("/subscriptions/S/resourceGroups/rg2")
            .unwrap()
            .is_within(&ResourceId::parse("/subscriptions/S/resourceGroups/rg").unwrap()));
        assert!(ResourceId::parse("/tenants/x").is_none());
        assert!(ResourceId::parse("/subscriptions/S/providers/Microsoft.X").is_none());
    }
}
