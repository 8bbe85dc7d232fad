//! Blob mode: one load generator for Ciel, Azurite and nginx (the machine's ceiling).
//!
//! `ciel-bench blob` runs one scenario (Put Blob or Get Blob of one size, C keep-alive HTTPS
//! connections, D seconds) against one target and prints one JSON line. The three targets get the
//! same requests: path-style URLs `https://HOST:PORT/{account}/{container}/{blob}`, SharedKey
//! signed (nginx ignores the header, but the client pays the same signing cost). `blob-setup`
//! creates a storage account in a running `ciel up` through Resource Manager; `blob-report`
//! turns the JSON lines of several runs into the Markdown table of docs/PERFORMANCE.md.

use crate::client::{self, Endpoint, Req};
use crate::stats;
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio_rustls::TlsConnector;

/// Azurite's well-known development account and key (documented by Microsoft for the emulator).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// A service version both Ciel and Azurite 3.x accept.
const X_MS_VERSION: &str = "2023-11-03";
/// Large bodies are streamed as slices of one shared buffer of this size.
const STREAM_CHUNK: usize = 1 << 20;
/// Below this size every Put Blob creates a new blob; at and above it each connection overwrites
/// its own blob, so that long runs do not fill the disk.
const UNIQUE_BELOW: u64 = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Ciel,
    Azurite,
    Nginx,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ciel => "ciel",
            Target::Azurite => "azurite",
            Target::Nginx => "nginx",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    Put,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

#[derive(clap::Args)]
pub struct BlobArgs {
    /// Which server this is (decides only what setup it needs: nginx has no containers).
    #[arg(long, value_enum)]
    target: Target,
    /// Account URL, path-style: `https://127.0.0.1:PORT/ACCOUNT`.
    #[arg(long)]
    url: String,
    /// Account name (signed into the canonical resource; Azurite's by default).
    #[arg(long, default_value = AZURITE_ACCOUNT)]
    account: String,
    /// Account key, base64 (Azurite's well-known key by default).
    #[arg(long, default_value = AZURITE_KEY)]
    key: String,
    /// The CA certificate (PEM) that signed the server's certificate.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value = "bench")]
    container: String,
    #[arg(long, value_enum)]
    op: Op,
    /// Object size: bytes, or with a KiB / MiB / GiB suffix.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Each connection starts requests until this many seconds have passed (at least one each).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Server process ids (repeatable, e.g. nginx's master and workers): CPU time and RSS are
    /// summed over them.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// A label copied into the JSON line (the round of a repeated run).
    #[arg(long, default_value_t = 1)]
    round: u32,
}

pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .iter()
        .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((t, 1));
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("bad size {s:?} (e.g. 1024, 1KiB, 4MiB)"))
}

