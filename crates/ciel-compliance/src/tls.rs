//! What each TLS listener really offers, found by connecting to it.
//!
//! rustls (the library Ciel serves with) is the probe for TLS 1.2 and 1.3: one handshake per
//! protocol version and one per cipher suite, each with a client configuration restricted to that
//! version or suite, so an accepted handshake proves the listener offers it. rustls cannot speak
//! TLS 1.0/1.1 nor the legacy (CBC, static RSA) suites, so those are probed with
//! `openssl s_client` when it is installed; when it is not, the scan records them as untested.
//! A third handshake checks that the served chain verifies to the data directory's CA.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, SupportedCipherSuite};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener to scan: the URL clients use, and where it resolves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsTarget {
    pub url: String,
    /// The host name sent in SNI (and checked against the certificate).
    pub host: String,
    pub port: u16,
    /// Where to connect. Given explicitly when the host name does not resolve on this machine
    /// (e.g. `management.ciel.localhost` on a listener bound to 127.0.0.1).
    pub addr: Option<SocketAddr>,
}

impl TlsTarget {
    /// `https://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url}: only https:// URLs can be scanned"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [v6]:port
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| format!("{url}: bad IPv6 address"))?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (authority.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let port = if port.is_empty() {
            443
        } else {
            port.parse()
                .map_err(|_| format!("{url}: bad port {port:?}"))?
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        Ok(Self {
            url: url.to_string(),
            host,
            port,
            addr,
        })
    }
}

/// One probe: a protocol version, a cipher suite, or a legacy offer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    pub what: String,
    /// true = the listener completed the handshake; false = refused; None = not tested.
    pub accepted: Option<bool>,
    /// rustls, openssl, or none.
    pub tool: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scan {
    pub url: String,
    pub connected_to: Option<String>,
    pub reachable: bool,
    pub error: Option<String>,
    pub versions: Vec<Probe>,
    pub cipher_suites: Vec<Probe>,
    pub legacy: Vec<Probe>,
    pub started_at: String,
    pub finished_at: String,
}

/// Accepts any certificate: the scan asks what the listener offers, not whom to trust (the
/// chain is verified separately, against the data directory's CA). Handshake signatures are
/// still verified, so a completed handshake is a real one.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Done {
    version: Option<rustls::ProtocolVersion>,
    suite: Option<rustls::CipherSuite>,
    chain: Vec<CertificateDer<'static>>,
}

enum Failure {
    /// No TCP connection: the listener is not there.
    Connect(String),
    /// Connected, but no TLS session with this configuration.
    Handshake(String),
}

fn handshake(t: &TlsTarget, cfg: Arc<ClientConfig>) -> Result<Done, Failure> {
    let addr = t
        .addr
        .ok_or_else(|| Failure::Connect(format!("{} does not resolve", t.host)))?;
    let mut sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| Failure::Connect(format!("connect {addr}: {e}")))?;
    let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
    let _ = sock.set_write_timeout(Some(IO_TIMEOUT));
    let name = ServerName::try_from(t.host.clone())
        .map_err(|e| Failure::Handshake(format!("server name {}: {e}", t.host)))?;
    let mut conn =
        ClientConnection::new(cfg, name).map_err(|e| Failure::Handshake(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| Failure::Handshake(e.to_string()))?;
    }
    let done = Done {
        version: conn.protocol_version(),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        chain: conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
    };
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(done)
}

fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn probe_config(
    suites: Vec<SupportedCipherSuite>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..ring()
    });
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    // No resumption: every probe is a full handshake.
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

fn version_name(v: &rustls::SupportedProtocolVersion) -> &'static str {
    match v.version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}

fn suite_version(s: &SupportedCipherSuite) -> &'static rustls::SupportedProtocolVersion {
    match s {
        SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
    }
}

