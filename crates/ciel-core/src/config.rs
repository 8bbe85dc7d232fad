//! Configuration types shared by the binary and the services.

use serde::{Deserialize, Serialize};

/// The host names and base URLs of one deployment, derived from its DNS domain and port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    pub domain: String,
    /// Port the clients use; omitted from URLs when 443.
    pub port: u16,
}

impl Endpoints {
    pub fn new(domain: &str, port: u16) -> Self {
        Self {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            port,
        }
    }
    fn port_suffix(&self) -> String {
        if self.port == 443 {
            String::new()
        } else {
            format!(":{}", self.port)
        }
    }
    pub fn host(&self, label: &str) -> String {
        format!("{label}.{}{}", self.domain, self.port_suffix())
    }
    /// `https://login.D[:p]`, without a trailing slash.
    pub fn login(&self) -> String {
        format!("https://{}", self.host("login"))
    }
    /// `https://management.D[:p]/`: the ARM endpoint and the ARM token audience.
    pub fn management(&self) -> String {
        format!("https://{}/", self.host("management"))
    }
    pub fn graph(&self) -> String {
        format!("https://{}/", self.host("graph"))
    }
    /// Storage suffix as the CLI wants it: `core.D[:p]`, no leading dot.
    pub fn storage_suffix(&self) -> String {
        format!("core.{}{}", self.domain, self.port_suffix())
    }
    /// Key Vault DNS suffix without the leading dot: `vault.D[:p]`.
    pub fn keyvault_suffix(&self) -> String {
        format!("vault.{}{}", self.domain, self.port_suffix())
    }
    /// The Key Vault token resource: the bare vault domain (with the port if not 443).
    pub fn keyvault_resource(&self) -> String {
        format!("https://{}", self.keyvault_suffix())
    }
    pub fn issuer(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.login())
    }
}

impl Endpoints {
    /// `D[:p]`: the domain with the port, for suffixes that clients append as they are.
    pub fn host_suffix(&self) -> String {
        format!("{}{}", self.domain, self.port_suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn urls_carry_port_unless_443() {
        let e = Endpoints::new("ciel.localhost", 8443);
        assert_eq!(e.management(), "https://management.ciel.localhost:8443/");
        assert_eq!(e.storage_suffix(), "core.ciel.localhost:8443");
        let e = Endpoints::new("cloud.example.fr", 443);
        assert_eq!(e.login(), "https://login.cloud.example.fr");
    }
}
