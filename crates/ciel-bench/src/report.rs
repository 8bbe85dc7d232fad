//! `ciel-bench blob-report`: reads the JSON lines of `ciel-bench blob` runs (several rounds of
//! each scenario against each target) and prints the Markdown tables of docs/PERFORMANCE.md,
//! medians across rounds, the reading against the targets, then one JSON summary line.

use crate::blob::size_label;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Files of JSON lines written by `ciel-bench blob` (other lines are skipped).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Small-object rates must be at least this multiple of Azurite's.
const SMALL_VS_AZURITE: f64 = 5.0;
/// Large-object throughput must be at least this share of nginx's.
const LARGE_VS_NGINX: f64 = 0.8;
/// Server memory bound during 64 concurrent 64 MiB uploads, MiB.
const RSS_LIMIT_MIB: f64 = 256.0;
const LARGE: u64 = 1 << 20;
const TARGETS: [&str; 3] = ["ciel", "azurite", "nginx"];

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Scenario key: op ("put" before "get" in the tables), size, concurrency.
type Key = (u8, u64, u64);

struct Cell {
    runs: usize,
    per_s: Option<f64>,
    mib_s: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    errors: u64,
    rss_peak: Option<f64>,
    client_rss: Option<f64>,
    server_cores: Option<f64>,
    other: Option<f64>,
}

fn cell(rows: &[&Value]) -> Cell {
    let col = |k: &str| -> Vec<f64> { rows.iter().filter_map(|r| r[k].as_f64()).collect() };
    let max = |k: &str| col(k).into_iter().reduce(f64::max);
    Cell {
        runs: rows.len(),
        per_s: median(col("per_s")),
        mib_s: median(col("mib_per_s")),
        p50: median(col("p50_ms")),
        p99: median(col("p99_ms")),
        errors: rows.iter().filter_map(|r| r["errors"].as_u64()).sum(),
        rss_peak: max("server_rss_peak_mib"),
        client_rss: max("client_rss_peak_mib"),
        server_cores: median(col("server_cpu_cores")),
        other: max("other_cores"),
    }
}

fn f0(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
}