/// Runs every probe against one listener.
pub fn scan(t: &TlsTarget) -> Scan {
    let started_at = ciel_core::time::now_rfc3339();
    let mut s = Scan {
        url: t.url.clone(),
        connected_to: t.addr.map(|a| a.to_string()),
        reachable: true,
        error: None,
        versions: vec![],
        cipher_suites: vec![],
        legacy: vec![],
        started_at,
        finished_at: String::new(),
    };
    let rustls_probe = |what: String, cfg: Result<Arc<ClientConfig>, String>| -> Probe {
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => {
                return Probe {
                    what,
                    accepted: None,
                    tool: "rustls".into(),
                    detail: e,
                }
            }
        };
        match handshake(t, cfg) {
            Ok(d) => Probe {
                what,
                accepted: Some(true),
                tool: "rustls".into(),
                detail: format!(
                    "negotiated {:?} {:?}",
                    d.version.unwrap_or(rustls::ProtocolVersion::Unknown(0)),
                    d.suite.unwrap_or(rustls::CipherSuite::Unknown(0))
                ),
            },
            Err(Failure::Handshake(e)) => Probe {
                what,
                accepted: Some(false),
                tool: "rustls".into(),
                detail: e,
            },
            Err(Failure::Connect(e)) => Probe {
                what,
                accepted: None,
                tool: "rustls".into(),
                detail: format!("unreachable: {e}"),
            },
        }
    };
    for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let p = rustls_probe(
            version_name(v).to_string(),
            probe_config(ring().cipher_suites, v),
        );
        s.versions.push(p);
    }
    if s.versions.iter().all(|p| p.accepted.is_none()) {
        s.reachable = false;
        s.error = s.versions.first().map(|p| p.detail.clone());
        s.finished_at = ciel_core::time::now_rfc3339();
        return s;
    }
    for suite in rustls::crypto::ring::ALL_CIPHER_SUITES {
        let v = suite_version(suite);
        let p = rustls_probe(
            format!("{:?} ({})", suite.suite(), version_name(v)),
            probe_config(vec![*suite], v),
        );
        s.cipher_suites.push(p);
    }
    // What rustls cannot ask for.
    let legacy: [(&str, &[&str]); 4] = [
        ("TLSv1.0", &["-tls1", "-cipher", "ALL:@SECLEVEL=0"]),
        ("TLSv1.1", &["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"]),
        (
            "TLSv1.2 suites without AEAD (CBC)",
            &[
                "-tls1_2",
                "-cipher",
                // ARIA-GCM is an AEAD too: excluded so that only CBC suites remain.
                "ALL:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM:@SECLEVEL=0",
            ],
        ),
        (
            "TLSv1.2 suites without forward secrecy (static RSA key exchange)",
            &["-tls1_2", "-cipher", "kRSA:@SECLEVEL=0"],
        ),
    ];
    for (what, flags) in legacy {
        s.legacy.push(openssl_probe(t, what, flags));
    }
    s.finished_at = ciel_core::time::now_rfc3339();
    s
}

/// `openssl s_client` with `flags`; accepted when a cipher was negotiated.
fn openssl_probe(t: &TlsTarget, what: &str, flags: &[&str]) -> Probe {
    let untested = |detail: String| Probe {
        what: what.to_string(),
        accepted: None,
        tool: "none".into(),
        detail,
    };
    let Some(addr) = t.addr else {
        return untested(format!("{} does not resolve", t.host));
    };
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("s_client").arg("-connect").arg(addr.to_string());
    // SNI only for names (s_client refuses an IP address there).
    if t.host.parse::<std::net::IpAddr>().is_err() {
        cmd.arg("-servername").arg(&t.host);
    }
    cmd.args(flags)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return untested(format!(
                "not tested: openssl is not available to probe it ({e}); rustls cannot offer it"
            ))
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < OPENSSL_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return untested("not tested: openssl s_client did not finish in time".into());
            }
        }
    }
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let line = out
        .lines()
        .find(|l| l.contains("Cipher is "))
        .map(str::trim)
        .map(str::to_string);
    match line {
        Some(l) => Probe {
            what: what.to_string(),
            accepted: Some(!l.contains("(NONE)")),
            tool: "openssl".into(),
            detail: format!("openssl s_client {}: {l}", flags.join(" ")),
        },
        None => {
            // No session summary at all: the client refused to even try (e.g. its own policy).
            let why = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            if why.contains("no protocols available") || why.contains("no cipher") {
                untested(format!(
                    "not tested: this host's openssl will not offer it ({why})"
                ))
            } else {
                Probe {
                    what: what.to_string(),
                    accepted: Some(false),
                    tool: "openssl".into(),
                    detail: format!("openssl s_client {}: {why}", flags.join(" ")),
                }
            }
        }
    }
}

