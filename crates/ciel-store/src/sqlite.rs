//! The embedded engine: one SQLite database in WAL mode with `synchronous=FULL`, so that a
//! transaction is on disk before the caller is answered (a kill -9 or a power cut loses nothing
//! acknowledged). Writes go through one connection; reads use a small pool of connections.

use crate::model::*;
use crate::{MetadataStore, Result, StoreError};
use ciel_core::audit::{chain_hash, AuditDraft, AuditRecord, GENESIS};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

mod keyvault;
mod lockbox;
mod mfa;
mod mfa_policy;
mod policy;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tenants (
  id TEXT PRIMARY KEY, display_name TEXT NOT NULL, default_domain TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE principals (
  object_id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL REFERENCES tenants(id),
  kind TEXT NOT NULL CHECK (kind IN ('sp','user')),
  app_id TEXT UNIQUE,
  display_name TEXT NOT NULL,
  upn TEXT UNIQUE COLLATE NOCASE,
  password_hash TEXT,
  failed_logins INTEGER NOT NULL DEFAULT 0,
  locked_until INTEGER,
  created INTEGER NOT NULL);
CREATE INDEX principals_tenant ON principals(tenant_id);
CREATE TABLE client_secrets (
  key_id TEXT PRIMARY KEY,
  object_id TEXT NOT NULL REFERENCES principals(object_id) ON DELETE CASCADE,
  hint TEXT NOT NULL, hash TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE INDEX client_secrets_principal ON client_secrets(object_id);
CREATE TABLE subscriptions (
  id TEXT PRIMARY KEY COLLATE NOCASE, tenant_id TEXT NOT NULL REFERENCES tenants(id),
  display_name TEXT NOT NULL, state TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE resource_groups (
  subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
  name TEXT NOT NULL COLLATE NOCASE,
  location TEXT NOT NULL, tags TEXT NOT NULL, managed_by TEXT,
  created INTEGER NOT NULL, changed INTEGER NOT NULL,
  PRIMARY KEY (subscription_id, name));
CREATE TABLE resources (
  id_key TEXT PRIMARY KEY,
  id TEXT NOT NULL,
  subscription_id TEXT NOT NULL REFERENCES subscriptions(id),
  resource_group TEXT COLLATE NOCASE,
  rtype TEXT NOT NULL COLLATE NOCASE,
  name TEXT NOT NULL,
  location TEXT,
  tenant_id TEXT NOT NULL,
  body TEXT NOT NULL,
  created INTEGER NOT NULL, changed INTEGER NOT NULL);
CREATE INDEX resources_rg ON resources(subscription_id, resource_group);
CREATE TABLE role_assignments (
  name TEXT PRIMARY KEY COLLATE NOCASE,
  tenant_id TEXT NOT NULL,
  scope TEXT NOT NULL,
  role_definition_id TEXT NOT NULL,
  principal_id TEXT NOT NULL,
  principal_type TEXT NOT NULL,
  description TEXT,
  created_by TEXT NOT NULL,
  created INTEGER NOT NULL);
CREATE INDEX role_assignments_tenant ON role_assignments(tenant_id);
CREATE INDEX role_assignments_principal ON role_assignments(principal_id);
CREATE TABLE role_definitions (id TEXT PRIMARY KEY COLLATE NOCASE, tenant_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE signing_keys (
  kid TEXT PRIMARY KEY, sealed_private_key BLOB NOT NULL, n TEXT NOT NULL, e TEXT NOT NULL,
  created INTEGER NOT NULL, retired INTEGER);
CREATE TABLE refresh_tokens (
  hash TEXT PRIMARY KEY, object_id TEXT NOT NULL REFERENCES principals(object_id) ON DELETE CASCADE,
  tenant_id TEXT NOT NULL, client_id TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE operations (
  id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, status TEXT NOT NULL, resource_id TEXT NOT NULL,
  result TEXT, error TEXT, created INTEGER NOT NULL, finished INTEGER);
CREATE TABLE audit_log (
  seq INTEGER PRIMARY KEY,
  ts TEXT NOT NULL, tenant_id TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
  outcome TEXT NOT NULL, details TEXT NOT NULL, request_id TEXT, client_ip TEXT,
  prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX audit_tenant ON audit_log(tenant_id, seq);
CREATE TABLE audit_checkpoints (
  seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, ts TEXT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL);
"#,
    r#"
ALTER TABLE resources ADD COLUMN sealed BLOB;
CREATE INDEX resources_type_name ON resources(rtype, name);
"#,
    r#"
CREATE TABLE blob_containers (
  account TEXT NOT NULL, name TEXT NOT NULL, metadata TEXT NOT NULL, etag TEXT NOT NULL,
  last_modified INTEGER NOT NULL, public_access TEXT,
  PRIMARY KEY (account, name));
CREATE TABLE blobs (
  account TEXT NOT NULL, container TEXT NOT NULL, name TEXT NOT NULL,
  object_id BLOB NOT NULL, size INTEGER NOT NULL,
  content_type TEXT, content_encoding TEXT, content_language TEXT, content_disposition TEXT, cache_control TEXT,
  content_md5 BLOB, metadata TEXT NOT NULL, etag TEXT NOT NULL, last_modified INTEGER NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY (account, container, name),
  FOREIGN KEY (account, container) REFERENCES blob_containers(account, name) ON DELETE CASCADE);
"#,
    r#"
ALTER TABLE blobs ADD COLUMN blocks TEXT NOT NULL DEFAULT '[]';
CREATE TABLE blob_blocks (
  account TEXT NOT NULL, container TEXT NOT NULL, blob TEXT NOT NULL, block_id TEXT NOT NULL,
  object_id BLOB NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL,
  PRIMARY KEY (account, container, blob, block_id),
  FOREIGN KEY (account, container) REFERENCES blob_containers(account, name) ON DELETE CASCADE);
"#,
    // Blob kinds: snapshots are rows of `blobs` (so every scan of `blobs` sees their objects),
    // told apart by `snapshot` ('' for the blob itself); leases, tags, sequence numbers and copy
    // properties; `shared` marks rows (and uncommitted blocks) whose objects may also belong to
    // another record, the only rows searched before an object is removed.
    r#"
CREATE TABLE blobs_v5 (
  account TEXT NOT NULL, container TEXT NOT NULL, name TEXT NOT NULL, snapshot TEXT NOT NULL DEFAULT '',
  object_id BLOB NOT NULL, size INTEGER NOT NULL,
  content_type TEXT, content_encoding TEXT, content_language TEXT, content_disposition TEXT, cache_control TEXT,
  content_md5 BLOB, metadata TEXT NOT NULL, etag TEXT NOT NULL, last_modified INTEGER NOT NULL, created INTEGER NOT NULL,
  blocks TEXT NOT NULL DEFAULT '[]', blob_type TEXT NOT NULL DEFAULT 'BlockBlob', lease TEXT,
  tags TEXT NOT NULL DEFAULT '{}', sequence_number INTEGER NOT NULL DEFAULT 0, copy TEXT,
  shared INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (account, container, name, snapshot),
  FOREIGN KEY (account, container) REFERENCES blob_containers(account, name) ON DELETE CASCADE);
INSERT INTO blobs_v5 (account, container, name, object_id, size, content_type, content_encoding, content_language,
  content_disposition, cache_control, content_md5, metadata, etag, last_modified, created, blocks)
  SELECT account, container, name, object_id, size, content_type, content_encoding, content_language,
  content_disposition, cache_control, content_md5, metadata, etag, last_modified, created, blocks FROM blobs;
DROP TABLE blobs;
ALTER TABLE blobs_v5 RENAME TO blobs;
CREATE INDEX blobs_shared ON blobs(account, shared);
ALTER TABLE blob_blocks ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
CREATE INDEX blob_blocks_object ON blob_blocks(account, object_id);
ALTER TABLE blob_containers ADD COLUMN lease TEXT;
"#,
    r#"
CREATE TABLE blob_container_policies (
  account TEXT NOT NULL, container TEXT NOT NULL, policies TEXT NOT NULL,
  PRIMARY KEY (account, container),
  FOREIGN KEY (account, container) REFERENCES blob_containers(account, name) ON DELETE CASCADE);
CREATE TABLE blob_services (account TEXT PRIMARY KEY, properties TEXT NOT NULL);
"#,
    // 7: Key Vault. Vault names are global (DNS labels) and stay reserved while soft-deleted;
    // the data of a vault is keyed by its lower-cased name. Names of secrets and keys are
    // case-insensitive (`name` is lower-cased, `display` keeps the first spelling).
    r#"
CREATE TABLE kv_deleted_vaults (
  name TEXT PRIMARY KEY, id TEXT NOT NULL, subscription_id TEXT NOT NULL, resource_group TEXT,
  location TEXT NOT NULL, tenant_id TEXT NOT NULL, body TEXT NOT NULL, sealed BLOB,
  created INTEGER NOT NULL, deleted INTEGER NOT NULL, purge_at INTEGER NOT NULL);
CREATE INDEX kv_deleted_vaults_sub ON kv_deleted_vaults(subscription_id);
CREATE TABLE kv_names (
  vault TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, display TEXT NOT NULL,
  deleted INTEGER, purge_at INTEGER, policy TEXT,
  PRIMARY KEY (vault, kind, name));
CREATE TABLE kv_versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  vault TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
  created INTEGER NOT NULL, updated INTEGER NOT NULL, attributes TEXT NOT NULL, tags TEXT NOT NULL,
  content_type TEXT, public TEXT NOT NULL, sealed BLOB NOT NULL,
  UNIQUE (vault, kind, name, version),
  FOREIGN KEY (vault, kind, name) REFERENCES kv_names(vault, kind, name) ON DELETE CASCADE);
"#,
    // 8: compliance attestations (ciel-compliance). Rows are only ever added.
    r#"
CREATE TABLE compliance_attestations (
  id TEXT PRIMARY KEY, requirement TEXT NOT NULL, framework TEXT NOT NULL, attested_by TEXT NOT NULL,
  created INTEGER NOT NULL, expires INTEGER NOT NULL, evidence_name TEXT NOT NULL,
  evidence_sha256 TEXT NOT NULL, evidence_copy TEXT NOT NULL, note TEXT);
CREATE INDEX compliance_attestations_req ON compliance_attestations(framework, requirement, created);
"#,
    // 9: second factors (TOTP) of users and operators. `subject` is a principal's object id or
    // `operator:{name}`; the secret is sealed under the master key; `last_step` refuses replays.
    r#"
CREATE TABLE mfa_factors (
  subject TEXT PRIMARY KEY, tenant_id TEXT, kind TEXT NOT NULL, sealed_secret BLOB NOT NULL,
  confirmed INTEGER NOT NULL, last_step INTEGER NOT NULL, failed INTEGER NOT NULL,
  locked_until INTEGER, created INTEGER NOT NULL);
"#,
    // 10: audit retention. Entries up to the anchor (a signed checkpoint) have been pruned; the
    // chain verifies from the anchor's hash. One row at most.
    r#"
CREATE TABLE audit_anchor (
  id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL, ts TEXT NOT NULL,
  key_id TEXT NOT NULL, signature TEXT NOT NULL, set_at INTEGER NOT NULL);
"#,
    // 11: Azure Policy (ciel-arm policy/): definitions, set definitions and assignments, each kept
    // whole as its ARM body. `id_key` and `scope_key` are lower-cased ids (ARM ids ignore case).
    r#"
CREATE TABLE policy_objects (
  id_key TEXT PRIMARY KEY, id TEXT NOT NULL, tenant_id TEXT NOT NULL, kind TEXT NOT NULL,
  scope_key TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
  created INTEGER NOT NULL, changed INTEGER NOT NULL);
CREATE INDEX policy_objects_kind ON policy_objects(tenant_id, kind);
"#,
    // 12: the operator directory (no tenant) and Customer Lockbox requests/grants.
    r#"
CREATE TABLE operators (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE COLLATE NOCASE, password_hash TEXT NOT NULL,
  disabled INTEGER NOT NULL, failed_logins INTEGER NOT NULL, locked_until INTEGER,
  created INTEGER NOT NULL);
CREATE TABLE lockbox_requests (
  id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, subscription_id TEXT NOT NULL,
  operator TEXT NOT NULL, scope TEXT NOT NULL, access TEXT NOT NULL, justification TEXT NOT NULL,
  duration_secs INTEGER NOT NULL, status TEXT NOT NULL, created INTEGER NOT NULL,
  decided INTEGER, decided_by TEXT, decision_reason TEXT, expires INTEGER NOT NULL,
  break_glass INTEGER NOT NULL, incident TEXT);
CREATE INDEX lockbox_requests_tenant ON lockbox_requests(tenant_id, created);
"#,
    // 13: MFA sign-ins. A refresh token remembers whether its sign-in gave a second factor (so a
    // refresh keeps `amr: mfa`, and one without it is refused once the user must have MFA); a
    // tenant's MFA policy (`off`, `admins`, `all`).
    r#"
ALTER TABLE refresh_tokens ADD COLUMN mfa INTEGER NOT NULL DEFAULT 0;
CREATE TABLE tenant_mfa_policies (
  tenant_id TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE, require TEXT NOT NULL,
  updated INTEGER NOT NULL, updated_by TEXT NOT NULL);
"#,
];

/// The writer connection and the state of the batch being collected (group commit).
struct Writer {
    conn: Connection,
    /// A transaction is open and collecting writes.
    open: bool,
    /// Number of the current (or last) batch.
    batch: u64,
    /// A write of the current batch failed in a way that aborts the transaction.
    poisoned: bool,
    /// Commit outcome of recent batches, for the writers waiting on them.
    outcomes: std::collections::HashMap<u64, std::result::Result<(), String>>,
}

pub struct SqliteStore {
    writer: Mutex<Writer>,
    committed: Condvar,
    /// Writers about to take the writer lock; the batch leader waits for them to join.
    arriving: AtomicUsize,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

/// Longest a batch leader waits for writers that are already on their way.
const GATHER_MAX: std::time::Duration = std::time::Duration::from_millis(2);
const BATCH_MAX: usize = 256;

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted rows are overwritten, so that destroyed keys do not linger in free pages.
    c.pragma_update(None, "secure_delete", "ON")?;
    Ok(c)
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let mut w = open(path)?;
        let version: i64 = w.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = w.transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(migration = i + 1, "applied store migration");
        }
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "the database schema (version {version}) is newer than this binary knows ({})",
                MIGRATIONS.len()
            )));
        }
        Ok(Self {
            writer: Mutex::new(Writer {
                conn: w,
                open: false,
                batch: 0,
                poisoned: false,
                outcomes: Default::default(),
            }),
            committed: Condvar::new(),
            arriving: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            path: path.to_path_buf(),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = {
            let mut pool = self
                .readers
                .lock()
                .map_err(|_| StoreError::Task("reader pool poisoned".into()))?;
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => open(&self.path)?,
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < 8 {
                pool.push(conn);
            }
        }
        out
    }

    /// Runs `f` as one atomic write, durable when this returns Ok.
    ///
    /// Group commit: concurrent writers share one transaction and one fsync. The first writer of
    /// a batch (the leader) opens the transaction; each writer runs inside its own savepoint, so a
    /// failing write is undone alone; the leader lets writers already on their way join (at most
    /// `GATHER_MAX`), commits, and wakes them all with the outcome. A lone writer commits at once.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let poisoned = || StoreError::Task("the store writer lock is poisoned".into());
        self.arriving.fetch_add(1, Ordering::SeqCst);
        let locked = self.writer.lock();
        self.arriving.fetch_sub(1, Ordering::SeqCst);
        let mut w = locked.map_err(|_| poisoned())?;
        let leader = !w.open;
        if leader {
            w.conn.execute_batch("BEGIN IMMEDIATE")?;
            w.open = true;
            w.poisoned = false;
            w.batch += 1;
        }
        let batch = w.batch;
        let out = match w.conn.execute_batch("SAVEPOINT w") {
            Ok(()) => {
                let out = f(&w.conn);
                let end = if out.is_ok() {
                    "RELEASE w"
                } else {
                    "ROLLBACK TO w; RELEASE w"
                };
                if w.conn.execute_batch(end).is_err() {
                    w.poisoned = true;
                }
                out
            }
            Err(e) => {
                w.poisoned = true;
                Err(e.into())
            }
        };
        if leader {
            let start = std::time::Instant::now();
            let mut joined = 1;
            while self.arriving.load(Ordering::SeqCst) > 0
                && start.elapsed() < GATHER_MAX
                && joined < BATCH_MAX
            {
                drop(w);
                std::thread::yield_now();
                w = self.writer.lock().map_err(|_| poisoned())?;
                joined += 1;
            }
            let outcome = if w.poisoned {
                let _ = w.conn.execute_batch("ROLLBACK");
                Err("the batch was rolled back after a failed write".to_string())
            } else {
                match w.conn.execute_batch("COMMIT") {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = w.conn.execute_batch("ROLLBACK");
                        Err(e.to_string())
                    }
                }
            };
            w.open = false;
            w.outcomes.retain(|b, _| *b + 1024 > batch);
            w.outcomes.insert(batch, outcome);
            self.committed.notify_all();
        }
        loop {
            if let Some(o) = w.outcomes.get(&batch) {
                let o = o.clone();
                return match (out, o) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(msg)) => Err(StoreError::Task(format!("commit failed: {msg}"))),
                };
            }
            w = self.committed.wait(w).map_err(|_| poisoned())?;
        }
    }
}

