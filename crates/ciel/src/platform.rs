//! Opening a data directory: the metadata store, the master key, the audit signer, and the
//! first-start bootstrap (tenant, subscription, admin service principal with Owner).

use anyhow::{anyhow, bail, Context, Result};
use ciel_audit::CheckpointSigner;
use ciel_core::audit::AuditDraft;
use ciel_core::seal::MasterKey;
use ciel_identity::{directory, rbac};
use ciel_store::sqlite::SqliteStore;
use ciel_store::{MetadataStore, RoleAssignment, Store, Subscription};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("ciel.db")
    }
    pub fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    /// The blob byte store (encrypted objects, one directory per account).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    pub fn env_file(&self) -> PathBuf {
        self.root.join("ciel.env")
    }
    pub fn checkpoint_file(&self) -> PathBuf {
        self.root.join("audit-checkpoints.jsonl")
    }
    pub fn audit_public_key_file(&self) -> PathBuf {
        self.keys().join("audit-signing.pub")
    }
    /// Locked by the serving process (see [`DataDir::lock_for_serving`]).
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("ciel.lock")
    }

    /// Takes the data directory for one `ciel up`, until the returned file is dropped or the
    /// process ends (the kernel releases the lock however it ends, `kill -9` included). The
    /// startup garbage collection takes every object no record refers to for garbage, which holds
    /// only when no other process is uploading into the same byte store. Operator commands do not
    /// take it: they never write blob objects.
    pub fn lock_for_serving(&self) -> Result<std::fs::File> {
        let path = self.lock_file();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another `ciel up` is serving the data directory {}; stop it first",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    pub fn create(&self) -> Result<()> {
        for d in [self.root.clone(), self.keys(), self.tls(), self.blobs()] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(self.keys(), std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    /// Opens the store of an existing data directory (operator commands).
    pub fn open_store(&self) -> Result<Store> {
        if !self.db().exists() {
            bail!(
                "no Ciel data directory at {} (run `ciel up --data-dir {}` first)",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(Arc::new(SqliteStore::open(&self.db())?))
    }
}

/// Writes a file readable by the owner only, atomically (write to a temp file, fsync, rename).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The platform master key, from (in this order of precedence, one only):
/// - `CIEL_MASTER_KEY_SHARES`: K share files of `ciel keys split-master`, comma-separated;
/// - `CIEL_MASTER_KEY`: 64 hexadecimal characters, supplied by the operator;
/// - `DIR/keys/master.key` (created on first start, mode 0600).
///
/// The key is checked against the data directory (a value sealed under it at first start).
pub fn master_key(dir: &DataDir, store: &dyn MetadataStore) -> Result<MasterKey> {
    let bytes = master_key_bytes(dir, store, &|v| std::env::var(v).ok())?;
    check_master_key(&bytes, store)
}

/// The key's bytes, from the source `env` names (see [`master_key`]); not yet checked.
pub fn master_key_bytes(
    dir: &DataDir,
    store: &dyn MetadataStore,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let shares = env("CIEL_MASTER_KEY_SHARES").filter(|s| !s.trim().is_empty());
    let hex_key = env("CIEL_MASTER_KEY");
    if shares.is_some() && hex_key.is_some() {
        bail!("set CIEL_MASTER_KEY or CIEL_MASTER_KEY_SHARES, not both");
    }
    if let Some(list) = shares {
        return crate::master_shares::combine_files(&list);
    }
    let bytes = match hex_key {
        Some(h) => hex::decode(h.trim())
            .map_err(|_| anyhow!("CIEL_MASTER_KEY must be 64 hexadecimal characters"))?,
        None => {
            let p = dir.keys().join("master.key");
            if p.exists() {
                hex::decode(std::fs::read_to_string(&p)?.trim())
                    .map_err(|_| anyhow!("{} is corrupt", p.display()))?
            } else {
                if let Some(hint) = crate::master_shares::missing_key_hint(store) {
                    bail!("{hint}");
                }
                if store.get_setting("master.check")?.is_some() {
                    bail!("the master key file {} is missing but this data directory was sealed with one", p.display());
                }
                let k = MasterKey::generate_bytes()?;
                write_private(&p, hex::encode(k).as_bytes())?;
                k.to_vec()
            }
        }
    };
    Ok(zeroize::Zeroizing::new(bytes))
}

/// Opens the key and checks it against the data directory; on a new directory, records the
/// check value.
pub fn check_master_key(bytes: &[u8], store: &dyn MetadataStore) -> Result<MasterKey> {
    let key = MasterKey::from_bytes(bytes).map_err(|e| anyhow!("master key: {e}"))?;
    // A check value detects a wrong master key at start, with a clear message.
    match store.get_setting("master.check")? {
        Some(c) => {
            let sealed =
                hex::decode(c).map_err(|_| anyhow!("master key check value is corrupt"))?;
            key.open("ciel/master-check", &sealed)
                .map_err(|_| anyhow!("the master key does not open this data directory"))?;
        }
        None => store.set_setting(
            "master.check",
            &hex::encode(key.seal("ciel/master-check", b"ciel")?),
        )?,
    }
    Ok(key)
}

/// The audit checkpoint signer, created on first start, sealed under the master key.
pub fn audit_signer(
    dir: &DataDir,
    store: &dyn MetadataStore,
    master: &MasterKey,
) -> Result<CheckpointSigner> {
    const PURPOSE: &str = "ciel/audit-signing-key/v1";
    let signer = match store.get_setting("audit.signing_key")? {
        Some(h) => {
            let pk8 = master.open(
                PURPOSE,
                &hex::decode(h).map_err(|_| anyhow!("audit key is corrupt"))?,
            )?;
            CheckpointSigner::from_pkcs8(&pk8)?
        }
        None => {
            let pk8 = CheckpointSigner::generate_pkcs8()?;
            store.set_setting(
                "audit.signing_key",
                &hex::encode(master.seal(PURPOSE, &pk8)?),
            )?;
            CheckpointSigner::from_pkcs8(&pk8)?
        }
    };
    let pubfile = dir.audit_public_key_file();
    if !pubfile.exists() {
        std::fs::write(&pubfile, signer.public_key_hex() + "\n")?;
    }
    store.set_setting("audit.public_key", &signer.public_key_hex())?;
    Ok(signer)
}

/// The audit public key for verification: the file beside the keys, which must agree with the
/// copy in the store (a substituted key in either is reported).
pub fn audit_public_key(dir: &DataDir, store: &dyn MetadataStore) -> Result<Vec<u8>> {
    let db = store.get_setting("audit.public_key")?;
    let file = std::fs::read_to_string(dir.audit_public_key_file())
        .ok()
        .map(|s| s.trim().to_string());
    let k = match (db, file) {
        (Some(a), Some(b)) if a != b => bail!(
            "the audit public key in the store differs from {}",
            dir.audit_public_key_file().display()
        ),
        (_, Some(b)) => b,
        (Some(a), None) => a,
        (None, None) => bail!("this data directory has no audit key yet"),
    };
    Ok(hex::decode(k)?)
}

pub struct Bootstrap {
    pub tenant_id: String,
    pub subscription_id: String,
    pub client_id: String,
    /// Only known on the first start; afterwards it is read back from ciel.env.
    pub client_secret: Option<String>,
}

pub const ACTOR: &str = "system:bootstrap";

/// Creates a subscription in a tenant (the embedded deployment has no billing system: the
/// operator creates subscriptions).
pub fn create_subscription(
    store: &dyn MetadataStore,
    actor: &str,
    tenant_id: &str,
    name: &str,
) -> Result<Subscription> {
    let s = Subscription {
        id: directory::new_guid(),
        tenant_id: tenant_id.to_string(),
        display_name: name.to_string(),
        state: "Enabled".into(),
        created: ciel_core::time::now_unix(),
    };
    store.create_subscription(
        &s,
        &AuditDraft {
            tenant_id: Some(tenant_id.to_string()),
            actor: actor.to_string(),
            action: "Microsoft.Resources/subscriptions/write".into(),
            target: format!("/subscriptions/{}", s.id),
            outcome: "success".into(),
            ..Default::default()
        },
    )?;
    Ok(s)
}

pub fn assign_owner(
    store: &dyn MetadataStore,
    actor: &str,
    tenant_id: &str,
    subscription: &str,
    principal_id: &str,
    principal_type: &str,
) -> Result<()> {
    let a = RoleAssignment {
        name: directory::new_guid(),
        tenant_id: tenant_id.to_string(),
        scope: format!("/subscriptions/{subscription}"),
        role_definition_id: rbac::role_definition_id(subscription, rbac::OWNER),
        principal_id: principal_id.to_string(),
        principal_type: principal_type.to_string(),
        description: Some("Bootstrap administrator".into()),
        created_by: actor.to_string(),
        created: ciel_core::time::now_unix(),
    };
    store.put_role_assignment(
        &a,
        &AuditDraft {
            tenant_id: Some(tenant_id.to_string()),
            actor: actor.to_string(),
            action: "Microsoft.Authorization/roleAssignments/write".into(),
            target: format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                a.scope, a.name
            ),
            outcome: "success".into(),
            details: serde_json::json!({"role": "Owner", "principalId": principal_id}),
            ..Default::default()
        },
    )?;
    Ok(())
}

pub fn bootstrap(store: &dyn MetadataStore, domain: &str) -> Result<Bootstrap> {
    if let (Some(t), Some(s), Some(c)) = (
        store.get_setting("bootstrap.tenant")?,
        store.get_setting("bootstrap.subscription")?,
        store.get_setting("bootstrap.client_id")?,
    ) {
        return Ok(Bootstrap {
            tenant_id: t,
            subscription_id: s,
            client_id: c,
            client_secret: None,
        });
    }
    let t = directory::create_tenant(store, ACTOR, "Ciel", domain)?;
    let s = create_subscription(store, ACTOR, &t.id, "Ciel subscription")?;
    let sp = directory::create_service_principal(store, ACTOR, &t.id, "ciel-admin")?;
    assign_owner(
        store,
        ACTOR,
        &t.id,
        &s.id,
        &sp.principal.object_id,
        "ServicePrincipal",
    )?;
    let app = sp.principal.app_id.clone().unwrap_or_default();
    store.set_setting("bootstrap.tenant", &t.id)?;
    store.set_setting("bootstrap.subscription", &s.id)?;
    store.set_setting("bootstrap.client_id", &app)?;
    Ok(Bootstrap {
        tenant_id: t.id,
        subscription_id: s.id,
        client_id: app,
        client_secret: Some(sp.secret),
    })
}

/// Reads `export NAME='value'` lines back (to keep the admin secret across restarts).
pub fn read_env_file(path: &Path) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
    if let Ok(s) = std::fs::read_to_string(path) {
        for line in s.lines() {
            if let Some(rest) = line.strip_prefix("export ") {
                if let Some((k, v)) = rest.split_once('=') {
                    m.insert(k.to_string(), v.trim_matches('\'').to_string());
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_serving_process_per_data_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path());
        let first = d.lock_for_serving().unwrap();
        let refused = d.lock_for_serving().unwrap_err().to_string();
        assert!(refused.contains("another `ciel up`"), "{refused}");
        drop(first);
        d.lock_for_serving().unwrap();
    }

    /// The start path end to end, without a server: a data directory sealed with a key file,
    /// the key split, the file removed, then starts with all, enough, too few and wrong shares.
    #[test]
    fn master_key_from_shares_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path());
        d.create().unwrap();
        let store = SqliteStore::open(&d.db()).unwrap();
        let none = |_: &str| None;
        let first = master_key_bytes(&d, &store, &none).unwrap();
        check_master_key(&first, &store).unwrap();

        let shares = crate::master_shares::split(&first, 5, 3).unwrap();
        let sdir = tmp.path().join("shares");
        std::fs::create_dir(&sdir).unwrap();
        let paths: Vec<String> = shares
            .iter()
            .map(|s| {
                let p = sdir.join(format!("s{}", s.index));
                write_private(&p, s.render().as_bytes()).unwrap();
                p.display().to_string()
            })
            .collect();
        store
            .set_setting(
                crate::master_shares::SETTING,
                r#"{"set":"x","threshold":3,"shares":5,"check":"x"}"#,
            )
            .unwrap();
        std::fs::remove_file(d.keys().join("master.key")).unwrap();

        let with =
            |list: String| move |v: &str| (v == "CIEL_MASTER_KEY_SHARES").then(|| list.clone());
        let got = master_key_bytes(&d, &store, &with(paths[1..4].join(","))).unwrap();
        assert_eq!(*got, *first);
        check_master_key(&got, &store).unwrap();
        let all = master_key_bytes(&d, &store, &with(paths.join(","))).unwrap();
        assert_eq!(*all, *first);

        let err = |r: Result<zeroize::Zeroizing<Vec<u8>>>| format!("{:#}", r.err().unwrap());
        assert!(
            err(master_key_bytes(&d, &store, &with(paths[..2].join(","))))
                .contains("3 of the 5 are needed")
        );
        // No key at all: the hint names the variable.
        assert!(err(master_key_bytes(&d, &store, &none)).contains("CIEL_MASTER_KEY_SHARES"));
        // A share file damaged on disk names the file.
        std::fs::write(&paths[0], "format: ciel-master-share/1\n").unwrap();
        let e = err(master_key_bytes(&d, &store, &with(paths[..3].join(","))));
        assert!(e.contains(&paths[0]), "{e}");
        // A missing file.
        assert!(err(master_key_bytes(
            &d,
            &store,
            &with(format!("{},{},/nonexistent", paths[1], paths[2]))
        ))
        .contains("/nonexistent"));
        // Shares of another key: rebuilt, but refused by the data directory's check.
        let other = crate::master_shares::split(&[7u8; 32], 3, 2).unwrap();
        let named: Vec<(String, crate::master_shares::ShareFile)> =
            other.into_iter().map(|s| (String::new(), s)).collect();
        let k = crate::master_shares::combine(&named[..2]).unwrap();
        assert!(check_master_key(&k, &store).is_err());
        // Both variables: refused.
        let both = |v: &str| {
            Some(if v == "CIEL_MASTER_KEY" {
                "00".repeat(32)
            } else {
                paths[0].clone()
            })
        };
        assert!(err(master_key_bytes(&d, &store, &both)).contains("not both"));
    }
}
