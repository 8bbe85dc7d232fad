//! The tamper-evident audit log.
//!
//! Entries are chained by the store as they are written (each carries the SHA-256 of the one
//! before; see `ciel_core::audit::chain_hash`). This crate adds what makes the chain evidence:
//! - [`Auditor`]: appends records that accompany no stored change (tokens, denials), and signs
//!   checkpoints of the chain head with the platform's Ed25519 audit key;
//! - checkpoints are written both to the store and to an append-only file beside it, so that
//!   truncating the database tail behind the server's back is caught too;
//! - [`verify`]: walks the whole chain and every checkpoint and names the first broken entry;
//! - retention ([`prune`]): entries older than the configured retention (never less than
//!   six months, SecNumCloud 12.6.c) are removed up to a signed checkpoint, which becomes the
//!   chain's *anchor*: verification starts from its hash instead of the genesis, and an anchor
//!   younger than the minimum retention is itself reported as tampering.

pub mod export;

use ciel_core::audit::{chain_hash, checkpoint_message, AuditDraft, GENESIS};
use ciel_store::{Checkpoint, MetadataStore, Store, StoreError};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The shortest retention the platform accepts (SecNumCloud 12.6.c: six months), days.
pub const MIN_RETENTION_DAYS: u32 = 183;
/// Entries deleted per transaction when pruning, so that writers are never held up for long.
const PRUNE_BATCH: usize = 5_000;

/// What a prune did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// The last pruned entry: the anchor's sequence number.
    pub through_seq: i64,
    /// The anchor checkpoint's time.
    pub anchor_ts: String,
    pub deleted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit key: {0}")]
    Key(String),
    #[error("checkpoint file: {0}")]
    Io(#[from] std::io::Error),
    #[error("audit retention of {0} days is below the minimum of {MIN_RETENTION_DAYS} days (six months, SecNumCloud 12.6.c)")]
    RetentionTooShort(u32),
}

/// Signs checkpoints. The private key is sealed at rest under the master key by the caller.
pub struct CheckpointSigner {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl CheckpointSigner {
    pub fn generate_pkcs8() -> Result<Vec<u8>, AuditError> {
        let rng = ring::rand::SystemRandom::new();
        Ok(Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| AuditError::Key(e.to_string()))?
            .as_ref()
            .to_vec())
    }
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, AuditError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| AuditError::Key(e.to_string()))?;
        let key_id = ciel_core::audit::hex_lower(&pair.public_key().as_ref()[..8]);
        Ok(Self { pair, key_id })
    }
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

pub struct Auditor {
    store: Store,
    signer: CheckpointSigner,
    checkpoint_file: PathBuf,
}

impl Auditor {
    pub fn new(store: Store, signer: CheckpointSigner, checkpoint_file: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            store,
            signer,
            checkpoint_file,
        })
    }

    /// Records an event that changes nothing stored. Failing to audit is an error for the caller:
    /// an action that cannot be recorded must not proceed.
    pub async fn record(&self, draft: AuditDraft) -> Result<(), AuditError> {
        ciel_store::run(&self.store, move |s| {
            s.append_audit(std::slice::from_ref(&draft))
        })
        .await?;
        Ok(())
    }

    /// Signs the current head if no checkpoint covers it yet.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let Some((seq, hash)) = self.store.audit_head()? else {
            return Ok(None);
        };
        let last = self.store.list_checkpoints()?.into_iter().last();
        if last.as_ref().map(|c| c.seq) == Some(seq) {
            return Ok(None);
        }
        let ts = ciel_core::time::now_rfc3339();
        let sig = self.signer.pair.sign(&checkpoint_message(seq, &hash, &ts));
        let cp = Checkpoint {
            seq,
            hash,
            ts,
            key_id: self.signer.key_id.clone(),
            signature: hex::encode(sig.as_ref()),
        };
        // The file first: if we crash between the two, verify still finds the checkpoint.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.checkpoint_file)?;
        writeln!(
            f,
            "{}",
            serde_json::to_string(&cp).map_err(|e| AuditError::Key(e.to_string()))?
        )?;
        f.sync_data()?;
        self.store.put_checkpoint(&cp)?;
        Ok(Some(cp))
    }

    /// Prunes every `every` until the runtime shuts down.
    pub fn spawn_pruner(
        self: &Arc<Self>,
        every: std::time::Duration,
        retention_days: u32,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let m = me.clone();
                let now = ciel_core::time::now_unix();
                match tokio::task::spawn_blocking(move || {
                    prune(m.store.as_ref(), now, retention_days, "system", false)
                })
                .await
                {
                    Ok(Ok(Some(r))) => tracing::info!(
                        through = r.through_seq,
                        deleted = r.deleted,
                        "audit entries past retention pruned"
                    ),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "audit pruning failed"),
                    Err(e) => tracing::error!(error = %e, "audit pruning task failed"),
                }
            }
        })
    }

    /// Checkpoints periodically until the runtime shuts down.
    pub fn spawn_checkpointer(
        self: &Arc<Self>,
        every: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let m = me.clone();
                match tokio::task::spawn_blocking(move || m.checkpoint()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "audit checkpoint failed"),
                    Err(e) => tracing::error!(error = %e, "audit checkpoint task failed"),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }
}