fn conflict_or(e: rusqlite::Error, what: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what.to_string())
        }
        _ => StoreError::Db(e),
    }
}

fn not_found<T>(r: rusqlite::Result<T>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(rusqlite::Error::QueryReturnedNoRows) => Err(StoreError::NotFound),
        Err(e) => Err(e.into()),
    }
}

fn json_col(s: String) -> rusqlite::Result<serde_json::Value> {
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Appends audit entries inside `tx`, chained to the current head.
fn append_in(tx: &Connection, drafts: &[AuditDraft]) -> Result<Vec<AuditRecord>> {
    let head: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_string()));
    let mut out = Vec::with_capacity(drafts.len());
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit_log (seq, ts, tenant_id, actor, action, target, outcome, details, request_id, client_ip, prev_hash, hash)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
    )?;
    for d in drafts {
        seq += 1;
        let mut r = AuditRecord {
            seq,
            ts: ciel_core::time::now_rfc3339(),
            tenant_id: d.tenant_id.clone(),
            actor: d.actor.clone(),
            action: d.action.clone(),
            target: d.target.clone(),
            outcome: d.outcome.clone(),
            details: if d.details.is_null() {
                "{}".to_string()
            } else {
                d.details.to_string()
            },
            request_id: d.request_id.clone(),
            client_ip: d.client_ip.clone(),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        r.hash = chain_hash(&r);
        stmt.execute(params![
            r.seq,
            r.ts,
            r.tenant_id,
            r.actor,
            r.action,
            r.target,
            r.outcome,
            r.details,
            r.request_id,
            r.client_ip,
            r.prev_hash,
            r.hash
        ])?;
        prev = r.hash.clone();
        out.push(r);
    }
    Ok(out)
}

fn principal_row(r: &Row) -> rusqlite::Result<Principal> {
    let kind: String = r.get(2)?;
    Ok(Principal {
        object_id: r.get(0)?,
        tenant_id: r.get(1)?,
        kind: PrincipalKindRec::parse(&kind).unwrap_or(PrincipalKindRec::User),
        app_id: r.get(3)?,
        display_name: r.get(4)?,
        upn: r.get(5)?,
        password_hash: r.get(6)?,
        failed_logins: r.get(7)?,
        locked_until: r.get(8)?,
        created: r.get(9)?,
    })
}
const PRINCIPAL_COLS: &str =
    "object_id, tenant_id, kind, app_id, display_name, upn, password_hash, failed_logins, locked_until, created";

fn rg_row(r: &Row) -> rusqlite::Result<ResourceGroup> {
    Ok(ResourceGroup {
        subscription_id: r.get(0)?,
        name: r.get(1)?,
        location: r.get(2)?,
        tags: json_col(r.get(3)?)?,
        managed_by: r.get(4)?,
        created: r.get(5)?,
        changed: r.get(6)?,
    })
}
const RG_COLS: &str = "subscription_id, name, location, tags, managed_by, created, changed";

fn resource_row(r: &Row) -> rusqlite::Result<Resource> {
    Ok(Resource {
        id: r.get(0)?,
        subscription_id: r.get(1)?,
        resource_group: r.get(2)?,
        rtype: r.get(3)?,
        name: r.get(4)?,
        location: r.get(5)?,
        tenant_id: r.get(6)?,
        body: json_col(r.get(7)?)?,
        created: r.get(8)?,
        changed: r.get(9)?,
        sealed: r.get(10)?,
    })
}
const RESOURCE_COLS: &str = "id, subscription_id, resource_group, rtype, name, location, tenant_id, body, created, changed, sealed";