/// The outcome of verifying a listener's chain against a CA file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainCheck {
    pub url: String,
    pub reachable: bool,
    pub verified: bool,
    pub detail: String,
    /// Number of certificates the listener sent.
    pub chain_length: usize,
    /// SHA-256 of the leaf certificate (hex).
    pub leaf_sha256: Option<String>,
}

/// Handshakes with a verifier that trusts only `ca_pem` and checks the host name.
pub fn verify_chain(t: &TlsTarget, ca_pem: &Path) -> ChainCheck {
    let mut c = ChainCheck {
        url: t.url.clone(),
        reachable: false,
        verified: false,
        detail: String::new(),
        chain_length: 0,
        leaf_sha256: None,
    };
    let certs: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(ca_pem) {
        Ok(it) => it.filter_map(Result::ok).collect(),
        Err(e) => {
            c.detail = format!("cannot read {}: {e}", ca_pem.display());
            return c;
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        c.detail = format!("no certificate in {}", ca_pem.display());
        return c;
    }
    let cfg = match ClientConfig::builder_with_provider(Arc::new(ring()))
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(e) => {
            c.detail = e.to_string();
            return c;
        }
    };
    match handshake(t, Arc::new(cfg)) {
        Ok(d) => {
            c.reachable = true;
            c.verified = true;
            c.chain_length = d.chain.len();
            c.leaf_sha256 = d.chain.first().map(|l| sha256_hex(l.as_ref()));
            c.detail = format!(
                "the chain served for {} verifies to {}",
                t.host,
                ca_pem.display()
            );
        }
        Err(Failure::Handshake(e)) => {
            c.reachable = true;
            c.detail = format!("does not verify to {}: {e}", ca_pem.display());
        }
        Err(Failure::Connect(e)) => c.detail = format!("unreachable: {e}"),
    }
    c
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The countryName (2.5.4.6) values in a DER certificate, found by their encoding (OID then a
/// two-letter PrintableString or UTF8String). Enough for a CA's subject and issuer without an
/// X.509 parser; an attribute spelt otherwise is simply not found (and reported as unknown).
pub fn der_countries(der: &[u8]) -> Vec<String> {
    const OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x06];
    let mut out = vec![];
    let mut i = 0;
    while i + OID.len() + 4 <= der.len() {
        if der[i..i + OID.len()] == OID {
            let j = i + OID.len();
            if (der[j] == 0x13 || der[j] == 0x0c) && der[j + 1] == 2 {
                if let Ok(s) = std::str::from_utf8(&der[j + 2..j + 4]) {
                    out.push(s.to_string());
                }
            }
        }
        i += 1;
    }
    out
}

/// The certificates of a PEM file, DER.
pub fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .map(|it| it.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = TlsTarget::parse("https://127.0.0.1:8443/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8443));
        assert!(t.addr.is_some());
        let t = TlsTarget::parse("https://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(TlsTarget::parse("https://h.example").unwrap().port, 443);
        assert!(TlsTarget::parse("http://h").is_err());
        assert!(TlsTarget::parse("https://h:x").is_err());
    }

    #[test]
    fn finds_country_in_der() {
        let der = [
            0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'F', b'R', 0, 0,
        ];
        assert_eq!(der_countries(&der), vec!["FR".to_string()]);
    }

    #[test]
    fn unreachable_listener_is_reported_not_passed() {
        // A port nothing listens on: bind then drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = scan(&TlsTarget::parse(&format!("https://127.0.0.1:{port}")).unwrap());
        assert!(!s.reachable);
        assert!(s.versions.iter().all(|p| p.accepted.is_none()));
    }
}
