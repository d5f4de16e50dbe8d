//! Ingest → loaded latency: when the loaded events were received (`received_at`, kept in
//! 100 ms buckets while staging) against when their load committed.
//!
//! Each load emits the metric `IngestToLoadedMs` as evenly spaced quantiles of its events'
//! latencies — one value per 10 events, between 1 and 1,000 values (in lines of 100, the EMF
//! limit) — so CloudWatch's p50/p99 over the values weigh loads by their events to within
//! 10 events, from a few values per load instead of one per event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Bucket width.
const BUCKET_MS: i64 = 100;
/// Events one emitted value stands for.
const EVENTS_PER_VALUE: u64 = 10;
/// Most values one load emits.
const MAX_VALUES: u64 = 1000;

/// How many events were received in each 100 ms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrivals {
    /// Bucket (ms since the epoch / 100) → events.
    buckets: BTreeMap<i64, u64>,
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl Arrivals {
    /// Count one event received at `t`.
    pub fn add(&mut self, t: OffsetDateTime) {
        *self
            .buckets
            .entry(millis(t).div_euclid(BUCKET_MS))
            .or_default() += 1;
    }

    /// Events counted.
    pub fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The latencies (ms, never negative) at `committed` of evenly spaced quantiles of the
    /// events — the `(i + ½)/n`-th for `i` in `0..n`, `n` = one per 10 events (1–1,000);
    /// highest latency (earliest arrival) first. Empty when nothing was counted.
    pub fn latencies_ms(&self, committed: OffsetDateTime) -> Vec<f64> {
        let total = self.total();
        if total == 0 {
            return Vec::new();
        }
        let n = total.div_ceil(EVENTS_PER_VALUE).clamp(1, MAX_VALUES);
        let now = millis(committed);
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut buckets = self.buckets.iter();
        let mut seen = 0u64;
        let mut current: Option<(&i64, &u64)> = None;
        for i in 0..n {
            // The event at rank ⌊(i + ½) · total / n⌋ (0-based), in arrival order.
            let rank = ((2 * i + 1) * total) / (2 * n);
            while current.is_none_or(|(_, c)| seen + c <= rank) {
                if let Some((_, c)) = current {
                    seen += c;
                }
                current = buckets.next();
                if current.is_none() {
                    break;
                }
            }
            let Some((bucket, _)) = current else { break };
            // The bucket's middle: ±50 ms.
            let at = bucket * BUCKET_MS + BUCKET_MS / 2;
            out.push((now - at).max(0) as f64);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn at(ms: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(ms)
    }

    #[test]
    fn one_value_per_ten_events_in_arrival_order() {
        let mut a = Arrivals::default();
        // 30 events: 10 at 1.0 s, 20 at 2.0 s.
        for _ in 0..10 {
            a.add(at(1_000));
        }
        for _ in 0..20 {
            a.add(at(2_000));
        }
        assert_eq!(a.total(), 30);
        // Committed at 10 s: bucket middles are 1.05 s and 2.05 s.
        assert_eq!(a.latencies_ms(at(10_000)), vec![8_950.0, 7_950.0, 7_950.0]);
    }

    #[test]
    fn counts_round_up_and_are_capped() {
        let mut a = Arrivals::default();
        a.add(at(0));
        assert_eq!(a.latencies_ms(at(1_000)), vec![950.0]);
        for i in 0..10 {
            a.add(at(i * 100));
        }
        assert_eq!(a.latencies_ms(at(5_000)).len(), 2, "11 events: 2 values");
        let mut big = Arrivals::default();
        for i in 0..20_000 {
            big.add(at(i));
        }
        let v = big.latencies_ms(at(20_000));
        assert_eq!(v.len(), 1000);
        assert!(v.windows(2).all(|w| w[0] >= w[1]), "earliest arrival first");
        // The median event arrived at ~10 s.
        assert!((v[500] - 10_000.0).abs() <= 100.0, "{}", v[500]);
    }

    #[test]
    fn nothing_counted_nothing_emitted_and_clock_skew_is_zero() {
        assert!(Arrivals::default().latencies_ms(at(0)).is_empty());
        let mut a = Arrivals::default();
        a.add(at(5_000));
        assert_eq!(
            a.latencies_ms(at(1_000)),
            vec![0.0],
            "received after the commit"
        );
    }

    #[test]
    fn round_trips_through_the_descriptor_json() {
        let mut a = Arrivals::default();
        a.add(at(-250));
        a.add(at(1_234));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Arrivals>(&text).unwrap(), a);
    }
}
