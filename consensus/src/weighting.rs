//! Choosing voting weights from measurements: which replicas should be heavy.
//!
//! Weights only ever take the WHEAT/AWARE shape ([`ordinal_crypto::aware_weights`]): the 2f
//! replicas judged fastest get Vmax = 1 + Δ/f, the rest 1. Every such vector is admissible, so
//! whoever computes it (a correct replica, or a Byzantine one lying about its measurements)
//! can at worst make the cluster slower, never unsafe.
//!
//! The inputs are latency reports: each replica's smoothed vote latency of every other, as its
//! [`crate::reliability::PeerMonitor`] measured it. A replica's standing is the **median** of
//! the reports about it from the others; its own report about itself is ignored. With at most f
//! Byzantine reporters among the n − 1 others (n − 1 ≥ 3f), the median lies between the
//! lowest and highest value correct reporters gave: a liar can neither make itself look fast
//! to every correct replica nor make a fast correct replica look slow. That needs at least
//! 2f + 1 reports per replica (`min_reports`): with fewer, the median may be a liar's value.
//! Replicas without a standing rank last; they are made heavy only if fewer than 2f replicas
//! have one.

use std::time::Duration;

use ordinal_crypto::{aware_weights, ReplicaId};

/// One replica's report: its measured vote latency of each replica (index = id; `None` where it
/// has no measurement, and for itself).
pub type LatencyReport = Vec<Option<Duration>>;

/// Each replica's standing: the median of the latencies the others reported for it, `None`
/// when fewer than `min_reports` reported it.
pub fn median_latencies(
    n: usize,
    reports: &[(ReplicaId, LatencyReport)],
    min_reports: usize,
) -> Vec<Option<Duration>> {
    (0..n)
        .map(|subject| {
            let mut values: Vec<Duration> = reports
                .iter()
                .filter(|(reporter, _)| reporter.index() != subject)
                .filter_map(|(_, report)| report.get(subject).copied().flatten())
                .collect();
            if values.len() < min_reports.max(1) {
                return None;
            }
            values.sort_unstable();
            // The lower median: with an even count, the smaller of the two middle values.
            Some(values[(values.len() - 1) / 2])
        })
        .collect()
}

/// The AWARE weights that make the 2f replicas with the lowest standing heavy (ties go to the
/// lower id, so every replica computing from the same reports gets the same vector). Replicas
/// without a standing rank last. `None` when n < 3f + 1.
pub fn choose_weights(n: usize, faults: usize, standing: &[Option<Duration>]) -> Option<Vec<u64>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|i| (standing.get(*i).copied().flatten().unwrap_or(Duration::MAX), *i));
    let heavy: Vec<ReplicaId> = order
        .iter()
        .take(2 * faults)
        .map(|i| ReplicaId(*i as u16))
        .collect();
    aware_weights(n, faults, &heavy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordinal_crypto::Thresholds;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    /// True latencies for n = 5: replicas 1 and 3 fast, 4 very slow.
    fn honest(reporter: usize) -> LatencyReport {
        let truth = [ms(6), ms(2), ms(5), ms(3), ms(60)];
        truth
            .iter()
            .enumerate()
            .map(|(i, t)| if i == reporter { None } else { *t })
            .collect()
    }

    #[test]
    fn honest_reports_make_the_fast_replicas_heavy() {
        let reports: Vec<_> = (0..5).map(|i| (ReplicaId(i as u16), honest(i))).collect();
        let standing = median_latencies(5, &reports, 3);
        assert_eq!(standing, vec![ms(6), ms(2), ms(5), ms(3), ms(60)]);
        let weights = choose_weights(5, 1, &standing).unwrap();
        assert_eq!(weights, vec![1, 2, 1, 2, 1]);
        Thresholds::compute(&weights, 1).unwrap();
    }

    /// Replica 4 (slow, Byzantine) claims it is the fastest and that the fast replicas are
    /// slow: the median of the others' reports ignores it.
    #[test]
    fn a_lying_reporter_moves_nothing() {
        let mut reports: Vec<_> = (0..4).map(|i| (ReplicaId(i as u16), honest(i))).collect();
        reports.push((ReplicaId(4), vec![ms(1), ms(900), ms(1), ms(900), ms(0)]));
        let standing = median_latencies(5, &reports, 3);
        assert_eq!(standing[4], ms(60), "its own claim does not count");
        assert_eq!(choose_weights(5, 1, &standing).unwrap(), vec![1, 2, 1, 2, 1]);
        // Even if it lies about itself through every report it controls (f = 1 of them),
        // the heavy pair stays the truly fast one.
        for liar in 0..5 {
            let mut reports: Vec<_> = (0..5).map(|i| (ReplicaId(i as u16), honest(i))).collect();
            reports[liar].1 = (0..5)
                .map(|i| {
                    if i == liar {
                        None
                    } else if i % 2 == 0 {
                        ms(0)
                    } else {
                        ms(10_000)
                    }
                })
                .collect();
            let weights = choose_weights(5, 1, &median_latencies(5, &reports, 3)).unwrap();
            assert_eq!(weights, vec![1, 2, 1, 2, 1], "liar {liar}");
        }
    }

    #[test]
    fn unmeasured_replicas_are_never_heavy_and_ties_are_stable() {
        let reports = vec![(ReplicaId(0), vec![None, ms(4), ms(4), None])];
        let standing = median_latencies(4, &reports, 1);
        assert_eq!(standing, vec![None, ms(4), ms(4), None]);
        // n = 3f + 1 leaves no room for skew: all weights stay 1 whatever the order.
        assert_eq!(choose_weights(4, 1, &standing).unwrap(), vec![1, 1, 1, 1]);
        // n = 5: the tie between 1 and 2 goes to the lower id... both are heavy anyway (2f = 2).
        assert_eq!(
            choose_weights(5, 1, &[None, ms(4), ms(4), None, None]).unwrap(),
            vec![1, 2, 2, 1, 1]
        );
        // Too few reports: no standing at all.
        assert_eq!(median_latencies(4, &reports, 2), vec![None; 4]);
        assert!(choose_weights(3, 1, &[None; 3]).is_none());
    }
}
