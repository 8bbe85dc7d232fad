//! The sovereignty statement (SecNumCloud 19.2): where customer data and technical data are
//! stored and processed, where keys are held, where data is replicated, which outbound
//! destinations exist, and what the operator declares about its jurisdiction and
//! administration. It is built from this process's configuration and data directory, never
//! typed by hand, so that it stays true; `ciel sovereignty` prints it and ARM serves it at
//! `GET /providers/Ciel.Sovereignty/statement` (documented in docs/openapi/ciel.json).

use crate::config::Config;
use crate::platform::DataDir;
use serde::Deserialize;
use serde_json::{json, Value};

/// The api-version of the statement document.
pub const API_VERSION: &str = "2026-11-01";

/// What the operator declares (`[sovereignty]` in ciel.toml). Nothing here can widen what the
/// platform enforces (regions, no outbound traffic); it states who runs it and from where.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Declaration {
    /// The operator's legal name.
    pub operator: Option<String>,
    /// ISO 3166-1 alpha-2 country of the operator's registered office and governing law.
    pub jurisdiction: Option<String>,
    /// Where administrators work from (e.g. "Paris, FR").
    pub administration_locations: Vec<String>,
    /// The site (datacenter) this node runs in.
    pub site: Option<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn undeclared(v: &Option<String>) -> Value {
    match v {
        Some(s) if !s.trim().is_empty() => json!(s),
        _ => json!("undeclared"),
    }
}

/// Builds the statement.
pub fn statement(cfg: &Config, dir: &DataDir) -> Value {
    use ciel_keyvault::custody::CustodyBackend;
    let d = &cfg.sovereignty;
    // Where Key Vault keys live follows `[keyvault.custody]`; the PIN's source is not stated.
    let (vault_keys, hsm) = match &cfg.keyvault.custody.backend {
        CustodyBackend::Software => (
            json!({"custody": "software", "storage": "private parts sealed (AES-256-GCM) under a per-vault key, itself sealed under the platform master key"}),
            Value::Null,
        ),
        CustodyBackend::Pkcs11(p) => {
            let h = json!({"interface": "PKCS#11", "module": p.module.display().to_string(), "tokenLabel": p.token_label,
                           "holds": "Key Vault keys (non-extractable token objects) and the AES key wrapping each vault's key"});
            (
                json!({"custody": "pkcs11", "storage": "generated or imported in the HSM as sensitive, non-extractable objects; sign and decrypt run in the HSM", "hsm": h.clone()}),
                h,
            )
        }
    };
    let host = hostname();
    let abs = |p: std::path::PathBuf| {
        std::fs::canonicalize(&p)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    let master = if std::env::var_os("CIEL_MASTER_KEY_SHARES").is_some() {
        json!({"custody": "software", "source": "rebuilt at start from K of N Shamir shares held by the operator's key holders (CIEL_MASTER_KEY_SHARES); not stored by Ciel"})
    } else if std::env::var_os("CIEL_MASTER_KEY").is_some() {
        json!({"custody": "software", "source": "supplied by the operator at start (CIEL_MASTER_KEY); not stored by Ciel"})
    } else {
        json!({"custody": "software", "source": "file", "path": abs(dir.keys().join("master.key")), "host": host})
    };
    json!({
        "apiVersion": API_VERSION,
        "generatedAt": ciel_core::time::now_rfc3339(),
        "software": {"name": "Ciel", "version": env!("CARGO_PKG_VERSION")},
        "operator": {
            "name": undeclared(&d.operator),
            "jurisdiction": undeclared(&d.jurisdiction),
            "administrationLocations": d.administration_locations,
        },
        "regions": ciel_core::region::REGIONS.iter().map(|r| json!({
            "name": r.name, "displayName": r.display_name, "city": r.city, "country": "FR",
            "pairedRegion": r.paired,
        })).collect::<Vec<_>>(),
        "nodes": [{
            "host": host,
            "site": undeclared(&d.site),
            "serves": cfg.domain,
        }],
        "customerData": {
            "blobContents": {
                "path": abs(dir.blobs()),
                "host": host,
                "encryption": "AES-256-GCM, a key per object derived from a per-account data key; the data key is sealed under the platform master key",
            },
            "metadata": {"engine": "SQLite", "path": abs(dir.db()), "host": host},
        },
        "technicalData": {
            "auditLog": {"path": abs(dir.db()), "checkpoints": abs(dir.root.join("audit-checkpoints.jsonl")),
                         "integrity": "SHA-256 hash chain with Ed25519-signed checkpoints"},
            "serviceLogs": "standard error of the ciel process on this host (shipping is the operator's choice, documented in docs/operations.md)",
            "tlsMaterial": abs(dir.tls()),
        },
        "keys": {
            "platformMasterKey": master,
            "tokenSigningKeys": {"custody": "software", "storage": "sealed under the platform master key in the metadata store"},
            "storageAccountKeys": {"custody": "software", "storage": "sealed under the platform master key, bound to the account id"},
            "auditSigningKey": {"custody": "software", "storage": "sealed under the platform master key in the metadata store",
                                "publicKey": abs(dir.audit_public_key_file())},
            "keyVaultKeys": vault_keys,
            "hsm": hsm,
        },
        "replication": {
            "targets": [],
            "note": "single node: no replica; every byte stays on this host",
        },
        "outboundConnections": {
            "allowedDestinations": [],
            "note": "Ciel opens no outbound connection; the client test suite records every connect() of the server and fails on any non-loopback destination",
        },
    })
}

/// Checks a declaration at start: a jurisdiction, when given, is a two-letter country code.
pub fn validate(d: &Declaration) -> anyhow::Result<()> {
    if let Some(j) = &d.jurisdiction {
        if j.len() != 2 || !j.chars().all(|c| c.is_ascii_uppercase()) {
            anyhow::bail!("[sovereignty] jurisdiction must be an ISO 3166-1 alpha-2 code such as \"FR\", not {j:?}");
        }
    }
    Ok(())
}
