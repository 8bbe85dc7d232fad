//! Drives C concurrent connections against one endpoint and summarises latencies.

use crate::client::{Conn, Endpoint, Req};
use anyhow::Result;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_rustls::TlsConnector;

/// The server's process id, when known (`--server-pid`): its CPU time is sampled around each run.
pub static SERVER_PID: OnceLock<u32> = OnceLock::new();

/// User + system CPU seconds of a process (all its threads), from /proc/PID/stat.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// CPU seconds the whole machine spent busy (all CPUs; not idle, not waiting for I/O), from /proc/stat.
pub fn machine_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<f64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy =
        f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0.0);
    Some(busy / 100.0)
}

/// Cores' worth of CPU used by other processes during a run: machine busy time minus ours.
pub fn other_cores(busy: (Option<f64>, Option<f64>), ours: f64, elapsed: f64) -> Option<f64> {
    match busy {
        (Some(a), Some(b)) if elapsed > 0.0 => Some(((b - a - ours) / elapsed).max(0.0)),
        _ => None,
    }
}

fn sample() -> (Option<f64>, Option<f64>, Option<f64>) {
    (
        SERVER_PID.get().and_then(|p| cpu_secs(&p.to_string())),
        cpu_secs("self"),
        machine_busy_secs(),
    )
}

#[derive(Clone, Copy)]
pub enum Stop {
    /// Each worker sends for this many seconds.
    Secs(f64),
    /// The workers share this many requests (request i is `make(i)`).
    Count(usize),
}

pub struct HttpRun {
    pub label: String,
    pub key: &'static str,
    pub concurrency: usize,
    pub ok: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    /// Successful requests per second of wall time.
    pub rate: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// CPU time the server spent per successful request (when its pid is known), µs.
    pub server_cpu_us: Option<f64>,
    /// CPU time this client spent per successful request, µs.
    pub client_cpu_us: Option<f64>,
    /// Cores' worth of CPU that other processes used meanwhile (a disturbed run when well above 0).
    pub other_cores: Option<f64>,
}

impl HttpRun {
    pub fn to_json(&self) -> serde_json::Value {
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        let ms = |us: f64| us.round() / 1000.0;
        json!({
            "key": self.key, "label": self.label, "concurrency": self.concurrency,
            "ok": self.ok, "errors": self.errors, "elapsed_s": (self.elapsed_s * 1000.0).round() / 1000.0,
            "per_s": r1(self.rate), "mean_ms": ms(self.mean_us), "p50_ms": ms(self.p50_us),
            "p99_ms": ms(self.p99_us), "max_ms": ms(self.max_us),
            "server_cpu_us_per_req": self.server_cpu_us.map(f64::round),
            "client_cpu_us_per_req": self.client_cpu_us.map(f64::round),
            "other_cores": self.other_cores.map(|x| (x * 100.0).round() / 100.0),
        })
    }
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64
}

/// Opens `c` connections, optionally warms each up with one uncounted request, then sends
/// until `stop`; latencies are those of successful requests, in microseconds.
#[allow(clippy::too_many_arguments)]
pub async fn drive<F>(
    label: &str,
    key: &'static str,
    ep: &Endpoint,
    tls: &TlsConnector,
    c: usize,
    stop: Stop,
    warmup: bool,
    make: F,
) -> Result<HttpRun>
where
    F: Fn(usize) -> Req + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(c + 1));
    let mut handles = Vec::new();
    for _ in 0..c {
        let mut conn = Conn::open(ep, tls).await?;
        let (make, next, barrier) = (make.clone(), next.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            if warmup {
                let _ = conn.send(&make(0)).await;
            }
            barrier.wait().await;
            let start = Instant::now();
            let deadline = match stop {
                Stop::Secs(s) => Some(start + Duration::from_secs_f64(s)),
                Stop::Count(_) => None,
            };
            let (mut lat, mut ok, mut errors) = (Vec::with_capacity(4096), 0u64, 0u64);
            loop {
                let i = match (stop, deadline) {
                    (Stop::Secs(_), Some(d)) => {
                        if Instant::now() >= d {
                            break;
                        }
                        0
                    }
                    (Stop::Count(n), _) => {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        i
                    }
                    _ => break,
                };
                let req = make(i);
                let t = Instant::now();
                match conn.send(&req).await {
                    Ok((st, body)) if (req.check)(st, &body) => {
                        lat.push(t.elapsed().as_micros() as u64);
                        ok += 1;
                    }
                    Ok((st, body)) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!(
                                "ciel-bench: unexpected answer {st}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            );
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("ciel-bench: request failed: {e:#}");
                        }
                        if conn.reopen().await.is_err() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            (lat, ok, errors, Instant::now())
        }));
    }
    barrier.wait().await;
    let t0 = Instant::now();
    let (srv0, cli0, busy0) = sample();
    let (mut lat, mut ok, mut errors, mut end) = (Vec::new(), 0, 0, t0);
    for h in handles {
        let (l, o, e, t) = h.await?;
        lat.extend(l);
        ok += o;
        errors += e;
        end = end.max(t);
    }
    let (srv1, cli1, busy1) = sample();
    let per_req = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if ok > 0 => Some((b - a) * 1e6 / ok as f64),
        _ => None,
    };
    lat.sort_unstable();
    let elapsed = (end - t0).as_secs_f64();
    // Without the server's pid its CPU time is unknown and counts as "other".
    let ours = match (srv0, srv1) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    } + match (cli0, cli1) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64
    };
    Ok(HttpRun {
        label: label.to_string(),
        key,
        concurrency: c,
        ok,
        errors,
        elapsed_s: elapsed,
        rate: if elapsed > 0.0 {
            ok as f64 / elapsed
        } else {
            0.0
        },
        mean_us: mean,
        p50_us: pct(&lat, 50.0),
        p99_us: pct(&lat, 99.0),
        max_us: lat.last().copied().unwrap_or(0) as f64,
        server_cpu_us: per_req(srv0, srv1),
        client_cpu_us: per_req(cli0, cli1),
        other_cores: if SERVER_PID.get().is_some() {
            other_cores((busy0, busy1), ours, elapsed)
        } else {
            None
        },
    })
}
