//! `ciel operator …`: the operator directory on the host (create, list, disable, enable,
//! reset-mfa) and the break-glass path. Approving a lockbox request is deliberately absent: only
//! the tenant decides, through its own API (`Microsoft.CustomerLockbox/requests/updateApproval`),
//! since whoever runs the host is the operator whose access is being controlled.
//!
//! Break-glass (the tenant cannot answer in time): two distinct operators each give their current
//! TOTP code, and an incident reference is required. The grant is written as `Approved` with the
//! break-glass marker, a loud audit entry of the tenant records it (so the tenant sees it in its
//! lockbox list, its activity log and its audit export), and an error-level log line is written.

use crate::platform::DataDir;
use anyhow::{anyhow, bail, Result};
use ciel_core::audit::AuditDraft;
use ciel_identity::lockbox::{ACCESS_KINDS, MAX_DURATION_SECS, MIN_DURATION_SECS};
use ciel_identity::mfa::{Mfa, MfaAttempt};
use ciel_identity::operators::subject;
use ciel_identity::token::TokenService;
use ciel_store::{LockboxRequestRec, Store};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Clone)]
pub struct OpDir {
    /// Data directory of the deployment.
    #[arg(long, default_value = ".ciel", env = "CIEL_DATA_DIR")]
    data_dir: PathBuf,
    /// Configuration file (TOML); default DIR/ciel.toml when present (for the domain the
    /// authenticator app shows).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, value_enum, default_value = "table")]
    output: crate::Output,
}

#[derive(Subcommand)]
pub enum OperatorCmd {
    /// Add an operator: prints a one-time initial password and the TOTP enrolment (secret and
    /// otpauth URI); the first sign-in with a code confirms the factor.
    Create {
        name: String,
        #[command(flatten)]
        dir: OpDir,
    },
    /// Operators, their state and whether their second factor is confirmed.
    List {
        #[command(flatten)]
        dir: OpDir,
    },
    /// Refuse an operator's sign-in and tokens from now on.
    Disable {
        name: String,
        #[command(flatten)]
        dir: OpDir,
    },
    Enable {
        name: String,
        #[command(flatten)]
        dir: OpDir,
    },
    /// Replace an operator's second factor (lost device): prints the new enrolment.
    ResetMfa {
        name: String,
        #[command(flatten)]
        dir: OpDir,
    },
    /// Sign in as an operator (password and TOTP code) and print the operator token, for
    /// `az rest --headers "Authorization=Bearer $(ciel operator login ...)"` or an SDK.
    Login(Login),
    /// Emergency access when the tenant cannot answer: two operators' TOTP codes and an
    /// incident reference; the tenant is told through its lockbox list, activity log and audit.
    BreakGlass(BreakGlass),
}

#[derive(Args)]
pub struct Login {
    /// The login endpoint, e.g. https://login.ciel.example:8443
    #[arg(long, env = "CIEL_LOGIN_URL")]
    url: String,
    #[arg(long)]
    name: String,
    /// Read from standard input when absent.
    #[arg(long, env = "CIEL_OPERATOR_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The current TOTP code; read from standard input when absent.
    #[arg(long, env = "CIEL_OPERATOR_CODE", hide_env_values = true)]
    code: Option<String>,
    /// PEM file of the CA to trust (the private CA of a Ciel deployment: DIR/tls/ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Also write the token to this file (mode 0600).
    #[arg(long)]
    save: Option<PathBuf>,
}

#[derive(Args)]
pub struct BreakGlass {
    #[command(flatten)]
    dir: OpDir,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    subscription: String,
    /// Resource id the access is limited to (default: the subscription).
    #[arg(long)]
    scope: Option<String>,
    #[arg(long)]
    reason: String,
    /// Seconds (at most 8 hours).
    #[arg(long)]
    duration: i64,
    /// Comma-separated access kinds: blob.read, secret.read, key.operations.
    #[arg(long)]
    access: String,
    /// The incident reference (ticket) that justifies the emergency.
    #[arg(long)]
    incident: String,
    /// The operator who will use the access, and their current TOTP code.
    #[arg(long)]
    operator: String,
    #[arg(long, env = "CIEL_OPERATOR_CODE", hide_env_values = true)]
    code: String,
    /// A second, distinct operator who confirms, and their current TOTP code.
    #[arg(long)]
    second_operator: String,
    #[arg(long, env = "CIEL_SECOND_OPERATOR_CODE", hide_env_values = true)]
    second_code: String,
}

fn host_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("host:{user}")
}