/// Removes the entries older than `retention_days` at time `now`, up to the latest signed
/// checkpoint taken before that limit, which becomes the anchor. The anchor and the entry
/// recording the prune are written first, in one transaction; the deletion follows in
/// batches, so that a crash at any point leaves a chain that verifies (entries the anchor
/// covers are skipped by verification) and a rerun finishes the work.
/// `dry_run` reports what would go and changes nothing.
pub fn prune(
    store: &dyn MetadataStore,
    now: i64,
    retention_days: u32,
    actor: &str,
    dry_run: bool,
) -> Result<Option<PruneReport>, AuditError> {
    if retention_days < MIN_RETENTION_DAYS {
        return Err(AuditError::RetentionTooShort(retention_days));
    }
    let limit = now - i64::from(retention_days) * 86_400;
    let current = store.audit_anchor()?;
    let target = store
        .list_checkpoints()?
        .into_iter()
        .filter(|c| ciel_core::time::rfc3339_to_unix(&c.ts).is_some_and(|t| t < limit))
        .max_by_key(|c| c.seq);
    let anchor = match (target, &current) {
        (Some(t), Some(c)) if t.seq <= c.seq => c.clone(),
        (Some(t), _) => {
            if dry_run {
                return Ok(Some(PruneReport {
                    through_seq: t.seq,
                    anchor_ts: t.ts,
                    deleted: 0,
                }));
            }
            let draft = AuditDraft {
                tenant_id: None,
                actor: actor.to_string(),
                action: "audit/prune".into(),
                target: "audit-log".into(),
                outcome: "success".into(),
                details: serde_json::json!({"throughSeq": t.seq, "anchorTs": t.ts,
                    "anchorHash": t.hash, "retentionDays": retention_days}),
                request_id: None,
                client_ip: None,
            };
            store.set_audit_anchor(&t, &draft)?;
            t
        }
        (None, Some(c)) => c.clone(),
        (None, None) => return Ok(None),
    };
    if dry_run {
        return Ok(None);
    }
    // Also finishes a prune a crash interrupted.
    let mut deleted = 0;
    loop {
        let n = store.delete_audit_through(anchor.seq, PRUNE_BATCH)?;
        deleted += n;
        if n < PRUNE_BATCH {
            break;
        }
    }
    if deleted == 0 && current.as_ref().map(|c| c.seq) == Some(anchor.seq) {
        return Ok(None);
    }
    Ok(Some(PruneReport {
        through_seq: anchor.seq,
        anchor_ts: anchor.ts,
        deleted,
    }))
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        /// Entries verified (those kept).
        entries: i64,
        checkpoints: usize,
        /// Entries up to this one were pruned past retention (0: none).
        pruned_through: i64,
    },
    /// The first broken entry and why.
    Broken { seq: i64, reason: String },
}

/// Walks the whole chain in bounded memory, then checks every checkpoint (from the store and
/// from the checkpoint file) against the chain and the audit public key.
pub fn verify(
    store: &dyn MetadataStore,
    public_key: &[u8],
    checkpoint_file: Option<&Path>,
) -> Result<Verdict, AuditError> {
    verify_at(
        store,
        public_key,
        checkpoint_file,
        ciel_core::time::now_unix(),
    )
}

