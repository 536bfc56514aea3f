//! Reading the router's `GET /metrics` (Prometheus text format) sample by
//! sample.

use reqwest::StatusCode;

use super::TestRouter;

/// A `/metrics` answer, read sample by sample.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample written exactly as `series`, e.g.
    /// `switchyard_requests_total{route="hello",code="200"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }

    /// Like [`Metrics::get`], but panics (showing the whole scrape) if the
    /// sample is missing.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{}", self.0))
    }
}

impl TestRouter {
    /// Scrapes `GET /metrics`, which must answer 200.
    pub async fn metrics(&self) -> Metrics {
        let (status, text) = self.admin_text("/metrics").await;
        assert_eq!(status, StatusCode::OK, "/metrics: {text}");
        Metrics(text)
    }
}
