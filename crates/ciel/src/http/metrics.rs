//! Prometheus metrics: requests by service and status class, and their latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReqLabels {
    pub service: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SvcLabels {
    pub service: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<ReqLabels, Counter>,
    latency: Family<SvcLabels, Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ciel");
        let requests = Family::<ReqLabels, Counter>::default();
        let latency = Family::<SvcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "http_requests",
            "HTTP requests by service and status class",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by service",
            latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
        }
    }

    pub fn observe(&self, service: &str, status: u16, elapsed: std::time::Duration) {
        self.requests
            .get_or_create(&ReqLabels {
                service: service.into(),
                status: format!("{}xx", status / 100),
            })
            .inc();
        self.latency
            .get_or_create(&SvcLabels {
                service: service.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        if encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