fn open(dir: &OpDir) -> Result<(Store, Arc<TokenService>)> {
    let d = DataDir::new(&dir.data_dir);
    let cfg = crate::config::Config::load(dir.config.as_deref(), &d.root)?;
    let store = d.open_store()?;
    let master = Arc::new(crate::platform::master_key(&d, store.as_ref())?);
    let ring = ciel_identity::keys::KeyRing::new(store.clone(), master.clone())
        .map_err(|e| anyhow!("{e}"))?;
    let mfa = Mfa::new(store.clone(), master, format!("Ciel {}", cfg.domain));
    let endpoints = ciel_core::config::Endpoints::new(&cfg.domain, cfg.port());
    Ok((
        store.clone(),
        TokenService::new(store, ring, mfa, endpoints),
    ))
}

fn show(output: crate::Output, v: &serde_json::Value, table: impl FnOnce()) {
    crate::print(output, v, table)
}

pub fn run(cmd: OperatorCmd) -> Result<()> {
    let actor = host_actor();
    match cmd {
        OperatorCmd::Create { name, dir } => {
            let (store, tokens) = open(&dir)?;
            let c = tokens
                .create_operator(store.as_ref(), &name, &actor)
                .map_err(|e| anyhow!("{e}"))?;
            let v = serde_json::to_value(&c)?;
            show(dir.output, &v, || {
                println!("operator {} created (id {})", c.name, c.id);
                println!("initial password: {}", c.password);
                println!("TOTP secret:      {}", c.totp.secret);
                println!("otpauth URI:      {}", c.totp.otpauth_uri);
                println!("(shown only once; the first sign-in with a code confirms the factor)");
            });
        }
        OperatorCmd::List { dir } => {
            let (store, tokens) = open(&dir)?;
            let l = tokens
                .list_operators(store.as_ref())
                .map_err(|e| anyhow!("{e}"))?;
            show(dir.output, &serde_json::to_value(&l)?, || {
                for o in &l {
                    println!(
                        "{}  {}  {}  mfa:{}",
                        o.name,
                        o.id,
                        if o.disabled { "disabled" } else { "enabled" },
                        if o.mfa.confirmed {
                            "confirmed"
                        } else if o.mfa.enrolled {
                            "unconfirmed"
                        } else {
                            "none"
                        }
                    );
                }
            });
        }
        OperatorCmd::Disable { name, dir } => {
            let (store, tokens) = open(&dir)?;
            tokens
                .set_operator_disabled(store.as_ref(), &name, true, &actor)
                .map_err(|e| anyhow!("{e}"))?;
            show(dir.output, &json!({"name": name, "disabled": true}), || {
                println!("operator {name} disabled")
            });
        }
        OperatorCmd::Enable { name, dir } => {
            let (store, tokens) = open(&dir)?;
            tokens
                .set_operator_disabled(store.as_ref(), &name, false, &actor)
                .map_err(|e| anyhow!("{e}"))?;
            show(
                dir.output,
                &json!({"name": name, "disabled": false}),
                || println!("operator {name} enabled"),
            );
        }
        OperatorCmd::ResetMfa { name, dir } => {
            let (store, tokens) = open(&dir)?;
            let e = tokens
                .reset_operator_mfa(store.as_ref(), &name, &actor)
                .map_err(|e| anyhow!("{e}"))?;
            show(dir.output, &serde_json::to_value(&e)?, || {
                println!("new TOTP secret: {}", e.secret);
                println!("otpauth URI:     {}", e.otpauth_uri);
            });
        }
        OperatorCmd::BreakGlass(b) => break_glass(b, &actor)?,
        OperatorCmd::Login(l) => login(l)?,
    }
    Ok(())
}

