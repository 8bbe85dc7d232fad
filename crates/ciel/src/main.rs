//! `ciel`: run a sovereign, Azure-compatible cloud (`ciel up`) and administer it.

mod compliance_cli;
mod config;
mod export_api;
mod export_cli;
mod http;
mod master_shares;
mod mfa_cli;
mod operator_cli;
mod platform;
mod sovereignty;
mod tls;

use anyhow::{bail, Context, Result};
use ciel_audit::{Auditor, Verdict};
use ciel_core::config::Endpoints;
use ciel_identity::{directory, keys::KeyRing, token::TokenService};
use ciel_store::{MetadataStore, PrincipalKindRec};
use clap::{Args, Parser, Subcommand, ValueEnum};
use platform::DataDir;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "ciel",
    version,
    about = "Ciel: a sovereign cloud that speaks Azure's APIs (Entra ID, Resource Manager, RBAC), on your own machines in France.",
    long_about = "Ciel runs Azure-compatible services on the operator's own hardware. `ciel up` starts everything in one process \
(embedded SQLite store, private CA and TLS, one tenant, one subscription and an admin service principal). \
The other commands administer a data directory, and work while the server runs."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct DirArg {
    /// Data directory of the deployment.
    #[arg(long, default_value = ".ciel", env = "CIEL_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start every service in one process (HTTPS on one port), creating the data directory on first start.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// DNS domain; services answer on login.D, management.D, graph.D, *.blob.core.D, *.vault.D.
        #[arg(long)]
        domain: Option<String>,
        /// Address to listen on (HTTPS), e.g. 127.0.0.1:8443.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Configuration file (TOML); default DIR/ciel.toml when present.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Tenants (directories).
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// Service principals (applications) and their secrets.
    Sp {
        #[command(subcommand)]
        cmd: SpCmd,
    },
    /// Users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// The operator directory (platform staff, separate from every tenant) and break-glass
    /// access (docs/security.md, operator access).
    Operator {
        #[command(subcommand)]
        cmd: operator_cli::OperatorCmd,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// A tenant's export (docs/export-format.md): `ciel export --tenant T --out DIR`
    /// [--resume] [--since PREV/manifest.json], `ciel export verify DIR`, or
    /// `--to-blob-endpoint URL --sas TOKEN` to push its blobs elsewhere.
    Export(export_cli::ExportArgs),
    /// Import an export into this data directory (verified first; conflicts refused or --rename).
    Import(export_cli::ImportArgs),
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// SecNumCloud 3.2 evidence: reports, attestations, diffs (docs/compliance.md).
    Compliance {
        #[command(subcommand)]
        cmd: compliance_cli::ComplianceCmd,
    },
    /// The sovereignty statement: where data and keys are held, replication, outbound
    /// destinations, the operator's declared jurisdiction (JSON).
    Sovereignty {
        #[command(flatten)]
        dir: DirArg,
        /// Configuration file (TOML); default DIR/ciel.toml when present.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant and one subscription in it.
    Create {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        name: String,
        /// The tenant's default domain (used in user names).
        #[arg(long)]
        domain: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Change a tenant's settings: who must sign in with a second factor (`--require-mfa`).
    Update(mfa_cli::TenantUpdateArgs),
    /// Erase a tenant after its notice period (`--notice` records the notice; 21 days by default):
    /// its storage accounts' keys are destroyed (crypto-erasure), then its data.
    Erase(export_cli::EraseArgs),
}

#[derive(Subcommand)]
enum SpCmd {
    /// Create a service principal; its secret is shown once.
    Create {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List service principals of a tenant.
    List {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a service principal (and its role assignments).
    Delete {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        /// Application (client) id.
        #[arg(long)]
        id: String,
    },
    /// Replace a service principal's secret; the old one stops working at once.
    ResetSecret {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user with a password (Argon2id-hashed).
    Create {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        upn: String,
        /// Password (at least 12 characters); prefer CIEL_USER_PASSWORD to keep it out of the process list.
        #[arg(long, env = "CIEL_USER_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List users of a tenant.
    List {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// A user's second factor (TOTP): enroll, confirm, status, reset.
    Mfa {
        #[command(subcommand)]
        cmd: mfa_cli::MfaCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the whole hash chain and every signed checkpoint; name the first broken entry.
    Verify {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Export one tenant's entries as JSON lines, with the links and signed checkpoints that
    /// prove they belong to the chain (format ciel-audit-export/1), to standard output.
    Export {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long)]
        tenant: String,
        /// First sequence number (1 = from the beginning).
        #[arg(long, default_value_t = 1)]
        from: i64,
    },
    /// Remove the entries older than the retention (`audit_retention_days`, at least 183) up to a
    /// signed checkpoint, which becomes the chain's anchor. The server also does it every 6 hours.
    Prune {
        #[command(flatten)]
        dir: DirArg,
        /// The configuration file (for `audit_retention_days`); default DIR/ciel.toml if present.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify an export with nothing but the file and the platform's audit public key.
    VerifyExport {
        /// The export (JSON lines).
        file: PathBuf,
        /// The audit public key: hex, or a file holding it (DIR/keys/audit-signing.pub).
        #[arg(long)]
        public_key: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a new token signing key and retire the current one (it stays in JWKS until its tokens expire).
    Rotate {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Split the platform master key into N share files of which K rebuild it (Shamir); start
    /// then with CIEL_MASTER_KEY_SHARES=file1,file2,... (K of them).
    SplitMaster {
        #[command(flatten)]
        dir: DirArg,
        /// Number of shares to write (N, at most 255).
        #[arg(long)]
        shares: u8,
        /// Number of shares that rebuild the key (K, 2..=N).
        #[arg(long)]
        threshold: u8,
        /// Directory for the share files (master-share-I-of-N.txt, mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Remove DIR/keys/master.key once the shares are written and checked.
        #[arg(long)]
        remove_key_file: bool,
    },
}

const OPERATOR: &str = "operator:cli";

fn print(output: Output, v: &serde_json::Value, table: impl FnOnce()) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Table => table(),
    }
}

fn tenant_exists(store: &dyn MetadataStore, t: &str) -> Result<()> {
    store
        .get_tenant(t)
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("tenant {t} does not exist"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            dir,
            domain,
            listen,
            config,
            log_json,
        } => up(dir, domain, listen, config, log_json),
        Cmd::Export(a) => export_cli::export_cmd(a),
        Cmd::Operator { cmd } => operator_cli::run(cmd),
        Cmd::Import(a) => export_cli::import_cmd(a),
        Cmd::Tenant { cmd } => match cmd {
            TenantCmd::Erase(a) => export_cli::erase_cmd(a),
            TenantCmd::Update(a) => mfa_cli::tenant_update(a),
            TenantCmd::Create {
                dir,
                name,
                domain,
                output,
            } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                let domain = domain.unwrap_or_else(|| {
                    format!("{}.onciel.fr", name.to_ascii_lowercase().replace(' ', "-"))
                });
                let t = directory::create_tenant(store.as_ref(), OPERATOR, &name, &domain)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let s = platform::create_subscription(
                    store.as_ref(),
                    OPERATOR,
                    &t.id,
                    &format!("{name} subscription"),
                )?;
                let v = serde_json::json!({"tenantId": t.id, "displayName": t.display_name, "defaultDomain": t.default_domain, "subscriptionId": s.id});
                print(output, &v, || {
                    println!(
                        "tenant {} ({}) created with subscription {}",
                        t.id, t.display_name, s.id
                    )
                });
                Ok(())
            }
            TenantCmd::List { dir, output } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                let ts = store.list_tenants()?;
                let v: Vec<_> = ts.iter().map(|t| serde_json::json!({"tenantId": t.id, "displayName": t.display_name, "defaultDomain": t.default_domain})).collect();
                print(output, &serde_json::json!(v), || {
                    for t in &ts {
                        println!("{}  {}  {}", t.id, t.display_name, t.default_domain);
                    }
                });
                Ok(())
            }
        },
        Cmd::Sp { cmd } => match cmd {
            SpCmd::Create {
                dir,
                tenant,
                name,
                output,
            } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                let sp =
                    directory::create_service_principal(store.as_ref(), OPERATOR, &tenant, &name)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                let app = sp.principal.app_id.clone().unwrap_or_default();
                let v = serde_json::json!({"appId": app, "objectId": sp.principal.object_id, "tenantId": tenant, "displayName": name, "password": sp.secret});
                print(output, &v, || {
                    println!(
                        "appId {app}\nobjectId {}\npassword {}\n(the password is shown only once)",
                        sp.principal.object_id, sp.secret
                    )
                });
                Ok(())
            }
            SpCmd::List {
                dir,
                tenant,
                output,
            } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                tenant_exists(store.as_ref(), &tenant)?;
                let ps =
                    store.list_principals(&tenant, Some(PrincipalKindRec::ServicePrincipal))?;
                let v: Vec<_> = ps.iter().map(|p| serde_json::json!({"appId": p.app_id, "objectId": p.object_id, "displayName": p.display_name, "tenantId": p.tenant_id})).collect();
                print(output, &serde_json::json!(v), || {
                    for p in &ps {
                        println!(
                            "{}  {}  {}",
                            p.app_id.as_deref().unwrap_or(""),
                            p.object_id,
                            p.display_name
                        );
                    }
                });
                Ok(())
            }
            SpCmd::Delete { dir, tenant, id } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                directory::delete_service_principal(store.as_ref(), OPERATOR, &tenant, &id)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("deleted service principal {id}");
                Ok(())
            }
            SpCmd::ResetSecret {
                dir,
                tenant,
                id,
                output,
            } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                let sp = directory::reset_secret(store.as_ref(), OPERATOR, &tenant, &id)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let v = serde_json::json!({"appId": id, "objectId": sp.principal.object_id, "tenantId": tenant, "password": sp.secret});
                print(output, &v, || {
                    println!(
                        "new password {}\n(the password is shown only once)",
                        sp.secret
                    )
                });
                Ok(())
            }
        },
        Cmd::User { cmd } => match cmd {
            UserCmd::Mfa { cmd } => mfa_cli::mfa_cmd(cmd),
            UserCmd::Create {
                dir,
                tenant,
                upn,
                password,
                display_name,
                output,
            } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                let name = display_name
                    .unwrap_or_else(|| upn.split('@').next().unwrap_or(&upn).to_string());
                let u = directory::create_user(
                    store.as_ref(),
                    OPERATOR,
                    &tenant,
                    &upn,
                    &name,
                    &password,
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                let v = serde_json::json!({"objectId": u.object_id, "userPrincipalName": u.upn, "tenantId": u.tenant_id, "displayName": u.display_name});
                print(output, &v, || {
                    println!("user {} created, object id {}", upn, u.object_id)
                });
                Ok(())
            }
            UserCmd::List {
                dir,
                tenant,
                output,
            } => {
                let store = DataDir::new(&dir.data_dir).open_store()?;
                tenant_exists(store.as_ref(), &tenant)?;
                let ps = store.list_principals(&tenant, Some(PrincipalKindRec::User))?;
                let v: Vec<_> = ps.iter().map(|p| serde_json::json!({"objectId": p.object_id, "userPrincipalName": p.upn, "displayName": p.display_name, "tenantId": p.tenant_id})).collect();
                print(output, &serde_json::json!(v), || {
                    for p in &ps {
                        println!(
                            "{}  {}  {}",
                            p.upn.as_deref().unwrap_or(""),
                            p.object_id,
                            p.display_name
                        );
                    }
                });
                Ok(())
            }
        },
        Cmd::Audit {
            cmd: AuditCmd::Verify { dir },
        } => {
            let d = DataDir::new(&dir.data_dir);
            let store = d.open_store()?;
            let key = platform::audit_public_key(&d, store.as_ref())?;
            match ciel_audit::verify(store.as_ref(), &key, Some(&d.checkpoint_file()))? {
                Verdict::Intact {
                    entries,
                    checkpoints,
                    pruned_through,
                } => {
                    if pruned_through > 0 {
                        println!("audit chain ok: {entries} entries after the retention anchor at entry {pruned_through}, {checkpoints} signed checkpoints verified");
                    } else {
                        println!("audit chain ok: {entries} entries, {checkpoints} signed checkpoints verified");
                    }
                    Ok(())
                }
                Verdict::Broken { seq, reason } => {
                    eprintln!("audit chain BROKEN at entry {seq}: {reason}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Audit {
            cmd:
                AuditCmd::Prune {
                    dir,
                    config,
                    dry_run,
                },
        } => {
            let d = DataDir::new(&dir.data_dir);
            let cfg = config::Config::load(config.as_deref(), &d.root)?;
            let store = d.open_store()?;
            let now = ciel_core::time::now_unix();
            let days = cfg.audit_retention_days;
            match ciel_audit::prune(store.as_ref(), now, days, OPERATOR, dry_run)? {
                Some(r) if dry_run => println!(
                    "would prune the audit entries through {} (signed checkpoint of {}), older than {days} days",
                    r.through_seq, r.anchor_ts
                ),
                Some(r) => println!(
                    "pruned {} audit entries through {} (anchor: the signed checkpoint of {}); retention {days} days",
                    r.deleted, r.through_seq, r.anchor_ts
                ),
                None => println!("nothing to prune: no signed checkpoint is older than {days} days"),
            }
            Ok(())
        }
        Cmd::Audit {
            cmd: AuditCmd::Export { dir, tenant, from },
        } => {
            let d = DataDir::new(&dir.data_dir);
            let store = d.open_store()?;
            let key = platform::audit_public_key(&d, store.as_ref())?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = ciel_audit::export::export(
                store.as_ref(),
                &tenant,
                from,
                &hex::encode(&key),
                |line| {
                    use std::io::Write;
                    serde_json::to_writer(&mut out, line)?;
                    out.write_all(b"\n")
                },
            )?;
            use std::io::Write;
            out.flush()?;
            eprintln!("exported {n} entries of tenant {tenant}");
            Ok(())
        }
        Cmd::Audit {
            cmd: AuditCmd::VerifyExport { file, public_key },
        } => {
            let key_text = match std::fs::read_to_string(&public_key) {
                Ok(t) => t,
                Err(_) => public_key.clone(),
            };
            let key = hex::decode(key_text.trim()).map_err(|_| {
                anyhow::anyhow!("the public key is neither hex nor a readable file")
            })?;
            let text = std::fs::read_to_string(&file)?;
            match ciel_audit::export::verify_export(&text, &key) {
                Ok(s) => {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                    Ok(())
                }
                Err(reason) => {
                    eprintln!("audit export BROKEN: {reason}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Compliance { cmd } => compliance_cli::run(cmd),
        Cmd::Sovereignty { dir, config } => {
            let d = DataDir::new(&dir.data_dir);
            let cfg = config::Config::load(config.as_deref(), &d.root)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&sovereignty::statement(&cfg, &d))?
            );
            Ok(())
        }
        Cmd::Keys {
            cmd: KeysCmd::Rotate { dir },
        } => {
            let d = DataDir::new(&dir.data_dir);
            let store = d.open_store()?;
            let master = Arc::new(platform::master_key(&d, store.as_ref())?);
            let ring = KeyRing::new(store, master).map_err(|e| anyhow::anyhow!("{e}"))?;
            let kid = ring.rotate(OPERATOR).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "new signing key {kid}; the previous key stays published until its tokens expire"
            );
            Ok(())
        }
        Cmd::Keys {
            cmd:
                KeysCmd::SplitMaster {
                    dir,
                    shares,
                    threshold,
                    out,
                    remove_key_file,
                },
        } => master_shares::split_master_cli(
            &DataDir::new(&dir.data_dir),
            shares,
            threshold,
            &out,
            remove_key_file,
        ),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn up(
    dir: DirArg,
    domain: Option<String>,
    listen: Option<std::net::SocketAddr>,
    config: Option<PathBuf>,
    log_json: bool,
) -> Result<()> {
    let d = DataDir::new(&dir.data_dir);
    let mut cfg = config::Config::load(config.as_deref(), &d.root)?;
    if let Some(x) = domain {
        cfg.domain = x;
    }
    if let Some(l) = listen {
        cfg.listen = l;
    }
    let json_logs = log_json || cfg.log_format == "json";
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CIEL_LOG").unwrap_or_else(|_| "info".into());
    if json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
    d.create()?;
    // Held until `up` returns: one serving process per data directory.
    let _serving = d.lock_for_serving()?;
    let store: ciel_store::Store = Arc::new(
        ciel_store::sqlite::SqliteStore::open(&d.db()).context("opening the metadata store")?,
    );
    let master = Arc::new(platform::master_key(&d, store.as_ref())?);
    let signer = platform::audit_signer(&d, store.as_ref(), &master)?;
    tls::ensure(&d.tls(), &cfg.domain)?;
    let tls_cfg = tls::server_config(&d.tls(), &cfg.tls.min_version)?;
    // Before the listener exists, so that no upload is in flight: the byte store loses what a
    // crash left behind (objects no record refers to, partial writes, deleted accounts' files).
    // It never fails the start; what it cannot do is logged and left in place.
    ciel_storage::blob::gc::collect_garbage(store.as_ref(), &d.blobs());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
        if cfg.listen.port() == 0 && cfg.public_port.is_none() {
            cfg.public_port = Some(listener.local_addr()?.port());
        }
        // `*.localhost` names resolve to ::1 as well as 127.0.0.1, and some clients (Go's resolver,
        // so rclone and azcopy) try only the IPv6 one: on the IPv4 loopback, serve the IPv6
        // loopback too, on the same port.
        let listener_v6 = if cfg.listen.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
            let port = listener.local_addr()?.port();
            tokio::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)).await.ok()
        } else {
            None
        };
        let endpoints = Endpoints::new(&cfg.domain, cfg.port());
        let auditor = Auditor::new(store.clone(), signer, d.checkpoint_file());
        let ring = KeyRing::new(store.clone(), master.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        ring.ensure_active("system:startup").map_err(|e| anyhow::anyhow!("{e}"))?;
        let boot = platform::bootstrap(store.as_ref(), &cfg.domain)?;
        // Keys rotated by `ciel keys rotate` (another process) are picked up within seconds.
        let reloader = {
            let ring = ring.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    let r = ring.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || r.reload()).await {
                        tracing::error!(error = %e, "reloading the signing keys failed");
                    }
                }
            })
        };
        let mfa = ciel_identity::mfa::Mfa::new(store.clone(), master.clone(), format!("Ciel {}", cfg.domain));
        let tokens = TokenService::new(store.clone(), ring, mfa, endpoints.clone());
        tokens.devices.set_lifetime(cfg.device_code_lifetime_secs);
        // Opening an HSM loads its module and logs in: a failure stops the start, clearly.
        let custody = {
            let (c, m) = (cfg.keyvault.custody.clone(), master.clone());
            tokio::task::spawn_blocking(move || ciel_keyvault::custody::open(&c, m))
                .await?
                .map_err(|e| anyhow::anyhow!("opening the key custody backend: {e}"))?
        };
        let vault = Arc::new(ciel_keyvault::data::KeyVaultService {
            store: store.clone(),
            tokens: tokens.clone(),
            custody: custody.clone(),
            endpoints: endpoints.clone(),
        });
        // Storage uses customer-managed keys through Key Vault, in process.
        let cmk: Arc<dyn ciel_arm::cmk::CustomerKeys> = Arc::new(ciel_keyvault::cmk::KeyVaultCmk { svc: vault.clone() });
        let arm = Arc::new(ciel_arm::Arm {
            store: store.clone(),
            tokens: tokens.clone(),
            auditor: auditor.clone(),
            endpoints: endpoints.clone(),
            providers: vec![
                ciel_storage::StorageProvider::new(store.clone(), master.clone(), endpoints.clone(), d.blobs(), Some(cmk.clone())),
                ciel_keyvault::KeyVaultProvider::new(store.clone(), custody.clone(), endpoints.clone()),
                Arc::new(ciel_arm::customer_lockbox::CustomerLockboxProvider { store: store.clone() }),
            ],
        });
        let purger = ciel_keyvault::spawn_sweeper(vault.clone());
        let blob = Arc::new(ciel_storage::blob::BlobService {
            store: store.clone(),
            master: master.clone(),
            tokens: tokens.clone(),
            endpoints: endpoints.clone(),
            root: d.blobs(),
            cmk: Some(cmk),
            cmk_check: std::time::Duration::from_secs(cfg.cmk_check_secs),
            cmk_cache: Default::default(),
        });
        let compliance = {
            let target = compliance_cli::own_target(&cfg.domain, cfg.port(), listener.local_addr()?);
            Arc::new(compliance_cli::Live {
                data_dir: d.root.clone(),
                master: master.clone(),
                sovereignty: sovereignty::statement(&cfg, &d),
                tls_min_version: cfg.tls.min_version.clone(),
                audit_retention_days: cfg.audit_retention_days,
                deployment: compliance_cli::deployment(&cfg, &d, std::slice::from_ref(&target)),
                target,
            })
        };
        let export = Arc::new(export_api::ExportEnv {
            master: master.clone(),
            custody: custody.clone(),
            blob_root: d.blobs(),
            work_dir: d.root.join("exports"),
            ca_pem: std::fs::read(d.tls().join("ca.pem")).ok(),
        });
        let app = Arc::new(http::App {
            export,
            compliance,
            arm,
            blob,
            vault,
            tokens,
            store: store.clone(),
            endpoints: endpoints.clone(),
            metrics: http::metrics::Metrics::new(),
            max_body: cfg.max_body_bytes,
            sovereignty: sovereignty::statement(&cfg, &d),
        });
        write_env(&d, &endpoints, &boot)?;
        auditor
            .record(ciel_core::audit::AuditDraft {
                actor: "system".into(),
                action: "platform/start".into(),
                target: endpoints.management(),
                outcome: "success".into(),
                details: serde_json::json!({"version": env!("CARGO_PKG_VERSION"), "listen": cfg.listen.to_string()}),
                ..Default::default()
            })
            .await?;
        let checkpointer = auditor.spawn_checkpointer(std::time::Duration::from_secs(cfg.audit_checkpoint_secs.max(1)));
        let pruner = auditor.spawn_pruner(std::time::Duration::from_secs(6 * 3600), cfg.audit_retention_days);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server_v6 = listener_v6.map(|l| tokio::spawn(http::server::serve(l, tls_cfg.clone(), app.clone(), stop_rx.clone())));
        let server = tokio::spawn(http::server::serve(listener, tls_cfg, app, stop_rx));
        let env_path = d.env_file();
        let ca = d.tls().join("ca.pem");
        println!("Ciel {} — sovereign cloud, regions francecentral and francesouth", env!("CARGO_PKG_VERSION"));
        println!("  Resource Manager  {}", endpoints.management());
        println!("  Login             {}", endpoints.login());
        println!("  CA certificate    {}", ca.display());
        println!("  Client settings   source {}", env_path.display());
        println!();
        println!("  az cloud register -n Ciel --endpoint-resource-manager {}", endpoints.management());
        println!("  az cloud set -n Ciel && az config set core.instance_discovery=false");
        println!("  az login --service-principal -u {} -p \"$AZURE_CLIENT_SECRET\" --tenant {}", boot.client_id, boot.tenant_id);
        println!();
        println!("ciel ready: listening on https://{} (tenant {}, subscription {})", cfg.listen, boot.tenant_id, boot.subscription_id);
        use std::io::Write;
        std::io::stdout().flush()?;

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
        }
        let _ = stop_tx.send(true);
        let _ = server.await;
        if let Some(s) = server_v6 {
            let _ = s.await;
        }
        checkpointer.abort();
        pruner.abort();
        purger.abort();
        reloader.abort();
        auditor
            .record(ciel_core::audit::AuditDraft {
                actor: "system".into(),
                action: "platform/stop".into(),
                target: endpoints.management(),
                outcome: "success".into(),
                ..Default::default()
            })
            .await?;
        let a = auditor.clone();
        tokio::task::spawn_blocking(move || a.checkpoint()).await??;
        tracing::info!("stopped cleanly");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

fn write_env(d: &DataDir, e: &Endpoints, boot: &platform::Bootstrap) -> Result<()> {
    let existing = platform::read_env_file(&d.env_file());
    let secret = match (&boot.client_secret, existing.get("AZURE_CLIENT_SECRET")) {
        (Some(s), _) => s.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => bail!(
            "{} lost the admin secret; create a new one with `ciel sp reset-secret --tenant {} --id {}`",
            d.env_file().display(),
            boot.tenant_id,
            boot.client_id
        ),
    };
    let ca = std::fs::canonicalize(d.tls().join("ca.pem"))?;
    let ca = ca.display().to_string();
    let lines = [
        ("AZURE_TENANT_ID", boot.tenant_id.clone()),
        ("AZURE_CLIENT_ID", boot.client_id.clone()),
        ("AZURE_CLIENT_SECRET", secret),
        ("AZURE_SUBSCRIPTION_ID", boot.subscription_id.clone()),
        ("AZURE_AUTHORITY_HOST", e.login()),
        ("AZURE_CORE_INSTANCE_DISCOVERY", "false".into()),
        ("CIEL_ARM_ENDPOINT", e.management()),
        ("CIEL_GRAPH_ENDPOINT", e.graph()),
        ("CIEL_DOMAIN", e.domain.clone()),
        ("CIEL_STORAGE_SUFFIX", e.storage_suffix()),
        ("CIEL_KEYVAULT_SUFFIX", e.keyvault_suffix()),
        ("REQUESTS_CA_BUNDLE", ca.clone()),
        ("SSL_CERT_FILE", ca),
    ];
    let mut s = String::from("# Ciel client settings: `source` this file, then use az, the Azure SDKs, rclone or azcopy.\n");
    for (k, v) in lines {
        s.push_str(&format!("export {k}={}\n", shell_quote(&v)));
    }
    platform::write_private(&d.env_file(), s.as_bytes())
}
