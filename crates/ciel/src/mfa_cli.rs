//! `ciel user mfa enroll|confirm|status|reset` and `ciel tenant update --require-mfa`: the
//! operator's hands on users' second factors and tenants' MFA policy, on the host (the same
//! services the HTTP APIs use, so the same audit entries).

use crate::platform::{self, DataDir};
use crate::{print, DirArg, Output, OPERATOR};
use anyhow::{anyhow, Result};
use ciel_identity::mfa::{Mfa, MfaAttempt};
use ciel_identity::token::MfaPolicy;
use ciel_store::{MetadataStore, PrincipalKindRec};
use clap::{Args, Subcommand};
use serde_json::json;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum MfaCmd {
    /// Enrol a new TOTP factor for a user (replacing any other); the secret is shown once. It
    /// protects the account once confirmed by a first code (`confirm`, or the device-login page).
    Enroll(UserArg),
    /// Confirm a new factor with a first code of the user's app.
    Confirm {
        #[command(flatten)]
        user: UserArg,
        #[arg(long)]
        code: String,
    },
    /// Whether a user has a factor, confirmed or not, locked or not.
    Status(UserArg),
    /// Remove a user's factor (lost phone); with a tenant policy, the user enrols again at the
    /// next sign-in.
    Reset(UserArg),
}

#[derive(Args)]
pub struct UserArg {
    #[command(flatten)]
    dir: DirArg,
    /// The user's principal name.
    #[arg(long)]
    upn: String,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(Args)]
pub struct TenantUpdateArgs {
    #[command(flatten)]
    dir: DirArg,
    #[arg(long)]
    tenant: String,
    /// Who must sign in with a second factor: `admins` (Owner, Contributor or User Access
    /// Administrator anywhere in the tenant), `all`, or `off`.
    #[arg(long)]
    require_mfa: String,
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

fn attempt() -> MfaAttempt<'static> {
    MfaAttempt {
        actor: OPERATOR,
        request_id: None,
        client_ip: None,
    }
}

fn open(dir: &DirArg) -> Result<(ciel_store::Store, Arc<Mfa>)> {
    let d = DataDir::new(&dir.data_dir);
    let store = d.open_store()?;
    let master = Arc::new(platform::master_key(&d, store.as_ref())?);
    let domain = crate::config::Config::load(None, &d.root)?.domain;
    let mfa = Mfa::new(store.clone(), master, format!("Ciel {domain}"));
    Ok((store, mfa))
}

fn user(store: &dyn MetadataStore, upn: &str) -> Result<ciel_store::Principal> {
    store
        .find_user_by_upn(upn)
        .ok()
        .filter(|p| p.kind == PrincipalKindRec::User)
        .ok_or_else(|| anyhow!("no user {upn}"))
}

pub fn mfa_cmd(cmd: MfaCmd) -> Result<()> {
    match cmd {
        MfaCmd::Enroll(a) => {
            let (store, mfa) = open(&a.dir)?;
            let u = user(store.as_ref(), &a.upn)?;
            let e = mfa
                .enroll(&u.object_id, Some(&u.tenant_id), &a.upn, &attempt())
                .map_err(|e| anyhow!("{e}"))?;
            let v = json!({"objectId": u.object_id, "userPrincipalName": a.upn, "secret": e.secret,
                "otpauthUri": e.otpauth_uri, "digits": e.digits, "period": e.period, "algorithm": e.algorithm, "confirmed": false});
            print(a.output, &v, || {
                println!("secret {}\n{}\n(shown only once; the factor protects the account once a first code confirms it)", e.secret, e.otpauth_uri)
            });
            Ok(())
        }
        MfaCmd::Confirm { user: a, code } => {
            let (store, mfa) = open(&a.dir)?;
            let u = user(store.as_ref(), &a.upn)?;
            mfa.verify(&u.object_id, &code, &attempt())
                .map_err(|e| anyhow!("{e}"))?;
            print(
                a.output,
                &json!({"objectId": u.object_id, "confirmed": true}),
                || println!("second factor of {} confirmed", a.upn),
            );
            Ok(())
        }
        MfaCmd::Status(a) => {
            let (store, mfa) = open(&a.dir)?;
            let u = user(store.as_ref(), &a.upn)?;
            let s = mfa.status(&u.object_id).map_err(|e| anyhow!("{e}"))?;
            let v = json!({"objectId": u.object_id, "userPrincipalName": a.upn, "enrolled": s.enrolled,
                "confirmed": s.confirmed, "lockedUntil": s.locked_until});
            print(a.output, &v, || {
                println!(
                    "{}: enrolled {}, confirmed {}, locked until {}",
                    a.upn,
                    s.enrolled,
                    s.confirmed,
                    s.locked_until.map(|t| t.to_string()).unwrap_or("-".into())
                )
            });
            Ok(())
        }
        MfaCmd::Reset(a) => {
            let (store, mfa) = open(&a.dir)?;
            let u = user(store.as_ref(), &a.upn)?;
            mfa.reset(&u.object_id, &attempt())
                .map_err(|e| anyhow!("{e}"))?;
            print(
                a.output,
                &json!({"objectId": u.object_id, "enrolled": false}),
                || println!("second factor of {} removed", a.upn),
            );
            Ok(())
        }
    }
}

/// Records a tenant's MFA policy with its audit entry.
pub fn set_policy(
    store: &dyn MetadataStore,
    tenant: &str,
    policy: MfaPolicy,
    actor: &str,
    request_id: Option<String>,
    client_ip: Option<String>,
) -> std::result::Result<(), ciel_store::StoreError> {
    let d = ciel_core::audit::AuditDraft {
        tenant_id: Some(tenant.to_string()),
        actor: actor.to_string(),
        action: "identity/mfa/policy/write".into(),
        target: tenant.to_string(),
        outcome: "success".into(),
        details: json!({"requireMfa": policy.as_str()}),
        request_id,
        client_ip,
    };
    store.put_tenant_mfa_policy(tenant, policy.as_str(), actor, &d)
}

pub fn tenant_update(a: TenantUpdateArgs) -> Result<()> {
    let policy = MfaPolicy::parse(&a.require_mfa)
        .ok_or_else(|| anyhow!("--require-mfa must be admins, all or off"))?;
    let store = DataDir::new(&a.dir.data_dir).open_store()?;
    crate::tenant_exists(store.as_ref(), &a.tenant)?;
    set_policy(store.as_ref(), &a.tenant, policy, OPERATOR, None, None)?;
    print(
        a.output,
        &json!({"tenantId": a.tenant, "requireMfa": policy.as_str()}),
        || println!("tenant {}: MFA required for {}", a.tenant, policy.as_str()),
    );
    Ok(())
}