fn ra_row(r: &Row) -> rusqlite::Result<RoleAssignment> {
    Ok(RoleAssignment {
        name: r.get(0)?,
        tenant_id: r.get(1)?,
        scope: r.get(2)?,
        role_definition_id: r.get(3)?,
        principal_id: r.get(4)?,
        principal_type: r.get(5)?,
        description: r.get(6)?,
        created_by: r.get(7)?,
        created: r.get(8)?,
    })
}
const RA_COLS: &str = "name, tenant_id, scope, role_definition_id, principal_id, principal_type, description, created_by, created";

fn audit_row(r: &Row) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        ts: r.get(1)?,
        tenant_id: r.get(2)?,
        actor: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        outcome: r.get(6)?,
        details: r.get(7)?,
        request_id: r.get(8)?,
        client_ip: r.get(9)?,
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    })
}

fn container_row(r: &Row) -> rusqlite::Result<BlobContainer> {
    Ok(BlobContainer {
        account: r.get(0)?,
        name: r.get(1)?,
        metadata: json_col(r.get(2)?)?,
        etag: r.get(3)?,
        last_modified: r.get(4)?,
        public_access: r.get(5)?,
        lease: lease_col(r.get(6)?)?,
    })
}
const CONTAINER_COLS: &str = "account, name, metadata, etag, last_modified, public_access, lease";

fn lease_col(s: Option<String>) -> rusqlite::Result<Option<Lease>> {
    s.map(|s| {
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn lease_text(l: &Option<Lease>) -> Option<String> {
    l.as_ref().and_then(|l| serde_json::to_string(l).ok())
}

fn blob_row(r: &Row) -> rusqlite::Result<BlobRecord> {
    Ok(BlobRecord {
        account: r.get(0)?,
        container: r.get(1)?,
        name: r.get(2)?,
        object_id: r.get(3)?,
        size: r.get(4)?,
        content_type: r.get(5)?,
        content_encoding: r.get(6)?,
        content_language: r.get(7)?,
        content_disposition: r.get(8)?,
        cache_control: r.get(9)?,
        content_md5: r.get(10)?,
        metadata: json_col(r.get(11)?)?,
        etag: r.get(12)?,
        last_modified: r.get(13)?,
        created: r.get(14)?,
        blocks: json_col(r.get(15)?)?,
        snapshot: r.get(16)?,
        blob_type: r.get(17)?,
        lease: lease_col(r.get(18)?)?,
        tags: json_col(r.get(19)?)?,
        sequence_number: r.get(20)?,
        copy: r.get::<_, Option<String>>(21)?.map(json_col).transpose()?,
        shared: r.get::<_, i64>(22)? != 0,
    })
}
const BLOB_COLS: &str =
    "account, container, name, object_id, size, content_type, content_encoding, content_language, \
content_disposition, cache_control, content_md5, metadata, etag, last_modified, created, blocks, \
snapshot, blob_type, lease, tags, sequence_number, copy, shared";

/// Inserts or replaces a row of `blobs` (the blob itself or a snapshot) as given.
fn insert_blob_row(tx: &Connection, b: &BlobRecord, shared: bool) -> Result<()> {
    let tags = if b.tags.is_object() {
        b.tags.to_string()
    } else {
        "{}".to_string()
    };
    let blob_type = if b.blob_type.is_empty() {
        "BlockBlob"
    } else {
        b.blob_type.as_str()
    };
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO blobs ({BLOB_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23)"
        ),
        params![
            b.account, b.container, b.name, b.object_id, b.size, b.content_type, b.content_encoding, b.content_language,
            b.content_disposition, b.cache_control, b.content_md5, b.metadata.to_string(), b.etag, b.last_modified, b.created,
            if b.blocks.is_array() { b.blocks.to_string() } else { "[]".to_string() },
            b.snapshot, blob_type, lease_text(&b.lease), tags, b.sequence_number,
            b.copy.as_ref().map(|c| c.to_string()), shared as i64
        ],
    )
    .map_err(|e| conflict_or(e, "blob"))?;
    Ok(())
}

/// Of `candidates` (objects a change stopped referring to), those no record of the account refers
/// to any more: not a blob or snapshot row, not an uncommitted block. Decided inside the
/// transaction of the change, so that an object is never removed while something still uses it.
/// Only rows marked `shared` can hold an object another record also holds, so only they are
/// searched (an index keeps that search to the sharing rows of the account). The search in
/// `blocks` is textual: a false match (another field spelling the same 32 hex digits) can only
/// keep an object, never remove a used one.
fn release(tx: &Connection, account: &str, candidates: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut in_blobs = tx.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM blobs WHERE account = ?1 AND shared = 1 AND (object_id = ?2 OR instr(blocks, ?3) > 0))",
    )?;
    let mut in_blocks = tx.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM blob_blocks WHERE account = ?1 AND object_id = ?2)",
    )?;
    for o in candidates {
        if o.is_empty() || out.contains(&o) {
            continue;
        }
        let hex = ciel_core::audit::hex_lower(&o);
        let used: bool = in_blobs.query_row(params![account, o, hex], |r| r.get(0))?
            || in_blocks.query_row(params![account, o], |r| r.get(0))?;
        if !used {
            out.push(o);
        }
    }
    Ok(out)
}

/// Every object a blob record refers to.
fn objects_of(object_id: &[u8], blocks: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if !object_id.is_empty() {
        out.push(object_id.to_vec());
    }
    if let Ok(serde_json::Value::Array(a)) = serde_json::from_str::<serde_json::Value>(blocks) {
        for b in a {
            if let Some(Ok(bytes)) = b["object"].as_str().map(decode_hex) {
                // Page blob extents may name one object several times.
                if !out.contains(&bytes) {
                    out.push(bytes);
                }
            }
        }
    }
    out
}

fn decode_hex(s: &str) -> std::result::Result<Vec<u8>, ()> {
    if !s.len().is_multiple_of(2) {
        return Err(());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| ()))
        .collect()
}

/// Objects of a blob and of its uncommitted blocks (inside a transaction).
fn blob_objects(
    tx: &Connection,
    account: &str,
    container: &str,
    name: &str,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    if let Some((oid, blocks)) = tx
        .query_row(
            "SELECT object_id, blocks FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
            params![account, container, name],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?
    {
        out.extend(objects_of(&oid, &blocks));
    }
    let mut s = tx.prepare_cached(
        "SELECT object_id FROM blob_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3",
    )?;
    for r in s.query_map(params![account, container, name], |r| {
        r.get::<_, Vec<u8>>(0)
    })? {
        out.push(r?);
    }
    Ok(out)
}

/// Writes the blob itself (`snapshot = ''`) and drops its uncommitted blocks; returns the
/// objects nothing refers to any more. The new row shares when the caller says so, when it keeps
/// objects of a sharing row it replaces (its snapshots hold them too), or when it commits blocks
/// that share.
fn put_blob_in(tx: &Connection, b: &BlobRecord) -> Result<Vec<Vec<u8>>> {
    let before = blob_objects(tx, &b.account, &b.container, &b.name)?;
    let now_used = objects_of(&b.object_id, &b.blocks.to_string());
    let old_shared: bool = tx
        .query_row(
            "SELECT shared FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
            params![b.account, b.container, b.name],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|v| v != 0)
        .unwrap_or(false);
    let mut shared = b.shared;
    if !shared && old_shared {
        let old: Vec<Vec<u8>> = tx
            .query_row(
                "SELECT object_id, blocks FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
                params![b.account, b.container, b.name],
                |r| Ok(objects_of(&r.get::<_, Vec<u8>>(0)?, &r.get::<_, String>(1)?)),
            )?;
        shared = old.iter().any(|o| now_used.contains(o));
    }
    if !shared {
        let mut s = tx.prepare_cached(
            "SELECT object_id FROM blob_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3 AND shared = 1",
        )?;
        for r in s.query_map(params![b.account, b.container, b.name], |r| {
            r.get::<_, Vec<u8>>(0)
        })? {
            if now_used.contains(&r?) {
                shared = true;
            }
        }
    }
    let mut row = b.clone();
    row.snapshot = String::new();
    insert_blob_row(tx, &row, shared)?;
    tx.execute(
        "DELETE FROM blob_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3",
        params![b.account, b.container, b.name],
    )?;
    let gone = before
        .into_iter()
        .filter(|o| !now_used.contains(o))
        .collect();
    release(tx, &b.account, gone)
}

/// Stores an uncommitted block; returns the replaced block's object when nothing else uses it.
fn put_block_in(tx: &Connection, b: &BlockRec) -> Result<Vec<Vec<u8>>> {
    let old: Option<Vec<u8>> = tx
        .query_row(
            "SELECT object_id FROM blob_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3 AND block_id = ?4",
            params![b.account, b.container, b.blob, b.block_id],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute(
        "INSERT OR REPLACE INTO blob_blocks (account, container, blob, block_id, object_id, size, created, shared) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
        params![b.account, b.container, b.blob, b.block_id, b.object_id, b.size, b.created, b.shared as i64],
    )
    .map_err(|e| conflict_or(e, "block"))?;
    release(tx, &b.account, old.into_iter().collect())
}

/// Marks the record a copy shares objects with, if it is still as the caller read it.
fn mark_source(tx: &Connection, account: &str, src: &ShareSource) -> Result<()> {
    let n = tx.execute(
        "UPDATE blobs SET shared = 1 WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ?4 AND etag = ?5",
        params![account, src.container, src.name, src.snapshot, src.etag],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict("source changed".into()));
    }
    Ok(())
}

/// `prefix%` with LIKE's wildcards escaped.
fn like_prefix(prefix: &str) -> String {
    format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

fn sub_row(r: &Row) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        display_name: r.get(2)?,
        state: r.get(3)?,
        created: r.get(4)?,
    })
}

