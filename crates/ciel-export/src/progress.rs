//! Progress of a long copy: a bar with bytes, rate and ETA when standard error is a terminal,
//! otherwise a structured log line every few seconds (so that logs stay quiet and parseable).

use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    start: Instant,
    last_log: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(what);
            b
        });
        let now = Instant::now();
        Progress {
            what,
            bar,
            total,
            done: 0,
            start: now,
            last_log: now,
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None => {
                if self.last_log.elapsed() >= Duration::from_secs(5) {
                    self.last_log = Instant::now();
                    let secs = self.start.elapsed().as_secs_f64().max(1e-3);
                    tracing::info!(
                        what = self.what,
                        bytes = self.done,
                        total = self.total,
                        mib_per_s = format!("{:.1}", self.done as f64 / secs / 1048576.0),
                        "progress"
                    );
                }
            }
        }
    }

    pub fn finish(&self) -> (u64, f64) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        (self.done, self.start.elapsed().as_secs_f64())
    }
}
