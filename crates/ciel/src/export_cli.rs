//! `ciel export`, `ciel export verify`, `ciel import` and `ciel tenant erase`: the operator side
//! of reversibility. The work is in the `ciel-export` crate; this opens the data directory and
//! prints.

use crate::config;
use crate::platform::{self, DataDir};
use anyhow::{anyhow, bail, Result};
use ciel_core::audit::AuditDraft;
use ciel_core::config::Endpoints;
use ciel_export::{erase, export, import, manifest, push};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    cmd: Option<ExportSub>,
    #[command(flatten)]
    run: ExportRun,
}

#[derive(Args)]
struct ExportRun {
    /// Data directory of the deployment.
    #[arg(long, default_value = ".ciel", env = "CIEL_DATA_DIR")]
    data_dir: PathBuf,
    /// The tenant to export.
    #[arg(long)]
    tenant: Option<String>,
    /// The export directory (created; must be empty unless --resume).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted export in --out: files already written and hashed are kept.
    #[arg(long)]
    resume: bool,
    /// Incremental: a previous export's manifest.json; only blobs changed since are copied.
    #[arg(long)]
    since: Option<PathBuf>,
    /// Instead of a directory: push every blob into this Azure-Blob-compatible endpoint
    /// (e.g. https://acct.blob.core.windows.net or Azurite's http://127.0.0.1:10000/devstoreaccount1).
    #[arg(long, requires = "sas")]
    to_blob_endpoint: Option<String>,
    /// An account SAS of the endpoint (containers and objects, create and write permissions).
    #[arg(long)]
    sas: Option<String>,
    /// With --to-blob-endpoint: push this storage account only.
    #[arg(long)]
    account: Option<String>,
    /// With --to-blob-endpoint: prefix of the destination containers' names.
    #[arg(long, default_value = "")]
    container_prefix: String,
    /// The RSA public key (PEM `PUBLIC KEY` or JWK; a file, or the text) that Key Vault secret
    /// values and software private keys are encrypted to (compact JWE, RSA-OAEP-256 + A256GCM).
    /// Required when the tenant has vaults holding secrets or keys.
    #[arg(long)]
    recipient: Option<String>,
}

#[derive(Subcommand)]
enum ExportSub {
    /// Check an export: every file's size and SHA-256, nothing missing, nothing added; names the
    /// first bad file and exits with status 1.
    Verify {
        /// The export directory.
        dir: PathBuf,
        /// The manifest's SHA-256 as printed by `ciel export` (detects a rewritten manifest).
        #[arg(long)]
        manifest_sha256: Option<String>,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// Data directory of the target deployment (its `ciel up` must be stopped).
    #[arg(long, default_value = ".ciel", env = "CIEL_DATA_DIR")]
    data_dir: PathBuf,
    /// The export directory.
    #[arg(long)]
    from: PathBuf,
    /// Target tenant (must exist); default: the exported tenant's id, created when absent.
    #[arg(long)]
    tenant: Option<String>,
    /// Import colliding names under new ones (printed) instead of failing.
    #[arg(long)]
    rename: bool,
    /// Map an exported subscription onto a target one: OLD=NEW (repeatable).
    #[arg(long = "subscription", value_name = "OLD=NEW")]
    subscriptions: Vec<String>,
    /// Remove what an interrupted import of this export created, instead of resuming it.
    #[arg(long)]
    rollback: bool,
    /// The recipient's RSA private key (PEM or JWK file) that opens the export's Key Vault
    /// secrets and keys.
    #[arg(long)]
    identity: Option<PathBuf>,
}

#[derive(Args)]
pub struct EraseArgs {
    /// Data directory of the deployment.
    #[arg(long, default_value = ".ciel", env = "CIEL_DATA_DIR")]
    data_dir: PathBuf,
    /// The tenant to erase.
    tenant: String,
    /// Record the formal notice; the erasure is possible once the notice period has passed.
    #[arg(long)]
    notice: bool,
    /// The notice period in days (SecNumCloud 19.4: 21).
    #[arg(long, default_value_t = erase::DEFAULT_NOTICE_DAYS)]
    notice_days: u32,
    /// Erase now, without notice: for tests and drills only.
    #[arg(long)]
    now: bool,
}

fn init_logs() {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CIEL_LOG").unwrap_or_else(|_| "info".into());
    // Human lines on a terminal (beside the progress bar), JSON lines for logs otherwise.
    if std::io::stderr().is_terminal() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// The deployment's endpoints: those its last `ciel up` served at (DIR/ciel.env, which records
/// a `--domain`/`--listen` given on the command line), else the configuration's. Imported vaults
/// get their `vaultUri` from them.
fn endpoints(d: &DataDir) -> Result<Endpoints> {
    let cfg = config::Config::load(None, &d.root)?;
    let env = platform::read_env_file(&d.env_file());
    if let (Some(domain), Some(arm)) = (env.get("CIEL_DOMAIN"), env.get("CIEL_ARM_ENDPOINT")) {
        let port = arm
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(443);
        return Ok(Endpoints::new(domain, port));
    }
    Ok(Endpoints::new(&cfg.domain, cfg.port()))
}

/// The deployment's key custody, as `ciel up` opens it (`[keyvault.custody]`). A failure is kept
/// for later: only an export or import that meets Key Vault material needs it.
fn custody(
    d: &DataDir,
    master: &std::sync::Arc<ciel_core::seal::MasterKey>,
) -> Option<std::sync::Arc<dyn ciel_keyvault::custody::Custody>> {
    let cfg = match config::Config::load(None, &d.root) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "reading the configuration for the key custody");
            return None;
        }
    };
    match ciel_keyvault::custody::open(&cfg.keyvault.custody, master.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "the key custody backend does not open; Key Vault material cannot be read");
            None
        }
    }
}

