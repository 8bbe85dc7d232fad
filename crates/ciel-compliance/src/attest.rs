//! Attestations: what only people and documents can show (policies, contracts, drills), vouched
//! for by a named person until a date, with the evidence file's SHA-256 and a copy of it kept
//! in the data directory (`compliance/evidence/{sha256}`), so the report can check the copy
//! still matches. Stored through the store and audited like every change.

use crate::{catalogue::Catalogue, ComplianceError, FRAMEWORK};
use ciel_core::audit::AuditDraft;
use ciel_store::{Attestation, MetadataStore};
use std::path::Path;

/// Directory of evidence copies, relative to the data directory.
pub const EVIDENCE_DIR: &str = "compliance/evidence";

/// Parses an expiry: `YYYY-MM-DD` (valid through that day, UTC) or an RFC 3339 instant.
pub fn parse_expiry(s: &str) -> Result<i64, ComplianceError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        // The whole named day counts: the attestation lapses at the next midnight, UTC.
        if let Some(next) = d.succ_opt().and_then(|n| n.and_hms_opt(0, 0, 0)) {
            return Ok(next.and_utc().timestamp());
        }
    }
    Err(ComplianceError::Invalid(format!(
        "--expires {s:?}: give a date (2027-06-30) or an RFC 3339 instant (2027-06-30T12:00:00Z)"
    )))
}

pub struct NewAttestation<'a> {
    pub requirement: &'a str,
    pub evidence: &'a Path,
    pub by: &'a str,
    pub expires: i64,
    pub note: Option<String>,
    /// Who records it (e.g. "operator:cli"), for the audit entry.
    pub actor: &'a str,
}

/// Checks, copies the evidence, stores the attestation with its audit entry.
pub fn record(
    store: &dyn MetadataStore,
    data_dir: &Path,
    n: NewAttestation<'_>,
) -> Result<Attestation, ComplianceError> {
    let cat = Catalogue::get();
    let req = cat.requirement(n.requirement).ok_or_else(|| {
        ComplianceError::Invalid(format!(
            "{:?} is not a SecNumCloud 3.2 requirement identifier (e.g. 12.5.c)",
            n.requirement
        ))
    })?;
    if n.by.trim().is_empty() {
        return Err(ComplianceError::Invalid(
            "--by must name the person who vouches".into(),
        ));
    }
    let now = ciel_core::time::now_unix();
    if n.expires <= now {
        return Err(ComplianceError::Invalid(
            "--expires is in the past: an expired attestation counts as missing".into(),
        ));
    }
    let bytes = std::fs::read(n.evidence).map_err(|e| {
        ComplianceError::Invalid(format!("cannot read {}: {e}", n.evidence.display()))
    })?;
    let sha = crate::tls::sha256_hex(&bytes);
    let rel = format!("{EVIDENCE_DIR}/{sha}");
    let dest = data_dir.join(&rel);
    if !dest.exists() {
        let dir = data_dir.join(EVIDENCE_DIR);
        std::fs::create_dir_all(&dir)?;
        // Written aside then renamed, so a copy is whole or absent.
        let tmp = dir.join(format!("{sha}.partial"));
        std::fs::write(&tmp, &bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
    }
    let name = n
        .evidence
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let a = Attestation {
        id: uuid::Uuid::new_v4().to_string(),
        requirement: req.id.clone(),
        framework: FRAMEWORK.into(),
        attested_by: n.by.trim().to_string(),
        created: now,
        expires: n.expires,
        evidence_name: name,
        evidence_sha256: sha,
        evidence_copy: rel,
        note: n.note.filter(|s| !s.trim().is_empty()),
    };
    let draft = AuditDraft {
        actor: n.actor.to_string(),
        action: "Ciel.Compliance/attestations/write".into(),
        target: format!("/providers/Ciel.Compliance/attestations/{}", a.id),
        outcome: "success".into(),
        details: serde_json::json!({
            "framework": FRAMEWORK, "requirement": a.requirement, "attestedBy": a.attested_by,
            "expires": ciel_core::time::unix_to_rfc3339(a.expires),
            "evidenceName": a.evidence_name, "evidenceSha256": a.evidence_sha256,
        }),
        ..Default::default()
    };
    store.put_attestation(&a, &draft)?;
    Ok(a)
}

/// The attestation that counts for each requirement: the newest one. Whether it is still valid
/// is decided by the report against its own clock.
pub fn latest(all: &[Attestation]) -> std::collections::HashMap<String, Attestation> {
    let mut m: std::collections::HashMap<String, Attestation> = Default::default();
    for a in all.iter().filter(|a| a.framework == FRAMEWORK) {
        match m.get(&a.requirement) {
            Some(b) if b.created > a.created => {}
            _ => {
                m.insert(a.requirement.clone(), a.clone());
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_forms() {
        assert_eq!(
            parse_expiry("2027-01-01").unwrap(),
            parse_expiry("2027-01-02T00:00:00Z").unwrap()
        );
        assert!(parse_expiry("soon").is_err());
    }
}
