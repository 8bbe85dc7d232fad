//! The audit record and its chain hash. Kept here (pure, no I/O) so that the store can chain
//! entries inside the same transaction as the change they record, and `ciel-audit` can verify
//! the chain with exactly the same function.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash that precedes the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a layer asks to be recorded. The store assigns `seq`, `ts` and the chain hashes.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AuditDraft {
    /// Tenant the action concerns; `None` for platform-level actions.
    pub tenant_id: Option<String>,
    /// Who acted: `sp:{appId}`, a UPN, `operator:{name}`, `anonymous`, `system`.
    pub actor: String,
    /// Operation name, e.g. `Microsoft.Resources/resourceGroups/write`, `token/issue`.
    pub action: String,
    /// The resource or principal acted upon.
    pub target: String,
    /// `success`, `denied`, `failure`.
    pub outcome: String,
    /// Small JSON object with extra facts (never secrets).
    pub details: serde_json::Value,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

/// An entry as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    /// RFC 3339 UTC, microseconds.
    pub ts: String,
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// The details as canonical JSON text (what is hashed).
    pub details: String,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

fn field(h: &mut Sha256, v: &str) {
    // Length-prefixed so that no two different field lists hash alike.
    h.update((v.len() as u64).to_be_bytes());
    h.update(v.as_bytes());
}

/// SHA-256 over the previous hash and every field of the entry, hex encoded.
pub fn chain_hash(r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    h.update(b"ciel-audit-v1");
    field(&mut h, &r.prev_hash);
    field(&mut h, &r.seq.to_string());
    field(&mut h, &r.ts);
    field(&mut h, r.tenant_id.as_deref().unwrap_or(""));
    field(&mut h, &r.actor);
    field(&mut h, &r.action);
    field(&mut h, &r.target);
    field(&mut h, &r.outcome);
    field(&mut h, &r.details);
    field(&mut h, r.request_id.as_deref().unwrap_or(""));
    field(&mut h, r.client_ip.as_deref().unwrap_or(""));
    hex_lower(&h.finalize())
}

pub fn hex_lower(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// The bytes a checkpoint signature covers.
pub fn checkpoint_message(seq: i64, hash: &str, ts: &str) -> Vec<u8> {
    format!("ciel-audit-checkpoint-v1\n{seq}\n{hash}\n{ts}\n").into_bytes()
}