// `%` rather than `is_multiple_of`, which needs Rust 1.87 (the workspace's rust-version is 1.85).
#[allow(clippy::manual_is_multiple_of)]
pub fn size_label(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

// ---------------------------------------------------------------------------------------------
// SharedKey, as Azure canonicalizes it (service version 2015-02-21 and later). This is a client:
// it signs what it sends, independently of the server's verifier.

const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The string to sign: verb, the eleven standard headers (a zero Content-Length signs as empty),
/// the `x-ms-*` headers lower-cased and sorted, then `/{account}{path}` and the query parameters,
/// names lower-cased and sorted, values decoded, sorted and comma-joined.
pub fn string_to_sign(
    method: &Method,
    headers: &HeaderMap,
    account: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(method.as_str());
    s.push('\n');
    for name in STANDARD_HEADERS {
        let v = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !(name == "content-length" && v == "0") {
            s.push_str(v);
        }
        s.push('\n');
    }
    let mut xms: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (k, v) in headers {
        let k = k.as_str().to_ascii_lowercase();
        if k.starts_with("x-ms-") {
            xms.entry(k)
                .or_default()
                .push(v.to_str().unwrap_or("").trim());
        }
    }
    for (k, vs) in xms {
        s.push_str(&k);
        s.push(':');
        s.push_str(&vs.join(","));
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(path);
    let mut q: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        q.entry(k.to_ascii_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    for (k, mut vs) in q {
        vs.sort();
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&vs.join(","));
    }
    s
}

pub struct Signer {
    account: String,
    key: ring::hmac::Key,
}

impl Signer {
    pub fn new(account: &str, key_b64: &str) -> Result<Self> {
        let raw = B64
            .decode(key_b64.trim())
            .context("the account key is not base64")?;
        Ok(Self {
            account: account.to_string(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw),
        })
    }

    /// Adds `x-ms-date`, `x-ms-version` and `Authorization: SharedKey` to a request's headers.
    pub fn sign(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        h: &mut HeaderMap,
    ) -> Result<()> {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        h.insert("x-ms-date", HeaderValue::from_str(&date)?);
        h.insert("x-ms-version", HeaderValue::from_static(X_MS_VERSION));
        let sts = string_to_sign(method, h, &self.account, path, query);
        let sig = B64.encode(ring::hmac::sign(&self.key, sts.as_bytes()).as_ref());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("SharedKey {}:{sig}", self.account))?,
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies: `len` bytes sent as slices of one shared buffer (no copy, no per-request
// allocation), so 64 connections uploading 64 MiB each hold one 1 MiB buffer between them plus
// what hyper and rustls queue per connection.

pub struct BlobBody {
    chunk: Bytes,
    remaining: u64,
}

impl BlobBody {
    fn empty() -> Self {
        Self {
            chunk: Bytes::new(),
            remaining: 0,
        }
    }

    fn repeat(chunk: &Bytes, len: u64) -> Self {
        Self {
            chunk: chunk.clone(),
            remaining: len,
        }
    }
}

impl Body for BlobBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 || this.chunk.is_empty() {
            return Poll::Ready(None);
        }
        let n = (this.chunk.len() as u64).min(this.remaining) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// One keep-alive connection and what it needs to send signed blob requests.
struct BlobConn {
    ep: Endpoint,
    tls: TlsConnector,
    tx: SendRequest<BlobBody>,
}

/// What one request returned: status, body length (counted frame by frame, never collected for
/// large objects), and the first bytes of the body for error messages.
struct Answer {
    status: StatusCode,
    len: u64,
    head: Vec<u8>,
}

impl BlobConn {
    async fn open(ep: &Endpoint, tls: &TlsConnector) -> Result<Self> {
        Ok(Self {
            ep: ep.clone(),
            tls: tls.clone(),
            tx: client::handshake(ep, tls).await?,
        })
    }

    async fn send(
        &mut self,
        signer: &Signer,
        method: Method,
        path_and_query: &str,
        extra: &[(&'static str, &'static str)],
        body: BlobBody,
    ) -> Result<Answer> {
        if self.tx.is_closed() {
            self.tx = client::handshake(&self.ep, &self.tls).await?;
        }
        self.tx.ready().await?;
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let mut h = HeaderMap::new();
        for (k, v) in extra {
            h.insert(*k, HeaderValue::from_static(v));
        }
        if method == Method::PUT {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.remaining));
        }
        signer.sign(&method, path, query, &mut h)?;
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, self.ep.authority())
            .body(body)?;
        req.headers_mut().extend(h);
        let resp = self.tx.send_request(req).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let (mut len, mut head) = (0u64, Vec::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len() as u64;
                if head.len() < 300 {
                    let take = (300 - head.len()).min(data.len());
                    head.extend_from_slice(&data[..take]);
                }
            }
        }
        Ok(Answer { status, len, head })
    }
}

/// Sums a field (in kB) of /proc/PID/status over processes, in bytes.
fn status_kb(pids: &[u32], field: &str) -> Option<u64> {
    let mut total = 0;
    for p in pids {
        let s = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let line = s.lines().find(|l| l.starts_with(field))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())?;
        total += kb * 1024;
    }
    Some(total)
}

