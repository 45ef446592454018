//! Where SQLite writes spent their time during one phase of the bench: the server's
//! `chatd_sqlite_write_phase_seconds` histograms, read from its /metrics before and
//! after, the difference reported per phase. A quantile read from buckets is the upper
//! bound of the bucket it falls in.

use super::gateway::HttpTarget;

/// One phase's cumulative buckets (upper bound in seconds, count), sum and count.
#[derive(Debug, Default, Clone, PartialEq)]
struct Histogram {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// Every phase's histogram at one moment; empty when the server has none (PostgreSQL,
/// or /metrics out of reach).
#[derive(Debug, Default)]
pub(super) struct WritePhases(Vec<(String, Histogram)>);

const SERIES: &str = "chatd_sqlite_write_phase_seconds";

impl WritePhases {
    /// Reads the server's histograms now; none when its /metrics cannot be read.
    pub(super) async fn read(http: Option<&HttpTarget>) -> Self {
        match http {
            Some(http) => http
                .metrics()
                .await
                .map(|text| Self::parse(&text))
                .unwrap_or_default(),
            None => Self::default(),
        }
    }

    fn parse(text: &str) -> Self {
        let mut phases: Vec<(String, Histogram)> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(SERIES) else {
                continue;
            };
            let Some((kind, rest)) = rest.split_once("{phase=\"") else {
                continue;
            };
            let Some((phase, rest)) = rest.split_once('"') else {
                continue;
            };
            let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let index = match phases.iter().position(|(name, _)| name == phase) {
                Some(index) => index,
                None => {
                    phases.push((phase.to_owned(), Histogram::default()));
                    phases.len() - 1
                }
            };
            let histogram = &mut phases[index].1;
            match kind {
                "_sum" => histogram.sum = value,
                "_count" => histogram.count = value as u64,
                "_bucket" => {
                    let bound = rest
                        .split_once("le=\"")
                        .and_then(|(_, bound)| bound.split_once('"'))
                        .map(|(bound, _)| bound);
                    let bound = match bound {
                        Some("+Inf") => f64::INFINITY,
                        Some(bound) => bound.parse().unwrap_or(f64::INFINITY),
                        None => continue,
                    };
                    histogram.buckets.push((bound, value as u64));
                }
                _ => {}
            }
        }
        Self(phases)
    }

    /// The phases between `self` and `later`, one line each; nothing when the server
    /// keeps no such histograms.
    pub(super) fn report_until(&self, later: &WritePhases) -> Vec<String> {
        let mut lines = Vec::new();
        for (phase, after) in &later.0 {
            let before = self
                .0
                .iter()
                .find(|(name, _)| name == phase)
                .map(|(_, histogram)| histogram.clone())
                .unwrap_or_default();
            let count = after.count.saturating_sub(before.count);
            if count == 0 {
                continue;
            }
            let mean_ms = (after.sum - before.sum) / count as f64 * 1000.0;
            let quantile = |q: f64| {
                let rank = (q * count as f64).ceil().max(1.0) as u64;
                after
                    .buckets
                    .iter()
                    .map(|(bound, n)| {
                        let earlier = before
                            .buckets
                            .iter()
                            .find(|(b, _)| b == bound)
                            .map_or(0, |(_, n)| *n);
                        (*bound, n.saturating_sub(earlier))
                    })
                    .find(|(_, n)| *n >= rank)
                    .map_or("-".to_string(), |(bound, _)| {
                        if bound.is_infinite() {
                            "> 5 s".to_string()
                        } else {
                            format!("≤ {}", bound * 1000.0)
                        }
                    })
            };
            lines.push(format!(
                "  {phase:<11} {count:>9} × mean {mean_ms:>7.3} ms, p50 {} ms, p99 {} ms, p99.9 {} ms",
                quantile(0.5),
                quantile(0.99),
                quantile(0.999)
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_of_two_scrapes_is_reported_per_phase() {
        let before = WritePhases::parse(
            "chatd_sqlite_write_phase_seconds_bucket{phase=\"commit\",le=\"0.001\"} 10\n\
             chatd_sqlite_write_phase_seconds_bucket{phase=\"commit\",le=\"0.05\"} 10\n\
             chatd_sqlite_write_phase_seconds_bucket{phase=\"commit\",le=\"+Inf\"} 10\n\
             chatd_sqlite_write_phase_seconds_sum{phase=\"commit\"} 0.005\n\
             chatd_sqlite_write_phase_seconds_count{phase=\"commit\"} 10\n",
        );
        let after = WritePhases::parse(
            "chatd_sqlite_write_phase_seconds_bucket{phase=\"commit\",le=\"0.001\"} 108\n\
             chatd_sqlite_write_phase_seconds_bucket{phase=\"commit\",le=\"0.05\"} 110\n\
             chatd_sqlite_write_phase_seconds_bucket{phase=\"commit\",le=\"+Inf\"} 110\n\
             chatd_sqlite_write_phase_seconds_sum{phase=\"commit\"} 0.105\n\
             chatd_sqlite_write_phase_seconds_count{phase=\"commit\"} 110\n",
        );
        let lines = before.report_until(&after);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert!(line.contains("commit"), "{line}");
        assert!(line.contains("100 × mean   1.000 ms"), "{line}");
        assert!(line.contains("p50 ≤ 1 ms"), "{line}");
        assert!(line.contains("p99 ≤ 50 ms"), "{line}");
    }
}