fn record(
    store: &dyn ciel_store::MetadataStore,
    tenant: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<()> {
    store.append_audit(&[AuditDraft {
        tenant_id: Some(tenant.to_string()),
        actor: crate::OPERATOR.into(),
        action: action.into(),
        target: target.into(),
        outcome: "success".into(),
        details,
        ..Default::default()
    }])?;
    Ok(())
}

pub fn export_cmd(a: ExportArgs) -> Result<()> {
    init_logs();
    if let Some(ExportSub::Verify {
        dir,
        manifest_sha256,
    }) = a.cmd
    {
        let (m, _) = manifest::Manifest::read(&dir)?;
        let total = m.files.iter().map(|f| f.size).sum();
        let mut p = ciel_export::progress::Progress::new("verify", total);
        let res = manifest::verify(&dir, manifest_sha256.as_deref(), |n| p.add(n))?;
        p.finish();
        return match res {
            Ok(v) => {
                println!(
                    "export ok: {} files, {} bytes, tenant {}, format {}",
                    v.files, v.bytes, m.tenant.id, m.format
                );
                Ok(())
            }
            Err(problem) => {
                eprintln!("export BROKEN: {problem}");
                std::process::exit(1);
            }
        };
    }
    let r = a.run;
    let tenant = r.tenant.ok_or_else(|| anyhow!("--tenant is required"))?;
    let d = DataDir::new(&r.data_dir);
    let store = d.open_store()?;
    let master = std::sync::Arc::new(platform::master_key(&d, store.as_ref())?);
    if let Some(url) = r.to_blob_endpoint {
        let sas = r.sas.unwrap_or_default();
        let rep = push::push(
            store.as_ref(),
            &master,
            &d.blobs(),
            &tenant,
            &push::Destination {
                endpoint: url.clone(),
                sas,
                container_prefix: r.container_prefix,
            },
            r.account.as_deref(),
        )?;
        record(
            store.as_ref(),
            &tenant,
            "Ciel.Export/pushToBlobEndpoint/action",
            &format!("/tenants/{tenant}"),
            serde_json::json!({"endpoint": rep.endpoint, "blobs": rep.blobs, "snapshots": rep.snapshots, "bytes": rep.bytes}),
        )?;
        println!(
            "pushed {} blobs and {} snapshots ({} bytes, {} containers) to {} in {:.1} s",
            rep.blobs, rep.snapshots, rep.bytes, rep.containers, rep.endpoint, rep.seconds
        );
        return Ok(());
    }
    let out = r.out.ok_or_else(|| anyhow!("--out is required"))?;
    let key = platform::audit_public_key(&d, store.as_ref())?;
    let recipient = r
        .recipient
        .as_deref()
        .map(ciel_export::recipient::Recipient::parse)
        .transpose()?;
    let custody = custody(&d, &master);
    let src = export::DataSource {
        custody: custody.as_deref(),
        store: store.as_ref(),
        master: &master,
        blob_root: d.blobs(),
        domain: endpoints(&d)?.domain,
        audit_public_key: hex::encode(&key),
    };
    let rep = export::export(
        &src,
        &export::ExportOptions {
            tenant: tenant.clone(),
            out: out.clone(),
            resume: r.resume,
            since: r.since,
            recipient,
        },
    )?;
    record(
        store.as_ref(),
        &tenant,
        "Ciel.Export/export/action",
        &format!("/tenants/{tenant}"),
        serde_json::json!({"files": rep.files, "blobBytes": rep.blob_bytes, "manifestSha256": rep.manifest_sha256, "resumed": r.resume}),
    )?;
    let mb = rep.blob_bytes as f64 / 1048576.0;
    println!(
        "exported tenant {tenant} to {}: {} files, {:.1} MiB of blob content in {:.1} s ({:.1} MiB/s){}",
        out.display(),
        rep.files,
        mb,
        rep.seconds,
        mb / rep.seconds.max(1e-3),
        if rep.kept_from_before > 0 {
            format!(", {} bytes kept from the interrupted run", rep.kept_from_before)
        } else {
            String::new()
        }
    );
    println!("manifest sha256 {}", rep.manifest_sha256);
    println!("{}", serde_json::to_string(&rep.summary)?);
    Ok(())
}

pub fn import_cmd(a: ImportArgs) -> Result<()> {
    init_logs();
    let d = DataDir::new(&a.data_dir);
    let store = d.open_store()?;
    // Import writes objects before their records commit; a `ciel up` starting meanwhile would
    // take them for a crash's leftovers. Holding the serving lock rules that out.
    let _lock = d.lock_for_serving().map_err(|e| {
        anyhow!(
            "{e} (ciel import writes into the data directory; stop its ciel up during the import)"
        )
    })?;
    let master = std::sync::Arc::new(platform::master_key(&d, store.as_ref())?);
    let identity = a
        .identity
        .as_ref()
        .map(|p| ciel_export::recipient::Identity::parse(&p.display().to_string()))
        .transpose()?;
    let custody = custody(&d, &master);
    let mut map = BTreeMap::new();
    for s in &a.subscriptions {
        let (o, n) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--subscription takes OLD=NEW, not {s}"))?;
        map.insert(o.trim().to_string(), n.trim().to_string());
    }
    let t = import::Target {
        store: store.as_ref(),
        master: &master,
        blob_root: d.blobs(),
        endpoints: endpoints(&d)?,
        journal_dir: d.root.join("imports"),
        custody: custody.as_deref(),
    };
    if a.rollback {
        let removed = import::rollback(&t, &a.from, a.tenant.as_deref())?;
        println!("rolled back: {} items removed", removed.len());
        for r in removed {
            println!("  {r}");
        }
        return Ok(());
    }
    let rep = import::import(
        &t,
        &import::ImportOptions {
            from: a.from.clone(),
            tenant: a.tenant,
            rename: a.rename,
            subscription_map: map,
            rollback: false,
            identity,
        },
    )
    .map_err(|e| {
        anyhow!(
            "{e:#}\n(an interrupted import resumes when run again, or is undone with --rollback)"
        )
    })?;
    let mb = rep.bytes as f64 / 1048576.0;
    println!(
        "imported into tenant {}: {} blobs, {} snapshots, {:.1} MiB in {:.1} s ({:.1} MiB/s; verified first in {:.1} s){}",
        rep.tenant,
        rep.blobs,
        rep.snapshots,
        mb,
        rep.seconds,
        mb / rep.seconds.max(1e-3),
        rep.verify_seconds,
        if rep.resumed { ", resumed" } else { "" }
    );
    if rep.vaults > 0 {
        println!(
            "imported {} key vaults: {} secret versions, {} key versions",
            rep.vaults, rep.secret_versions, rep.key_versions
        );
    }
    for r in &rep.renamed {
        println!("renamed: {r}");
    }
    for s in &rep.skipped {
        println!("skipped: {s}");
    }
    Ok(())
}

pub fn erase_cmd(a: EraseArgs) -> Result<()> {
    init_logs();
    let d = DataDir::new(&a.data_dir);
    let store = d.open_store()?;
    if a.notice {
        let at = erase::give_notice(store.as_ref(), &a.tenant, crate::OPERATOR)?;
        println!(
            "notice of erasure recorded for tenant {} at {at}; `ciel tenant erase {}` destroys it after {} days",
            a.tenant, a.tenant, a.notice_days
        );
        return Ok(());
    }
    if a.now && a.notice_days != erase::DEFAULT_NOTICE_DAYS {
        bail!("--now and --notice-days exclude each other");
    }
    let rep = erase::erase(
        store.as_ref(),
        &d.blobs(),
        &a.tenant,
        crate::OPERATOR,
        if a.now { None } else { Some(a.notice_days) },
    )?;
    println!(
        "tenant {} erased: {} storage accounts (keys destroyed, then data), {} key vaults (with their keys and secrets), {} resource groups, {} role assignments, {} custom roles, {} policy objects, {} principals",
        a.tenant, rep.accounts, rep.vaults, rep.groups, rep.assignments, rep.definitions, rep.policies, rep.principals
    );
    Ok(())
}