impl MetadataStore for SqliteStore {
    fn create_tenant(&self, t: &Tenant, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tenants (id, display_name, default_domain, created) VALUES (?1,?2,?3,?4)",
                params![t.id, t.display_name, t.default_domain, t.created],
            )
            .map_err(|e| conflict_or(e, "tenant"))?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn get_tenant(&self, id: &str) -> Result<Tenant> {
        self.read(|c| {
            not_found(c.query_row(
                "SELECT id, display_name, default_domain, created FROM tenants WHERE id = ?1",
                [id],
                |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        display_name: r.get(1)?,
                        default_domain: r.get(2)?,
                        created: r.get(3)?,
                    })
                },
            ))
        })
    }
    fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT id, display_name, default_domain, created FROM tenants ORDER BY created, id")?;
            let rows = s.query_map([], |r| {
                Ok(Tenant { id: r.get(0)?, display_name: r.get(1)?, default_domain: r.get(2)?, created: r.get(3)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn create_principal(&self, p: &Principal, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                &format!("INSERT INTO principals ({PRINCIPAL_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
                params![
                    p.object_id, p.tenant_id, p.kind.as_str(), p.app_id, p.display_name, p.upn, p.password_hash,
                    p.failed_logins, p.locked_until, p.created
                ],
            )
            .map_err(|e| conflict_or(e, "principal"))?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn get_principal(&self, object_id: &str) -> Result<Principal> {
        self.read(|c| {
            not_found(c.query_row(
                &format!("SELECT {PRINCIPAL_COLS} FROM principals WHERE object_id = ?1"),
                [object_id],
                principal_row,
            ))
        })
    }
    fn find_principal_by_app_id(&self, app_id: &str) -> Result<Principal> {
        self.read(|c| {
            not_found(c.query_row(
                &format!("SELECT {PRINCIPAL_COLS} FROM principals WHERE app_id = ?1"),
                [app_id],
                principal_row,
            ))
        })
    }
    fn find_user_by_upn(&self, upn: &str) -> Result<Principal> {
        self.read(|c| {
            not_found(c.query_row(
                &format!(
                    "SELECT {PRINCIPAL_COLS} FROM principals WHERE upn = ?1 AND kind = 'user'"
                ),
                [upn],
                principal_row,
            ))
        })
    }
    fn list_principals(
        &self,
        tenant_id: &str,
        kind: Option<PrincipalKindRec>,
    ) -> Result<Vec<Principal>> {
        self.read(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {PRINCIPAL_COLS} FROM principals WHERE tenant_id = ?1 AND (?2 IS NULL OR kind = ?2) ORDER BY created, object_id"
            ))?;
            let rows = s.query_map(params![tenant_id, kind.map(|k| k.as_str())], principal_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn delete_principal(&self, object_id: &str, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM role_assignments WHERE principal_id = ?1",
                [object_id],
            )?;
            if tx.execute("DELETE FROM principals WHERE object_id = ?1", [object_id])? == 0 {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn update_principal_login_state(
        &self,
        object_id: &str,
        failed_logins: i64,
        locked_until: Option<i64>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE principals SET failed_logins = ?2, locked_until = ?3 WHERE object_id = ?1",
                params![object_id, failed_logins, locked_until],
            )?;
            Ok(())
        })
    }
    fn replace_sp_secrets(
        &self,
        object_id: &str,
        s: &ClientSecret,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM client_secrets WHERE object_id = ?1", [object_id])?;
            tx.execute(
                "INSERT INTO client_secrets (key_id, object_id, hint, hash, created, expires) VALUES (?1,?2,?3,?4,?5,?6)",
                params![s.key_id, object_id, s.hint, s.hash, s.created, s.expires],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn list_sp_secrets(&self, object_id: &str) -> Result<Vec<ClientSecret>> {
        self.read(|c| {
            let mut s = c.prepare_cached("SELECT key_id, object_id, hint, hash, created, expires FROM client_secrets WHERE object_id = ?1")?;
            let rows = s.query_map([object_id], |r| {
                Ok(ClientSecret {
                    key_id: r.get(0)?,
                    object_id: r.get(1)?,
                    hint: r.get(2)?,
                    hash: r.get(3)?,
                    created: r.get(4)?,
                    expires: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn create_subscription(&self, s: &Subscription, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO subscriptions (id, tenant_id, display_name, state, created) VALUES (?1,?2,?3,?4,?5)",
                params![s.id, s.tenant_id, s.display_name, s.state, s.created],
            )
            .map_err(|e| conflict_or(e, "subscription"))?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn get_subscription(&self, id: &str) -> Result<Subscription> {
        self.read(|c| {
            not_found(c.query_row(
                "SELECT id, tenant_id, display_name, state, created FROM subscriptions WHERE id = ?1",
                [id],
                sub_row,
            ))
        })
    }
    fn list_subscriptions(&self, tenant_id: &str) -> Result<Vec<Subscription>> {
        self.read(|c| {
            let mut s = c.prepare(
                "SELECT id, tenant_id, display_name, state, created FROM subscriptions WHERE tenant_id = ?1 ORDER BY created, id",
            )?;
            let rows = s.query_map([tenant_id], sub_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn put_resource_group(&self, rg: &ResourceGroup, audit: &AuditDraft) -> Result<bool> {
        self.write(|tx| {
            let existed: bool = tx
                .query_row(
                    "SELECT 1 FROM resource_groups WHERE subscription_id = ?1 AND name = ?2",
                    params![rg.subscription_id, rg.name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if existed {
                // The name keeps the casing it was created with, as in Azure.
                tx.execute(
                    "UPDATE resource_groups SET location = ?3, tags = ?4, managed_by = ?5, changed = ?6 WHERE subscription_id = ?1 AND name = ?2",
                    params![rg.subscription_id, rg.name, rg.location, rg.tags.to_string(), rg.managed_by, rg.changed],
                )?;
            } else {
                tx.execute(
                    &format!("INSERT INTO resource_groups ({RG_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
                    params![rg.subscription_id, rg.name, rg.location, rg.tags.to_string(), rg.managed_by, rg.created, rg.changed],
                )?;
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(!existed)
        })
    }
    fn get_resource_group(&self, subscription: &str, name: &str) -> Result<ResourceGroup> {
        self.read(|c| {
            not_found(c.query_row(
                &format!("SELECT {RG_COLS} FROM resource_groups WHERE subscription_id = ?1 AND name = ?2"),
                params![subscription, name],
                rg_row,
            ))
        })
    }
    fn list_resource_groups(
        &self,
        subscription: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResourceGroup>> {
        self.read(|c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {RG_COLS} FROM resource_groups WHERE subscription_id = ?1 AND (?2 IS NULL OR name > ?2) ORDER BY name LIMIT ?3"
            ))?;
            let rows = s.query_map(params![subscription, after, limit as i64], rg_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn delete_resource_group(
        &self,
        subscription: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| {
            let rg: ResourceGroup = not_found(tx.query_row(
                &format!("SELECT {RG_COLS} FROM resource_groups WHERE subscription_id = ?1 AND name = ?2"),
                params![subscription, name],
                rg_row,
            ))?;
            let scope = format!("/subscriptions/{}/resourcegroups/{}", rg.subscription_id, rg.name).to_lowercase();
            tx.execute("DELETE FROM resources WHERE subscription_id = ?1 AND resource_group = ?2", params![subscription, name])?;
            tx.execute(
                "DELETE FROM role_assignments WHERE lower(scope) = ?1 OR lower(scope) LIKE ?2 ESCAPE '\\'",
                params![scope, format!("{}/%", scope.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))],
            )?;
            policy::delete_within(tx, &scope)?;
            tx.execute("DELETE FROM resource_groups WHERE subscription_id = ?1 AND name = ?2", params![subscription, name])?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }

    fn put_resource(&self, r: &Resource, audit: &AuditDraft) -> Result<bool> {
        self.write(|tx| {
            let key = r.id.to_ascii_lowercase();
            let existed = tx.query_row("SELECT 1 FROM resources WHERE id_key = ?1", [&key], |_| Ok(())).optional()?.is_some();
            tx.execute(
                &format!(
                    "INSERT INTO resources (id_key, {RESOURCE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)
                     ON CONFLICT(id_key) DO UPDATE SET location = excluded.location, body = excluded.body, changed = excluded.changed,
                     sealed = COALESCE(excluded.sealed, resources.sealed)"
                ),
                params![
                    key, r.id, r.subscription_id, r.resource_group, r.rtype, r.name, r.location, r.tenant_id, r.body.to_string(),
                    r.created, r.changed, r.sealed
                ],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(!existed)
        })
    }
    fn get_resource(&self, id_key: &str) -> Result<Resource> {
        self.read(|c| {
            not_found(c.query_row(
                &format!("SELECT {RESOURCE_COLS} FROM resources WHERE id_key = ?1"),
                [id_key.to_ascii_lowercase()],
                resource_row,
            ))
        })
    }
    fn delete_resource(&self, id_key: &str, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            let key = id_key.to_ascii_lowercase();
            let n = tx.execute(
                "DELETE FROM resources WHERE id_key = ?1 OR id_key LIKE ?2 ESCAPE '\\'",
                params![
                    key,
                    format!(
                        "{}/%",
                        key.replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_")
                    )
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn list_resources(
        &self,
        scope_key: &str,
        rtype: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Resource>> {
        self.read(|c| {
            let scope = scope_key.to_ascii_lowercase();
            let like = format!("{}/%", scope.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            let mut s = c.prepare_cached(&format!(
                "SELECT {RESOURCE_COLS} FROM resources WHERE id_key LIKE ?1 ESCAPE '\\' AND (?2 IS NULL OR rtype = ?2)
                 AND (?3 IS NULL OR id_key > ?3) ORDER BY id_key LIMIT ?4"
            ))?;
            let rows = s.query_map(params![like, rtype, after.map(|a| a.to_ascii_lowercase()), limit as i64], resource_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn find_resources_by_name(&self, rtype: &str, name: &str) -> Result<Vec<Resource>> {
        self.read(|c| {
            let mut s = c.prepare_cached(&format!("SELECT {RESOURCE_COLS} FROM resources WHERE rtype = ?1 AND lower(name) = lower(?2)"))?;
            let rows = s.query_map(params![rtype, name], resource_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn put_container(&self, c: &BlobContainer, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO blob_containers ({CONTAINER_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"
                ),
                params![
                    c.account,
                    c.name,
                    c.metadata.to_string(),
                    c.etag,
                    c.last_modified,
                    c.public_access,
                    lease_text(&c.lease)
                ],
            )
            .map_err(|e| conflict_or(e, "container"))?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn get_container(&self, account: &str, name: &str) -> Result<BlobContainer> {
        self.read(|c| {
            not_found(c.query_row(
                &format!(
                    "SELECT {CONTAINER_COLS} FROM blob_containers WHERE account = ?1 AND name = ?2"
                ),
                params![account, name],
                container_row,
            ))
        })
    }
    fn delete_container(
        &self,
        account: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            let mut ids = Vec::new();
            let mut s = tx.prepare_cached(
                "SELECT object_id, blocks FROM blobs WHERE account = ?1 AND container = ?2",
            )?;
            for r in s.query_map(params![account, name], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })? {
                let (o, b) = r?;
                ids.extend(objects_of(&o, &b));
            }
            let mut s = tx.prepare_cached(
                "SELECT object_id FROM blob_blocks WHERE account = ?1 AND container = ?2",
            )?;
            for r in s.query_map(params![account, name], |r| r.get::<_, Vec<u8>>(0))? {
                ids.push(r?);
            }
            tx.execute(
                "DELETE FROM blob_blocks WHERE account = ?1 AND container = ?2",
                params![account, name],
            )?;
            tx.execute(
                "DELETE FROM blobs WHERE account = ?1 AND container = ?2",
                params![account, name],
            )?;
            if tx.execute(
                "DELETE FROM blob_containers WHERE account = ?1 AND name = ?2",
                params![account, name],
            )? == 0
            {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            // Copies in other containers may share these objects.
            release(tx, account, ids)
        })
    }
    fn list_containers(
        &self,
        account: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobContainer>> {
        self.read(|c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {CONTAINER_COLS} FROM blob_containers WHERE account = ?1 AND name LIKE ?2 ESCAPE '\\'
                 AND (?3 IS NULL OR name > ?3) ORDER BY name LIMIT ?4"
            ))?;
            let rows = s.query_map(params![account, like_prefix(prefix), after, limit as i64], container_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn put_blob(&self, b: &BlobRecord, audit: &AuditDraft) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            let freed = put_blob_in(tx, b)?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(freed)
        })
    }
    fn get_blob(&self, account: &str, container: &str, name: &str) -> Result<BlobRecord> {
        self.get_blob_at(account, container, name, "")
    }
    fn put_blob_if(
        &self,
        b: &BlobRecord,
        expect: &Option<(String, Option<Lease>)>,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            let cur: Option<(String, Option<String>)> = tx
                .query_row(
                    "SELECT etag, lease FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
                    params![b.account, b.container, b.name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let same = match (&cur, expect) {
                (None, None) => true,
                (Some((etag, lease)), Some((want_etag, want_lease))) => {
                    etag == want_etag && &lease_col(lease.clone())? == want_lease
                }
                _ => false,
            };
            if !same {
                return Err(StoreError::Conflict("changed".into()));
            }
            let freed = put_blob_in(tx, b)?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(freed)
        })
    }
    fn get_blob_at(
        &self,
        account: &str,
        container: &str,
        name: &str,
        snapshot: &str,
    ) -> Result<BlobRecord> {
        self.read(|c| {
            not_found(c.query_row(
                &format!("SELECT {BLOB_COLS} FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ?4"),
                params![account, container, name, snapshot],
                blob_row,
            ))
        })
    }
    fn replace_blob(
        &self,
        b: &BlobRecord,
        expect_etag: &str,
        expect_lease: &Option<Lease>,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            let cur = not_found(tx.query_row(
                &format!("SELECT {BLOB_COLS} FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''"),
                params![b.account, b.container, b.name],
                blob_row,
            ))?;
            if cur.etag != expect_etag || &cur.lease != expect_lease {
                return Err(StoreError::Conflict("changed".into()));
            }
            let before = objects_of(&cur.object_id, &cur.blocks.to_string());
            let now_used = objects_of(&b.object_id, &b.blocks.to_string());
            let mut row = b.clone();
            row.snapshot = String::new();
            insert_blob_row(tx, &row, cur.shared || b.shared)?;
            append_in(tx, std::slice::from_ref(audit))?;
            let gone = before.into_iter().filter(|o| !now_used.contains(o)).collect();
            release(tx, &b.account, gone)
        })
    }
    fn create_snapshot(&self, snap: &BlobRecord, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            if snap.snapshot.is_empty() {
                return Err(StoreError::Conflict("a snapshot needs its time".into()));
            }
            let n = tx.execute(
                "UPDATE blobs SET shared = 1 WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
                params![snap.account, snap.container, snap.name],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ?4)",
                params![snap.account, snap.container, snap.name, snap.snapshot],
                |r| r.get(0),
            )?;
            if exists {
                return Err(StoreError::Conflict("snapshot".into()));
            }
            insert_blob_row(tx, snap, true)?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn delete_blobs(
        &self,
        account: &str,
        container: &str,
        name: &str,
        what: &BlobDeletion,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            let base_exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = '')",
                params![account, container, name],
                |r| r.get(0),
            )?;
            let snapshots: i64 = tx.query_row(
                "SELECT count(*) FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot != ''",
                params![account, container, name],
                |r| r.get(0),
            )?;
            // Which rows go: (`snapshot = ''` rows?, snapshot rows?, one snapshot?)
            let (base, snaps, one): (bool, bool, Option<&str>) = match what {
                BlobDeletion::Base => {
                    if snapshots > 0 && base_exists {
                        return Err(StoreError::Conflict("snapshots".into()));
                    }
                    (true, false, None)
                }
                BlobDeletion::Snapshot(s) => (false, false, Some(s.as_str())),
                BlobDeletion::BaseAndSnapshots => (true, true, None),
                BlobDeletion::SnapshotsOnly => (false, true, None),
            };
            if (base || snaps) && !base_exists {
                return Err(StoreError::NotFound);
            }
            let mut candidates = Vec::new();
            let mut gone = 0usize;
            {
                let mut s = tx.prepare_cached(
                    "SELECT object_id, blocks, snapshot FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3",
                )?;
                let rows = s.query_map(params![account, container, name], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?;
                for r in rows {
                    let (o, b, snap) = r?;
                    let hit = (base && snap.is_empty())
                        || (snaps && !snap.is_empty())
                        || one == Some(snap.as_str()) && !snap.is_empty();
                    if hit {
                        candidates.extend(objects_of(&o, &b));
                        gone += 1;
                    }
                }
            }
            if gone == 0 && one.is_some() {
                return Err(StoreError::NotFound);
            }
            if base {
                tx.execute(
                    "DELETE FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
                    params![account, container, name],
                )?;
                let mut s = tx.prepare_cached(
                    "SELECT object_id FROM blob_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3",
                )?;
                for r in s.query_map(params![account, container, name], |r| r.get::<_, Vec<u8>>(0))? {
                    candidates.push(r?);
                }
                tx.execute(
                    "DELETE FROM blob_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3",
                    params![account, container, name],
                )?;
            }
            if snaps {
                tx.execute(
                    "DELETE FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot != ''",
                    params![account, container, name],
                )?;
            }
            if let Some(s) = one {
                tx.execute(
                    "DELETE FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ?4 AND snapshot != ''",
                    params![account, container, name, s],
                )?;
            }
            append_in(tx, std::slice::from_ref(audit))?;
            release(tx, account, candidates)
        })
    }
    fn put_blob_from(
        &self,
        b: &BlobRecord,
        src: &ShareSource,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            mark_source(tx, &b.account, src)?;
            let mut row = b.clone();
            row.shared = true;
            let freed = put_blob_in(tx, &row)?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(freed)
        })
    }
    fn put_block_from(&self, b: &BlockRec, src: &ShareSource) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            mark_source(tx, &b.account, src)?;
            let mut row = b.clone();
            row.shared = true;
            put_block_in(tx, &row)
        })
    }
    fn set_container_lease(
        &self,
        account: &str,
        name: &str,
        expect: &Option<Lease>,
        lease: &Option<Lease>,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| {
            let cur: Option<String> = not_found(tx.query_row(
                "SELECT lease FROM blob_containers WHERE account = ?1 AND name = ?2",
                params![account, name],
                |r| r.get(0),
            ))?;
            if &lease_col(cur)? != expect {
                return Err(StoreError::Conflict("changed".into()));
            }
            tx.execute(
                "UPDATE blob_containers SET lease = ?3 WHERE account = ?1 AND name = ?2",
                params![account, name, lease_text(lease)],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn delete_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<Vec<Vec<u8>>> {
        self.delete_blobs(account, container, name, &BlobDeletion::Base, audit)
    }
    fn update_blob_properties(&self, b: &BlobRecord, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE blobs SET content_type = ?4, content_encoding = ?5, content_language = ?6, content_disposition = ?7,
                 cache_control = ?8, content_md5 = ?9, metadata = ?10, etag = ?11, last_modified = ?12
                 WHERE account = ?1 AND container = ?2 AND name = ?3 AND snapshot = ''",
                params![
                    b.account, b.container, b.name, b.content_type, b.content_encoding, b.content_language, b.content_disposition,
                    b.cache_control, b.content_md5, b.metadata.to_string(), b.etag, b.last_modified
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn update_container(&self, c: &BlobContainer, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE blob_containers SET metadata = ?3, etag = ?4, last_modified = ?5 WHERE account = ?1 AND name = ?2",
                params![c.account, c.name, c.metadata.to_string(), c.etag, c.last_modified],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn put_block(&self, b: &BlockRec) -> Result<Option<Vec<u8>>> {
        self.write(|tx| Ok(put_block_in(tx, b)?.into_iter().next()))
    }
    fn list_blocks(&self, account: &str, container: &str, blob: &str) -> Result<Vec<BlockRec>> {
        self.read(|c| {
            let mut s = c.prepare_cached(
                "SELECT account, container, blob, block_id, object_id, size, created, shared FROM blob_blocks
                 WHERE account = ?1 AND container = ?2 AND blob = ?3 ORDER BY created, block_id",
            )?;
            let rows = s.query_map(params![account, container, blob], |r| {
                Ok(BlockRec {
                    account: r.get(0)?,
                    container: r.get(1)?,
                    blob: r.get(2)?,
                    block_id: r.get(3)?,
                    object_id: r.get(4)?,
                    size: r.get(5)?,
                    created: r.get(6)?,
                    shared: r.get::<_, i64>(7)? != 0,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobRecord>> {
        self.list_blobs_with(account, container, prefix, after, limit, false)
    }
    fn list_blobs_with(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        snapshots: bool,
    ) -> Result<Vec<BlobRecord>> {
        self.read(|c| {
            // In primary-key order (no sort step: listing stays linear in the container's size).
            let mut s = c.prepare_cached(&format!(
                "SELECT {BLOB_COLS} FROM blobs WHERE account = ?1 AND container = ?2 AND name LIKE ?3 ESCAPE '\\'
                 AND (?4 IS NULL OR name > ?4) AND (?6 OR snapshot = '') ORDER BY name, snapshot LIMIT ?5"
            ))?;
            let rows = s.query_map(params![account, container, like_prefix(prefix), after, limit as i64, snapshots], blob_row)?;
            let mut rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            // Azure lists a blob's snapshots (oldest first) before the blob itself, whose empty
            // snapshot sorts first here: move it behind its snapshots.
            if snapshots {
                let mut i = 0;
                while i < rows.len() {
                    let mut j = i + 1;
                    while j < rows.len() && rows[j].name == rows[i].name {
                        j += 1;
                    }
                    if rows[i].snapshot.is_empty() {
                        rows[i..j].rotate_left(1);
                    }
                    i = j;
                }
            }
            Ok(rows)
        })
    }
    fn delete_account_data(&self, account: &str) -> Result<Vec<Vec<u8>>> {
        self.write(|tx| {
            let mut ids = Vec::new();
            let mut s =
                tx.prepare_cached("SELECT object_id, blocks FROM blobs WHERE account = ?1")?;
            for r in s.query_map(params![account], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })? {
                let (o, b) = r?;
                ids.extend(objects_of(&o, &b));
            }
            tx.execute(
                "DELETE FROM blob_blocks WHERE account = ?1",
                params![account],
            )?;
            tx.execute("DELETE FROM blobs WHERE account = ?1", params![account])?;
            tx.execute(
                "DELETE FROM blob_container_policies WHERE account = ?1",
                params![account],
            )?;
            tx.execute(
                "DELETE FROM blob_containers WHERE account = ?1",
                params![account],
            )?;
            tx.execute(
                "DELETE FROM blob_services WHERE account = ?1",
                params![account],
            )?;
            Ok(ids)
        })
    }
    fn set_container_acl(&self, acl: &ContainerAcl, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE blob_containers SET public_access = ?3, etag = ?4, last_modified = ?5 WHERE account = ?1 AND name = ?2",
                params![acl.account, acl.container, acl.public_access, acl.etag, acl.last_modified],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            tx.execute(
                "INSERT OR REPLACE INTO blob_container_policies (account, container, policies) VALUES (?1,?2,?3)",
                params![acl.account, acl.container, acl.policies.to_string()],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn get_container_policies(&self, account: &str, container: &str) -> Result<serde_json::Value> {
        self.read(|c| {
            let p: Option<String> = c
                .query_row(
                    "SELECT policies FROM blob_container_policies WHERE account = ?1 AND container = ?2",
                    params![account, container],
                    |r| r.get(0),
                )
                .optional()?;
            match p {
                Some(p) => json_col(p).map_err(StoreError::from),
                None => Ok(serde_json::json!([])),
            }
        })
    }
    fn get_blob_service_properties(&self, account: &str) -> Result<Option<serde_json::Value>> {
        self.read(|c| {
            let p: Option<String> = c
                .query_row(
                    "SELECT properties FROM blob_services WHERE account = ?1",
                    params![account],
                    |r| r.get(0),
                )
                .optional()?;
            p.map(|p| json_col(p).map_err(StoreError::from)).transpose()
        })
    }
    fn put_blob_service_properties(
        &self,
        account: &str,
        properties: &serde_json::Value,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO blob_services (account, properties) VALUES (?1,?2)",
                params![account, properties.to_string()],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn referenced_objects(&self, account: &str) -> Result<std::collections::HashSet<Vec<u8>>> {
        self.read(|c| {
            // One read transaction: both tables from the same snapshot.
            let tx = c.unchecked_transaction()?;
            let mut out = std::collections::HashSet::new();
            {
                let mut s =
                    tx.prepare_cached("SELECT object_id, blocks FROM blobs WHERE account = ?1")?;
                for r in s.query_map(params![account], |r| {
                    Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
                })? {
                    let (o, b) = r?;
                    // `objects_of` skips what it cannot parse; the garbage collector would then
                    // delete live objects, so a damaged block list is an error instead.
                    let parsed = serde_json::from_str::<serde_json::Value>(&b).ok();
                    let whole = parsed.as_ref().and_then(|v| v.as_array()).is_some_and(|a| {
                        a.iter().all(|e| match e.get("object") {
                            None => true,
                            Some(x) => x.as_str().map(decode_hex).is_some_and(|h| h.is_ok()),
                        })
                    });
                    if !whole {
                        return Err(StoreError::Corrupt(format!(
                            "a blob of account {account} has an unreadable block list"
                        )));
                    }
                    out.extend(objects_of(&o, &b));
                }
                let mut s =
                    tx.prepare_cached("SELECT object_id FROM blob_blocks WHERE account = ?1")?;
                for r in s.query_map(params![account], |r| r.get::<_, Vec<u8>>(0))? {
                    out.insert(r?);
                }
            }
            tx.finish()?;
            Ok(out)
        })
    }
    fn kv_put_version(&self, v: &KvVersion, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| keyvault::put_version(tx, v, audit))
    }
    fn kv_update_version(&self, v: &KvVersion, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| keyvault::update_version(tx, v, audit))
    }
    fn kv_get_name(&self, vault: &str, kind: &str, name: &str) -> Result<KvName> {
        self.read(|c| keyvault::get_name(c, vault, kind, name))
    }
    fn kv_get_version(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<KvVersion> {
        self.read(|c| keyvault::get_version(c, vault, kind, name, version))
    }
    fn kv_list_versions(&self, vault: &str, kind: &str, name: &str) -> Result<Vec<KvVersion>> {
        self.read(|c| keyvault::list_versions(c, vault, kind, name))
    }
    fn kv_list(&self, vault: &str, kind: &str, deleted: bool) -> Result<Vec<(KvName, KvVersion)>> {
        self.read(|c| keyvault::list(c, vault, kind, deleted))
    }
    fn kv_set_deleted(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        deleted: Option<(i64, i64)>,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| keyvault::set_deleted(tx, vault, kind, name, deleted, audit))
    }
    fn kv_purge(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        audit: &AuditDraft,
    ) -> Result<Vec<KvVersion>> {
        self.write(|tx| keyvault::purge(tx, vault, kind, name, audit))
    }
    fn kv_set_policy(
        &self,
        vault: &str,
        kind: &str,
        name: &str,
        policy: &serde_json::Value,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| keyvault::set_policy(tx, vault, kind, name, policy, audit))
    }
    fn kv_restore(&self, versions: &[KvVersion], audit: &AuditDraft) -> Result<()> {
        self.write(|tx| keyvault::restore(tx, versions, audit))
    }
    fn delete_vault(
        &self,
        id_key: &str,
        soft: Option<(i64, i64)>,
        audit: &AuditDraft,
    ) -> Result<Vec<KvVersion>> {
        self.write(|tx| keyvault::delete_vault(tx, id_key, soft, audit))
    }
    fn list_deleted_vaults(&self, subscription_id: &str) -> Result<Vec<DeletedVault>> {
        self.read(|c| keyvault::list_deleted_vaults(c, subscription_id))
    }
    fn get_deleted_vault(&self, name: &str) -> Result<DeletedVault> {
        self.read(|c| keyvault::get_deleted_vault(c, name))
    }
    fn recover_vault(&self, name: &str, audit: &AuditDraft) -> Result<Resource> {
        self.write(|tx| keyvault::recover_vault(tx, name, audit))
    }
    fn purge_vault(&self, name: &str, audit: &AuditDraft) -> Result<Vec<KvVersion>> {
        self.write(|tx| keyvault::purge_vault(tx, name, audit))
    }
    fn kv_with_policy(&self) -> Result<Vec<KvName>> {
        self.read(keyvault::with_policy)
    }
    fn kv_purge_due(&self, now: i64) -> Result<Vec<KvPurgeDue>> {
        self.read(|c| keyvault::purge_due(c, now))
    }
    fn blob_accounts(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut s = c.prepare_cached(
                "SELECT account FROM blob_containers UNION SELECT account FROM blobs
                 UNION SELECT account FROM blob_blocks",
            )?;
            let rows = s.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn put_role_assignment(&self, a: &RoleAssignment, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT INTO role_assignments ({RA_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"
                ),
                params![
                    a.name,
                    a.tenant_id,
                    a.scope,
                    a.role_definition_id,
                    a.principal_id,
                    a.principal_type,
                    a.description,
                    a.created_by,
                    a.created
                ],
            )
            .map_err(|e| conflict_or(e, "role assignment"))?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn get_role_assignment(&self, name: &str) -> Result<RoleAssignment> {
        self.read(|c| {
            not_found(c.query_row(
                &format!("SELECT {RA_COLS} FROM role_assignments WHERE name = ?1"),
                [name],
                ra_row,
            ))
        })
    }
    fn delete_role_assignment(&self, name: &str, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM role_assignments WHERE name = ?1", [name])? == 0 {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn list_role_assignments(&self, tenant_id: &str) -> Result<Vec<RoleAssignment>> {
        self.read(|c| {
            let mut s = c.prepare_cached(&format!("SELECT {RA_COLS} FROM role_assignments WHERE tenant_id = ?1 ORDER BY created, name"))?;
            let rows = s.query_map([tenant_id], ra_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn list_role_assignments_for_principal(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>> {
        self.read(|c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {RA_COLS} FROM role_assignments WHERE principal_id = ?1"
            ))?;
            let rows = s.query_map([principal_id], ra_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn put_role_definition(&self, d: &RoleDefinitionRec, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO role_definitions (id, tenant_id, body) VALUES (?1,?2,?3) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                params![d.id, d.tenant_id, d.body.to_string()],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn list_role_definitions(&self, tenant_id: &str) -> Result<Vec<RoleDefinitionRec>> {
        self.read(|c| {
            let mut s = c.prepare_cached(
                "SELECT id, tenant_id, body FROM role_definitions WHERE tenant_id = ?1",
            )?;
            let rows = s.query_map([tenant_id], |r| {
                Ok(RoleDefinitionRec {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    body: json_col(r.get(2)?)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn delete_role_definition(&self, id: &str, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM role_definitions WHERE id = ?1", [id])? == 0 {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }

    fn put_signing_key(&self, k: &SigningKey, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO signing_keys (kid, sealed_private_key, n, e, created, retired) VALUES (?1,?2,?3,?4,?5,?6)",
                params![k.kid, k.sealed_private_key, k.n, k.e, k.created, k.retired],
            )?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn list_signing_keys(&self) -> Result<Vec<SigningKey>> {
        self.read(|c| {
            let mut s = c.prepare("SELECT kid, sealed_private_key, n, e, created, retired FROM signing_keys ORDER BY created, kid")?;
            let rows = s.query_map([], |r| {
                Ok(SigningKey {
                    kid: r.get(0)?,
                    sealed_private_key: r.get(1)?,
                    n: r.get(2)?,
                    e: r.get(3)?,
                    created: r.get(4)?,
                    retired: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn retire_signing_key(&self, kid: &str, retired_at: i64, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "UPDATE signing_keys SET retired = ?2 WHERE kid = ?1 AND retired IS NULL",
                params![kid, retired_at],
            )? == 0
            {
                return Err(StoreError::NotFound);
            }
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn put_refresh_token(&self, t: &RefreshToken) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM refresh_tokens WHERE expires < ?1", [ciel_core::time::now_unix()])?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, object_id, tenant_id, client_id, created, expires, mfa) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                params![t.hash, t.object_id, t.tenant_id, t.client_id, t.created, t.expires, t.mfa],
            )?;
            Ok(())
        })
    }
    fn take_refresh_token(&self, hash: &str) -> Result<RefreshToken> {
        self.write(|tx| {
            let t = not_found(tx.query_row(
                "SELECT hash, object_id, tenant_id, client_id, created, expires, mfa FROM refresh_tokens WHERE hash = ?1",
                [hash],
                |r| {
                    Ok(RefreshToken {
                        hash: r.get(0)?,
                        object_id: r.get(1)?,
                        tenant_id: r.get(2)?,
                        client_id: r.get(3)?,
                        created: r.get(4)?,
                        expires: r.get(5)?,
                        mfa: r.get(6)?,
                    })
                },
            ))?;
            tx.execute("DELETE FROM refresh_tokens WHERE hash = ?1", [hash])?;
            Ok(t)
        })
    }

    fn put_operation(&self, op: &Operation) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO operations (id, tenant_id, status, resource_id, result, error, created, finished) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, result = excluded.result, error = excluded.error, finished = excluded.finished",
                params![
                    op.id, op.tenant_id, op.status, op.resource_id, op.result.as_ref().map(|v| v.to_string()),
                    op.error.as_ref().map(|v| v.to_string()), op.created, op.finished
                ],
            )?;
            Ok(())
        })
    }
    fn get_operation(&self, id: &str) -> Result<Operation> {
        self.read(|c| {
            not_found(c.query_row(
                "SELECT id, tenant_id, status, resource_id, result, error, created, finished FROM operations WHERE id = ?1",
                [id],
                |r| {
                    let result: Option<String> = r.get(4)?;
                    let error: Option<String> = r.get(5)?;
                    Ok(Operation {
                        id: r.get(0)?,
                        tenant_id: r.get(1)?,
                        status: r.get(2)?,
                        resource_id: r.get(3)?,
                        result: result.map(json_col).transpose()?,
                        error: error.map(json_col).transpose()?,
                        created: r.get(6)?,
                        finished: r.get(7)?,
                    })
                },
            ))
        })
    }

    fn append_audit(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditRecord>> {
        self.write(|tx| append_in(tx, drafts))
    }
    fn read_audit(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.read(|c| {
            let mut s = c.prepare_cached(
                "SELECT seq, ts, tenant_id, actor, action, target, outcome, details, request_id, client_ip, prev_hash, hash
                 FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = s.query_map(params![after, limit as i64], audit_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn audit_head(&self) -> Result<Option<(i64, String)>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
    }
    fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.read(|c| {
            let prefix = q.target_prefix.to_ascii_lowercase();
            let prefix = prefix.trim_end_matches('/').to_string();
            let like = format!("{}/%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            let mut s = c.prepare_cached(
                "SELECT seq, ts, tenant_id, actor, action, target, outcome, details, request_id, client_ip, prev_hash, hash
                 FROM audit_log WHERE tenant_id = ?1 AND seq < ?2 AND ts >= ?3 AND ts <= ?4
                 AND (lower(target) = ?5 OR lower(target) LIKE ?6 ESCAPE '\\')
                 ORDER BY seq DESC LIMIT ?7",
            )?;
            let rows = s.query_map(params![q.tenant_id, q.before_seq, q.from, q.to, prefix, like, q.limit as i64], audit_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
    fn put_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, ts, key_id, signature) VALUES (?1,?2,?3,?4,?5)",
                params![cp.seq, cp.hash, cp.ts, cp.key_id, cp.signature],
            )?;
            Ok(())
        })
    }
    fn list_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.read(|c| {
            let mut s = c.prepare(
                "SELECT seq, hash, ts, key_id, signature FROM audit_checkpoints ORDER BY seq",
            )?;
            let rows = s.query_map([], |r| {
                Ok(Checkpoint {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                    ts: r.get(2)?,
                    key_id: r.get(3)?,
                    signature: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn put_attestation(&self, a: &Attestation, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO compliance_attestations (id, requirement, framework, attested_by, created, expires, evidence_name, evidence_sha256, evidence_copy, note)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                params![a.id, a.requirement, a.framework, a.attested_by, a.created, a.expires, a.evidence_name, a.evidence_sha256, a.evidence_copy, a.note],
            )
            .map_err(|e| conflict_or(e, "attestation"))?;
            append_in(tx, std::slice::from_ref(audit))?;
            Ok(())
        })
    }
    fn list_attestations(&self) -> Result<Vec<Attestation>> {
        self.read(|c| {
            let mut s = c.prepare(
                "SELECT id, requirement, framework, attested_by, created, expires, evidence_name, evidence_sha256, evidence_copy, note
                 FROM compliance_attestations ORDER BY created, rowid",
            )?;
            let rows = s.query_map([], |r| {
                Ok(Attestation {
                    id: r.get(0)?,
                    requirement: r.get(1)?,
                    framework: r.get(2)?,
                    attested_by: r.get(3)?,
                    created: r.get(4)?,
                    expires: r.get(5)?,
                    evidence_name: r.get(6)?,
                    evidence_sha256: r.get(7)?,
                    evidence_copy: r.get(8)?,
                    note: r.get(9)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn get_setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }
    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1,?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    // ---- second factors (TOTP) ----
    fn put_mfa_factor(&self, f: &MfaFactor, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| mfa::put(tx, f, audit))
    }
    fn get_mfa_factor(&self, subject: &str) -> Result<MfaFactor> {
        self.read(|c| mfa::get(c, subject))
    }
    fn list_mfa_factors(&self) -> Result<Vec<MfaFactor>> {
        self.read(mfa::list)
    }
    fn mfa_accept_step(&self, subject: &str, step: i64, audit: &AuditDraft) -> Result<bool> {
        self.write(|tx| mfa::accept_step(tx, subject, step, audit))
    }
    fn mfa_record_failure(
        &self,
        subject: &str,
        failed: i64,
        locked_until: Option<i64>,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| mfa::record_failure(tx, subject, failed, locked_until, audit))
    }
    fn delete_mfa_factor(&self, subject: &str, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| mfa::delete(tx, subject, audit))
    }

    // ---- audit retention ----
    fn set_audit_anchor(&self, anchor: &Checkpoint, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| {
            let current: Option<i64> = tx
                .query_row("SELECT seq FROM audit_anchor WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if current.is_some_and(|c| c >= anchor.seq) {
                return Err(StoreError::Conflict(format!(
                    "the audit log is already pruned through entry {}",
                    current.unwrap_or_default()
                )));
            }
            // The entry recording the prune is appended first, so that the log never empties
            // and its head stays above the anchor.
            append_in(tx, std::slice::from_ref(audit))?;
            tx.execute(
                "INSERT OR REPLACE INTO audit_anchor (id, seq, hash, ts, key_id, signature, set_at)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    anchor.seq,
                    anchor.hash,
                    anchor.ts,
                    anchor.key_id,
                    anchor.signature,
                    ciel_core::time::now_unix()
                ],
            )?;
            Ok(())
        })
    }
    fn audit_anchor(&self) -> Result<Option<Checkpoint>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT seq, hash, ts, key_id, signature FROM audit_anchor WHERE id = 1",
                [],
                |r| {
                    Ok(Checkpoint {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                        ts: r.get(2)?,
                        key_id: r.get(3)?,
                        signature: r.get(4)?,
                    })
                },
            )
            .optional()?)
        })
    }
    fn delete_audit_through(&self, seq: i64, limit: usize) -> Result<usize> {
        self.write(|tx| {
            let anchor: Option<i64> = tx
                .query_row("SELECT seq FROM audit_anchor WHERE id = 1", [], |r| r.get(0))
                .optional()?;
            // Only what an anchor already covers may go: the chain must verify at every moment.
            let upto = seq.min(anchor.unwrap_or(0));
            let n = tx.execute(
                "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
                params![upto, limit as i64],
            )?;
            Ok(n)
        })
    }

    // ---- policy ----
    fn policy_put(&self, p: &PolicyObject, audit: &AuditDraft) -> Result<bool> {
        self.write(|tx| policy::put(tx, p, audit))
    }
    fn policy_get(&self, id: &str) -> Result<PolicyObject> {
        self.read(|c| policy::get(c, id))
    }
    fn policy_list(&self, tenant_id: &str, kind: &str) -> Result<Vec<PolicyObject>> {
        self.read(|c| policy::list(c, tenant_id, kind))
    }
    fn policy_delete(&self, id: &str, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| policy::delete(tx, id, audit))
    }

    // ---- lockbox ----
    fn put_operator(&self, o: &OperatorRec, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| lockbox::put_operator(tx, o, audit))
    }
    fn get_operator(&self, name: &str) -> Result<OperatorRec> {
        self.read(|c| lockbox::get_operator(c, name))
    }
    fn list_operators(&self) -> Result<Vec<OperatorRec>> {
        self.read(lockbox::list_operators)
    }
    fn update_operator(&self, o: &OperatorRec, audit: Option<&AuditDraft>) -> Result<()> {
        self.write(|tx| lockbox::update_operator(tx, o, audit))
    }
    fn put_lockbox_request(&self, r: &LockboxRequestRec, audit: &AuditDraft) -> Result<()> {
        self.write(|tx| lockbox::put_request(tx, r, audit))
    }
    fn get_lockbox_request(&self, id: &str) -> Result<LockboxRequestRec> {
        self.read(|c| lockbox::get_request(c, id))
    }
    fn list_lockbox_requests(&self, tenant_id: Option<&str>) -> Result<Vec<LockboxRequestRec>> {
        self.read(|c| lockbox::list_requests(c, tenant_id))
    }
    fn decide_lockbox_request(
        &self,
        r: &LockboxRequestRec,
        from_status: &str,
        audit: &AuditDraft,
    ) -> Result<bool> {
        self.write(|tx| lockbox::decide(tx, r, from_status, audit))
    }

    // ---- mfa policy ----
    fn get_tenant_mfa_policy(&self, tenant_id: &str) -> Result<Option<String>> {
        self.read(|c| mfa_policy::get(c, tenant_id))
    }
    fn put_tenant_mfa_policy(
        &self,
        tenant_id: &str,
        require: &str,
        updated_by: &str,
        audit: &AuditDraft,
    ) -> Result<()> {
        self.write(|tx| mfa_policy::put(tx, tenant_id, require, updated_by, audit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestations_are_kept_with_their_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let a = Attestation {
            id: "a1".into(),
            requirement: "12.5.c".into(),
            framework: "secnumcloud-3.2".into(),
            attested_by: "Alice".into(),
            created: 10,
            expires: 20,
            evidence_name: "restore.pdf".into(),
            evidence_sha256: "00".repeat(32),
            evidence_copy: "compliance/evidence/x".into(),
            note: None,
        };
        s.put_attestation(&a, &draft("Ciel.Compliance/attestations/write"))
            .unwrap();
        assert_eq!(s.list_attestations().unwrap(), vec![a.clone()]);
        assert!(matches!(
            s.put_attestation(&a, &draft("again")),
            Err(StoreError::Conflict(_))
        ));
        let log = s.read_audit(0, 10).unwrap();
        assert_eq!(log.len(), 1, "one entry: the failed insert left none");
        assert_eq!(log[0].action, "Ciel.Compliance/attestations/write");
    }

    fn draft(action: &str) -> AuditDraft {
        AuditDraft {
            actor: "test".into(),
            action: action.into(),
            target: "t".into(),
            outcome: "success".into(),
            ..Default::default()
        }
    }

    #[test]
    fn chain_links_entries_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        {
            let s = SqliteStore::open(&p).unwrap();
            s.append_audit(&[draft("a"), draft("b")]).unwrap();
            s.create_tenant(
                &Tenant {
                    id: "t1".into(),
                    display_name: "T".into(),
                    default_domain: "t.fr".into(),
                    created: 1,
                },
                &draft("c"),
            )
            .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        let all = s.read_audit(0, 100).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].prev_hash, GENESIS);
        assert_eq!(all[1].prev_hash, all[0].hash);
        assert_eq!(all[2].prev_hash, all[1].hash);
        for r in &all {
            assert_eq!(chain_hash(r), r.hash);
        }
        assert_eq!(s.list_tenants().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_writers_share_commits_and_keep_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(SqliteStore::open(&dir.path().join("m.db")).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..40 {
                        // Every fourth write fails (duplicate tenant) and must be undone alone.
                        let id = if i % 4 == 0 {
                            "dup".to_string()
                        } else {
                            format!("t{t}-{i}")
                        };
                        let tenant = Tenant {
                            id,
                            display_name: "T".into(),
                            default_domain: "d".into(),
                            created: 1,
                        };
                        let _ = s.create_tenant(&tenant, &draft("create"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tenants = s.list_tenants().unwrap();
        assert_eq!(tenants.len(), 16 * 30 + 1);
        let all = s.read_audit(0, 10_000).unwrap();
        assert_eq!(
            all.len(),
            tenants.len(),
            "one audit entry per stored change, none for refused ones"
        );
        let mut prev = GENESIS.to_string();
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.seq, i as i64 + 1);
            assert_eq!(r.prev_hash, prev);
            assert_eq!(chain_hash(r), r.hash);
            prev = r.hash.clone();
        }
    }

    #[test]
    fn failed_write_leaves_no_audit_entry() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("m.db")).unwrap();
        let t = Tenant {
            id: "t1".into(),
            display_name: "T".into(),
            default_domain: "t.fr".into(),
            created: 1,
        };
        s.create_tenant(&t, &draft("c")).unwrap();
        assert!(matches!(
            s.create_tenant(&t, &draft("c")),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.read_audit(0, 100).unwrap().len(), 1);
    }

    #[test]
    fn resources_list_by_scope_and_cascade_on_group_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("m.db")).unwrap();
        s.create_tenant(
            &Tenant {
                id: "t".into(),
                display_name: "T".into(),
                default_domain: "d".into(),
                created: 1,
            },
            &draft("x"),
        )
        .unwrap();
        s.create_subscription(
            &Subscription {
                id: "S".into(),
                tenant_id: "t".into(),
                display_name: "s".into(),
                state: "Enabled".into(),
                created: 1,
            },
            &draft("x"),
        )
        .unwrap();
        for rg in ["rg_a", "rgxa"] {
            s.put_resource_group(
                &ResourceGroup {
                    subscription_id: "S".into(),
                    name: rg.into(),
                    location: "francecentral".into(),
                    tags: serde_json::json!({}),
                    managed_by: None,
                    created: 1,
                    changed: 1,
                },
                &draft("x"),
            )
            .unwrap();
            s.put_resource(
                &Resource {
                    id: format!(
                        "/subscriptions/S/resourceGroups/{rg}/providers/Microsoft.X/things/one"
                    ),
                    subscription_id: "S".into(),
                    resource_group: Some(rg.into()),
                    rtype: "Microsoft.X/things".into(),
                    name: "one".into(),
                    location: None,
                    tenant_id: "t".into(),
                    body: serde_json::json!({}),
                    created: 1,
                    changed: 1,
                    sealed: None,
                },
                &draft("x"),
            )
            .unwrap();
        }
        // `_` must not act as a LIKE wildcard: rg_a's listing must not include rgxa's resource.
        assert_eq!(
            s.list_resources("/subscriptions/s/resourcegroups/rg_a", None, None, 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.list_resources("/subscriptions/s", None, None, 10)
                .unwrap()
                .len(),
            2
        );
        s.delete_resource_group("S", "RG_A", &draft("x")).unwrap();
        assert_eq!(
            s.list_resources("/subscriptions/s", None, None, 10)
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            s.get_resource_group("S", "rg_a"),
            Err(StoreError::NotFound)
        ));
    }

    /// The startup garbage collection deletes every object file `referenced_objects` does not
    /// return. A table that can hold object references and is not read there would lose its
    /// objects at the next start: this lists them, so that a new one cannot go unnoticed.
    #[test]
    fn every_table_referring_to_objects_is_read_by_referenced_objects() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("m.db")).unwrap();
        let found = s
            .read(|c| {
                let tables = c
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut out = vec![];
                for t in tables {
                    // Object ids are 16-byte BLOBs, or hex inside JSON lists such as `blocks`
                    // (principals' `object_id` is an Entra object id, TEXT).
                    let cols = c
                        .prepare(&format!("SELECT name, type FROM pragma_table_info('{t}')"))?
                        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    if cols.iter().any(|(n, ty)| {
                        (n.contains("object") && ty.eq_ignore_ascii_case("BLOB")) || n == "blocks"
                    }) {
                        out.push(t);
                    }
                }
                Ok(out)
            })
            .unwrap();
        assert_eq!(
            found,
            ["blob_blocks", "blobs"],
            "a table holds object references: read it in `referenced_objects`, then list it here"
        );
    }

    fn blob(name: &str, object: u8) -> BlobRecord {
        BlobRecord {
            account: "acc".into(),
            container: "c".into(),
            name: name.into(),
            object_id: vec![object; 16],
            size: 1,
            metadata: serde_json::json!({}),
            etag: format!("e-{name}-{object}"),
            tags: serde_json::json!({}),
            blocks: serde_json::json!([]),
            ..Default::default()
        }
    }

    #[test]
    fn shared_objects_are_released_only_when_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("m.db")).unwrap();
        s.put_container(
            &BlobContainer {
                account: "acc".into(),
                name: "c".into(),
                metadata: serde_json::json!({}),
                etag: "e".into(),
                last_modified: 1,
                public_access: None,
                lease: None,
            },
            &draft("c"),
        )
        .unwrap();
        s.put_blob(&blob("a", 1), &draft("put")).unwrap();
        // A snapshot shares object 1: replacing the blob keeps it.
        let mut snap = blob("a", 1);
        snap.snapshot = "2026-01-01T00:00:00.0000000Z".into();
        s.create_snapshot(&snap, &draft("snap")).unwrap();
        assert_eq!(
            s.put_blob(&blob("a", 2), &draft("put")).unwrap(),
            Vec::<Vec<u8>>::new()
        );
        assert!(matches!(
            s.delete_blob("acc", "c", "a", &draft("del")),
            Err(StoreError::Conflict(_))
        ));
        // A copy of the blob shares object 2.
        let src = ShareSource {
            container: "c".into(),
            name: "a".into(),
            snapshot: String::new(),
            etag: "e-a-2".into(),
        };
        s.put_blob_from(&blob("b", 2), &src, &draft("copy"))
            .unwrap();
        // Deleting the blob and its snapshots frees object 1 only (b still holds 2).
        let freed = s
            .delete_blobs(
                "acc",
                "c",
                "a",
                &BlobDeletion::BaseAndSnapshots,
                &draft("del"),
            )
            .unwrap();
        assert_eq!(freed, vec![vec![1u8; 16]]);
        assert_eq!(
            s.delete_blob("acc", "c", "b", &draft("del")).unwrap(),
            vec![vec![2u8; 16]]
        );
        // A changed source refuses the share.
        s.put_blob(&blob("x", 3), &draft("put")).unwrap();
        let stale = ShareSource {
            etag: "old".into(),
            name: "x".into(),
            ..src
        };
        assert!(matches!(
            s.put_blob_from(&blob("y", 3), &stale, &draft("copy")),
            Err(StoreError::Conflict(_))
        ));
        // Compare-and-swap on the ETag and the lease.
        let mut x = s.get_blob("acc", "c", "x").unwrap();
        x.lease = Some(Lease {
            id: "l".into(),
            duration: -1,
            expires: None,
            broken_at: None,
        });
        s.replace_blob(&x, "e-x-3", &None, &draft("lease")).unwrap();
        assert!(matches!(
            s.replace_blob(&x, "e-x-3", &None, &draft("lease")),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.get_blob("acc", "c", "x").unwrap().lease, x.lease);
    }

    #[test]
    fn migration_5_keeps_existing_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        {
            // A database as migration 4 left it, with one blob and one uncommitted block.
            let c = Connection::open(&p).unwrap();
            for m in &MIGRATIONS[..4] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 4).unwrap();
            c.execute_batch(
                "INSERT INTO blob_containers VALUES ('acc', 'c', '{}', 'e', 1, NULL);
                 INSERT INTO blobs (account, container, name, object_id, size, metadata, etag, last_modified, created, blocks)
                   VALUES ('acc', 'c', 'b', x'01', 3, '{\"k\":\"v\"}', 'e1', 2, 2, '[]');
                 INSERT INTO blob_blocks VALUES ('acc', 'c', 'b', 'id', x'02', 1, 3);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        let b = s.get_blob("acc", "c", "b").unwrap();
        assert_eq!(
            (b.size, b.etag.as_str(), b.snapshot.as_str()),
            (3, "e1", "")
        );
        assert_eq!(b.blob_type, "BlockBlob");
        assert_eq!(b.metadata, serde_json::json!({"k": "v"}));
        assert!(b.lease.is_none() && !b.shared);
        assert_eq!(s.list_blocks("acc", "c", "b").unwrap().len(), 1);
        assert!(s.get_container("acc", "c").unwrap().lease.is_none());
        let mut objs = s.delete_blob("acc", "c", "b", &draft("del")).unwrap();
        objs.sort();
        assert_eq!(objs, vec![vec![1u8], vec![2u8]]);
    }
}
