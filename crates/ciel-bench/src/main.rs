//! `ciel-bench`: one run that puts side by side what the crypto library can do (RS256 signing
//! and verification, raw ring and through `jsonwebtoken`, as Ciel uses it) and what a running
//! `ciel up` does (tokens issued per second, resource group create/get/delete latency).
//!
//! This is a benchmark, not a test: it asserts nothing beyond counting failed requests, and its
//! figures depend on the machine. `scripts/bench` builds, starts a server and runs it.

mod blob;
mod client;
mod crypto;
mod keyvault;
mod report;
mod stats;

use anyhow::{bail, Context, Result};
use clap::Parser;
use client::{Endpoint, Req};
use http::{Method, StatusCode};
use serde_json::json;
use stats::{HttpRun, Stop};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "ciel-bench",
    version,
    about = "Benchmark Ciel: RS256 crypto bound vs tokens/s and Resource Manager latency of a running server; `blob` compares Blob Storage with Azurite and nginx.",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The `ciel.env` written by `ciel up` (lines `export NAME='value'`).
    #[arg(long, required_unless_present = "crypto_only")]
    env: Option<PathBuf>,
    /// Seconds per timed measurement (each crypto rate, each token concurrency, GET at C=8).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Requests per counted measurement (resource group creates and deletes, at C=1 and at C=8).
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Process id of the server (same machine): its CPU time per request is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only measure the crypto library (no server needed).
    #[arg(long)]
    crypto_only: bool,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// One Blob scenario (Put or Get Blob, one size, C connections, D seconds) against Ciel,
    /// Azurite or nginx; prints one JSON line. scripts/bench-blob runs the whole matrix.
    Blob(blob::BlobArgs),
    /// Creates a storage account in a running `ciel up` (through Resource Manager) and prints
    /// `NAME KEY`.
    BlobSetup(blob::SetupArgs),
    /// Renders the JSON lines of `blob` runs as Markdown tables (medians) and a summary line.
    BlobReport(report::ReportArgs),
    /// Key Vault key custody: raw RSA-2048 RS256 signing and RSA-OAEP unwrapping with the
    /// library the software backend uses, beside the same operations through
    /// `SoftwareCustody` (unseal the key, then operate). Prints a table and one JSON line.
    Custody {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Key Vault (issue 4): raw RSA-2048 sign and RSA-OAEP unwrap rates of the `rsa` crate (1 and
    /// 2 threads) and ring's, then sign, unwrapKey and encrypt at C=1, 2, 8 and Get Secret at
    /// C=1, 8 through a running `ciel up`, and the API/raw ratios. scripts/bench-keyvault runs it.
    Keyvault(keyvault::KvArgs),
}

/// A one-thread runtime, as the rest of the benchmark uses: the client stays at one core.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// Reads `export NAME='value'` lines (values quoted as `ciel up` writes them).
fn read_env(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut m = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
            v[1..v.len() - 1].replace("'\\''", "'")
        } else if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            v[1..v.len() - 1].to_string()
        } else {
            v.to_string()
        };
        m.insert(k.trim().to_string(), v);
    }
    Ok(m)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Blob(a)) => {
            let failed = runtime()?.block_on(blob::run(a))?;
            if failed > 0 {
                eprintln!("ciel-bench: {failed} request(s) failed");
                std::process::exit(2);
            }
            return Ok(());
        }
        Some(Cmd::Custody { seconds }) => return crypto::custody_bench(seconds),
        Some(Cmd::Keyvault(a)) => {
            let failed = keyvault::run(a)?;
            if failed > 0 {
                eprintln!("ciel-bench: {failed} request(s) failed (see the Errors column)");
                std::process::exit(2);
            }
            return Ok(());
        }
        Some(Cmd::BlobSetup(a)) => return runtime()?.block_on(blob::setup(a)),
        Some(Cmd::BlobReport(a)) => {
            if report::report(a)? > 0 {
                std::process::exit(2);
            }
            return Ok(());
        }
        None => {}
    }
    if cli.seconds <= 0.0 || cli.requests == 0 {
        bail!("--seconds and --requests must be positive");
    }
    if let Some(p) = cli.server_pid {
        let _ = stats::SERVER_PID.set(p);
    }
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = cpu_model();
    eprintln!(
        "ciel-bench: {nproc} CPU(s), {cpu}; {} s per timed run, {} requests per counted run",
        cli.seconds, cli.requests
    );

    let env = match &cli.env {
        Some(p) => Some(read_env(p)?),
        None => None,
    };
    let get = |k: &str| -> Result<String> {
        env.as_ref()
            .and_then(|e| e.get(k).cloned())
            .with_context(|| format!("{k} missing from the env file"))
    };

    // The claims a Ciel access token for the admin service principal carries.
    let (arm_aud, issuer, tenant, client_id) = match &env {
        Some(_) => {
            let tenant = get("AZURE_TENANT_ID")?;
            (
                get("CIEL_ARM_ENDPOINT")?,
                format!(
                    "{}/{}/v2.0",
                    get("AZURE_AUTHORITY_HOST")?.trim_end_matches('/'),
                    tenant
                ),
                tenant,
                get("AZURE_CLIENT_ID")?,
            )
        }
        None => {
            let t = uuid::Uuid::new_v4().to_string();
            (
                "https://management.ciel.localhost/".into(),
                format!("https://login.ciel.localhost/{t}/v2.0"),
                t,
                uuid::Uuid::new_v4().to_string(),
            )
        }
    };
    let claims = crypto::sample_claims(&arm_aud, &issuer, &tenant, &client_id);
    let crypto = crypto::run_all(&claims, &arm_aud, cli.seconds)?;

    let mut http_runs: Vec<HttpRun> = Vec::new();
    if !cli.crypto_only {
        http_runs = runtime()?.block_on(server_benches(&get, cli.seconds, cli.requests))?;
    }

    let out = render(&crypto, &http_runs, nproc, &cpu, &cli);
    println!("{out}");
    let j = json!({
        "bench": "ciel",
        "machine": {"nproc": nproc, "cpu": cpu},
        "params": {"seconds": cli.seconds, "requests": cli.requests},
        "crypto": crypto.to_json(),
        "http": http_runs.iter().map(HttpRun::to_json).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string(&j)?);
    let errors: u64 = http_runs.iter().map(|r| r.errors).sum();
    if errors > 0 {
        eprintln!("ciel-bench: {errors} request(s) failed (see the Errors column)");
        std::process::exit(2);
    }
    Ok(())
}

