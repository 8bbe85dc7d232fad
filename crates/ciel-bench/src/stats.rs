//! Drives C concurrent connections against one endpoint and summarises latencies.

use crate::client::{Conn, Endpoint, Req};
use anyhow::Result;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::TlsConnector;

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
}

impl HttpRun {
    pub fn to_json(&self) -> serde_json::Value {
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        json!({
            "key": self.key, "label": self.label, "concurrency": self.concurrency,
            "ok": self.ok, "errors": self.errors, "elapsed_s": (self.elapsed_s * 1000.0).round() / 1000.0,
            "per_s": r1(self.rate), "mean_ms": r1(self.mean_us) / 1000.0, "p50_ms": r1(self.p50_us) / 1000.0,
            "p99_ms": r1(self.p99_us) / 1000.0, "max_ms": r1(self.max_us) / 1000.0,
        })
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64
}

/// Opens `c` connections, optionally warms each up with one uncounted request, then sends
/// until `stop`; latencies are those of successful requests, in microseconds.
#[allow(clippy::too_many_arguments)]
pub async fn drive<F>(label: &str, key: &'static str, ep: &Endpoint, tls: &TlsConnector, c: usize, stop: Stop, warmup: bool, make: F) -> Result<HttpRun>
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
                            eprintln!("ciel-bench: unexpected answer {st}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
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
    let (mut lat, mut ok, mut errors, mut end) = (Vec::new(), 0, 0, t0);
    for h in handles {
        let (l, o, e, t) = h.await?;
        lat.extend(l);
        ok += o;
        errors += e;
        end = end.max(t);
    }
    lat.sort_unstable();
    let elapsed = (end - t0).as_secs_f64();
    let mean = if lat.is_empty() { 0.0 } else { lat.iter().sum::<u64>() as f64 / lat.len() as f64 };
    Ok(HttpRun {
        label: label.to_string(),
        key,
        concurrency: c,
        ok,
        errors,
        elapsed_s: elapsed,
        rate: if elapsed > 0.0 { ok as f64 / elapsed } else { 0.0 },
        mean_us: mean,
        p50_us: pct(&lat, 50.0),
        p99_us: pct(&lat, 99.0),
        max_us: lat.last().copied().unwrap_or(0) as f64,
    })
}
