//! `ciel compliance …`: SecNumCloud evidence for the operator (crates/ciel-compliance does the
//! work; this module wires it to the data directory, the configuration and the CLI), and the
//! setup the running server needs to serve `GET /providers/Ciel.Compliance/report`.

use crate::config::Config;
use crate::platform::{self, DataDir};
use crate::DirArg;
use anyhow::{anyhow, bail, Context as _, Result};
use ciel_compliance::{report, TlsTarget};
use ciel_core::seal::MasterKey;
use ciel_store::MetadataStore;
use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Format {
    Json,
    Html,
    Pdf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum ListOutput {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum ComplianceCmd {
    /// Run every check against the deployment (its data directory, and its listener over the
    /// network) and write the SecNumCloud 3.2 report.
    Report {
        #[command(flatten)]
        dir: DirArg,
        /// Configuration file (TOML); default DIR/ciel.toml when present.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Write here instead of standard output (required for pdf).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Listener(s) to scan, as clients reach them (e.g. https://management.example.fr); may
        /// be repeated. Default: the Resource Manager endpoint in DIR/ciel.env.
        #[arg(long = "url")]
        urls: Vec<String>,
    },
    /// Record an operator's attestation that a requirement is met, with its evidence file
    /// (hashed and copied into the data directory); audited.
    Attest {
        /// Requirement identifier, e.g. 12.5.c.
        id: String,
        #[command(flatten)]
        dir: DirArg,
        /// The evidence (procedure, report, minutes…).
        #[arg(long)]
        evidence: PathBuf,
        /// The person who vouches for it.
        #[arg(long)]
        by: String,
        /// Until when: a date (2027-06-30, valid through that day, UTC) or an RFC 3339 instant.
        #[arg(long)]
        expires: String,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: ListOutput,
    },
    /// List the recorded attestations.
    Attestations {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long, value_enum, default_value = "table")]
        output: ListOutput,
    },
    /// What changed between two JSON reports (A then B).
    Diff { a: PathBuf, b: PathBuf },
    /// Print the requirement catalogue (JSON).
    Catalogue,
}

/// What `ciel up` keeps to build reports on request.
pub struct Live {
    pub data_dir: PathBuf,
    pub master: Arc<MasterKey>,
    pub sovereignty: Value,
    pub tls_min_version: String,
    pub audit_retention_days: u32,
    pub target: TlsTarget,
    pub deployment: Value,
}

impl Live {
    /// Runs the checks (blocking: network probes and store reads).
    pub fn report(&self, store: &dyn MetadataStore) -> report::Report {
        let d = DataDir::new(&self.data_dir);
        let ctx = ciel_compliance::Context {
            store,
            master: Some(&self.master),
            data_dir: self.data_dir.clone(),
            audit_public_key: platform::audit_public_key(&d, store).ok(),
            sovereignty: self.sovereignty.clone(),
            tls_targets: vec![self.target.clone()],
            tls_min_version: self.tls_min_version.clone(),
            audit_retention_days: self.audit_retention_days,
        };
        report::build(&ctx, self.deployment.clone())
    }
}

/// The management endpoint of a listener bound to `listen`: the URL clients use, connected at
/// the bound address (a wildcard bind is reached on loopback).
pub fn own_target(domain: &str, port: u16, listen: std::net::SocketAddr) -> TlsTarget {
    let ip = if listen.ip().is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        listen.ip()
    };
    TlsTarget {
        url: format!("https://management.{domain}:{port}"),
        host: format!("management.{domain}"),
        port,
        addr: Some(std::net::SocketAddr::new(ip, listen.port())),
    }
}

pub fn deployment(cfg: &Config, d: &DataDir, scanned: &[TlsTarget]) -> Value {
    json!({
        "dataDir": std::fs::canonicalize(&d.root).unwrap_or_else(|_| d.root.clone()).display().to_string(),
        "domain": cfg.domain,
        "host": std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
        "tlsMinVersion": cfg.tls.min_version,
        "scanned": scanned.iter().map(|t| json!({"url": t.url, "address": t.addr.map(|a| a.to_string())})).collect::<Vec<_>>(),
    })
}

