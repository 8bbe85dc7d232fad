//! Configuration: defaults, then `DIR/ciel.toml` (or `--config FILE`), then environment
//! variables (`CIEL_DOMAIN`, `CIEL_LISTEN`, `CIEL_PUBLIC_PORT`, `CIEL_LOG_FORMAT`,
//! `CIEL_TLS_MIN_VERSION`, `CIEL_CMK_CHECK_SECS`), then flags.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// DNS domain of this cloud; service hosts are `login.D`, `management.D`, `*.blob.core.D`, ...
    pub domain: String,
    /// Address the HTTPS listener binds.
    pub listen: SocketAddr,
    /// Port clients use in URLs, when a proxy or port mapping differs from `listen`.
    pub public_port: Option<u16>,
    /// `text` or `json`.
    pub log_format: String,
    /// Largest request body accepted by ARM, login and Graph, in bytes.
    pub max_body_bytes: usize,
    /// Seconds between signed audit checkpoints.
    pub audit_checkpoint_secs: u64,
    /// Days audit entries are kept before pruning (SecNumCloud 12.6.c: at least six months,
    /// which is also the default). Longer is allowed; shorter is refused at start.
    pub audit_retention_days: u32,
    /// What the operator declares in the sovereignty statement.
    pub sovereignty: crate::sovereignty::Declaration,
    /// TLS settings of the listener.
    pub tls: TlsSettings,
    /// Key Vault: where keys are held (`[keyvault.custody]`, software or PKCS#11).
    pub keyvault: KeyVaultConfig,
    /// Longest time (seconds) a storage data key unwrapped by a customer-managed key is used
    /// before the key is asked again: the bound on how long revoking a key takes to bite.
    pub cmk_check_secs: u64,
    /// How long a device code (`az login --use-device-code`) is valid, seconds (1 to 900; Entra: 900).
    pub device_code_lifetime_secs: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyVaultConfig {
    pub custody: ciel_keyvault::custody::CustodyConfig,
}

/// `[tls]` in ciel.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Lowest TLS version the listener accepts: "1.2" (default) or "1.3". Nothing older can be
    /// configured: rustls implements neither TLS 1.0 nor 1.1, and ANSSI's guide rules them out.
    pub min_version: String,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            min_version: "1.2".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            domain: "ciel.localhost".into(),
            listen: "127.0.0.1:8443".parse().expect("static address"),
            public_port: None,
            log_format: "text".into(),
            max_body_bytes: 4 * 1024 * 1024,
            audit_checkpoint_secs: 10,
            audit_retention_days: ciel_audit::MIN_RETENTION_DAYS,
            sovereignty: Default::default(),
            tls: Default::default(),
            keyvault: Default::default(),
            cmk_check_secs: 60,
            device_code_lifetime_secs: ciel_identity::device_code::DEVICE_CODE_LIFETIME,
        }
    }
}

impl Config {
    pub fn load(file: Option<&Path>, data_dir: &Path) -> anyhow::Result<Self> {
        let default_file = data_dir.join("ciel.toml");
        let path = file
            .map(Path::to_path_buf)
            .or_else(|| default_file.exists().then_some(default_file));
        let mut c: Config = match path {
            Some(p) => toml::from_str(
                &std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?,
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            None => Config::default(),
        };
        if let Ok(v) = std::env::var("CIEL_DOMAIN") {
            c.domain = v;
        }
        if let Ok(v) = std::env::var("CIEL_LISTEN") {
            c.listen = v.parse().map_err(|e| anyhow::anyhow!("CIEL_LISTEN: {e}"))?;
        }
        if let Ok(v) = std::env::var("CIEL_PUBLIC_PORT") {
            c.public_port = Some(
                v.parse()
                    .map_err(|e| anyhow::anyhow!("CIEL_PUBLIC_PORT: {e}"))?,
            );
        }
        if let Ok(v) = std::env::var("CIEL_LOG_FORMAT") {
            c.log_format = v;
        }
        if let Ok(v) = std::env::var("CIEL_TLS_MIN_VERSION") {
            c.tls.min_version = v;
        }
        if !matches!(c.tls.min_version.as_str(), "1.2" | "1.3") {
            anyhow::bail!(
                "tls.min_version must be \"1.2\" or \"1.3\", not {:?} (older versions are not supported)",
                c.tls.min_version
            );
        }
        if let Ok(v) = std::env::var("CIEL_CMK_CHECK_SECS") {
            c.cmk_check_secs = v
                .parse()
                .map_err(|e| anyhow::anyhow!("CIEL_CMK_CHECK_SECS: {e}"))?;
        }
        if let Ok(v) = std::env::var("CIEL_DEVICE_CODE_LIFETIME_SECS") {
            c.device_code_lifetime_secs = v
                .parse()
                .map_err(|e| anyhow::anyhow!("CIEL_DEVICE_CODE_LIFETIME_SECS: {e}"))?;
        }
        if !(1..=ciel_identity::device_code::DEVICE_CODE_LIFETIME)
            .contains(&c.device_code_lifetime_secs)
        {
            anyhow::bail!("device_code_lifetime_secs must be from 1 to 900 seconds");
        }
        if c.cmk_check_secs == 0 || c.cmk_check_secs > 3600 {
            anyhow::bail!("cmk_check_secs must be from 1 to 3600 seconds");
        }
        if c.audit_retention_days < ciel_audit::MIN_RETENTION_DAYS {
            anyhow::bail!(
                "audit_retention_days = {} is below the minimum of {} days (six months, SecNumCloud 12.6.c)",
                c.audit_retention_days,
                ciel_audit::MIN_RETENTION_DAYS
            );
        }
        crate::sovereignty::validate(&c.sovereignty)?;
        Ok(c)
    }

    pub fn port(&self) -> u16 {
        self.public_port.unwrap_or(self.listen.port())
    }
}
