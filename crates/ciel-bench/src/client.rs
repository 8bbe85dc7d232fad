//! A minimal HTTPS client: one HTTP/1.1 keep-alive connection per worker (hyper's connection
//! API over tokio-rustls), trusting only the CA named by `SSL_CERT_FILE`.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

pub fn tls_connector(ca: &Path) -> Result<TlsConnector> {
    let pem = std::fs::read(ca)
        .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", ca.display());
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    // No ALPN: HTTP/1.1, as most Azure SDK clients speak it.
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// A host to connect to: TLS server name, `Host` header, resolved addresses (IPv4 first).
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    authority: String,
    addrs: Vec<SocketAddr>,
}

impl Endpoint {
    /// The `Host` header value (`host[:port]`).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Parses an `https://host[:port]/base/` URL; returns the endpoint and the base path.
    pub async fn parse(url: &str) -> Result<(Endpoint, String)> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("{url}: only https URLs are supported");
        }
        let auth = uri.authority().ok_or_else(|| anyhow!("{url}: no host"))?;
        let host = auth.host().to_string();
        let port = auth.port_u16().unwrap_or(443);
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs.dedup();
        if addrs.is_empty() {
            bail!("{host} does not resolve");
        }
        let base = match uri.path() {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        Ok((
            Endpoint {
                host,
                authority: auth.as_str().to_string(),
                addrs,
            },
            base,
        ))
    }
}

/// One request to send (cloned per use; the body is reference-counted).
#[derive(Clone)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub bearer: Option<Arc<str>>,
    pub body: Bytes,
    /// Decides whether the answer counts as a success.
    pub check: fn(StatusCode, &[u8]) -> bool,
}

pub struct Conn {
    ep: Endpoint,
    tls: TlsConnector,
    tx: SendRequest<Full<Bytes>>,
}

/// Opens one keep-alive HTTP/1.1 connection over TLS; `B` is the request body type (a whole
/// `Full` buffer for small requests, a streamed body for large blobs).
pub async fn handshake<B>(ep: &Endpoint, tls: &TlsConnector) -> Result<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut last = None;
    for a in &ep.addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(ep.host.clone())?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", ep.authority))?;
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return Ok(tx);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "cannot connect to {}: {}",
        ep.authority,
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

impl Conn {
    pub async fn open(ep: &Endpoint, tls: &TlsConnector) -> Result<Conn> {
        Ok(Conn {
            ep: ep.clone(),
            tls: tls.clone(),
            tx: handshake(ep, tls).await?,
        })
    }

    /// Opens a new connection (after an error, or when the server closed this one).
    pub async fn reopen(&mut self) -> Result<()> {
        self.tx = handshake(&self.ep, &self.tls).await?;
        Ok(())
    }

    pub async fn send(&mut self, r: &Req) -> Result<(StatusCode, Bytes)> {
        if self.tx.is_closed() {
            self.reopen().await?;
        }
        self.tx.ready().await?;
        let mut b = Request::builder()
            .method(r.method.clone())
            .uri(r.path.as_str())
            .header(header::HOST, self.ep.authority.as_str());
        if let Some(ct) = r.content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        if let Some(t) = &r.bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if !r.body.is_empty() || r.method == Method::PUT || r.method == Method::POST {
            b = b.header(header::CONTENT_LENGTH, r.body.len());
        }
        let resp = self
            .tx
            .send_request(b.body(Full::new(r.body.clone()))?)
            .await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
