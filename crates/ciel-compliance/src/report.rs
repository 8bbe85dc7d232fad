//! The report: each requirement's status with its evidence, a summary by chapter, and the diff
//! of two reports.
//!
//! How a status is decided (docs/compliance.md):
//! - organisational: `attested` with a valid attestation, else `missing`;
//! - technical-automatic: `fail` if a check fails; else `not-yet-checkable` if a check is (an
//!   attestation may then stand in: `attested`); else `pass`;
//! - technical-assisted: `fail` if a check fails; else `attested` with a valid attestation;
//!   else `not-yet-checkable` if a check is; else `missing` (the platform's evidence is there,
//!   the operator's attestation is not).
//!
//! An attestation past its expiry counts as missing; so does one whose kept evidence copy no
//! longer matches its SHA-256.

use crate::catalogue::{Catalogue, Kind, Source};
use crate::checks::{CheckResult, CheckStatus};
use ciel_store::Attestation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

pub const FORMAT: &str = "ciel-compliance-report/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum RequirementStatus {
    Pass,
    Fail,
    Attested,
    Missing,
    NotYetCheckable,
}

impl RequirementStatus {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Attested => "attested",
            Self::Missing => "missing",
            Self::NotYetCheckable => "not-yet-checkable",
        }
    }
    pub fn fr(self) -> &'static str {
        match self {
            Self::Pass => "conforme",
            Self::Fail => "non conforme",
            Self::Attested => "attesté",
            Self::Missing => "manquant",
            Self::NotYetCheckable => "pas encore vérifiable",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationView {
    pub id: String,
    pub attested_by: String,
    pub recorded: String,
    pub expires: String,
    pub expired: bool,
    pub evidence_name: String,
    pub evidence_sha256: String,
    pub evidence_copy: String,
    /// The kept copy still hashes to `evidence_sha256` (None: copy absent).
    pub copy_intact: Option<bool>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementResult {
    pub id: String,
    pub chapter: u8,
    pub kind: Kind,
    pub recommendation: bool,
    pub fr: String,
    pub en: String,
    pub verified: bool,
    pub note: Option<String>,
    pub status: RequirementStatus,
    /// Why this status, in one sentence (English; `reason_fr` in French).
    pub reason: String,
    #[serde(default)]
    pub reason_fr: String,
    pub checks: Vec<String>,
    pub attestation: Option<AttestationView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub total: usize,
    pub pass: usize,
    pub fail: usize,
    pub attested: usize,
    pub missing: usize,
    pub not_yet_checkable: usize,
}

impl Counts {
    fn add(&mut self, s: RequirementStatus) {
        self.total += 1;
        match s {
            RequirementStatus::Pass => self.pass += 1,
            RequirementStatus::Fail => self.fail += 1,
            RequirementStatus::Attested => self.attested += 1,
            RequirementStatus::Missing => self.missing += 1,
            RequirementStatus::NotYetCheckable => self.not_yet_checkable += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChapterSummary {
    pub number: u8,
    pub fr: String,
    pub en: String,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub format: String,
    pub framework: String,
    pub catalogue: Source,
    pub generated_at: String,
    pub software: Value,
    pub deployment: Value,
    pub totals: Counts,
    pub chapters: Vec<ChapterSummary>,
    pub requirements: Vec<RequirementResult>,
    pub checks: Vec<CheckResult>,
}

fn view(a: &Attestation, now: i64, data_dir: &Path) -> AttestationView {
    let copy_intact = std::fs::read(data_dir.join(&a.evidence_copy))
        .ok()
        .map(|b| crate::tls::sha256_hex(&b) == a.evidence_sha256);
    AttestationView {
        id: a.id.clone(),
        attested_by: a.attested_by.clone(),
        recorded: ciel_core::time::unix_to_rfc3339(a.created),
        expires: ciel_core::time::unix_to_rfc3339(a.expires),
        expired: a.expires <= now,
        evidence_name: a.evidence_name.clone(),
        evidence_sha256: a.evidence_sha256.clone(),
        evidence_copy: a.evidence_copy.clone(),
        copy_intact,
        note: a.note.clone(),
    }
}

/// Decides every requirement from the check results and attestations.
pub fn assemble(
    checks: Vec<CheckResult>,
    attestations: &[Attestation],
    data_dir: &Path,
    now: i64,
    deployment: Value,
) -> Report {
    let cat = Catalogue::get();
    let latest = crate::attest::latest(attestations);
    let mut requirements = vec![];
    for r in &cat.requirements {
        let att = latest.get(&r.id).map(|a| view(a, now, data_dir));
        let valid = att
            .as_ref()
            .is_some_and(|a| !a.expired && a.copy_intact == Some(true));
        // Why an attestation does not count (English, French).
        let why_not_valid = att.as_ref().map(|a| {
            if a.expired {
                (
                    format!(
                        "the attestation by {} expired on {}",
                        a.attested_by, a.expires
                    ),
                    format!(
                        "l'attestation de {} a expiré le {}",
                        a.attested_by, a.expires
                    ),
                )
            } else {
                (
                    "the kept evidence copy no longer matches its SHA-256".to_string(),
                    "la copie conservée de la preuve ne correspond plus à son SHA-256".to_string(),
                )
            }
        });
        let results: Vec<&CheckResult> = r
            .checks
            .iter()
            .filter_map(|k| checks.iter().find(|c| &c.id == k))
            .collect();
        let failed = results
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let nyc = results
            .iter()
            .filter(|c| c.status == CheckStatus::NotYetCheckable)
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let all = r.checks.join(", ");
        let by = att
            .as_ref()
            .map(|a| a.attested_by.clone())
            .unwrap_or_default();
        let (status, reason, reason_fr) = match r.kind {
            Kind::Organisational => {
                if valid {
                    (
                        RequirementStatus::Attested,
                        format!("attested by {by}"),
                        format!("attesté par {by}"),
                    )
                } else {
                    let (en, fr) = why_not_valid.unwrap_or_else(|| {
                        (
                            "no attestation recorded".into(),
                            "aucune attestation enregistrée".into(),
                        )
                    });
                    (RequirementStatus::Missing, en, fr)
                }
            }
            Kind::TechnicalAutomatic | Kind::TechnicalAssisted if !failed.is_empty() => (
                RequirementStatus::Fail,
                format!("failed check(s): {failed}"),
                format!("contrôle(s) en échec : {failed}"),
            ),
            Kind::TechnicalAutomatic => {
                if nyc.is_empty() {
                    (
                        RequirementStatus::Pass,
                        format!("check(s) passed: {all}"),
                        format!("contrôle(s) réussi(s) : {all}"),
                    )
                } else if valid {
                    (
                        RequirementStatus::Attested,
                        format!("attested by {by} (not yet checkable by the platform: {nyc})"),
                        format!(
                            "attesté par {by} (pas encore vérifiable par la plateforme : {nyc})"
                        ),
                    )
                } else {
                    (
                        RequirementStatus::NotYetCheckable,
                        format!("not yet checkable: {nyc}"),
                        format!("pas encore vérifiable : {nyc}"),
                    )
                }
            }
            Kind::TechnicalAssisted => {
                if valid {
                    (
                        RequirementStatus::Attested,
                        format!("attested by {by}, with the platform's evidence"),
                        format!("attesté par {by}, avec les preuves de la plateforme"),
                    )
                } else if !nyc.is_empty() {
                    let (en, fr) = why_not_valid
                        .map(|(e, f)| (format!("; {e}"), format!(" ; {f}")))
                        .unwrap_or_default();
                    (
                        RequirementStatus::NotYetCheckable,
                        format!("not yet checkable: {nyc}{en}"),
                        format!("pas encore vérifiable : {nyc}{fr}"),
                    )
                } else {
                    let (en, fr) =
                        why_not_valid.unwrap_or_else(|| ("missing".into(), "manquante".into()));
                    (
                        RequirementStatus::Missing,
                        format!("the platform's checks pass ({all}); the operator's attestation is {en}"),
                        format!("les contrôles de la plateforme réussissent ({all}) ; l'attestation de l'opérateur est {fr}"),
                    )
                }
            }
        };
        requirements.push(RequirementResult {
            id: r.id.clone(),
            chapter: r.chapter,
            kind: r.kind,
            recommendation: r.recommendation,
            fr: r.fr.clone(),
            en: r.en.clone(),
            verified: r.verified,
            note: r.note.clone(),
            status,
            reason,
            reason_fr,
            checks: r.checks.clone(),
            attestation: att,
        });
    }
    let mut totals = Counts::default();
    let chapters = cat
        .chapters
        .iter()
        .map(|c| {
            let mut counts = Counts::default();
            for r in requirements.iter().filter(|r| r.chapter == c.number) {
                counts.add(r.status);
                totals.add(r.status);
            }
            ChapterSummary {
                number: c.number,
                fr: c.fr.clone(),
                en: c.en.clone(),
                counts,
            }
        })
        .collect();
    Report {
        format: FORMAT.into(),
        framework: "SecNumCloud 3.2".into(),
        catalogue: cat.source.clone(),
        generated_at: ciel_core::time::now_rfc3339(),
        software: json!({"name": "Ciel", "version": env!("CARGO_PKG_VERSION"), "compiler": env!("CIEL_RUSTC_VERSION")}),
        deployment,
        totals,
        chapters,
        requirements,
        checks,
    }
}

/// Runs the checks and builds the report.
pub fn build(ctx: &crate::checks::Context<'_>, deployment: Value) -> Report {
    let checks = crate::checks::run_all(ctx);
    let attestations = ctx.store.list_attestations().unwrap_or_default();
    assemble(
        checks,
        &attestations,
        &ctx.data_dir,
        ciel_core::time::now_unix(),
        deployment,
    )
}

/// What changed from report `a` to report `b`: every requirement whose status differs.
pub fn diff(a: &Report, b: &Report) -> Value {
    let mut changed = vec![];
    for rb in &b.requirements {
        let before = a.requirements.iter().find(|r| r.id == rb.id);
        let from = before.map(|r| r.status.label()).unwrap_or("absent");
        if from != rb.status.label() {
            changed.push(
                json!({"id": rb.id, "from": from, "to": rb.status.label(), "reason": rb.reason}),
            );
        }
    }
    for ra in &a.requirements {
        if !b.requirements.iter().any(|r| r.id == ra.id) {
            changed.push(json!({"id": ra.id, "from": ra.status.label(), "to": "absent"}));
        }
    }
    json!({
        "from": {"generatedAt": a.generated_at, "totals": a.totals},
        "to": {"generatedAt": b.generated_at, "totals": b.totals},
        "changed": changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, status: CheckStatus) -> CheckResult {
        CheckResult {
            id: id.into(),
            status,
            summary: String::new(),
            evidence: Value::Null,
            started_at: String::new(),
            finished_at: String::new(),
        }
    }

    fn all(status: CheckStatus) -> Vec<CheckResult> {
        crate::checks::CHECKS
            .iter()
            .map(|d| check(d.id, status))
            .collect()
    }

    fn status(r: &Report, id: &str) -> RequirementStatus {
        r.requirements
            .iter()
            .find(|x| x.id == id)
            .map(|x| x.status)
            .unwrap()
    }

    #[test]
    fn statuses_follow_the_rules() {
        let d = tempfile::tempdir().unwrap();
        let r = assemble(all(CheckStatus::Pass), &[], d.path(), 100, Value::Null);
        assert_eq!(status(&r, "10.1.a"), RequirementStatus::Pass); // automatic
        assert_eq!(status(&r, "10.5.c"), RequirementStatus::Missing); // assisted, no attestation
        assert_eq!(status(&r, "5.2.a"), RequirementStatus::Missing); // organisational
        assert_eq!(r.totals.total, 278);
        let r = assemble(all(CheckStatus::Fail), &[], d.path(), 100, Value::Null);
        assert_eq!(status(&r, "10.1.a"), RequirementStatus::Fail);
        assert_eq!(status(&r, "10.5.c"), RequirementStatus::Fail);
        assert_eq!(status(&r, "5.2.a"), RequirementStatus::Missing);
        let r = assemble(
            all(CheckStatus::NotYetCheckable),
            &[],
            d.path(),
            100,
            Value::Null,
        );
        assert_eq!(status(&r, "9.7.d"), RequirementStatus::NotYetCheckable);
        assert_eq!(status(&r, "10.1.a"), RequirementStatus::NotYetCheckable);
    }

    #[test]
    fn attestations_count_until_they_expire_or_their_copy_changes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("compliance/evidence")).unwrap();
        let body = b"policy v1";
        let sha = crate::tls::sha256_hex(body);
        std::fs::write(d.path().join("compliance/evidence").join(&sha), body).unwrap();
        let a = Attestation {
            id: "x".into(),
            requirement: "5.2.a".into(),
            framework: crate::FRAMEWORK.into(),
            attested_by: "Alice".into(),
            created: 10,
            expires: 200,
            evidence_name: "p.pdf".into(),
            evidence_sha256: sha.clone(),
            evidence_copy: format!("compliance/evidence/{sha}"),
            note: None,
        };
        let nyc = a.clone();
        let nyc = Attestation {
            id: "y".into(),
            requirement: "9.7.d".into(),
            ..nyc
        };
        let r = assemble(
            all(CheckStatus::NotYetCheckable),
            &[a.clone(), nyc.clone()],
            d.path(),
            100,
            Value::Null,
        );
        assert_eq!(status(&r, "5.2.a"), RequirementStatus::Attested);
        assert_eq!(status(&r, "9.7.d"), RequirementStatus::Attested);
        // A failing check is never covered by an attestation.
        let r = assemble(
            all(CheckStatus::Fail),
            std::slice::from_ref(&nyc),
            d.path(),
            100,
            Value::Null,
        );
        assert_eq!(status(&r, "9.7.d"), RequirementStatus::Fail);
        // Expired.
        let r = assemble(
            all(CheckStatus::Pass),
            std::slice::from_ref(&a),
            d.path(),
            300,
            Value::Null,
        );
        assert_eq!(status(&r, "5.2.a"), RequirementStatus::Missing);
        // Tampered copy.
        std::fs::write(d.path().join(&a.evidence_copy), b"policy v2").unwrap();
        let r = assemble(all(CheckStatus::Pass), &[a], d.path(), 100, Value::Null);
        assert_eq!(status(&r, "5.2.a"), RequirementStatus::Missing);
    }

    #[test]
    fn diff_names_changes() {
        let d = tempfile::tempdir().unwrap();
        let a = assemble(all(CheckStatus::Pass), &[], d.path(), 100, Value::Null);
        let b = assemble(all(CheckStatus::Fail), &[], d.path(), 100, Value::Null);
        let x = diff(&a, &b);
        let ids: Vec<&str> = x["changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"10.1.a"));
        assert!(!ids.contains(&"5.2.a"));
        // Round trip through JSON, as `ciel compliance diff` reads files.
        let back: Report = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(diff(&a, &back)["changed"], json!([]));
    }
}
