//! The report as an HTML document an auditor can read on screen or print (A4): French and
//! English side by side, a summary by chapter, every requirement with its status and reason,
//! then every check with its evidence and timestamps. Self-contained (no script, no external
//! resource), so it renders the same offline and in headless Chromium for the PDF.

use crate::checks::{CheckStatus, CHECKS};
use crate::report::{Report, RequirementStatus};
use serde_json::Value;
use std::fmt::Write;

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt; color: #111; margin: 0 auto; max-width: 190mm; line-height: 1.35; }
h1 { font-size: 18pt; margin: 0 0 2mm 0; }
h1 .en, h2 .en, h3 .en { color: #555; font-weight: normal; }
h2 { font-size: 13pt; border-bottom: 1.5pt solid #1f3b73; padding-bottom: 1mm; margin-top: 8mm; }
h3 { font-size: 11pt; margin: 5mm 0 2mm 0; }
.en { color: #444; }
p.en, div.en { font-style: italic; }
table { border-collapse: collapse; width: 100%; margin: 2mm 0 4mm 0; }
th, td { border: 0.5pt solid #999; padding: 1.2mm 1.6mm; vertical-align: top; text-align: left; }
th { background: #e8edf6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th:nth-child(n+3) { width: 16mm; font-size: 8.5pt; }
table.summary th:first-child { width: 9mm; }
tr { break-inside: avoid; page-break-inside: avoid; }
.meta td:first-child { width: 45mm; font-weight: bold; }
.badge { display: inline-block; padding: 0.3mm 1.5mm; border-radius: 1mm; font-weight: bold; font-size: 8.5pt; white-space: nowrap; border: 0.5pt solid #333; }
.pass { background: #d6f0d6; } .attested { background: #d9e8fb; } .fail { background: #f7c6c6; }
.missing { background: #fde8c4; } .not-yet-checkable { background: #e4e4e4; }
.small { font-size: 8.5pt; color: #333; }
pre { font-size: 7.5pt; white-space: pre-wrap; word-break: break-all; background: #f6f6f6; border: 0.5pt solid #ccc; padding: 1.5mm; margin: 1mm 0 3mm 0; }
section.chapter { break-before: page; page-break-before: always; }
.check { break-inside: avoid-page; }
.notice { border: 1pt solid #b58b00; background: #fff7da; padding: 2mm; margin: 3mm 0; }
footer { margin-top: 8mm; font-size: 8pt; color: #555; border-top: 0.5pt solid #999; padding-top: 2mm; }
@media screen { body { padding: 10mm; } }
"#;

fn badge(s: RequirementStatus) -> String {
    format!(
        r#"<span class="badge {0}">{1}<br><span class="en">{0}</span></span>"#,
        s.label(),
        esc(s.fr())
    )
}

fn check_badge(s: CheckStatus) -> String {
    let (class, fr) = match s {
        CheckStatus::Pass => ("pass", "conforme"),
        CheckStatus::Fail => ("fail", "non conforme"),
        CheckStatus::NotYetCheckable => ("not-yet-checkable", "pas encore vérifiable"),
    };
    format!(r#"<span class="badge {class}">{fr} / {class}</span>"#)
}

fn kind_fr(k: crate::Kind) -> &'static str {
    match k {
        crate::Kind::TechnicalAutomatic => "technique, automatique",
        crate::Kind::TechnicalAssisted => "technique, assistée",
        crate::Kind::Organisational => "organisationnelle",
    }
}

/// Evidence for print: long package lists are folded into one paragraph.
fn evidence_text(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(p) = v.get_mut("packages") {
        if let Some(a) = p.as_array() {
            let list: Vec<String> = a
                .iter()
                .map(|x| {
                    format!(
                        "{} {}",
                        x["name"].as_str().unwrap_or(""),
                        x["version"].as_str().unwrap_or("")
                    )
                })
                .collect();
            *p = Value::String(list.join(", "));
        }
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8">
<title>Rapport de conformité SecNumCloud 3.2 — Ciel — {gen}</title>
<style>{CSS}</style></head><body>
<h1>Rapport de conformité SecNumCloud 3.2<br><span class="en">SecNumCloud 3.2 compliance report</span></h1>
<table class="meta">
<tr><td>Généré le <span class="en">/ Generated</span></td><td>{gen}</td></tr>
<tr><td>Logiciel <span class="en">/ Software</span></td><td>{sw} {ver} <span class="small">({comp})</span></td></tr>
<tr><td>Déploiement <span class="en">/ Deployment</span></td><td><pre>{dep}</pre></td></tr>
<tr><td>Référentiel <span class="en">/ Framework</span></td><td>ANSSI SecNumCloud {cv} ({cp})</td></tr>
</table>
<div class="notice"><b>Identifiants des exigences.</b> Ils suivent la transcription publique <span class="small">{src}</span> et n'ont pas encore été comparés au texte de l'ANSSI ; les libellés sont des résumés de Ciel, pas le texte du référentiel.
<div class="en">Requirement identifiers follow the public transcription above and have not yet been compared with ANSSI's own text; the wording is Ciel's summary, not the framework's text.</div></div>
"#,
        gen = esc(&r.generated_at),
        sw = esc(r.software["name"].as_str().unwrap_or("Ciel")),
        ver = esc(r.software["version"].as_str().unwrap_or("")),
        comp = esc(r.software["compiler"].as_str().unwrap_or("")),
        dep = esc(&serde_json::to_string_pretty(&r.deployment).unwrap_or_default()),
        cv = esc(&r.catalogue.version),
        cp = esc(&r.catalogue.published),
        src = esc(&r.catalogue.transcription),
    );
    h.push_str(
        r#"<h2>Lecture du rapport <span class="en">/ How to read this report</span></h2>
<table><tr><th>Statut / Status</th><th>Signification</th><th class="en">Meaning</th></tr>
<tr><td><span class="badge pass">conforme / pass</span></td><td>Les contrôles de la plateforme le prouvent.</td><td class="en">The platform's checks prove it.</td></tr>
<tr><td><span class="badge attested">attesté / attested</span></td><td>Une personne nommée l'atteste, preuve à l'appui, jusqu'à une date.</td><td class="en">A named person vouches for it, with evidence, until a date.</td></tr>
<tr><td><span class="badge fail">non conforme / fail</span></td><td>Un contrôle montre que l'exigence n'est pas satisfaite.</td><td class="en">A check shows the requirement is not met.</td></tr>
<tr><td><span class="badge missing">manquant / missing</span></td><td>Aucune attestation valide (absente ou expirée) ; pour une exigence assistée, la plateforme a fourni ses preuves mais l'attestation manque.</td><td class="en">No valid attestation (none or expired); for an assisted requirement the platform's evidence is there but the attestation is not.</td></tr>
<tr><td><span class="badge not-yet-checkable">pas encore vérifiable / not-yet-checkable</span></td><td>La plateforme n'a pas encore la capacité de le montrer.</td><td class="en">The platform cannot show it yet.</td></tr>
</table>
"#,
    );
    // Summary.
    h.push_str(r#"<h2>Synthèse par chapitre <span class="en">/ Summary by chapter</span></h2>
<table class="summary"><tr><th>Ch.</th><th>Thème <span class="en">/ Topic</span></th><th>Total</th><th>conforme<br><span class="en">pass</span></th><th>non conforme<br><span class="en">fail</span></th><th>attesté<br><span class="en">attested</span></th><th>manquant<br><span class="en">missing</span></th><th>pas encore vérifiable<br><span class="en">not yet checkable</span></th></tr>
"#);
    for c in &r.chapters {
        let k = &c.counts;
        let _ = writeln!(
            h,
            r#"<tr><td class="n">{}</td><td>{}<br><span class="en">{}</span></td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            c.number,
            esc(&c.fr),
            esc(&c.en),
            k.total,
            k.pass,
            k.fail,
            k.attested,
            k.missing,
            k.not_yet_checkable
        );
    }
    let t = &r.totals;
    let _ = writeln!(
        h,
        r#"<tr><th></th><th>Total</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th><th class="n">{}</th></tr></table>"#,
        t.total, t.pass, t.fail, t.attested, t.missing, t.not_yet_checkable
    );
    // Findings first: what an auditor looks for.
    let fails: Vec<_> = r
        .requirements
        .iter()
        .filter(|x| x.status == RequirementStatus::Fail)
        .collect();
    h.push_str(r#"<h2>Non-conformités <span class="en">/ Failed requirements</span></h2>"#);
    if fails.is_empty() {
        h.push_str("<p>Aucune. <span class=\"en\">None.</span></p>");
    } else {
        h.push_str("<table><tr><th>Exigence<br><span class=\"en\">Requirement</span></th><th>Motif <span class=\"en\">/ Reason</span></th></tr>");
        for x in fails {
            let _ = write!(
                h,
                "<tr><td><b>{}</b></td><td>{}<div class=\"en\">{}</div><div class=\"small\">{}<br><span class=\"en\">{}</span></div></td></tr>",
                esc(&x.id),
                esc(&x.fr),
                esc(&x.en),
                esc(&x.reason_fr),
                esc(&x.reason)
            );
        }
        h.push_str("</table>");
    }
    // Per chapter.
    for c in &r.chapters {
        let _ = write!(
            h,
            r#"<section class="chapter"><h2>{n}. {fr} <span class="en">/ {en}</span></h2>
<table><tr><th style="width:15mm">Id</th><th>Exigence <span class="en">/ Requirement</span></th><th style="width:24mm">Nature <span class="en">/ Kind</span></th><th style="width:28mm">Statut <span class="en">/ Status</span></th></tr>
"#,
            n = c.number,
            fr = esc(&c.fr),
            en = esc(&c.en)
        );
        for x in r.requirements.iter().filter(|x| x.chapter == c.number) {
            let mut detail = format!(
                "<div class=\"small\">{}<br><span class=\"en\">{}</span></div>",
                esc(&x.reason_fr),
                esc(&x.reason)
            );
            if !x.checks.is_empty() {
                let _ = write!(
                    detail,
                    "<div class=\"small\">Contrôles <span class=\"en\">/ checks</span>: {}</div>",
                    esc(&x.checks.join(", "))
                );
            }
            if let Some(a) = &x.attestation {
                let _ = write!(
                    detail,
                    "<div class=\"small\">Attestation: {} — enregistrée <span class=\"en\">recorded</span> {}, expire <span class=\"en\">expires</span> {}{}; preuve <span class=\"en\">evidence</span> {} (SHA-256 {}, copie <span class=\"en\">copy</span> {}){}</div>",
                    esc(&a.attested_by),
                    esc(&a.recorded),
                    esc(&a.expires),
                    if a.expired { " (expirée / expired)" } else { "" },
                    esc(&a.evidence_name),
                    esc(&a.evidence_sha256),
                    match a.copy_intact { Some(true) => "intacte / intact", Some(false) => "MODIFIÉE / CHANGED", None => "absente / absent" },
                    a.note.as_deref().map(|n| format!(" — {}", esc(n))).unwrap_or_default()
                );
            }
            if let Some(n) = &x.note {
                let _ = write!(detail, "<div class=\"small\">Note: {}</div>", esc(n));
            }
            let _ = writeln!(
                h,
                "<tr><td><b>{}</b>{}</td><td>{}<div class=\"en\">{}</div>{}</td><td class=\"small\">{}<br><span class=\"en\">{}</span></td><td>{}</td></tr>",
                esc(&x.id),
                if x.recommendation { "<br><span class=\"small\">recommandation<br>recommendation</span>" } else { "" },
                esc(&x.fr),
                esc(&x.en),
                detail,
                kind_fr(x.kind),
                x.kind.label(),
                badge(x.status)
            );
        }
        h.push_str("</table></section>\n");
    }
    // Evidence.
    h.push_str(r#"<section class="chapter"><h2>Preuves des contrôles <span class="en">/ Check evidence</span></h2>"#);
    for c in &r.checks {
        let def = CHECKS.iter().find(|d| d.id == c.id);
        let _ = write!(
            h,
            r#"<div class="check"><h3>{id} {b}</h3><p>{fr}<br><span class="en">{en}</span></p>
<p class="small">{sum}<br>Début <span class="en">/ started</span> {s} — fin <span class="en">/ finished</span> {f}</p><pre>{ev}</pre></div>
"#,
            id = esc(&c.id),
            b = check_badge(c.status),
            fr = esc(def.map(|d| d.fr).unwrap_or("")),
            en = esc(def.map(|d| d.en).unwrap_or("")),
            sum = esc(&c.summary),
            s = esc(&c.started_at),
            f = esc(&c.finished_at),
            ev = esc(&evidence_text(&c.evidence)),
        );
    }
    let _ = writeln!(
        h,
        r#"</section><footer>Rapport produit par <span class="en">Report produced by</span> {} {} ({}) — {} — format {}</footer></body></html>"#,
        esc(r.software["name"].as_str().unwrap_or("Ciel")),
        esc(r.software["version"].as_str().unwrap_or("")),
        esc(r.software["compiler"].as_str().unwrap_or("")),
        esc(&r.generated_at),
        esc(&r.format)
    );
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
