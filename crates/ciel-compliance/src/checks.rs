//! The checks: each looks at the live deployment (the data directory through the store, the
//! host, the listeners over the network) and returns pass, fail or not yet checkable, with its
//! evidence. A check never passes for want of a capability: when Ciel cannot do or show
//! something yet, the answer is "not yet checkable" (or "fail" when the lack itself breaks
//! the requirement, as for multi-factor authentication).

use crate::tls::{self, Scan, TlsTarget};
use ciel_core::seal::MasterKey;
use ciel_store::{MetadataStore, PrincipalKindRec, Resource};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Pass,
    Fail,
    NotYetCheckable,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub id: String,
    pub status: CheckStatus,
    /// One sentence for the report, in English (the evidence says the rest).
    pub summary: String,
    pub evidence: Value,
    pub started_at: String,
    pub finished_at: String,
}

/// A check's name and what it looks at, for the report.
pub struct CheckDef {
    pub id: &'static str,
    pub fr: &'static str,
    pub en: &'static str,
}

pub const CHECKS: &[CheckDef] = &[
    CheckDef { id: "tls.protocols", fr: "Versions de TLS réellement offertes par chaque point d'écoute (sondées)", en: "TLS versions each listener really offers (probed)" },
    CheckDef { id: "tls.cipher_suites", fr: "Suites cryptographiques réellement acceptées par chaque point d'écoute (sondées)", en: "Cipher suites each listener really accepts (probed)" },
    CheckDef { id: "tls.certificates", fr: "La chaîne servie se vérifie jusqu'à l'AC du répertoire de données, AC d'un État de l'UE", en: "The served chain verifies to the data directory's CA, a CA of an EU state" },
    CheckDef { id: "storage.encryption_at_rest", fr: "Chiffrement au repos de chaque compte de stockage, une clé de données par compte", en: "Encryption at rest of every storage account, one data key per account" },
    CheckDef { id: "keys.custody", fr: "Garde des clés : clé maîtresse, clés scellées, permissions des fichiers, HSM", en: "Key custody: master key, sealed keys, file permissions, HSM" },
    CheckDef { id: "identity.admin_mfa", fr: "Authentification multifacteur des administrateurs", en: "Multi-factor authentication of administrators" },
    CheckDef { id: "identity.lockout", fr: "Blocage des comptes après des échecs d'authentification", en: "Account lockout after failed sign-ins" },
    CheckDef { id: "identity.password_storage", fr: "Mots de passe et secrets stockés sous forme d'empreintes salées", en: "Passwords and secrets stored as salted hashes" },
    CheckDef { id: "audit.chain", fr: "La chaîne d'audit et ses points de contrôle signés se vérifient", en: "The audit chain and its signed checkpoints verify" },
    CheckDef { id: "audit.retention", fr: "Conservation du journal d'audit (au moins six mois)", en: "Audit log retention (at least six months)" },
    CheckDef { id: "clock.sync", fr: "Synchronisation d'horloge configurée sur l'hôte", en: "Clock synchronisation configured on the host" },
    CheckDef { id: "residency.resources", fr: "Chaque groupe de ressources et ressource dans une région française", en: "Every resource group and resource in a French region" },
    CheckDef { id: "residency.replication", fr: "Chaque cible de réplication en France", en: "Every replication target in France" },
    CheckDef { id: "outbound.destinations", fr: "Aucune destination sortante hors UE configurée", en: "No outbound destination outside the EU configured" },
    CheckDef { id: "sovereignty.jurisdiction", fr: "Juridiction déclarée de l'opérateur dans l'UE", en: "Operator's declared jurisdiction in the EU" },
    CheckDef { id: "operator.access_grants", fr: "Accès de l'opérateur aux données uniquement par autorisation approuvée", en: "Operator access to data only through approved grants" },
    CheckDef { id: "drill.restore_test", fr: "Date du dernier test de restauration", en: "Date of the last restore test" },
    CheckDef { id: "drill.export", fr: "Date du dernier exercice d'export (réversibilité)", en: "Date of the last export (reversibility) drill" },
    CheckDef { id: "isolation.tenant_tests", fr: "Résultats des tests de cloisonnement entre locataires", en: "Tenant isolation test results" },
    CheckDef { id: "inventory.software", fr: "Inventaire logiciel de la version en cours d'exécution", en: "Software inventory of the running build" },
];

/// ISO 3166-1 alpha-2 codes of the EU member states (Greece as GR; "EL" is accepted too).
pub const EU: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "EL", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];

/// Tenant isolation results are read from here (relative to the data directory).
pub const ISOLATION_RESULTS: &str = "compliance/tenant-isolation.json";
/// Results older than this are stale.
pub const ISOLATION_MAX_AGE_DAYS: i64 = 90;

/// What the checks look at.
pub struct Context<'a> {
    pub store: &'a dyn MetadataStore,
    /// Lets the encryption check open each account's sealed material (to show each has its own
    /// data key). Without it the check still sees that the material is sealed.
    pub master: Option<&'a MasterKey>,
    pub data_dir: PathBuf,
    pub audit_public_key: Option<Vec<u8>>,
    /// The sovereignty statement of the running configuration (replication targets, outbound
    /// destinations, declared jurisdiction).
    pub sovereignty: Value,
    /// Listeners to scan.
    pub tls_targets: Vec<TlsTarget>,
    /// The configured minimum TLS version ("1.2" or "1.3").
    pub tls_min_version: String,
    /// The configured audit retention, days.
    pub audit_retention_days: u32,
}

type Outcome = (CheckStatus, String, Value);

/// Facts several checks share, gathered once.
struct Shared {
    scans: Vec<Scan>,
    chains: Vec<tls::ChainCheck>,
    audit: Result<ciel_audit::Verdict, String>,
    attestations: Vec<ciel_store::Attestation>,
}

/// Runs every check.
pub fn run_all(ctx: &Context<'_>) -> Vec<CheckResult> {
    let ca = ctx.data_dir.join("tls").join("ca.pem");
    let shared = Shared {
        scans: ctx.tls_targets.iter().map(tls::scan).collect(),
        chains: ctx
            .tls_targets
            .iter()
            .map(|t| tls::verify_chain(t, &ca))
            .collect(),
        audit: match &ctx.audit_public_key {
            Some(k) => ciel_audit::verify(
                ctx.store,
                k,
                Some(&ctx.data_dir.join("audit-checkpoints.jsonl")),
            )
            .map_err(|e| e.to_string()),
            None => Err("no audit public key".into()),
        },
        attestations: ctx.store.list_attestations().unwrap_or_default(),
    };
    CHECKS
        .iter()
        .map(|d| {
            let started_at = ciel_core::time::now_rfc3339();
            let (status, summary, evidence) = run_one(d.id, ctx, &shared);
            CheckResult {
                id: d.id.to_string(),
                status,
                summary,
                evidence,
                started_at,
                finished_at: ciel_core::time::now_rfc3339(),
            }
        })
        .collect()
}