fn is_token(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::OK
        && serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("access_token")
                    .and_then(|t| t.as_str())
                    .map(|t| t.split('.').count() == 3)
            })
            .unwrap_or(false)
}

async fn server_benches(
    get: &dyn Fn(&str) -> Result<String>,
    secs: f64,
    n: usize,
) -> Result<Vec<HttpRun>> {
    let tls = client::tls_connector(Path::new(&get("SSL_CERT_FILE")?))?;
    let (login, login_base) = Endpoint::parse(&get("AZURE_AUTHORITY_HOST")?).await?;
    let arm_url = get("CIEL_ARM_ENDPOINT")?;
    let (arm, arm_base) = Endpoint::parse(&arm_url).await?;
    let tenant = get("AZURE_TENANT_ID")?;
    let sub = get("AZURE_SUBSCRIPTION_ID")?;
    let token_path = format!(
        "{}/{tenant}/oauth2/v2.0/token",
        login_base.trim_end_matches('/')
    );
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", &get("AZURE_CLIENT_ID")?)
        .append_pair("client_secret", &get("AZURE_CLIENT_SECRET")?)
        .append_pair("scope", &format!("{arm_url}/.default"))
        .finish();
    let token_req = Req {
        method: Method::POST,
        path: token_path,
        content_type: Some("application/x-www-form-urlencoded"),
        bearer: None,
        body: bytes::Bytes::from(form),
        check: is_token,
    };

    let mut runs = Vec::new();

    // 3. Token issuance.
    for c in [1usize, 4, 16] {
        eprintln!("ciel-bench: token endpoint, {c} connection(s), {secs} s");
        let r = token_req.clone();
        runs.push(
            stats::drive(
                "token issue (client_credentials)",
                "token",
                &login,
                &tls,
                c,
                Stop::Secs(secs),
                true,
                move |_| r.clone(),
            )
            .await?,
        );
    }

    // One token for Resource Manager.
    let mut conn = client::Conn::open(&login, &tls).await?;
    let (st, body) = conn.send(&token_req).await?;
    if !is_token(st, &body) {
        bail!(
            "could not get a token: {st} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let bearer: Arc<str> = Arc::from(v["access_token"].as_str().unwrap_or_default());

    let rg_path = |name: &str| {
        format!(
            "{}subscriptions/{sub}/resourcegroups/{name}?api-version=2024-11-01",
            arm_base
        )
    };
    let put_body = bytes::Bytes::from_static(br#"{"location":"francecentral"}"#);
    let mk = |method: Method,
              path: String,
              body: bytes::Bytes,
              check: fn(StatusCode, &[u8]) -> bool| Req {
        method,
        path,
        content_type: if body.is_empty() {
            None
        } else {
            Some("application/json")
        },
        bearer: Some(bearer.clone()),
        body,
        check,
    };
    fn created(s: StatusCode, _: &[u8]) -> bool {
        s == StatusCode::CREATED
    }
    fn ok(s: StatusCode, _: &[u8]) -> bool {
        s == StatusCode::OK
    }
    fn deleted(s: StatusCode, _: &[u8]) -> bool {
        matches!(s.as_u16(), 200 | 202 | 204)
    }

    // 4. Resource group create, C=1 then C=8 (fresh names each time).
    let names_seq: Vec<Arc<Req>> = (0..n)
        .map(|_| {
            Arc::new(mk(
                Method::PUT,
                rg_path(&format!("bench-{}", uuid::Uuid::new_v4())),
                put_body.clone(),
                created,
            ))
        })
        .collect();
    let names_par: Vec<Arc<Req>> = (0..n)
        .map(|_| {
            Arc::new(mk(
                Method::PUT,
                rg_path(&format!("bench-{}", uuid::Uuid::new_v4())),
                put_body.clone(),
                created,
            ))
        })
        .collect();
    for (c, set) in [(1usize, &names_seq), (8, &names_par)] {
        eprintln!("ciel-bench: resource group PUT (create), {c} connection(s), {n} requests");
        let set = set.clone();
        runs.push(
            stats::drive(
                "resource group create (PUT)",
                "rg_create",
                &arm,
                &tls,
                c,
                Stop::Count(n),
                false,
                move |i| (*set[i]).clone(),
            )
            .await?,
        );
    }

    // Read baseline: GET one group.
    let read_name = format!("bench-read-{}", uuid::Uuid::new_v4());
    let (st, body) = conn_send(
        &arm,
        &tls,
        &mk(Method::PUT, rg_path(&read_name), put_body.clone(), created),
    )
    .await?;
    if st != StatusCode::CREATED {
        bail!(
            "could not create {read_name}: {st} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let get_req = mk(Method::GET, rg_path(&read_name), bytes::Bytes::new(), ok);
    eprintln!("ciel-bench: resource group GET, 1 connection, {n} requests");
    let g = get_req.clone();
    runs.push(
        stats::drive(
            "resource group read (GET)",
            "rg_get",
            &arm,
            &tls,
            1,
            Stop::Count(n),
            true,
            move |_| g.clone(),
        )
        .await?,
    );
    eprintln!("ciel-bench: resource group GET, 8 connections, {secs} s");
    let g = get_req.clone();
    runs.push(
        stats::drive(
            "resource group read (GET)",
            "rg_get",
            &arm,
            &tls,
            8,
            Stop::Secs(secs),
            true,
            move |_| g.clone(),
        )
        .await?,
    );

    // Delete what was created, C=1 for the first set, C=8 for the second.
    for (c, set) in [(1usize, &names_seq), (8, &names_par)] {
        eprintln!("ciel-bench: resource group DELETE, {c} connection(s), {n} requests");
        let dels: Vec<Req> = set
            .iter()
            .map(|r| mk(Method::DELETE, r.path.clone(), bytes::Bytes::new(), deleted))
            .collect();
        let dels = Arc::new(dels);
        runs.push(
            stats::drive(
                "resource group delete (DELETE)",
                "rg_delete",
                &arm,
                &tls,
                c,
                Stop::Count(n),
                false,
                move |i| dels[i].clone(),
            )
            .await?,
        );
    }
    let _ = conn_send(
        &arm,
        &tls,
        &mk(
            Method::DELETE,
            rg_path(&read_name),
            bytes::Bytes::new(),
            deleted,
        ),
    )
    .await;
    Ok(runs)
}

async fn conn_send(
    ep: &Endpoint,
    tls: &tokio_rustls::TlsConnector,
    r: &Req,
) -> Result<(StatusCode, bytes::Bytes)> {
    client::Conn::open(ep, tls).await?.send(r).await
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn render(
    c: &crypto::CryptoResults,
    runs: &[HttpRun],
    nproc: usize,
    cpu: &str,
    cli: &Cli,
) -> String {
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(s, "\n## ciel-bench results\n");
    let _ = writeln!(
        s,
        "Machine: {nproc} CPU(s), {cpu}. Timed runs {} s each, counted runs {} requests.\n",
        cli.seconds, cli.requests
    );
    let _ = writeln!(s, "### RS256 with RSA-2048 (in process, no server)\n");
    let other = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "–".into());
    let _ = writeln!(
        s,
        "| Operation | Threads | Ops/s | µs/op per thread | Other load (cores) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for r in &c.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {} |",
            r.label,
            r.threads,
            r.rate,
            r.threads as f64 * 1e6 / r.rate,
            other(r.other_cores)
        );
    }
    let disturbed = c
        .rows
        .iter()
        .map(|r| r.other_cores)
        .chain(runs.iter().map(|r| r.other_cores))
        .flatten()
        .fold(0.0, f64::max);
    let note = format!(
        "\n\"Other load\" is the CPU (in cores) that other processes on the machine used during a run; {}\n",
        if disturbed > 0.15 { format!("up to {disturbed:.2} here, so some figures are low: rerun on a quiet machine.") } else { "near 0 here: the run had the machine to itself.".to_string() }
    );
    if runs.is_empty() {
        s.push_str(&note);
        return s;
    }
    let _ = writeln!(
        s,
        "\n### Running server (HTTPS, HTTP/1.1 keep-alive, client on the same machine)\n"
    );
    let _ = writeln!(s, "| Measurement | Conc. | Requests | Rate (/s) | p50 ms | p99 ms | max ms | Errors | Server CPU µs/req | Client CPU µs/req | Other load (cores) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cpu = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into());
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.concurrency,
            r.ok + r.errors,
            r.rate,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us),
            r.errors,
            cpu(r.server_cpu_us),
            cpu(r.client_cpu_us),
            other(r.other_cores)
        );
    }
    s.push_str(&note);
    let best = runs
        .iter()
        .filter(|r| r.key == "token")
        .map(|r| (r.rate, r.concurrency))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    if best.0 > 0.0 {
        let _ = writeln!(s);
        for (label, (bound, threads)) in [
            ("raw ring signing", c.best("ring_sign")),
            ("`jsonwebtoken::encode`", c.best("jwt_encode")),
        ] {
            if bound > 0.0 {
                let _ = writeln!(
                    s,
                    "- Best token rate {:.0}/s (C={}) = {:.0}% of {label} on {threads} thread(s) ({:.0}/s).",
                    best.0,
                    best.1,
                    100.0 * best.0 / bound,
                    bound
                );
            }
        }
    }
    s
}
