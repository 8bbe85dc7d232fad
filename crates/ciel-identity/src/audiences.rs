//! Which token audiences this cloud issues, and how a requested scope maps onto one.

use ciel_core::config::Endpoints;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    ResourceManager,
    Storage,
    KeyVault,
    Graph,
}

#[derive(Debug, Clone)]
pub struct Audiences {
    pub arm: String,
    pub storage: String,
    pub keyvault: String,
    pub graph: String,
    endpoints: Endpoints,
}

impl Audiences {
    pub fn new(e: &Endpoints) -> Self {
        Self {
            arm: e.management(),
            storage: "https://storage.azure.com".to_string(),
            keyvault: e.keyvault_resource(),
            graph: e.graph().trim_end_matches('/').to_string(),
            endpoints: e.clone(),
        }
    }

    /// Maps a resource URI (from a v2 scope `{resource}/.default` or a v1 `resource=`) to the
    /// service and the canonical `aud` to issue. ARM is accepted with and without a trailing
    /// slash and under its public-cloud names, which the management SDKs ask for by default.
    pub fn resolve(&self, resource: &str) -> Option<(Service, String)> {
        // `https://host:443` is `https://host`.
        let trimmed = resource.trim().trim_end_matches('/');
        let resource = trimmed.strip_suffix(":443").unwrap_or(trimmed);
        let r = resource.to_ascii_lowercase();
        let arm = self.arm.trim_end_matches('/').to_ascii_lowercase();
        if r == arm
            || r == "https://management.azure.com"
            || r == "https://management.core.windows.net"
            || r == format!("https://{}", self.endpoints.host("management")).to_ascii_lowercase()
        {
            return Some((Service::ResourceManager, self.arm.clone()));
        }
        if r == "https://storage.azure.com" {
            return Some((Service::Storage, self.storage.clone()));
        }
        // An account-specific storage audience: https://{account}.blob.core.{domain}
        let suffix = format!(".blob.{}", self.endpoints.storage_suffix()).to_ascii_lowercase();
        if r.starts_with("https://")
            && r.ends_with(&suffix)
            && !r[8..r.len() - suffix.len()].contains(['/', '.'])
        {
            return Some((Service::Storage, r.clone()));
        }
        if r == self.keyvault.to_ascii_lowercase() {
            return Some((Service::KeyVault, self.keyvault.clone()));
        }
        if r == self.graph.to_ascii_lowercase() {
            return Some((Service::Graph, self.graph.clone()));
        }
        None
    }

    /// Parses an OAuth2 v2 `scope` parameter: returns the resource part of the one
    /// non-OIDC scope (`X/.default`, `X//.default`, `X/user_impersonation`), or None if only
    /// OIDC scopes were asked for.
    pub fn resource_from_scope(scope: &str) -> Result<Option<String>, String> {
        let mut resources = Vec::new();
        for s in scope.split_whitespace() {
            if matches!(s, "openid" | "profile" | "offline_access" | "email") {
                continue;
            }
            let Some(idx) = s.rfind('/') else {
                return Err(format!(
                    "The scope '{s}' is not valid: expected '{{resource}}/.default'."
                ));
            };
            let res = s[..idx].to_string();
            if res.is_empty() {
                return Err(format!("The scope '{s}' does not name a resource."));
            }
            resources.push(res);
        }
        resources.dedup_by(|a, b| a.trim_end_matches('/') == b.trim_end_matches('/'));
        match resources.len() {
            0 => Ok(None),
            1 => Ok(resources.pop()),
            _ => {
                Err("Scopes for more than one resource were requested in one token request.".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn maps_scopes() {
        let a = Audiences::new(&Endpoints::new("ciel.localhost", 8443));
        let r = Audiences::resource_from_scope(
            "https://management.ciel.localhost:8443//.default offline_access openid",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.resolve(&r).unwrap().0, Service::ResourceManager);
        assert_eq!(
            a.resolve(&r).unwrap().1,
            "https://management.ciel.localhost:8443/"
        );
        assert_eq!(
            a.resolve("https://management.azure.com/").unwrap().0,
            Service::ResourceManager
        );
        assert_eq!(
            a.resolve("https://storage.azure.com").unwrap().0,
            Service::Storage
        );
        assert_eq!(
            a.resolve("https://acct.blob.core.ciel.localhost:8443")
                .unwrap()
                .0,
            Service::Storage
        );
        assert!(a
            .resolve("https://a.b.blob.core.ciel.localhost:8443")
            .is_none());
        let p443 = Audiences::new(&Endpoints::new("ciel.localhost", 443));
        assert_eq!(
            p443.resolve("https://acct.blob.core.ciel.localhost:443/")
                .unwrap()
                .1,
            "https://acct.blob.core.ciel.localhost"
        );
        assert_eq!(
            p443.resolve("https://management.ciel.localhost:443/")
                .unwrap()
                .0,
            Service::ResourceManager
        );
        assert_eq!(
            a.resolve("https://vault.ciel.localhost:8443").unwrap().0,
            Service::KeyVault
        );
        assert!(a.resolve("https://vault.azure.net").is_none());
        assert!(a.resolve("https://evil.example").is_none());
        assert!(Audiences::resource_from_scope("a/.default b/.default").is_err());
        assert_eq!(
            Audiences::resource_from_scope("openid profile").unwrap(),
            None
        );
    }
}
