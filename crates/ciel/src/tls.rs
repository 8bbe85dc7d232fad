//! The private CA and the server certificate, generated on first start (rcgen), and the rustls
//! server configuration (TLS 1.2 and 1.3, or 1.3 only with `tls.min_version = "1.3"`; session
//! tickets for resumption).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::Path;
use std::sync::Arc;

/// The CA's name carries a fingerprint of its key, so that the CAs of two deployments never share
/// a name (OpenSSL picks an issuer by name: two "Ciel" CAs in one bundle would shadow each other).
fn ca_params(key: &KeyPair) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let fp = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
    let id: String = fp.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    p.distinguished_name
        .push(DnType::CommonName, format!("Ciel private root CA {id}"));
    p.distinguished_name.push(DnType::OrganizationName, "Ciel");
    p.distinguished_name.push(DnType::CountryName, "FR");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(p)
}

/// Every host name the server answers for.
pub fn server_names(domain: &str) -> Vec<String> {
    let mut v: Vec<String> = ["login", "management", "graph", "portal"]
        .iter()
        .map(|h| format!("{h}.{domain}"))
        .collect();
    for svc in ["blob", "queue", "table", "file", "dfs"] {
        v.push(format!("*.{svc}.core.{domain}"));
    }
    v.push(format!("*.vault.{domain}"));
    v.push(format!("vault.{domain}"));
    v.push("localhost".into());
    v.push("127.0.0.1".into());
    v
}

/// Creates the CA (once) and the server certificate (again whenever the names change).
pub fn ensure(dir: &Path, domain: &str) -> Result<()> {
    let ca_key_path = dir.join("ca.key");
    let ca_pem_path = dir.join("ca.pem");
    let names = server_names(domain);
    let names_path = dir.join("server.names");
    let ca_key = if ca_key_path.exists() {
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?).context("reading the CA key")?
    } else {
        let k = KeyPair::generate()?;
        crate::platform::write_private(&ca_key_path, k.serialize_pem().as_bytes())?;
        k
    };
    // The CA certificate is re-derived from its key and fixed parameters, so a server
    // certificate can be re-issued under the same trust anchor.
    let ca = ca_params(&ca_key)?.self_signed(&ca_key)?;
    if !ca_pem_path.exists() {
        std::fs::write(&ca_pem_path, ca.pem())?;
    }
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    if current == names.join("\n")
        && dir.join("server.pem").exists()
        && dir.join("server.key").exists()
    {
        return Ok(());
    }
    let mut p = CertificateParams::new(names.clone())?;
    p.distinguished_name
        .push(DnType::CommonName, format!("management.{domain}"));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let now = rcgen::date_time_ymd(2025, 1, 1);
    p.not_before = now;
    p.not_after = rcgen::date_time_ymd(2034, 12, 31);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca, &ca_key)?;
    crate::platform::write_private(&dir.join("server.key"), key.serialize_pem().as_bytes())?;
    std::fs::write(
        dir.join("server.pem"),
        cert.pem() + &std::fs::read_to_string(&ca_pem_path)?,
    )?;
    std::fs::write(&names_path, names.join("\n"))?;
    Ok(())
}

/// The server configuration; `min_version` is "1.2" (TLS 1.2 and 1.3) or "1.3" (TLS 1.3 only).
pub fn server_config(dir: &Path, min_version: &str) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(
        dir.join("server.pem"),
    )?))
    .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(
        dir.join("server.key"),
    )?))?
    .context("no private key in server.key")?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version {
        "1.3" => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(Arc::new(cfg))
}