fn f1(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Prints the report; returns the number of failed requests over all runs.
pub fn report(a: ReportArgs) -> Result<u64> {
    let mut rows: Vec<Value> = Vec::new();
    for f in &a.files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        rows.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["bench"] == "blob"),
        );
    }
    let mut groups: BTreeMap<Key, BTreeMap<&str, Vec<&Value>>> = BTreeMap::new();
    for r in &rows {
        let op = if r["op"] == "put" { 0 } else { 1 };
        let key = (
            op,
            r["size"].as_u64().unwrap_or(0),
            r["concurrency"].as_u64().unwrap_or(0),
        );
        let target = TARGETS
            .iter()
            .find(|t| r["target"] == **t)
            .copied()
            .unwrap_or("other");
        groups
            .entry(key)
            .or_default()
            .entry(target)
            .or_default()
            .push(r);
    }
    let cells: BTreeMap<Key, BTreeMap<&str, Cell>> = groups
        .iter()
        .map(|(k, m)| (*k, m.iter().map(|(t, v)| (*t, cell(v))).collect()))
        .collect();
    let rounds = cells
        .values()
        .flat_map(|m| m.values().map(|c| c.runs))
        .max()
        .unwrap_or(0);

    let mut s = String::new();
    let _ = writeln!(s, "\n## Blob Storage: Ciel, Azurite and nginx\n");
    let _ = writeln!(
        s,
        "Medians of {rounds} round(s); each round runs every scenario against the three targets in turn. \
         1 KiB rows are requests/s, larger sizes MiB/s. Latencies are medians of each run's p50 and p99.\n"
    );
    let _ = writeln!(
        s,
        "| Scenario | Conc. | Ciel | Azurite | nginx | Ciel ÷ Azurite | Ciel ÷ nginx | p50 ms C / A / N | p99 ms C / A / N | Ciel server cores | Failed C / A / N | Other load (max) |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let none = Cell {
        runs: 0,
        per_s: None,
        mib_s: None,
        p50: None,
        p99: None,
        errors: 0,
        rss_peak: None,
        client_rss: None,
        server_cores: None,
        other: None,
    };
    let mut summary = Vec::new();
    let mut verdicts = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = 0;
    for ((op, size, conc), m) in &cells {
        let get = |t: &str| m.get(t).unwrap_or(&none);
        let (c, az, ng) = (get("ciel"), get("azurite"), get("nginx"));
        let large = *size >= LARGE;
        let val = |x: &Cell| if large { x.mib_s } else { x.per_s };
        let unit = if large { "MiB/s" } else { "req/s" };
        let opn = if *op == 0 { "PUT" } else { "GET" };
        let (r_az, r_ng) = (ratio(val(c), val(az)), ratio(val(c), val(ng)));
        let other = [c.other, az.other, ng.other]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        let trio = |f: &dyn Fn(&Cell) -> String| format!("{} / {} / {}", f(c), f(az), f(ng));
        let fmt_val = |x: Option<f64>| if large { f1(x) } else { f0(x) };
        let _ = writeln!(
            s,
            "| {} {opn} ({unit}) | {conc} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            size_label(*size),
            fmt_val(val(c)),
            fmt_val(val(az)),
            fmt_val(val(ng)),
            r_az.map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into()),
            r_ng.map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "–".into()),
            trio(&|x| f1(x.p50)),
            trio(&|x| f1(x.p99)),
            c.server_cores
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "–".into()),
            trio(&|x| x.errors.to_string()),
            other
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "–".into()),
        );
        failed += c.errors + az.errors + ng.errors;
        let label = format!("{} {opn} C={conc}", size_label(*size));
        if !large {
            verdicts.0.push((label.clone(), r_az));
        } else {
            verdicts.1.push((label.clone(), r_ng));
        }
        if *op == 0 && *size == 64 << 20 && *conc == 64 {
            verdicts
                .2
                .push((c.rss_peak, az.rss_peak, ng.rss_peak, c.client_rss));
        }
        let tj = |x: &Cell| {
            json!({"runs": x.runs, "per_s": x.per_s, "mib_per_s": x.mib_s, "p50_ms": x.p50,
                   "p99_ms": x.p99, "errors": x.errors, "server_rss_peak_mib": x.rss_peak,
                   "client_rss_peak_mib": x.client_rss, "server_cpu_cores": x.server_cores,
                   "other_cores_max": x.other})
        };
        summary.push(json!({
            "op": if *op == 0 { "put" } else { "get" }, "size": size, "concurrency": conc,
            "ciel": tj(c), "azurite": tj(az), "nginx": tj(ng),
            "ciel_vs_azurite": r_az, "ciel_vs_nginx": r_ng,
        }));
    }

    // Memory matters for large objects only (`--only small` runs have none).
    if cells.keys().any(|(_, size, _)| *size >= LARGE) {
        let _ = writeln!(
            s,
            "\n### Memory (peak resident set sampled every 20 ms during the run)\n"
        );
        let _ = writeln!(
            s,
            "| Scenario | Ciel MiB | Azurite MiB | nginx MiB (all processes) | load generator MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    }
    for ((op, size, conc), m) in &cells {
        if *size < LARGE {
            continue;
        }
        let opn = if *op == 0 { "PUT" } else { "GET" };
        let get = |t: &str| m.get(t).unwrap_or(&none);
        let client = TARGETS
            .iter()
            .filter_map(|t| get(t).client_rss)
            .reduce(f64::max);
        let _ = writeln!(
            s,
            "| {} {opn}, C={conc} | {} | {} | {} | {} |",
            size_label(*size),
            f0(get("ciel").rss_peak),
            f0(get("azurite").rss_peak),
            f0(get("nginx").rss_peak),
            f0(client)
        );
    }

    let _ = writeln!(s, "\n### Against the targets\n");
    let judge = |r: Option<f64>, want: f64| match r {
        Some(r) if r >= want => "met",
        Some(_) => "missed",
        None => "not measured",
    };
    for (label, r) in &verdicts.0 {
        let _ = writeln!(
            s,
            "- {label}: Ciel is {} Azurite's rate (target ≥ {SMALL_VS_AZURITE}×): {}.",
            r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into()),
            judge(*r, SMALL_VS_AZURITE)
        );
    }
    for (label, r) in &verdicts.1 {
        let _ = writeln!(
            s,
            "- {label}: Ciel reaches {} of nginx's throughput (target ≥ {:.0}%): {}.",
            r.map(|r| format!("{:.0}%", r * 100.0))
                .unwrap_or_else(|| "–".into()),
            LARGE_VS_NGINX * 100.0,
            judge(*r, LARGE_VS_NGINX)
        );
    }
    for (c, az, ng, cl) in &verdicts.2 {
        let _ = writeln!(
            s,
            "- 64 concurrent 64 MiB uploads: Ciel's peak RSS {} MiB (target < {RSS_LIMIT_MIB:.0} MiB): {}; Azurite {} MiB, nginx {} MiB, load generator {} MiB.",
            f0(*c),
            match c {
                Some(v) if *v < RSS_LIMIT_MIB => "met",
                Some(_) => "missed",
                None => "not measured",
            },
            f0(*az),
            f0(*ng),
            f0(*cl)
        );
    }
    if failed > 0 {
        let _ = writeln!(
            s,
            "\n**{failed} request(s) failed** (non-2xx answers, short bodies or broken connections): \
             the figures of the rows with failures are not comparable."
        );
    } else {
        let _ = writeln!(s, "\nNo request failed.");
    }
    println!("{s}");
    println!(
        "{}",
        serde_json::to_string(
            &json!({"bench": "blob-summary", "rounds": rounds, "failed": failed, "scenarios": summary})
        )?
    );
    Ok(failed)
}
