//! A tenant's own audit entries, exported with the proofs that they belong to the platform's
//! signed chain (SecNumCloud 12.6.d), in JSON lines (format `ciel-audit-export/1`):
//!
//! - a `header` (tenant, first sequence number, the audit public key); after a retention prune
//!   the first sequence number is the one after the anchor;
//! - for every chain entry from there on, in order: the tenant's own entries in full
//!   (`entry`), and for other tenants' entries only their sequence number and hashes (`link`),
//!   so that the chain can be followed without revealing anyone else's content;
//! - the signed `checkpoint`s of that range.
//!
//! [`verify_export`] needs nothing but the file and the platform's audit public key: every
//! entry's hash is recomputed from its content, every item links to the one before, every
//! checkpoint signature is checked and its hash compared with the item it names. Entries after
//! the last checkpoint are reported as not yet covered by a signature.

use crate::AuditError;
use ciel_core::audit::{chain_hash, checkpoint_message, AuditRecord};
use ciel_store::{Checkpoint, MetadataStore};
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "ciel-audit-export/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    Header {
        format: String,
        tenant: String,
        from_seq: i64,
        /// Ed25519 public key of the platform's audit checkpoints, hex.
        public_key: String,
        exported_at: String,
    },
    Entry(AuditRecord),
    Link {
        seq: i64,
        prev_hash: String,
        hash: String,
    },
    Checkpoint(Checkpoint),
}

/// Writes the export of `tenant` from sequence `from_seq` (1 = everything) through `emit`.
/// Returns the number of the tenant's entries.
pub fn export(
    store: &dyn MetadataStore,
    tenant: &str,
    from_seq: i64,
    public_key_hex: &str,
    mut emit: impl FnMut(&Line) -> std::io::Result<()>,
) -> Result<usize, AuditError> {
    // Entries pruned past retention are gone: the export starts after the anchor.
    let pruned = store.audit_anchor()?.map(|a| a.seq).unwrap_or(0);
    let from_seq = from_seq.max(pruned + 1);
    emit(&Line::Header {
        format: FORMAT.into(),
        tenant: tenant.into(),
        from_seq,
        public_key: public_key_hex.into(),
        exported_at: ciel_core::time::now_rfc3339(),
    })?;
    let mut after = from_seq - 1;
    let mut own = 0usize;
    let mut last = after;
    loop {
        let batch = store.read_audit(after, 10_000)?;
        if batch.is_empty() {
            break;
        }
        for r in batch {
            after = r.seq;
            last = r.seq;
            if r.tenant_id.as_deref() == Some(tenant) {
                own += 1;
                emit(&Line::Entry(r))?;
            } else {
                emit(&Line::Link {
                    seq: r.seq,
                    prev_hash: r.prev_hash,
                    hash: r.hash,
                })?;
            }
        }
    }
    let mut cps = store.list_checkpoints()?;
    cps.sort_by_key(|c| c.seq);
    for c in cps
        .into_iter()
        .filter(|c| c.seq >= from_seq && c.seq <= last)
    {
        emit(&Line::Checkpoint(c))?;
    }
    Ok(own)
}

/// What a verified export proves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    pub tenant: String,
    pub entries: usize,
    pub links: usize,
    pub checkpoints: usize,
    /// The last sequence number covered by a valid signed checkpoint (0: none).
    pub signed_through: i64,
    /// The tenant's entries after the last checkpoint: intact and chained, not yet signed.
    pub unsigned_entries: usize,
}

/// Verifies an export against the platform's audit public key. The error names the first
/// problem.
pub fn verify_export(text: &str, public_key: &[u8]) -> Result<ExportSummary, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty()).enumerate();
    let tenant = match lines.next().map(|(_, l)| serde_json::from_str::<Line>(l)) {
        Some(Ok(Line::Header { format, tenant, .. })) if format == FORMAT => tenant,
        _ => return Err(format!("the first line is not a {FORMAT} header")),
    };
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let mut chain: Vec<(i64, String, bool)> = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let (mut entries, mut links) = (0, 0);
    let mut prev: Option<(i64, String)> = None;
    for (i, l) in lines {
        let n = i + 1;
        let item = serde_json::from_str::<Line>(l).map_err(|e| format!("line {n}: {e}"))?;
        let (seq, prev_hash, hash, own) = match item {
            Line::Entry(r) => {
                if r.tenant_id.as_deref() != Some(tenant.as_str()) {
                    return Err(format!(
                        "line {n}: entry {} belongs to another tenant",
                        r.seq
                    ));
                }
                if chain_hash(&r) != r.hash {
                    return Err(format!(
                        "line {n}: entry {} has been altered (its hash does not match its content)",
                        r.seq
                    ));
                }
                entries += 1;
                (r.seq, r.prev_hash, r.hash, true)
            }
            Line::Link {
                seq,
                prev_hash,
                hash,
            } => {
                links += 1;
                (seq, prev_hash, hash, false)
            }
            Line::Checkpoint(c) => {
                checkpoints.push(c);
                continue;
            }
            Line::Header { .. } => return Err(format!("line {n}: a second header")),
        };
        if let Some((pseq, phash)) = &prev {
            if seq != pseq + 1 {
                return Err(format!("line {n}: entry {} follows entry {pseq}", seq));
            }
            if &prev_hash != phash {
                return Err(format!(
                    "line {n}: entry {seq} does not link to entry {pseq}"
                ));
            }
        }
        prev = Some((seq, hash.clone()));
        chain.push((seq, hash, own));
    }
    let mut signed_through = 0;
    for c in &checkpoints {
        let sig = hex::decode(&c.signature).map_err(|_| "a checkpoint signature is not hex")?;
        key.verify(&checkpoint_message(c.seq, &c.hash, &c.ts), &sig)
            .map_err(|_| format!("the checkpoint at entry {} has an invalid signature", c.seq))?;
        let at = chain.iter().find(|(s, _, _)| *s == c.seq).ok_or_else(|| {
            format!(
                "the checkpoint at entry {} names an entry outside the export",
                c.seq
            )
        })?;
        if at.1 != c.hash {
            return Err(format!(
                "entry {} differs from the signed checkpoint taken at {}",
                c.seq, c.ts
            ));
        }
        signed_through = signed_through.max(c.seq);
    }
    Ok(ExportSummary {
        tenant,
        entries,
        links,
        checkpoints: checkpoints.len(),
        signed_through,
        unsigned_entries: chain
            .iter()
            .filter(|(s, _, own)| *own && *s > signed_through)
            .count(),
    })
}