fn run_one(id: &str, ctx: &Context<'_>, sh: &Shared) -> Outcome {
    let r = match id {
        "tls.protocols" => Ok(tls_protocols(ctx, sh)),
        "tls.cipher_suites" => Ok(tls_cipher_suites(sh)),
        "tls.certificates" => Ok(tls_certificates(ctx, sh)),
        "storage.encryption_at_rest" => encryption_at_rest(ctx),
        "keys.custody" => key_custody(ctx),
        "identity.admin_mfa" => admin_mfa(ctx),
        "identity.lockout" => lockout(ctx),
        "identity.password_storage" => password_storage(ctx),
        "audit.chain" => Ok(audit_chain(ctx, sh)),
        "audit.retention" => audit_retention(ctx, sh),
        "clock.sync" => Ok(clock_sync(Path::new("/"))),
        "residency.resources" => residency(ctx),
        "residency.replication" => Ok(replication(ctx)),
        "outbound.destinations" => Ok(outbound(ctx)),
        "sovereignty.jurisdiction" => Ok(jurisdiction(ctx)),
        "operator.access_grants" => operator_access(ctx),
        "drill.restore_test" => Ok(drill(sh, &["12.5.c"], "restore test")),
        "drill.export" => export_drill(ctx, sh),
        "isolation.tenant_tests" => Ok(isolation(ctx)),
        "inventory.software" => Ok(inventory()),
        other => Ok((
            CheckStatus::NotYetCheckable,
            format!("no check named {other}"),
            Value::Null,
        )),
    };
    // A check that could not read what it needs has not shown anything: it fails, with the
    // reason, so that the operator looks (it is never silently a pass).
    r.unwrap_or_else(|e: ciel_store::StoreError| {
        (
            CheckStatus::Fail,
            format!("the check could not read the store: {e}"),
            json!({"error": e.to_string()}),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// TLS

fn tls_protocols(ctx: &Context<'_>, sh: &Shared) -> Outcome {
    if sh.scans.is_empty() {
        return (
            CheckStatus::NotYetCheckable,
            "no listener was given to scan".into(),
            json!({}),
        );
    }
    let mut fail = vec![];
    let mut unknown = vec![];
    let mut offered_all = vec![];
    for s in &sh.scans {
        if !s.reachable {
            unknown.push(format!(
                "{} is unreachable ({})",
                s.url,
                s.error.as_deref().unwrap_or("")
            ));
            continue;
        }
        let offered: Vec<&str> = s
            .versions
            .iter()
            .chain(
                s.legacy
                    .iter()
                    .filter(|p| p.what.starts_with("TLSv1.0") || p.what.starts_with("TLSv1.1")),
            )
            .filter(|p| p.accepted == Some(true))
            .map(|p| p.what.as_str())
            .collect();
        for p in s
            .legacy
            .iter()
            .filter(|p| p.what == "TLSv1.0" || p.what == "TLSv1.1")
        {
            match p.accepted {
                Some(true) => fail.push(format!("{} accepts {}", s.url, p.what)),
                None => unknown.push(format!("{} {}: {}", s.url, p.what, p.detail)),
                Some(false) => {}
            }
        }
        if ctx.tls_min_version == "1.3" && offered.contains(&"TLSv1.2") {
            fail.push(format!(
                "{} accepts TLSv1.2 although tls.min_version is 1.3",
                s.url
            ));
        }
        if !offered.iter().any(|v| *v == "TLSv1.2" || *v == "TLSv1.3") {
            fail.push(format!("{} completes no TLS 1.2 or 1.3 handshake", s.url));
        }
        offered_all.push(json!({"url": s.url, "offered": offered}));
    }
    let evidence = json!({
        "configuredMinimum": ctx.tls_min_version,
        "rule": "ANSSI's TLS guide: TLS 1.3 preferred, TLS 1.2 acceptable, nothing older",
        "offered": offered_all,
        "scans": sh.scans,
    });
    if !fail.is_empty() {
        (CheckStatus::Fail, fail.join("; "), evidence)
    } else if !unknown.is_empty() {
        (CheckStatus::NotYetCheckable, unknown.join("; "), evidence)
    } else {
        let v: Vec<String> = offered_all
            .iter()
            .map(|o| format!("{}: {}", o["url"].as_str().unwrap_or(""), o["offered"]))
            .collect();
        (
            CheckStatus::Pass,
            format!(
                "only TLS 1.2/1.3 offered; TLS 1.0 and 1.1 refused ({})",
                v.join("; ")
            ),
            evidence,
        )
    }
}

fn tls_cipher_suites(sh: &Shared) -> Outcome {
    if sh.scans.is_empty() {
        return (
            CheckStatus::NotYetCheckable,
            "no listener was given to scan".into(),
            json!({}),
        );
    }
    let mut fail = vec![];
    let mut unknown = vec![];
    let mut accepted = vec![];
    for s in &sh.scans {
        if !s.reachable {
            unknown.push(format!("{} is unreachable", s.url));
            continue;
        }
        for p in s
            .legacy
            .iter()
            .filter(|p| p.what.starts_with("TLSv1.2 suites"))
        {
            match p.accepted {
                Some(true) => fail.push(format!("{} accepts {} ({})", s.url, p.what, p.detail)),
                None => unknown.push(format!("{} {}: {}", s.url, p.what, p.detail)),
                Some(false) => {}
            }
        }
        let ok: Vec<&str> = s
            .cipher_suites
            .iter()
            .filter(|p| p.accepted == Some(true))
            .map(|p| p.what.as_str())
            .collect();
        accepted.push(json!({"url": s.url, "accepted": ok}));
    }
    // Every suite rustls implements is an AEAD with an ephemeral (EC)DHE exchange, which is
    // what ANSSI's guide asks for; the legacy probes look for anything else.
    let evidence = json!({
        "rule": "AEAD suites (AES-GCM, ChaCha20-Poly1305) with ephemeral key exchange only",
        "accepted": accepted,
        "scans": sh.scans.iter().map(|s| json!({"url": s.url, "cipherSuites": s.cipher_suites, "legacy": s.legacy.iter().filter(|p| p.what.starts_with("TLSv1.2 suites")).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    });
    if !fail.is_empty() {
        (CheckStatus::Fail, fail.join("; "), evidence)
    } else if !unknown.is_empty() {
        (CheckStatus::NotYetCheckable, unknown.join("; "), evidence)
    } else {
        (
            CheckStatus::Pass,
            "only AEAD, forward-secret suites accepted; CBC and static-RSA offers refused".into(),
            evidence,
        )
    }
}

fn tls_certificates(ctx: &Context<'_>, sh: &Shared) -> Outcome {
    let ca_path = ctx.data_dir.join("tls").join("ca.pem");
    let ca = tls::pem_certs(&ca_path);
    let countries: Vec<String> = ca
        .first()
        .map(|c| tls::der_countries(c.as_ref()))
        .unwrap_or_default();
    let evidence = json!({
        "ca": {"path": ca_path.display().to_string(), "sha256": ca.first().map(|c| tls::sha256_hex(c.as_ref())),
               "countries": countries},
        "listeners": sh.chains,
    });
    if ca.is_empty() {
        return (
            CheckStatus::Fail,
            format!("no CA certificate at {}", ca_path.display()),
            evidence,
        );
    }
    if sh.chains.is_empty() {
        return (
            CheckStatus::NotYetCheckable,
            "no listener was given to check".into(),
            evidence,
        );
    }
    let bad: Vec<String> = sh
        .chains
        .iter()
        .filter(|c| c.reachable && !c.verified)
        .map(|c| format!("{}: {}", c.url, c.detail))
        .collect();
    if !bad.is_empty() {
        return (CheckStatus::Fail, bad.join("; "), evidence);
    }
    if countries.is_empty() {
        return (
            CheckStatus::NotYetCheckable,
            "the CA certificate names no country that could be read".into(),
            evidence,
        );
    }
    if let Some(c) = countries.iter().find(|c| !EU.contains(&c.as_str())) {
        return (
            CheckStatus::Fail,
            format!("the CA is of country {c}, not an EU member state"),
            evidence,
        );
    }
    let unreachable: Vec<&str> = sh
        .chains
        .iter()
        .filter(|c| !c.reachable)
        .map(|c| c.url.as_str())
        .collect();
    if !unreachable.is_empty() {
        return (
            CheckStatus::NotYetCheckable,
            format!("unreachable: {}", unreachable.join(", ")),
            evidence,
        );
    }
    (
        CheckStatus::Pass,
        format!(
            "every listener's chain verifies to the data directory's CA (country {})",
            countries.join(",")
        ),
        evidence,
    )
}

// ---------------------------------------------------------------------------------------------
// Store walks

fn all_subscriptions(
    store: &dyn MetadataStore,
) -> ciel_store::Result<Vec<(String, ciel_store::Subscription)>> {
    let mut out = vec![];
    for t in store.list_tenants()? {
        for s in store.list_subscriptions(&t.id)? {
            out.push((t.id.clone(), s));
        }
    }
    Ok(out)
}

fn resources_of(
    store: &dyn MetadataStore,
    sub: &str,
    rtype: Option<&str>,
) -> ciel_store::Result<Vec<Resource>> {
    const PAGE: usize = 500;
    let scope = format!("/subscriptions/{sub}").to_ascii_lowercase();
    let mut out: Vec<Resource> = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = store.list_resources(&scope, rtype, after.as_deref(), PAGE)?;
        let n = page.len();
        after = page.last().map(|r| r.id.to_ascii_lowercase());
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
    }
}

fn groups_of(
    store: &dyn MetadataStore,
    sub: &str,
) -> ciel_store::Result<Vec<ciel_store::ResourceGroup>> {
    const PAGE: usize = 500;
    let mut out: Vec<ciel_store::ResourceGroup> = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = store.list_resource_groups(sub, after.as_deref(), PAGE)?;
        let n = page.len();
        after = page.last().map(|g| g.name.clone());
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encryption at rest and keys

fn encryption_at_rest(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    use ciel_storage::account::{Secrets, TYPE};
    let mut accounts = vec![];
    let mut problems = vec![];
    let mut fingerprints: std::collections::HashMap<String, String> = Default::default();
    for (tenant, sub) in all_subscriptions(ctx.store)? {
        for r in resources_of(ctx.store, &sub.id, None)? {
            if !r.rtype.eq_ignore_ascii_case(TYPE) {
                continue;
            }
            let enc = &r.body["properties"]["encryption"];
            let blob_on = enc["services"]["blob"]["enabled"].as_bool() == Some(true);
            let key_source = enc["keySource"].as_str().unwrap_or("").to_string();
            let mut key = json!(null);
            match (&r.sealed, ctx.master) {
                (None, _) => problems.push(format!("{}: no sealed key material", r.id)),
                (Some(sealed), Some(master)) => {
                    let opened = ciel_core::ResourceId::parse(&r.id)
                        .and_then(|id| Secrets::open(master, &id, sealed).ok());
                    match opened {
                        Some(s) => {
                            // A fingerprint, never the key: enough to show keys differ. With a
                            // customer-managed key the plain data key is not stored at all; its
                            // wrapped form (unique per account) is fingerprinted instead.
                            let (material, custody) = match &s.cmk {
                                Some(c) => (
                                    c.wrapped.clone(),
                                    json!({"keySource": "customer-managed", "vault": c.vault_uri,
                                           "keyName": c.key_name, "kid": c.kid, "wrappedAt": c.wrapped_at}),
                                ),
                                None => (
                                    s.data_key.clone(),
                                    json!({"keySource": "platform", "sealedUnderMasterKey": true}),
                                ),
                            };
                            if material.is_empty() {
                                problems.push(format!("{}: no data key", r.id));
                            }
                            if key_source.eq_ignore_ascii_case("Microsoft.Keyvault")
                                != s.cmk.is_some()
                            {
                                problems.push(format!("{}: its record's key source {key_source:?} disagrees with its key material", r.id));
                            }
                            let fp = tls::sha256_hex(material.as_bytes())[..16].to_string();
                            if let Some(other) = fingerprints.insert(fp.clone(), r.id.clone()) {
                                problems.push(format!("{} shares its data key with {other}", r.id));
                            }
                            key = json!({"custody": custody, "dataKeyFingerprint": fp});
                        }
                        None => problems.push(format!(
                            "{}: the sealed key material does not open under the master key",
                            r.id
                        )),
                    }
                }
                (Some(_), None) => {
                    key = json!({"sealedUnderMasterKey": "present, not opened (no master key in this process)"})
                }
            }
            if !blob_on {
                problems.push(format!(
                    "{}: blob encryption is not enabled in its record",
                    r.id
                ));
            }
            if !(key_source == "Microsoft.Storage"
                || key_source.eq_ignore_ascii_case("Microsoft.Keyvault"))
            {
                problems.push(format!("{}: unknown key source {key_source:?}", r.id));
            }
            accounts.push(json!({"id": r.id, "tenant": tenant, "location": r.location,
                "blobEncryptionEnabled": blob_on, "keySource": key_source, "key": key}));
        }
    }
    // Sample the byte store: every object file must be in the encrypted format.
    let (sampled, clear) = sample_objects(&ctx.data_dir.join("blobs"), 200);
    if !clear.is_empty() {
        problems.push(format!(
            "object files not in the encrypted CIELOBJ1 format: {}",
            clear.join(", ")
        ));
    }
    let evidence = json!({
        "method": "each account record must enable blob encryption (platform keys, or a customer-managed key in a vault of this cloud) and hold sealed key material that opens under the master key to a data key of its own (with a customer-managed key, wrapped by it); object files are sampled for the encrypted format (AES-256-GCM, docs/formats/blob-object.md)",
        "accounts": accounts,
        "objectFilesSampled": sampled,
    });
    Ok(if !problems.is_empty() {
        (CheckStatus::Fail, problems.join("; "), evidence)
    } else {
        let accounts = if accounts.is_empty() {
            "no storage account yet (each account gets its own data key when created)".to_string()
        } else {
            format!(
                "{} storage account(s), each encrypted with its own data key",
                accounts.len()
            )
        };
        (
            CheckStatus::Pass,
            format!("{accounts}; {sampled} object file(s) sampled, all in the encrypted format"),
            evidence,
        )
    })
}

/// Reads the first bytes of up to `max` object files under `root`.
fn sample_objects(root: &Path, max: usize) -> (usize, Vec<String>) {
    let mut n = 0;
    let mut clear = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_some_and(|x| x == "partial") {
                continue;
            }
            if n >= max {
                return (n, clear);
            }
            n += 1;
            let mut head = [0u8; 8];
            let ok = std::fs::File::open(&p)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .map(|_| &head == ciel_storage::blobstore::MAGIC)
                .unwrap_or(false);
            if !ok {
                clear.push(p.display().to_string());
            }
        }
    }
    (n, clear)
}

#[cfg(unix)]
fn private(p: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o077 == 0)
}
#[cfg(not(unix))]
fn private(_p: &Path) -> Option<bool> {
    None
}

fn key_custody(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    let mut problems = vec![];
    let master_file = ctx.data_dir.join("keys").join("master.key");
    let master = if master_file.exists() {
        match private(&master_file) {
            Some(true) => {
                json!({"source": "file", "path": master_file.display().to_string(), "mode": "owner only"})
            }
            _ => {
                problems.push(format!(
                    "{} is readable by other users",
                    master_file.display()
                ));
                json!({"source": "file", "path": master_file.display().to_string(), "mode": "readable by group or others"})
            }
        }
    } else {
        json!({"source": "supplied from outside at start (CIEL_MASTER_KEY); not stored in the data directory"})
    };
    let mut tls_keys = vec![];
    for k in ["ca.key", "server.key"] {
        let p = ctx.data_dir.join("tls").join(k);
        match private(&p) {
            Some(true) => {
                tls_keys.push(json!({"path": p.display().to_string(), "mode": "owner only"}))
            }
            Some(false) => {
                problems.push(format!("{} is readable by other users", p.display()));
                tls_keys.push(
                    json!({"path": p.display().to_string(), "mode": "readable by group or others"}),
                );
            }
            None => tls_keys.push(json!({"path": p.display().to_string(), "mode": "absent"})),
        }
    }
    let signing = ctx.store.list_signing_keys()?;
    let clear_signing = signing
        .iter()
        .filter(|k| {
            k.sealed_private_key.starts_with(b"-----BEGIN") || k.sealed_private_key.is_empty()
        })
        .count();
    if clear_signing > 0 {
        problems.push(format!(
            "{clear_signing} token signing key(s) are not sealed"
        ));
    }
    let audit_sealed = ctx.store.get_setting("audit.signing_key")?.is_some();
    let hsm = ctx.sovereignty["keys"]["hsm"].clone();
    let evidence = json!({
        "container": "software: every key is sealed (AES-256-GCM) under the platform master key, bound to its purpose",
        "masterKey": master,
        "tokenSigningKeys": {"count": signing.len(), "sealed": signing.len() - clear_signing},
        "auditSigningKey": {"sealed": audit_sealed},
        "storageAccountKeys": "sealed under the master key, bound to the account id (see storage.encryption_at_rest)",
        "tlsPrivateKeys": tls_keys,
        // As the sovereignty statement of the running configuration states it.
        "keyVaultKeys": ctx.sovereignty["keys"]["keyVaultKeys"],
        "hsm": hsm,
        "statement": ctx.sovereignty["keys"],
    });
    Ok(if problems.is_empty() {
        let hsm = if hsm.is_null() {
            "Key Vault keys in software custody; no HSM configured".to_string()
        } else {
            format!(
                "Key Vault keys in an HSM (PKCS#11 module {}, token {})",
                hsm["module"].as_str().unwrap_or("?"),
                hsm["tokenLabel"].as_str().unwrap_or("?")
            )
        };
        (CheckStatus::Pass, format!("platform keys are held in a software container (sealed under the master key, files readable by their owner only); {hsm}"), evidence)
    } else {
        (CheckStatus::Fail, problems.join("; "), evidence)
    })
}

// ---------------------------------------------------------------------------------------------
// Identity

/// Role definitions that make a principal an administrator.
const ADMIN_ROLES: &[(&str, &str)] = &[
    (ciel_identity::rbac::OWNER, "Owner"),
    (ciel_identity::rbac::CONTRIBUTOR, "Contributor"),
    (
        ciel_identity::rbac::USER_ACCESS_ADMINISTRATOR,
        "User Access Administrator",
    ),
];

/// 9.6.f: every person who administers — tenant users holding an administrator role anywhere, and
/// enabled operators — has a confirmed second factor. Service principals are workload identities
/// (a 256-bit secret held by a program); they are listed, not counted as people.
fn admin_mfa(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    let mut people = vec![];
    let mut workloads = vec![];
    let mut weak: Vec<String> = vec![];
    for t in ctx.store.list_tenants()? {
        let policy = ctx
            .store
            .get_tenant_mfa_policy(&t.id)?
            .unwrap_or_else(|| "off".into());
        for a in ctx.store.list_role_assignments(&t.id)? {
            let Some((_, role)) = ADMIN_ROLES
                .iter()
                .find(|(g, _)| a.role_definition_id.to_ascii_lowercase().ends_with(g))
            else {
                continue;
            };
            if a.principal_type.eq_ignore_ascii_case("User") {
                let confirmed = ctx
                    .store
                    .get_mfa_factor(&a.principal_id)
                    .map(|f| f.confirmed)
                    .unwrap_or(false);
                if !confirmed {
                    weak.push(format!("user {} ({role} at {})", a.principal_id, a.scope));
                }
                people.push(
                    json!({"tenant": t.id, "principalId": a.principal_id, "role": role,
                    "scope": a.scope, "mfaConfirmed": confirmed, "tenantMfaPolicy": policy}),
                );
            } else {
                workloads.push(json!({"tenant": t.id, "principalId": a.principal_id,
                    "principalType": a.principal_type, "role": role, "scope": a.scope,
                    "authentication": "client secret (256-bit random): a workload identity, not a person"}));
            }
        }
    }
    let operators: Vec<_> = operators_mfa(ctx)?
        .into_iter()
        .map(|(name, disabled, confirmed)| {
            if !disabled && !confirmed {
                weak.push(format!("operator {name}"));
            }
            json!({"operator": name, "disabled": disabled, "mfaConfirmed": confirmed})
        })
        .collect();
    let evidence = json!({"mfaCapability": "TOTP (RFC 6238), replay-proof, locking after 5 wrong codes; users sign in with it through the device-code flow, operators on every sign-in",
        "userAdministrators": people, "workloadAdministrators": workloads, "operators": operators,
        "hostInterface": "the `ciel` CLI on the host: whoever can read the data directory administers the platform; the host's own access control (SSH with a second factor) is the operator's"});
    Ok(if weak.is_empty() {
        (
            CheckStatus::Pass,
            format!(
                "every administrator who is a person has a confirmed second factor: {} user administrator assignment(s), {} operator(s); {} service principal assignment(s) are workload identities",
                people.len(),
                operators.len(),
                workloads.len()
            ),
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!(
                "administrators without a confirmed second factor: {}",
                weak.join(", ")
            ),
            evidence,
        )
    })
}

fn lockout(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    let now = ciel_core::time::now_unix();
    let mut locked = vec![];
    for t in ctx.store.list_tenants()? {
        for u in ctx
            .store
            .list_principals(&t.id, Some(PrincipalKindRec::User))?
        {
            if u.locked_until.is_some_and(|l| l > now) {
                locked.push(json!({"objectId": u.object_id, "until": ciel_core::time::unix_to_rfc3339(u.locked_until.unwrap_or(0))}));
            }
        }
    }
    Ok((
        CheckStatus::Fail,
        format!(
            "password sign-ins lock after {} failures for {} minutes, but client-secret sign-ins (service principals, including the administrator) have no lockout",
            ciel_identity::LOCKOUT_THRESHOLD,
            ciel_identity::LOCKOUT_SECS / 60
        ),
        json!({
            "passwordSignIn": {"lockout": true, "threshold": ciel_identity::LOCKOUT_THRESHOLD, "lockSeconds": ciel_identity::LOCKOUT_SECS},
            "clientSecretSignIn": {"lockout": false, "note": "secrets are 256-bit random values, so guessing is infeasible, but the requirement asks every mechanism to lock"},
            "currentlyLockedUsers": locked,
        }),
    ))
}

fn password_storage(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    let mut users = 0;
    let mut secrets = 0;
    let mut problems = vec![];
    for t in ctx.store.list_tenants()? {
        for p in ctx.store.list_principals(&t.id, None)? {
            if let Some(h) = &p.password_hash {
                users += 1;
                // PHC string: $argon2id$v=19$m=..,t=..,p=..$salt$hash
                let parts: Vec<&str> = h.split('$').collect();
                if !(h.starts_with("$argon2id$") && parts.len() == 6 && !parts[4].is_empty()) {
                    problems.push(format!(
                        "{}: password not stored as a salted Argon2id hash",
                        p.object_id
                    ));
                }
            }
            if p.kind == PrincipalKindRec::ServicePrincipal {
                for s in ctx.store.list_sp_secrets(&p.object_id)? {
                    secrets += 1;
                    if !(s.hash.len() == 64 && s.hash.chars().all(|c| c.is_ascii_hexdigit())) {
                        problems.push(format!(
                            "{}: client secret {} not stored as SHA-256",
                            p.object_id, s.key_id
                        ));
                    }
                }
            }
        }
    }
    let evidence = json!({
        "passwords": {"count": users, "scheme": "Argon2id PHC strings, a random salt per password"},
        "clientSecrets": {"count": secrets, "scheme": "SHA-256 of 256-bit random values (a salt adds nothing to a full-entropy secret)"},
    });
    Ok(if problems.is_empty() {
        (CheckStatus::Pass, format!("{users} password(s) stored as salted Argon2id hashes, {secrets} client secret(s) as SHA-256; nothing in clear"), evidence)
    } else {
        (CheckStatus::Fail, problems.join("; "), evidence)
    })
}

// ---------------------------------------------------------------------------------------------
// Audit

fn audit_chain(ctx: &Context<'_>, sh: &Shared) -> Outcome {
    let head = ctx.store.audit_head().ok().flatten();
    let cps = ctx.store.list_checkpoints().unwrap_or_default();
    let last_cp = cps
        .last()
        .map(|c| json!({"seq": c.seq, "ts": c.ts, "keyId": c.key_id}));
    let base = json!({
        "head": head.as_ref().map(|(s, h)| json!({"seq": s, "hash": h})),
        "lastSignedCheckpoint": last_cp,
        "checkpointFile": ctx.data_dir.join("audit-checkpoints.jsonl").display().to_string(),
        "method": "ciel_audit::verify: every checkpoint signature, sequence without gaps, each link, each entry's hash, checkpointed hashes",
    });
    match &sh.audit {
        Ok(ciel_audit::Verdict::Intact {
            entries,
            checkpoints,
            ..
        }) => (
            CheckStatus::Pass,
            format!(
                "the audit chain verifies: {entries} entries, {checkpoints} signed checkpoints"
            ),
            json!({"verdict": "intact", "entries": entries, "checkpoints": checkpoints, "detail": base}),
        ),
        Ok(ciel_audit::Verdict::Broken { seq, reason }) => (
            CheckStatus::Fail,
            format!("the audit chain is broken at entry {seq}: {reason}"),
            json!({"verdict": "broken", "entry": seq, "reason": reason, "detail": base}),
        ),
        Err(e) => (
            CheckStatus::Fail,
            format!("the audit chain could not be verified: {e}"),
            json!({"verdict": "error", "error": e, "detail": base}),
        ),
    }
}

fn audit_retention(ctx: &Context<'_>, sh: &Shared) -> ciel_store::Result<Outcome> {
    let min = ciel_audit::MIN_RETENTION_DAYS;
    let days = ctx.audit_retention_days;
    let anchor = ctx.store.audit_anchor()?;
    let first = ctx
        .store
        .read_audit(anchor.as_ref().map(|a| a.seq).unwrap_or(0), 1)?
        .into_iter()
        .next();
    let Some(first) = first else {
        return Ok((
            CheckStatus::Fail,
            "the audit log is empty".into(),
            json!({}),
        ));
    };
    let age_days = chrono::DateTime::parse_from_rfc3339(&first.ts)
        .map(|t| (chrono::Utc::now().timestamp() - t.timestamp()) / 86400)
        .unwrap_or(0);
    let evidence = json!({
        "retentionDays": days,
        "minimumDays": min,
        "pruning": "every 6 hours, entries older than the retention up to a signed checkpoint (the anchor)",
        "anchor": anchor.as_ref().map(|a| json!({"seq": a.seq, "ts": a.ts, "hash": a.hash})),
        "oldestEntry": {"seq": first.seq, "ts": first.ts},
        "ageDays": age_days,
    });
    if days < min {
        return Ok((
            CheckStatus::Fail,
            format!("the configured retention ({days} days) is below six months ({min} days)"),
            evidence,
        ));
    }
    let expected_first = anchor.as_ref().map(|a| a.seq + 1).unwrap_or(1);
    if first.seq != expected_first {
        return Ok((
            CheckStatus::Fail,
            format!(
                "entries {expected_first} to {} are gone without a signed retention anchor covering them",
                first.seq - 1
            ),
            evidence,
        ));
    }
    Ok(match &sh.audit {
        Ok(ciel_audit::Verdict::Intact { entries, .. }) => (
            CheckStatus::Pass,
            match &anchor {
                None => format!(
                    "retention {days} days (minimum {min}); nothing pruned yet: the verified chain is complete from entry 1 ({}, {age_days} days ago); {entries} entries kept",
                    first.ts
                ),
                Some(a) => format!(
                    "retention {days} days (minimum {min}); entries through {} were pruned up to the signed checkpoint of {}, and the chain verifies from there: {entries} entries kept, the oldest {age_days} days old",
                    a.seq, a.ts
                ),
            },
            evidence,
        ),
        _ => (
            CheckStatus::Fail,
            "the audit chain does not verify, so what is kept cannot be shown complete".into(),
            evidence,
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Host

/// Looks for a configured time synchronisation daemon under `root` (the host's `/`).
pub fn clock_sync(root: &Path) -> Outcome {
    let read = |p: &str| std::fs::read_to_string(root.join(p.trim_start_matches('/'))).ok();
    let sources_in = |text: &str, keys: &[&str]| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                keys.iter().any(|k| {
                    l.split_whitespace().next() == Some(*k) || l.starts_with(&format!("{k}="))
                })
            })
            .map(str::to_string)
            .collect()
    };
    let mut found = vec![];
    for p in ["/etc/chrony/chrony.conf", "/etc/chrony.conf"] {
        if let Some(t) = read(p) {
            let s = sources_in(&t, &["server", "pool", "peer", "refclock", "sourcedir"]);
            found.push(json!({"daemon": "chrony", "config": p, "sources": s}));
        }
    }
    for p in [
        "/etc/ntp.conf",
        "/etc/ntpsec/ntp.conf",
        "/etc/openntpd/ntpd.conf",
    ] {
        if let Some(t) = read(p) {
            let s = sources_in(&t, &["server", "pool", "peer", "servers"]);
            found.push(json!({"daemon": "ntpd", "config": p, "sources": s}));
        }
    }
    if let Some(t) = read("/etc/systemd/timesyncd.conf") {
        let mut s: Vec<String> = sources_in(&t, &["NTP", "FallbackNTP"])
            .into_iter()
            .filter(|l| l.split_once('=').is_some_and(|(_, v)| !v.trim().is_empty()))
            .collect();
        if let Ok(rd) = std::fs::read_dir(root.join("etc/systemd/timesyncd.conf.d")) {
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    s.extend(sources_in(&t, &["NTP", "FallbackNTP"]));
                }
            }
        }
        let enabled = root
            .join("etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service")
            .exists();
        found.push(json!({"daemon": "systemd-timesyncd", "config": "/etc/systemd/timesyncd.conf", "sources": s, "enabled": enabled}));
    }
    // Running daemons, from /proc (when this is the real root).
    let mut running = vec![];
    if root == Path::new("/") {
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
                    let c = c.trim();
                    if ["chronyd", "ntpd", "systemd-timesyn", "openntpd", "ntpsec"].contains(&c)
                        && !running.contains(&c.to_string())
                    {
                        running.push(c.to_string());
                    }
                }
            }
        }
    }
    let configured: Vec<&Value> = found
        .iter()
        .filter(|f| {
            f["sources"].as_array().is_some_and(|a| !a.is_empty()) && f["enabled"] != json!(false)
        })
        .collect();
    let evidence = json!({"configurations": found, "runningDaemons": running,
        "note": "whether the sources are the operator's internal, mutually consistent time servers is the operator's to attest"});
    if configured.is_empty() {
        (
            CheckStatus::Fail,
            "no time synchronisation (chrony, ntpd, systemd-timesyncd) with a time source is configured on this host".into(),
            evidence,
        )
    } else {
        let names: Vec<String> = configured
            .iter()
            .map(|f| f["daemon"].as_str().unwrap_or("").to_string())
            .collect();
        (
            CheckStatus::Pass,
            format!(
                "time synchronisation configured ({}); running: {}",
                names.join(", "),
                if running.is_empty() {
                    "none seen".into()
                } else {
                    running.join(", ")
                }
            ),
            evidence,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Residency and outbound

fn residency(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    let mut outside = vec![];
    let mut per_region: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut groups, mut resources) = (0, 0);
    for (_, sub) in all_subscriptions(ctx.store)? {
        for g in groups_of(ctx.store, &sub.id)? {
            groups += 1;
            match ciel_core::region::normalize(&g.location) {
                Some(r) => *per_region.entry(r.name.to_string()).or_default() += 1,
                None => outside.push(format!(
                    "/subscriptions/{}/resourceGroups/{} in {:?}",
                    sub.id, g.name, g.location
                )),
            }
        }
        for r in resources_of(ctx.store, &sub.id, None)? {
            resources += 1;
            // Resources without a location (role assignments, operations) hold no located data.
            let Some(loc) = r.location.as_deref().filter(|l| !l.is_empty()) else {
                continue;
            };
            match ciel_core::region::normalize(loc) {
                Some(reg) => *per_region.entry(reg.name.to_string()).or_default() += 1,
                None => outside.push(format!("{} in {loc:?}", r.id)),
            }
        }
    }
    let evidence = json!({
        "regionsAllowed": ciel_core::region::REGIONS.iter().map(|r| json!({"name": r.name, "city": r.city, "country": "FR"})).collect::<Vec<_>>(),
        "resourceGroups": groups, "resources": resources, "perRegion": per_region,
        "outside": outside,
    });
    Ok(if outside.is_empty() {
        (
            CheckStatus::Pass,
            format!(
                "{groups} resource group(s) and {resources} resource(s), all in French regions"
            ),
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!("outside France: {}", outside.join("; ")),
            evidence,
        )
    })
}

fn replication(ctx: &Context<'_>) -> Outcome {
    let targets = ctx.sovereignty["replication"]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bad: Vec<String> = targets
        .iter()
        .filter(|t| {
            let loc = t
                .as_str()
                .or_else(|| t["location"].as_str())
                .or_else(|| t["region"].as_str())
                .unwrap_or("");
            ciel_core::region::normalize(loc).is_none()
        })
        .map(|t| t.to_string())
        .collect();
    let evidence = json!({"targets": targets, "source": "the sovereignty statement of the running configuration", "note": ctx.sovereignty["replication"]["note"]});
    if bad.is_empty() {
        (
            CheckStatus::Pass,
            if targets.is_empty() {
                "no replication target: single node, every byte stays on this host".into()
            } else {
                format!(
                    "{} replication target(s), all in French regions",
                    targets.len()
                )
            },
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!("replication targets outside France: {}", bad.join(", ")),
            evidence,
        )
    }
}

fn outbound(ctx: &Context<'_>) -> Outcome {
    let dests = ctx.sovereignty["outboundConnections"]["allowedDestinations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bad: Vec<String> = dests
        .iter()
        .filter(|d| !d["country"].as_str().is_some_and(|c| EU.contains(&c)))
        .map(|d| d.to_string())
        .collect();
    let evidence = json!({"allowedDestinations": dests, "source": "the sovereignty statement of the running configuration",
        "note": ctx.sovereignty["outboundConnections"]["note"]});
    if bad.is_empty() {
        (
            CheckStatus::Pass,
            if dests.is_empty() {
                "no outbound destination is configured: Ciel opens no outbound connection".into()
            } else {
                format!("{} outbound destination(s), all in the EU", dests.len())
            },
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!(
                "outbound destinations outside the EU (or of no stated country): {}",
                bad.join(", ")
            ),
            evidence,
        )
    }
}

fn jurisdiction(ctx: &Context<'_>) -> Outcome {
    let op = &ctx.sovereignty["operator"];
    let j = op["jurisdiction"].as_str().unwrap_or("undeclared");
    let evidence = json!({"operator": op, "source": "[sovereignty] in ciel.toml, as the sovereignty statement shows it"});
    if j == "undeclared" {
        (CheckStatus::NotYetCheckable, "the operator has not declared its jurisdiction ([sovereignty] jurisdiction in ciel.toml)".into(), evidence)
    } else if EU.contains(&j) {
        (
            CheckStatus::Pass,
            format!("declared jurisdiction {j}, an EU member state"),
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!("declared jurisdiction {j} is not an EU member state"),
            evidence,
        )
    }
}

/// Operators (the operator directory) and whether each has a confirmed second factor.
fn operators_mfa(ctx: &Context<'_>) -> ciel_store::Result<Vec<(String, bool, bool)>> {
    let mut out = vec![];
    for o in ctx.store.list_operators()? {
        let confirmed = ctx
            .store
            .get_mfa_factor(&format!("operator:{}", o.name.to_ascii_lowercase()))
            .map(|f| f.confirmed)
            .unwrap_or(false);
        out.push((o.name, o.disabled, confirmed));
    }
    Ok(out)
}

/// 9.7.d / 12.13: operators reach tenant data only through a grant the tenant approved
/// (Customer Lockbox), each use audited; break-glass grants are counted and shown.
fn operator_access(ctx: &Context<'_>) -> ciel_store::Result<Outcome> {
    let ops = operators_mfa(ctx)?;
    let now = ciel_core::time::now_unix();
    let grants = ctx.store.list_lockbox_requests(None)?;
    let active: Vec<_> = grants
        .iter()
        .filter(|g| ciel_identity::lockbox::status_at(g, now) == "Approved")
        .map(|g| json!({"request": g.id, "tenant": g.tenant_id, "operator": g.operator, "scope": g.scope,
                        "access": g.access, "until": ciel_core::time::unix_to_rfc3339(g.expires), "breakGlass": g.break_glass}))
        .collect();
    let break_glass = grants.iter().filter(|g| g.break_glass).count();
    let weak: Vec<&str> = ops
        .iter()
        .filter(|(_, disabled, confirmed)| !disabled && !confirmed)
        .map(|(n, _, _)| n.as_str())
        .collect();
    let evidence = json!({"capability": true, "operators": ops.len(), "operatorsWithoutConfirmedMfa": weak,
        "activeGrants": active, "breakGlassGrantsEver": break_glass,
        "mechanism": "operator tokens carry no role; Blob and Key Vault allow them only under an approved, unexpired Microsoft.CustomerLockbox request of the resource's tenant, and audit every use in that tenant's log"});
    Ok(if weak.is_empty() {
        (
            CheckStatus::Pass,
            format!("{} operator(s), each with a confirmed second factor; {} active grant(s) approved by tenants; {break_glass} break-glass grant(s) on record, each reported to its tenant", ops.len(), active.len()),
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!(
                "operator(s) without a confirmed second factor: {}",
                weak.join(", ")
            ),
            evidence,
        )
    })
}

fn drill(sh: &Shared, reqs: &[&str], what: &str) -> Outcome {
    let now = ciel_core::time::now_unix();
    let mut last = vec![];
    for r in reqs {
        if let Some(a) = crate::attest::latest(&sh.attestations).get(*r) {
            last.push(json!({"requirement": r, "attestedBy": a.attested_by, "recorded": ciel_core::time::unix_to_rfc3339(a.created),
                "expires": ciel_core::time::unix_to_rfc3339(a.expires), "valid": a.expires > now, "evidenceSha256": a.evidence_sha256, "note": a.note}));
        }
    }
    let latest = last
        .iter()
        .filter_map(|l| l["recorded"].as_str())
        .max()
        .map(str::to_string);
    (
        CheckStatus::NotYetCheckable,
        format!(
            "Ciel does not run or record the {what} itself yet; the operator's attestation is the evidence (last recorded: {})",
            latest.as_deref().unwrap_or("none")
        ),
        json!({"lastAttested": latest, "attestations": last}),
    )
}

/// Exports are recorded in the audit log (`ciel export` and the tenant export API both write
/// `Ciel.Export/export/action`): the latest successful one, within a year, is the drill's evidence.
/// Without one, the operator's attestation stays the only evidence.
fn export_drill(ctx: &Context<'_>, sh: &Shared) -> ciel_store::Result<Outcome> {
    const YEAR: i64 = 366 * 86_400;
    let mut last: Option<ciel_core::audit::AuditRecord> = None;
    let mut after = ctx.store.audit_anchor()?.map(|a| a.seq).unwrap_or(0);
    loop {
        let batch = ctx.store.read_audit(after, 10_000)?;
        let Some(end) = batch.last().map(|r| r.seq) else {
            break;
        };
        if let Some(r) = batch
            .into_iter()
            .rev()
            .find(|r| r.action == "Ciel.Export/export/action" && r.outcome == "success")
        {
            last = Some(r);
        }
        after = end;
    }
    let (_, _, attest_evidence) = drill(sh, &["19.1.h", "19.1.i"], "export drill");
    let Some(r) = last else {
        return Ok((
            CheckStatus::NotYetCheckable,
            format!("no export is recorded in the audit log yet (`ciel export --tenant T --out DIR`, then `ciel export verify DIR`); until then the operator's attestation is the evidence (last recorded: {})",
                attest_evidence["lastAttested"].as_str().unwrap_or("none")),
            json!({"lastExport": null, "attestations": attest_evidence["attestations"]}),
        ));
    };
    let age = ciel_core::time::rfc3339_to_unix(&r.ts)
        .map(|t| ciel_core::time::now_unix() - t)
        .unwrap_or(i64::MAX);
    let evidence = json!({"lastExport": {"seq": r.seq, "ts": r.ts, "tenant": r.tenant_id, "actor": r.actor,
        "details": r.details}, "attestations": attest_evidence["attestations"]});
    Ok(if age <= YEAR {
        (
            CheckStatus::Pass,
            format!(
                "last export of a tenant: {} (entry {} of the audit log, {} days ago)",
                r.ts,
                r.seq,
                age / 86_400
            ),
            evidence,
        )
    } else {
        (
            CheckStatus::Fail,
            format!(
                "the last export of a tenant is more than a year old ({})",
                r.ts
            ),
            evidence,
        )
    })
}

fn isolation(ctx: &Context<'_>) -> Outcome {
    let p = ctx.data_dir.join(ISOLATION_RESULTS);
    let Ok(text) = std::fs::read_to_string(&p) else {
        return (
            CheckStatus::NotYetCheckable,
            format!("no tenant isolation results at {}", p.display()),
            json!({"expected": p.display().to_string(), "format": "{\"generatedAt\": RFC 3339, \"suite\": \"...\", \"passed\": n, \"failed\": n, \"tests\": [...]}"}),
        );
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            return (
                CheckStatus::NotYetCheckable,
                format!("{} is not JSON: {e}", p.display()),
                json!({}),
            )
        }
    };
    let sha = tls::sha256_hex(text.as_bytes());
    let age = v["generatedAt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now().timestamp() - t.timestamp()) / 86400);
    let (passed, failed) = (
        v["passed"].as_i64().unwrap_or(0),
        v["failed"].as_i64().unwrap_or(-1),
    );
    let evidence = json!({"file": p.display().to_string(), "sha256": sha, "generatedAt": v["generatedAt"], "suite": v["suite"],
        "passed": passed, "failed": failed, "tests": v["tests"], "ageDays": age});
    if failed > 0 {
        (
            CheckStatus::Fail,
            format!("{failed} tenant isolation test(s) failed"),
            evidence,
        )
    } else if failed < 0 || passed == 0 {
        (
            CheckStatus::NotYetCheckable,
            "the results file records no passed tests".into(),
            evidence,
        )
    } else if age.is_none_or(|a| a > ISOLATION_MAX_AGE_DAYS) {
        (
            CheckStatus::NotYetCheckable,
            format!("the results are older than {ISOLATION_MAX_AGE_DAYS} days (or undated)"),
            evidence,
        )
    } else {
        (
            CheckStatus::Pass,
            format!(
                "{passed} tenant isolation test(s) passed, none failed ({} day(s) old)",
                age.unwrap_or(0)
            ),
            evidence,
        )
    }
}

fn inventory() -> Outcome {
    let inv = crate::inventory::this_build();
    (
        CheckStatus::Pass,
        format!(
            "Ciel {} built with {}: {} crates with versions (the host's other software is the operator's inventory)",
            env!("CARGO_PKG_VERSION"),
            inv["compiler"].as_str().unwrap_or("?"),
            inv["packageCount"]
        ),
        inv,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_sync_reads_configs() {
        let d = tempfile::tempdir().unwrap();
        let (st, _, _) = clock_sync(d.path());
        assert_eq!(st, CheckStatus::Fail);
        std::fs::create_dir_all(d.path().join("etc/chrony")).unwrap();
        std::fs::write(
            d.path().join("etc/chrony/chrony.conf"),
            "# c\npool ntp.example.fr iburst\n",
        )
        .unwrap();
        let (st, _, ev) = clock_sync(d.path());
        assert_eq!(st, CheckStatus::Pass, "{ev}");
    }

    #[test]
    fn store_checks_see_what_is_stored_and_nothing_passes_unseen() {
        use ciel_store::{sqlite::SqliteStore, ResourceGroup, Subscription, Tenant};
        let d = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&d.path().join("ciel.db")).unwrap();
        let draft = ciel_core::audit::AuditDraft {
            actor: "test".into(),
            action: "a".into(),
            target: "t".into(),
            outcome: "success".into(),
            ..Default::default()
        };
        s.create_tenant(
            &Tenant {
                id: "t1".into(),
                display_name: "T".into(),
                default_domain: "t.fr".into(),
                created: 1,
            },
            &draft,
        )
        .unwrap();
        s.create_subscription(
            &Subscription {
                id: "s1".into(),
                tenant_id: "t1".into(),
                display_name: "S".into(),
                state: "Enabled".into(),
                created: 1,
            },
            &draft,
        )
        .unwrap();
        let rg = |loc: &str| ResourceGroup {
            subscription_id: "s1".into(),
            name: "rg".into(),
            location: loc.into(),
            tags: json!({}),
            managed_by: None,
            created: 1,
            changed: 1,
        };
        s.put_resource_group(&rg("eastus"), &draft).unwrap();
        let ctx = Context {
            store: &s,
            master: None,
            data_dir: d.path().to_path_buf(),
            audit_public_key: None,
            sovereignty: json!({"replication": {"targets": ["westeurope"]}}),
            tls_targets: vec![],
            tls_min_version: "1.2".into(),
            audit_retention_days: ciel_audit::MIN_RETENTION_DAYS,
        };
        let status = |id: &str| {
            run_all(&ctx)
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| c.status)
                .unwrap()
        };
        assert_eq!(status("residency.resources"), CheckStatus::Fail);
        assert_eq!(status("residency.replication"), CheckStatus::Fail);
        // Nothing to scan, no CA, no audit key, no capability: never a pass.
        assert_eq!(status("tls.protocols"), CheckStatus::NotYetCheckable);
        assert_eq!(status("tls.cipher_suites"), CheckStatus::NotYetCheckable);
        assert_eq!(status("tls.certificates"), CheckStatus::Fail);
        assert_eq!(status("audit.chain"), CheckStatus::Fail);
        // Nobody administers yet, so nobody lacks a second factor.
        assert_eq!(status("identity.admin_mfa"), CheckStatus::Pass);
        // No operator yet: nobody can reach tenant data outside a grant.
        assert_eq!(status("operator.access_grants"), CheckStatus::Pass);
        assert_eq!(
            status("sovereignty.jurisdiction"),
            CheckStatus::NotYetCheckable
        );
        s.put_resource_group(&rg("francecentral"), &draft).unwrap();
        assert_eq!(status("residency.resources"), CheckStatus::Pass);
        // An operator whose second factor is not confirmed turns operator access red; once
        // confirmed, green again (a disabled operator does not count).
        let op = ciel_store::OperatorRec {
            id: "o1".into(),
            name: "alice".into(),
            password_hash: "x".into(),
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created: 1,
        };
        s.put_operator(&op, &draft).unwrap();
        assert_eq!(status("operator.access_grants"), CheckStatus::Fail);
        assert_eq!(status("identity.admin_mfa"), CheckStatus::Fail);
        let f = ciel_store::MfaFactor {
            subject: "operator:alice".into(),
            tenant_id: None,
            kind: "totp".into(),
            sealed_secret: vec![1],
            confirmed: false,
            last_step: 0,
            failed: 0,
            locked_until: None,
            created: 1,
        };
        s.put_mfa_factor(&f, &draft).unwrap();
        assert_eq!(status("operator.access_grants"), CheckStatus::Fail);
        s.mfa_accept_step("operator:alice", 5, &draft).unwrap();
        assert_eq!(status("operator.access_grants"), CheckStatus::Pass);
        assert_eq!(status("identity.admin_mfa"), CheckStatus::Pass);
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = CHECKS.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CHECKS.len());
    }
}