/// [`verify`] as of time `now` (the age of a retention anchor depends on it).
pub fn verify_at(
    store: &dyn MetadataStore,
    public_key: &[u8],
    checkpoint_file: Option<&Path>,
    now: i64,
) -> Result<Verdict, AuditError> {
    let mut prev_hash = GENESIS.to_string();
    let mut expected = 1i64;
    let mut after = 0i64;
    // Remember the hash at each sequence number a checkpoint names.
    let mut checkpoints = store.list_checkpoints()?;
    if let Some(path) = checkpoint_file {
        if path.exists() {
            for (i, line) in std::fs::read_to_string(path)?.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Checkpoint>(line) {
                    Ok(c) => checkpoints.push(c),
                    Err(_) => {
                        return Ok(Verdict::Broken {
                            seq: 0,
                            reason: format!("checkpoint file line {} is not a checkpoint", i + 1),
                        })
                    }
                }
            }
        }
    }
    checkpoints.sort_by(|a, b| (a.seq, &a.signature).cmp(&(b.seq, &b.signature)));
    // The same checkpoint is normally in both places; count it once.
    checkpoints.dedup();
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let anchor = store.audit_anchor()?;
    if let Some(a) = &anchor {
        let sig = hex::decode(&a.signature).unwrap_or_default();
        if key
            .verify(&checkpoint_message(a.seq, &a.hash, &a.ts), &sig)
            .is_err()
        {
            return Ok(Verdict::Broken {
                seq: a.seq,
                reason: format!(
                    "the retention anchor at entry {} has an invalid signature",
                    a.seq
                ),
            });
        }
        // A genuine but recent checkpoint used as anchor would erase entries the law says to
        // keep: that is tampering too, whoever holds the database.
        let age = ciel_core::time::rfc3339_to_unix(&a.ts)
            .map(|t| now - t)
            .unwrap_or(0);
        if age < i64::from(MIN_RETENTION_DAYS) * 86_400 {
            return Ok(Verdict::Broken {
                seq: a.seq,
                reason: format!(
                    "entries up to {} were removed although they are {} days old; at least {MIN_RETENTION_DAYS} days must be kept",
                    a.seq,
                    age / 86_400
                ),
            });
        }
        prev_hash = a.hash.clone();
        expected = a.seq + 1;
        after = a.seq;
    }
    let pruned_through = anchor.as_ref().map(|a| a.seq).unwrap_or(0);
    for c in &checkpoints {
        let sig = hex::decode(&c.signature).unwrap_or_default();
        if key
            .verify(&checkpoint_message(c.seq, &c.hash, &c.ts), &sig)
            .is_err()
        {
            return Ok(Verdict::Broken {
                seq: c.seq,
                reason: format!("the checkpoint at entry {} has an invalid signature", c.seq),
            });
        }
    }
    // Checkpoints of pruned entries keep their signature (checked above) but have nothing left
    // to compare with, except the anchor's own.
    if let Some(c) = checkpoints
        .iter()
        .find(|c| c.seq == pruned_through && pruned_through > 0)
    {
        if anchor.as_ref().is_some_and(|a| a.hash != c.hash) {
            return Ok(Verdict::Broken {
                seq: c.seq,
                reason: format!(
                    "the retention anchor differs from the checkpoint at entry {}",
                    c.seq
                ),
            });
        }
    }
    let mut cp_iter = checkpoints
        .iter()
        .filter(|c| c.seq > pruned_through)
        .peekable();
    loop {
        let batch = store.read_audit(after, 10_000)?;
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            if r.seq != expected {
                return Ok(Verdict::Broken {
                    seq: expected,
                    reason: format!(
                        "entry {expected} is missing (the next entry present is {})",
                        r.seq
                    ),
                });
            }
            if r.prev_hash != prev_hash {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    reason: format!("entry {} does not link to entry {}", r.seq, r.seq - 1),
                });
            }
            if chain_hash(r) != r.hash {
                return Ok(Verdict::Broken {
                    seq: r.seq,
                    reason: format!(
                        "entry {} has been altered (its hash does not match its content)",
                        r.seq
                    ),
                });
            }
            while let Some(c) = cp_iter.peek() {
                if c.seq > r.seq {
                    break;
                }
                if c.seq == r.seq && c.hash != r.hash {
                    return Ok(Verdict::Broken {
                        seq: r.seq,
                        reason: format!(
                            "entry {} differs from the signed checkpoint taken at {}",
                            r.seq, c.ts
                        ),
                    });
                }
                cp_iter.next();
            }
            prev_hash = r.hash.clone();
            expected += 1;
            after = r.seq;
        }
    }
    if let Some(c) = cp_iter.next() {
        return Ok(Verdict::Broken {
            seq: expected,
            reason: format!(
                "entries {expected} to {} are missing: a signed checkpoint covers entry {}",
                c.seq, c.seq
            ),
        });
    }
    Ok(Verdict::Intact {
        entries: expected - 1 - pruned_through,
        checkpoints: checkpoints.len(),
        pruned_through,
    })
}