fn self_status(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn cpu_of(pids: &[u32]) -> Option<f64> {
    let mut t = 0.0;
    for p in pids {
        t += stats::cpu_secs(&p.to_string())?;
    }
    Some(t)
}

/// Samples the servers' resident memory every 20 ms until stopped; returns the peak (bytes).
fn rss_sampler(pids: Vec<u32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let mut peak: Option<u64> = None;
        loop {
            if let Some(v) = status_kb(&pids, "VmRSS:") {
                peak = Some(peak.map_or(v, |p| p.max(v)));
            }
            if stop.load(Ordering::Relaxed) {
                return peak;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn ok_2xx(a: &Answer) -> bool {
    a.status.is_success()
}

fn describe(a: &Answer) -> String {
    format!("{} {}", a.status, String::from_utf8_lossy(&a.head))
}

/// Untimed preparation: the container (not for nginx, where folders appear with the first PUT),
/// a small blob each connection warms up with, and for Get Blob the object to read.
async fn prepare(
    a: &BlobArgs,
    ep: &Endpoint,
    tls: &TlsConnector,
    base: &str,
    signer: &Signer,
    data: &Bytes,
) -> Result<()> {
    let mut c = BlobConn::open(ep, tls).await?;
    if a.target != Target::Nginx {
        let r = c
            .send(
                signer,
                Method::PUT,
                &format!("{base}/{}?restype=container", a.container),
                &[],
                BlobBody::empty(),
            )
            .await?;
        if !(r.status.is_success() || r.status == StatusCode::CONFLICT) {
            bail!("creating container {}: {}", a.container, describe(&r));
        }
    }
    let mut objects = vec![(format!("{base}/{}/warm", a.container), 1024u64)];
    if a.op == Op::Get {
        objects.push((get_path(base, &a.container, a.size), a.size));
    }
    for (path, len) in objects {
        let r = c
            .send(
                signer,
                Method::PUT,
                &path,
                &[("x-ms-blob-type", "BlockBlob")],
                BlobBody::repeat(data, len),
            )
            .await?;
        if !ok_2xx(&r) {
            bail!("uploading {path}: {}", describe(&r));
        }
    }
    Ok(())
}

fn get_path(base: &str, container: &str, size: u64) -> String {
    format!("{base}/{container}/get-{size}")
}

/// Runs one scenario and prints its JSON line; returns the number of failed requests.
pub async fn run(a: BlobArgs) -> Result<u64> {
    if a.concurrency == 0 || a.seconds <= 0.0 {
        bail!("--concurrency and --seconds must be positive");
    }
    let tls = client::tls_connector(&a.ca)?;
    let (ep, base) = Endpoint::parse(&a.url).await?;
    let base = base.trim_end_matches('/').to_string();
    let signer = Arc::new(Signer::new(&a.account, &a.key)?);
    // One buffer of random bytes for every body (random so nothing on the way can compress it).
    let mut buf = vec![0u8; (a.size.max(1024) as usize).min(STREAM_CHUNK)];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .map_err(|_| anyhow!("the system random generator failed"))?;
    let data = Bytes::from(buf);
    prepare(&a, &ep, &tls, &base, &signer, &data).await?;

    let run_id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let barrier = Arc::new(tokio::sync::Barrier::new(a.concurrency + 1));
    let bytes_done = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..a.concurrency {
        let mut conn = BlobConn::open(&ep, &tls).await?;
        let (barrier, signer, data, bytes_done) = (
            barrier.clone(),
            signer.clone(),
            data.clone(),
            bytes_done.clone(),
        );
        let (op, size, secs) = (a.op, a.size, a.seconds);
        let warm = format!("{base}/{}/warm", a.container);
        let get = get_path(&base, &a.container, size);
        let put_prefix = format!("{base}/{}/put-{size}-{run_id}-w{w}", a.container);
        handles.push(tokio::spawn(async move {
            // Warm-up outside the clock: a small GET, so the TLS session and the server's
            // per-connection state exist, without doubling a large run's length.
            let _ = conn
                .send(&signer, Method::GET, &warm, &[], BlobBody::empty())
                .await;
            barrier.wait().await;
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let (mut lat, mut ok, mut errors) = (Vec::with_capacity(4096), 0u64, 0u64);
            let mut i = 0u64;
            loop {
                // Every connection sends at least once, so large runs always measure something.
                if i > 0 && Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let res = match op {
                    Op::Put => {
                        let path = if size < UNIQUE_BELOW {
                            format!("{put_prefix}-{i}")
                        } else {
                            put_prefix.clone()
                        };
                        conn.send(
                            &signer,
                            Method::PUT,
                            &path,
                            &[("x-ms-blob-type", "BlockBlob")],
                            BlobBody::repeat(&data, size),
                        )
                        .await
                    }
                    Op::Get => {
                        conn.send(&signer, Method::GET, &get, &[], BlobBody::empty())
                            .await
                    }
                };
                i += 1;
                match res {
                    Ok(r) if ok_2xx(&r) && (op == Op::Put || r.len == size) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        ok += 1;
                        bytes_done.fetch_add(size, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!(
                                "ciel-bench: failed: {} ({} body bytes)",
                                describe(&r),
                                r.len
                            );
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("ciel-bench: request failed: {e:#}");
                        }
                        // A broken connection is replaced; the next send reconnects if needed.
                        if let Ok(c) = BlobConn::open(&conn.ep, &conn.tls).await {
                            conn = c;
                        } else {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            (lat, ok, errors, Instant::now())
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = rss_sampler(a.server_pids.clone(), stop.clone());
    let rss_start = status_kb(&a.server_pids, "VmRSS:");
    barrier.wait().await;
    let t0 = Instant::now();
    let srv0 = cpu_of(&a.server_pids);
    let cli0 = stats::cpu_secs("self");
    let busy0 = stats::machine_busy_secs();
    let (mut lat, mut ok, mut errors, mut end) = (Vec::new(), 0u64, 0u64, t0);
    for h in handles {
        let (l, o, e, t) = h.await?;
        lat.extend(l);
        ok += o;
        errors += e;
        end = end.max(t);
    }
    let elapsed = (end - t0).as_secs_f64();
    let srv1 = cpu_of(&a.server_pids);
    let cli1 = stats::cpu_secs("self");
    let busy1 = stats::machine_busy_secs();
    stop.store(true, Ordering::Relaxed);
    let rss_peak = sampler.join().ok().flatten();
    lat.sort_unstable();

    let diff = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let (srv_cpu, cli_cpu) = (diff(srv0, srv1), diff(cli0, cli1));
    let per_req = |c: Option<f64>| c.filter(|_| ok > 0).map(|c| c * 1e6 / ok as f64);
    let other = if a.server_pids.is_empty() {
        None
    } else {
        stats::other_cores(
            (busy0, busy1),
            srv_cpu.unwrap_or(0.0) + cli_cpu.unwrap_or(0.0),
            elapsed,
        )
    };
    let rate = if elapsed > 0.0 {
        ok as f64 / elapsed
    } else {
        0.0
    };
    let mib_s = if elapsed > 0.0 {
        bytes_done.load(Ordering::Relaxed) as f64 / elapsed / (1u64 << 20) as f64
    } else {
        0.0
    };
    let ms = |us: f64| (us / 10.0).round() / 100.0;
    let mib = |b: Option<u64>| b.map(|b| (b as f64 / (1u64 << 20) as f64 * 10.0).round() / 10.0);
    let j = json!({
        "bench": "blob",
        "target": a.target.name(),
        "op": a.op.name(),
        "size": a.size,
        "concurrency": a.concurrency,
        "round": a.round,
        "seconds": a.seconds,
        "ok": ok,
        "errors": errors,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "per_s": (rate * 10.0).round() / 10.0,
        "mib_per_s": (mib_s * 10.0).round() / 10.0,
        "p50_ms": ms(stats::pct(&lat, 50.0)),
        "p99_ms": ms(stats::pct(&lat, 99.0)),
        "max_ms": ms(lat.last().copied().unwrap_or(0) as f64),
        "server_cpu_cores": srv_cpu.filter(|_| elapsed > 0.0).map(|c| (c / elapsed * 100.0).round() / 100.0),
        "server_cpu_us_per_req": per_req(srv_cpu).map(f64::round),
        "client_cpu_us_per_req": per_req(cli_cpu).map(f64::round),
        "other_cores": other.map(|x| (x * 100.0).round() / 100.0),
        "server_rss_start_mib": mib(rss_start),
        "server_rss_peak_mib": mib(rss_peak),
        "client_rss_peak_mib": mib(self_status("VmHWM:")),
    });
    eprintln!(
        "ciel-bench: {} {} {} C={}: {:.0} req/s, {:.1} MiB/s, p50 {} ms, p99 {} ms, {} failed{}",
        a.target.name(),
        a.op.name(),
        size_label(a.size),
        a.concurrency,
        rate,
        mib_s,
        j["p50_ms"],
        j["p99_ms"],
        errors,
        rss_peak
            .map(|r| format!(", server RSS peak {:.0} MiB", r as f64 / 1048576.0))
            .unwrap_or_default()
    );
    println!("{}", serde_json::to_string(&j)?);
    Ok(errors)
}

// ---------------------------------------------------------------------------------------------
// Setup of a Ciel account through Resource Manager.

#[derive(clap::Args)]
pub struct SetupArgs {
    /// The `ciel.env` written by `ciel up`.
    #[arg(long)]
    env: PathBuf,
}

/// Creates a resource group and a StorageV2 account, then prints `NAME KEY` (key1) on one line.
pub async fn setup(a: SetupArgs) -> Result<()> {
    let env = crate::read_env(&a.env)?;
    let get = |k: &str| -> Result<String> {
        env.get(k)
            .cloned()
            .with_context(|| format!("{k} missing from {}", a.env.display()))
    };
    let tls = client::tls_connector(Path::new(&get("SSL_CERT_FILE")?))?;
    let (login, login_base) = Endpoint::parse(&get("AZURE_AUTHORITY_HOST")?).await?;
    let arm_url = get("CIEL_ARM_ENDPOINT")?;
    let (arm, arm_base) = Endpoint::parse(&arm_url).await?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &get("AZURE_CLIENT_ID")?)
        .append_pair("client_secret", &get("AZURE_CLIENT_SECRET")?)
        .append_pair("scope", &format!("{arm_url}/.default"))
        .finish();
    fn any(_: StatusCode, _: &[u8]) -> bool {
        true
    }
    let token_req = Req {
        method: Method::POST,
        path: format!(
            "{}/{}/oauth2/v2.0/token",
            login_base.trim_end_matches('/'),
            get("AZURE_TENANT_ID")?
        ),
        content_type: Some("application/x-www-form-urlencoded"),
        bearer: None,
        body: Bytes::from(form),
        check: any,
    };
    let (st, body) = client::Conn::open(&login, &tls)
        .await?
        .send(&token_req)
        .await?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("token answer {st} is not JSON"))?;
    let bearer: Arc<str> = Arc::from(
        v["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("no access_token: {st} {v}"))?,
    );
    let mut arm_conn = client::Conn::open(&arm, &tls).await?;
    let call = |method: Method, path: String, body: serde_json::Value| Req {
        method,
        path,
        content_type: Some("application/json"),
        bearer: Some(bearer.clone()),
        body: if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        },
        check: any,
    };
    let sub = get("AZURE_SUBSCRIPTION_ID")?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let rg = format!(
        "{}subscriptions/{sub}/resourcegroups/bench-blob-{suffix}",
        arm_base
    );
    let acct = format!("bench{suffix}");
    let acct_path = format!("{rg}/providers/Microsoft.Storage/storageAccounts/{acct}");
    let steps = [
        (
            Method::PUT,
            format!("{rg}?api-version=2024-11-01"),
            json!({"location": "francecentral"}),
        ),
        (
            Method::PUT,
            format!("{acct_path}?api-version=2023-05-01"),
            json!({"location": "francecentral", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
        ),
        (
            Method::POST,
            format!("{acct_path}/listKeys?api-version=2023-05-01"),
            serde_json::Value::Null,
        ),
    ];
    let mut last = serde_json::Value::Null;
    for (method, path, body) in steps {
        let (st, body) = arm_conn
            .send(&call(method.clone(), path.clone(), body))
            .await?;
        if !st.is_success() {
            bail!(
                "{method} {path}: {st} {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
        }
        last = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    }
    let key = last["keys"][0]["value"]
        .as_str()
        .ok_or_else(|| anyhow!("listKeys returned no key: {last}"))?;
    println!("{acct} {key}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_matches_the_documented_layout() {
        let mut h = HeaderMap::new();
        h.insert("x-ms-version", HeaderValue::from_static("2026-04-06"));
        h.insert(
            "x-ms-date",
            HeaderValue::from_static("Sat, 28 Nov 2026 22:00:00 GMT"),
        );
        h.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        h.insert("content-length", HeaderValue::from_static("0"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let sts = string_to_sign(
            &Method::PUT,
            &h,
            "acct",
            "/c/dir%20x/b.txt",
            Some("timeout=30&restype=container"),
        );
        assert_eq!(
            sts,
            "PUT\n\n\n\n\ntext/plain\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:Sat, 28 Nov 2026 22:00:00 GMT\nx-ms-version:2026-04-06\n/acct/c/dir%20x/b.txt\nrestype:container\ntimeout:30"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1 KB").is_err());
        assert_eq!(size_label(4 << 20), "4 MiB");
    }
}
