//! Operations: `/healthz`, `/metrics` (Prometheus text: request counts and
//! latency histograms by route) and `/openapi.json`, generated from the
//! handlers' annotations so it cannot drift from the routes.

mod api;

pub use api::{routes, track};

use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Json, Result};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
    hook: &'static str,
    outcome: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyNameLabel {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutLabel {
    reason: &'static str,
}

/// Why the listener ended a connection itself.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// Closed to make room at the connection cap: it was idle longest.
    Evicted,
    /// Answered 503 at the cap: every connection was busy.
    Refused,
    /// No complete request head within the header timeout: a slow client,
    /// or a kept-alive connection left idle that long.
    HeaderTimeout,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    connections: Gauge,
    cut: Family<CutLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    policy_decisions: Family<PolicyLabels, Counter>,
    policy_latency: Family<PolicyNameLabel, Histogram>,
    /// Each policy's decision series, so a deleted policy's can be removed.
    policy_series: Mutex<std::collections::HashMap<String, std::collections::HashSet<PolicyLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // 100 µs to ~13 s, doubling.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18))
        });
        let policy_decisions = Family::<PolicyLabels, Counter>::default();
        // 5 µs to ~5 s, quadrupling.
        let policy_latency = Family::<PolicyNameLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000005, 4.0, 11))
        });
        let mut registry = Registry::with_prefix("cairn");
        let connections = Gauge::default();
        let cut = Family::<CutLabel, Counter>::default();
        registry.register("http_connections", "Client connections open", connections.clone());
        registry.register(
            "http_connections_cut",
            "Connections the host ended itself, by reason (evicted, refused, header_timeout)",
            cut.clone(),
        );
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register(
            "policy_decisions",
            "Policy decisions by policy, hook, outcome (ok, failed) and verdict (approve, deny, escalate, accept, reject, act)",
            policy_decisions.clone(),
        );
        registry.register(
            "policy_decision_duration_seconds",
            "Policy decision latency by policy",
            policy_latency.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            connections,
            cut,
            requests,
            latency,
            policy_decisions,
            policy_latency,
            policy_series: Mutex::default(),
        }
    }
}

impl Metrics {
    /// A client connection opened (`1`) or closed (`-1`).
    pub fn connections(&self, change: i64) {
        self.connections.inc_by(change);
    }

    pub fn cut(&self, why: Cut) {
        let reason = match why {
            Cut::Evicted => "evicted",
            Cut::Refused => "refused",
            Cut::HeaderTimeout => "header_timeout",
        };
        self.cut.get_or_create(&CutLabel { reason }).inc();
    }

    /// One policy decision; `failed` when it failed closed, and `verdict`
    /// what was decided (the fail-closed decision, then).
    pub fn observe_policy(
        &self,
        policy: &str,
        hook: &'static str,
        verdict: &'static str,
        failed: bool,
        duration: std::time::Duration,
    ) {
        let outcome = if failed { "failed" } else { "ok" };
        let labels = PolicyLabels { policy: policy.to_string(), hook, outcome, verdict };
        self.policy_decisions.get_or_create(&labels).inc();
        if let Ok(mut series) = self.policy_series.lock() {
            series.entry(policy.to_string()).or_default().insert(labels);
        }
        self.policy_latency
            .get_or_create(&PolicyNameLabel { policy: policy.to_string() })
            .observe(duration.as_secs_f64());
    }

    /// A deleted policy's series go, so `/metrics` does not list it forever.
    pub fn forget_policy(&self, policy: &str) {
        let labels = self.policy_series.lock().ok().and_then(|mut s| s.remove(policy)).unwrap_or_default();
        for l in labels {
            self.policy_decisions.remove(&l);
        }
        self.policy_latency.remove(&PolicyNameLabel { policy: policy.to_string() });
    }

    /// A counter kept elsewhere, read at each scrape: `read` gives the value
    /// for each value of the one label `label`.
    pub fn counters_read_at_scrape(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    ) {
        let read = move || read().into_iter().map(|(l, n)| (l.to_string(), n)).collect();
        self.read_at_scrape(ReadAtScrape { name, help, label, kind: MetricType::Counter, read: Box::new(read) });
    }

    /// A gauge kept elsewhere (a size, a count), read at each scrape, by the
    /// values of one label.
    pub fn gauges_read_at_scrape(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        read: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) {
        self.read_at_scrape(ReadAtScrape { name, help, label, kind: MetricType::Gauge, read: Box::new(read) });
    }

    fn read_at_scrape(&self, collector: ReadAtScrape) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register_collector(Box::new(collector));
        }
    }

    fn encode(&self) -> Result<String> {
        let registry = self.registry.lock().map_err(|_| Error::internal("metrics registry lock poisoned"))?;
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).map_err(|e| Error::internal(e.to_string()))?;
        Ok(out)
    }
}

type Read = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

struct ReadAtScrape {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    kind: MetricType,
    read: Read,
}

impl std::fmt::Debug for ReadAtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAtScrape").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Collector for ReadAtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (value, n) in (self.read)() {
            let labels = [(self.label, value.as_str())];
            match self.kind {
                MetricType::Gauge => {
                    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?
                }
                _ => ConstCounter::new(n).encode(family.encode_family(&labels)?)?,
            }
        }
        Ok(())
    }
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
    database: &'static str,
}
