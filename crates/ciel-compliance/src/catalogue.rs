//! The SecNumCloud 3.2 requirement catalogue, as data (`catalogue/secnumcloud-3.2.toml`).

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

const SOURCE: &str = include_str!("../catalogue/secnumcloud-3.2.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The platform proves it by itself: its checks decide.
    TechnicalAutomatic,
    /// The platform gathers evidence; the operator's attestation completes it.
    TechnicalAssisted,
    /// Only an attestation (procedure, contract, document) can show it.
    Organisational,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::TechnicalAutomatic => "technical-automatic",
            Kind::TechnicalAssisted => "technical-assisted",
            Kind::Organisational => "organisational",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub id: String,
    pub chapter: u8,
    pub kind: Kind,
    /// The text is a recommendation ("il est recommandé"), not an obligation.
    #[serde(default)]
    pub recommendation: bool,
    #[serde(default)]
    pub checks: Vec<String>,
    /// Ciel's paraphrase in French (not ANSSI's text).
    pub fr: String,
    /// Ciel's paraphrase in English.
    pub en: String,
    /// The identifier was compared with ANSSI's own document.
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chapter {
    pub number: u8,
    pub fr: String,
    pub en: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub framework: String,
    pub version: String,
    pub published: String,
    pub publisher: String,
    pub transcription: String,
    pub verified_against_anssi: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub source: Source,
    #[serde(rename = "chapter")]
    pub chapters: Vec<Chapter>,
    #[serde(rename = "requirement")]
    pub requirements: Vec<Requirement>,
}

impl Catalogue {
    /// The embedded catalogue. Its integrity is a unit test, so a broken file never ships; the
    /// parse error, should it happen anyway, is a build defect and stops the process loudly.
    pub fn get() -> &'static Catalogue {
        static CAT: OnceLock<Catalogue> = OnceLock::new();
        CAT.get_or_init(|| match toml::from_str(SOURCE) {
            Ok(c) => c,
            Err(e) => panic!("the embedded SecNumCloud catalogue does not parse: {e}"),
        })
    }

    pub fn requirement(&self, id: &str) -> Option<&Requirement> {
        self.requirements.iter().find(|r| r.id == id)
    }

    pub fn chapter(&self, n: u8) -> Option<&Chapter> {
        self.chapters.iter().find(|c| c.number == n)
    }
}

/// Sorts requirement ids the way the référentiel lists them: "9.10.a" after "9.2.a", and a
/// section's own lettered requirements ("11.1.b") before its numbered subsections ("11.1.1.a").
pub fn id_order(id: &str) -> Vec<(u32, String)> {
    id.split('.')
        .map(|p| match p.parse::<u32>() {
            Ok(n) => (n.saturating_add(1), String::new()),
            Err(_) => (0, p.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn catalogue_is_whole_and_consistent() {
        let c = Catalogue::get();
        // 278 lettered identifiers in the transcription of 3.2, 15 of them recommendations.
        assert_eq!(c.requirements.len(), 278);
        assert_eq!(
            c.requirements.iter().filter(|r| r.recommendation).count(),
            15
        );
        let mut seen = HashSet::new();
        for r in &c.requirements {
            assert!(seen.insert(r.id.as_str()), "duplicate id {}", r.id);
            assert!(
                (5..=19).contains(&r.chapter),
                "{} outside chapters 5-19",
                r.id
            );
            assert_eq!(
                r.id.split('.').next().and_then(|p| p.parse::<u8>().ok()),
                Some(r.chapter),
                "{}: chapter field disagrees with the id",
                r.id
            );
            let last = r.id.rsplit('.').next().unwrap_or("");
            assert!(
                last.len() == 1 && last.chars().all(|ch| ch.is_ascii_lowercase()),
                "{}: ids end with one letter",
                r.id
            );
            assert!(
                !r.fr.trim().is_empty() && !r.en.trim().is_empty(),
                "{}",
                r.id
            );
            assert!(c.chapter(r.chapter).is_some(), "{}: unknown chapter", r.id);
            for k in &r.checks {
                assert!(
                    crate::checks::CHECKS.iter().any(|d| d.id == k),
                    "{} refers to unknown check {k}",
                    r.id
                );
            }
            match r.kind {
                Kind::Organisational => assert!(r.checks.is_empty(), "{}", r.id),
                _ => assert!(!r.checks.is_empty(), "{}: technical without checks", r.id),
            }
        }
        // Every check proves something.
        for d in crate::checks::CHECKS {
            assert!(
                c.requirements
                    .iter()
                    .any(|r| r.checks.iter().any(|k| k == d.id)),
                "check {} is referenced by no requirement",
                d.id
            );
        }
        // Counts per chapter, as in the transcription.
        let mut per: BTreeMap<u8, usize> = BTreeMap::new();
        for r in &c.requirements {
            *per.entry(r.chapter).or_default() += 1;
        }
        let expect: BTreeMap<u8, usize> = [
            (5, 15),
            (6, 13),
            (7, 12),
            (8, 8),
            (9, 34),
            (10, 20),
            (11, 42),
            (12, 37),
            (13, 8),
            (14, 12),
            (15, 9),
            (16, 14),
            (17, 7),
            (18, 11),
            (19, 36),
        ]
        .into_iter()
        .collect();
        assert_eq!(per, expect);
        assert_eq!(c.chapters.len(), 15);
        // Ids are in the référentiel's order.
        let ids: Vec<_> = c.requirements.iter().map(|r| id_order(&r.id)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        // Nothing claims a verification the file's header says was not done.
        assert!(!c.source.verified_against_anssi);
        assert!(c.requirements.iter().all(|r| !r.verified));
    }
}