/// A target from a URL; `*.localhost` names that do not resolve here go to 127.0.0.1 (RFC 6761).
fn target(url: &str) -> Result<TlsTarget> {
    let mut t = TlsTarget::parse(url).map_err(|e| anyhow!(e))?;
    if t.addr.is_none() && (t.host == "localhost" || t.host.ends_with(".localhost")) {
        t.addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], t.port)));
    }
    Ok(t)
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Prints `html` to PDF with headless Chromium.
pub fn html_to_pdf(html: &str, out: &Path) -> Result<()> {
    let bin = chromium().ok_or_else(|| {
        anyhow!("PDF needs Chromium (Debian package `chromium`); write --format html and print it instead")
    })?;
    let work = std::env::temp_dir().join(format!("ciel-compliance-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&work)?;
    let page = work.join("report.html");
    std::fs::write(&page, html)?;
    let out_abs = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir()?.join(out)
    };
    let status = std::process::Command::new(bin)
        .args([
            "--headless",
            // Running as root (servers, containers) needs it; the page is our own, script-free.
            "--no-sandbox",
            "--disable-gpu",
            // Containers often have a small /dev/shm.
            "--disable-dev-shm-usage",
            "--no-pdf-header-footer",
            "--print-to-pdf-no-header",
        ])
        .arg(format!(
            "--user-data-dir={}",
            work.join("profile").display()
        ))
        .arg(format!("--print-to-pdf={}", out_abs.display()))
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {bin}"))?;
    let _ = std::fs::remove_dir_all(&work);
    if !status.success() || !out_abs.exists() {
        bail!("{bin} could not print the report to {}", out_abs.display());
    }
    Ok(())
}

pub fn run(cmd: ComplianceCmd) -> Result<()> {
    match cmd {
        ComplianceCmd::Report {
            dir,
            config,
            format,
            out,
            urls,
        } => {
            let d = DataDir::new(&dir.data_dir);
            let cfg = Config::load(config.as_deref(), &d.root)?;
            let store = d.open_store()?;
            let master = platform::master_key(&d, store.as_ref())?;
            let targets = if urls.is_empty() {
                let env = platform::read_env_file(&d.env_file());
                let url = env
                    .get("CIEL_ARM_ENDPOINT")
                    .cloned()
                    .unwrap_or_else(|| format!("https://management.{}:{}", cfg.domain, cfg.port()));
                vec![target(&url)?]
            } else {
                urls.iter().map(|u| target(u)).collect::<Result<Vec<_>>>()?
            };
            let ctx = ciel_compliance::Context {
                store: store.as_ref(),
                master: Some(&master),
                data_dir: d.root.clone(),
                audit_public_key: platform::audit_public_key(&d, store.as_ref()).ok(),
                sovereignty: crate::sovereignty::statement(&cfg, &d),
                tls_targets: targets.clone(),
                tls_min_version: cfg.tls.min_version.clone(),
                audit_retention_days: cfg.audit_retention_days,
            };
            let r = report::build(&ctx, deployment(&cfg, &d, &targets));
            let t = &r.totals;
            eprintln!(
                "SecNumCloud 3.2: {} requirements: {} pass, {} attested, {} fail, {} missing, {} not yet checkable",
                t.total, t.pass, t.attested, t.fail, t.missing, t.not_yet_checkable
            );
            let bytes = match format {
                Format::Json => serde_json::to_vec_pretty(&r)?,
                Format::Html => ciel_compliance::html::render(&r).into_bytes(),
                Format::Pdf => {
                    let out = out
                        .as_ref()
                        .ok_or_else(|| anyhow!("--format pdf needs --out FILE"))?;
                    html_to_pdf(&ciel_compliance::html::render(&r), out)?;
                    eprintln!("wrote {}", out.display());
                    return Ok(());
                }
            };
            match out {
                Some(p) => {
                    std::fs::write(&p, bytes)
                        .with_context(|| format!("writing {}", p.display()))?;
                    eprintln!("wrote {}", p.display());
                }
                None => {
                    use std::io::Write;
                    let mut o = std::io::stdout().lock();
                    o.write_all(&bytes)?;
                    o.write_all(b"\n")?;
                }
            }
            Ok(())
        }
        ComplianceCmd::Attest {
            id,
            dir,
            evidence,
            by,
            expires,
            note,
            output,
        } => {
            let d = DataDir::new(&dir.data_dir);
            let store = d.open_store()?;
            let a = ciel_compliance::attest::record(
                store.as_ref(),
                &d.root,
                ciel_compliance::attest::NewAttestation {
                    requirement: &id,
                    evidence: &evidence,
                    by: &by,
                    expires: ciel_compliance::attest::parse_expiry(&expires)?,
                    note,
                    actor: crate::OPERATOR,
                },
            )?;
            match output {
                ListOutput::Json => println!("{}", serde_json::to_string_pretty(&a)?),
                ListOutput::Table => println!(
                    "attestation {} recorded: {} by {} until {} (evidence {} sha256 {})",
                    a.id,
                    a.requirement,
                    a.attested_by,
                    ciel_core::time::unix_to_rfc3339(a.expires),
                    a.evidence_name,
                    a.evidence_sha256
                ),
            }
            Ok(())
        }
        ComplianceCmd::Attestations { dir, output } => {
            let store = DataDir::new(&dir.data_dir).open_store()?;
            let all = store.list_attestations()?;
            match output {
                ListOutput::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                ListOutput::Table => {
                    let now = ciel_core::time::now_unix();
                    for a in &all {
                        println!(
                            "{}  {:<9} {:<24} until {}{}  {}",
                            ciel_core::time::unix_to_rfc3339(a.created),
                            a.requirement,
                            a.attested_by,
                            ciel_core::time::unix_to_rfc3339(a.expires),
                            if a.expires <= now { " (expired)" } else { "" },
                            a.evidence_name
                        );
                    }
                }
            }
            Ok(())
        }
        ComplianceCmd::Diff { a, b } => {
            let read = |p: &Path| -> Result<report::Report> {
                serde_json::from_str(&std::fs::read_to_string(p)?)
                    .with_context(|| format!("{} is not a JSON compliance report", p.display()))
            };
            let x = report::diff(&read(&a)?, &read(&b)?);
            println!("{}", serde_json::to_string_pretty(&x)?);
            Ok(())
        }
        ComplianceCmd::Catalogue => {
            println!(
                "{}",
                serde_json::to_string_pretty(ciel_compliance::Catalogue::get())?
            );
            Ok(())
        }
    }
}