fn break_glass(b: BreakGlass, actor: &str) -> Result<()> {
    let (store, tokens) = open(&b.dir)?;
    if b.operator.eq_ignore_ascii_case(&b.second_operator) {
        bail!("break-glass needs two distinct operators");
    }
    if !(MIN_DURATION_SECS..=MAX_DURATION_SECS).contains(&b.duration) {
        bail!("--duration must be between {MIN_DURATION_SECS} and {MAX_DURATION_SECS} seconds");
    }
    if b.incident.trim().is_empty() || b.reason.trim().is_empty() {
        bail!("--incident and --reason are required");
    }
    let mut access: Vec<String> = b.access.split(',').map(|s| s.trim().to_string()).collect();
    access.sort();
    access.dedup();
    if access.iter().any(|a| !ACCESS_KINDS.contains(&a.as_str())) {
        bail!("--access takes {}", ACCESS_KINDS.join(", "));
    }
    let sub = store
        .get_subscription(&b.subscription)
        .ok()
        .filter(|s| s.tenant_id == b.tenant)
        .ok_or_else(|| {
            anyhow!(
                "subscription {} is not a subscription of tenant {}",
                b.subscription,
                b.tenant
            )
        })?;
    let scope = b
        .scope
        .clone()
        .unwrap_or_else(|| format!("/subscriptions/{}", sub.id));
    let scope_id = ciel_core::ResourceId::parse(&scope)
        .filter(|i| i.subscription.eq_ignore_ascii_case(&sub.id))
        .ok_or_else(|| anyhow!("--scope must be a resource id within the subscription"))?;
    // Both operators prove presence with their own factor (each code is consumed: no replay).
    for (name, code) in [(&b.operator, &b.code), (&b.second_operator, &b.second_code)] {
        let op = store
            .get_operator(name)
            .map_err(|_| anyhow!("no operator named {name}"))?;
        if op.disabled {
            bail!("operator {name} is disabled");
        }
        tokens
            .mfa
            .verify(
                &subject(name),
                code,
                &MfaAttempt {
                    actor: &subject(name),
                    request_id: None,
                    client_ip: None,
                },
            )
            .map_err(|e| anyhow!("operator {name}: {e}"))?;
    }
    let now = ciel_core::time::now_unix();
    let r = LockboxRequestRec {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: b.tenant.clone(),
        subscription_id: sub.id.clone(),
        operator: b.operator.to_ascii_lowercase(),
        scope: scope_id.to_string(),
        access,
        justification: b.reason.clone(),
        duration_secs: b.duration,
        status: "Approved".into(),
        created: now,
        decided: Some(now),
        decided_by: Some(format!(
            "break-glass:{}+{}",
            subject(&b.operator),
            subject(&b.second_operator)
        )),
        decision_reason: Some(format!("BREAK-GLASS incident {}", b.incident)),
        expires: now + b.duration,
        break_glass: true,
        incident: Some(b.incident.clone()),
    };
    let d = AuditDraft {
        tenant_id: Some(r.tenant_id.clone()),
        actor: format!("{actor}/{}", subject(&b.operator)),
        action: "Microsoft.CustomerLockbox/requests/breakGlass/action".into(),
        target: ciel_arm::customer_lockbox::request_id_path(&r),
        outcome: "success".into(),
        details: json!({
            "BREAK_GLASS": true, "lockboxRequestId": r.id, "operator": r.operator,
            "confirmedBy": subject(&b.second_operator), "incident": r.incident,
            "scope": r.scope, "accessTypes": r.access, "durationSeconds": r.duration_secs,
            "reason": r.justification,
        }),
        request_id: Some(r.id.clone()),
        client_ip: None,
    };
    store.put_lockbox_request(&r, &d)?;
    // Loud on purpose: this is read by whoever watches the platform's logs.
    eprintln!(
        "BREAK-GLASS: operator {} (confirmed by {}) has {} on {} of tenant {} until {} — incident {}",
        b.operator,
        b.second_operator,
        r.access.join(","),
        r.scope,
        r.tenant_id,
        ciel_core::time::unix_to_rfc3339(r.expires),
        b.incident
    );
    tracing::error!(lockbox_request = %r.id, tenant = %r.tenant_id, operator = %r.operator, incident = %b.incident, "break-glass access granted");
    let v = ciel_arm::customer_lockbox::request_json(&r, now);
    crate::print(b.dir.output, &v, || {
        println!(
            "break-glass grant {} until {}",
            r.id,
            ciel_core::time::unix_to_rfc3339(r.expires)
        )
    });
    Ok(())
}

fn read_line(prompt: &str) -> Result<String> {
    use std::io::Write;
    eprint!("{prompt}: ");
    std::io::stderr().flush()?;
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// A client of the operator token endpoint, like any other: nothing here touches the data
/// directory, so it runs from an operator's workstation.
fn login(l: Login) -> Result<()> {
    let password = match l.password {
        Some(p) => p,
        None => read_line("password")?,
    };
    let code = match l.code {
        Some(c) => c,
        None => read_line("TOTP code")?,
    };
    let mut b = reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(ca) = &l.ca {
        let pem = std::fs::read(ca).map_err(|e| anyhow!("reading {}: {e}", ca.display()))?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).map_err(|e| anyhow!("{}: {e}", ca.display()))?,
        );
    }
    let client = b.build().map_err(|e| anyhow!("HTTP client: {e}"))?;
    let url = format!(
        "{}/operators/oauth2/v2.0/token",
        l.url.trim_end_matches('/')
    );
    let r = client
        .post(&url)
        .form(&[
            ("grant_type", "password"),
            ("username", l.name.as_str()),
            ("password", password.as_str()),
            ("totp_code", code.trim()),
        ])
        .send()
        .map_err(|e| anyhow!("{url}: {e}"))?;
    let status = r.status();
    let text = r.text().map_err(|e| anyhow!("{url}: {e}"))?;
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| anyhow!("{url} answered {status} without JSON"))?;
    let Some(token) = body["access_token"]
        .as_str()
        .filter(|_| status.is_success())
    else {
        bail!(
            "sign-in refused ({status}): {}",
            body["error_description"]
                .as_str()
                .unwrap_or("no description")
        );
    };
    if let Some(path) = &l.save {
        crate::platform::write_private(path, token.as_bytes())?;
    }
    println!("{token}");
    Ok(())
}
