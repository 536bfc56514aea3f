//! The candidate's series in `/metrics` (SPEC 3):
//! `switchyard_candidate_requests_total{table,class}`, answers while a
//! canary ran, and `switchyard_candidate_moves_total`, requests a candidate
//! would have routed elsewhere. Both count over every candidate since the
//! process started, so they only grow; every series exists from the start.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::candidate::figures::CLASS_LABELS;
use crate::candidate::{Side, Totals};

#[derive(Debug)]
pub struct CandidateMetrics(pub Arc<Totals>);

impl Collector for CandidateMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "switchyard_candidate_requests",
            "Answers while a canary ran, by the table that routed the request and status class",
            None,
            MetricType::Counter,
        )?;
        for (side, per_class) in [Side::Live, Side::Candidate]
            .into_iter()
            .zip(&self.0.requests)
        {
            for (class, count) in CLASS_LABELS.iter().zip(per_class) {
                requests
                    .encode_family(&[("table", side.label()), ("class", class)])?
                    .encode_counter::<NoLabelSet, _, u64>(&count.load(Ordering::Relaxed), None)?;
            }
        }
        let mut moves = encoder.encode_descriptor(
            "switchyard_candidate_moves",
            "Requests a candidate table would have routed to another route than the live table",
            None,
            MetricType::Counter,
        )?;
        moves.encode_counter::<NoLabelSet, _, u64>(&self.0.moves.load(Ordering::Relaxed), None)?;
        Ok(())
    }
}
