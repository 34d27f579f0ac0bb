//! When to stop waiting on the replica asked for a receipt and ask every replica.
//!
//! A submission goes to every replica but asks one of them for the receipt (one verified
//! receipt is proof enough). If that replica is slow, down or Byzantine, the client asks all of
//! them again once no receipt has come in time; the cluster answers the retry with the
//! original position, so nothing is ordered twice.
//!
//! "In time" follows the latency this client observes, like TCP's retransmission timeout
//! (RFC 6298): a smoothed latency plus four deviations, with Karn's rule (only submissions
//! answered before any retransmission are samples). It is bounded below so that ordinary
//! jitter does not make every replica send a receipt, and above by the client's retry interval.

use std::time::Duration;

/// Never ask everyone sooner than this: batching delays and fsyncs make a few tens of
/// milliseconds ordinary, and asking everyone costs every replica a receipt.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(200);

/// Before any sample, how long to wait (RFC 6298 suggests one second).
pub const INITIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// A smoothed latency estimate and the retransmission timeout derived from it.
#[derive(Clone, Debug, Default)]
pub struct RetransmitTimer {
    /// Smoothed latency and its mean deviation, once there is a sample.
    estimate: Option<(Duration, Duration)>,
}

impl RetransmitTimer {
    /// Adds the latency of a submission answered in its first round.
    pub fn observe(&mut self, sample: Duration) {
        self.estimate = Some(match self.estimate {
            None => (sample, sample / 2),
            Some((smoothed, deviation)) => {
                let error = smoothed.abs_diff(sample);
                (smoothed * 7 / 8 + sample / 8, deviation * 3 / 4 + error / 4)
            }
        });
    }

    /// How long to wait before asking every replica, at most `ceiling`.
    pub fn timeout(&self, ceiling: Duration) -> Duration {
        let timeout = match self.estimate {
            None => INITIAL_TIMEOUT,
            Some((smoothed, deviation)) => smoothed.saturating_add(deviation.saturating_mul(4)),
        };
        timeout.max(MIN_TIMEOUT).min(ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timeouts_follow_the_observed_latency_within_bounds() {
        // (samples, ceiling, expected timeout)
        let table: &[(&[u64], u64, u64)] = &[
            (&[], 2000, 1000),         // no sample: the initial timeout
            (&[], 500, 500),           // ...never past the ceiling
            (&[10], 2000, 200),        // 10 + 4*5 = 30 ms: raised to the floor
            (&[100], 2000, 300),       // 100 + 4*50
            (&[1000], 2000, 2000),     // 1000 + 4*500 = 3000: capped
            (&[100, 100], 2000, 250),  // deviation shrinks: 100 + 4*37.5
            (&[100, 900], 2000, 1150), // 200 + 4*237.5
        ];
        for (samples, ceiling, expected) in table {
            let mut timer = RetransmitTimer::default();
            for sample in *samples {
                timer.observe(ms(*sample));
            }
            assert_eq!(timer.timeout(ms(*ceiling)), ms(*expected), "samples {samples:?}");
        }
    }

    #[test]
    fn a_burst_of_slow_answers_raises_the_timeout_and_calm_lowers_it_again() {
        let mut timer = RetransmitTimer::default();
        for _ in 0..50 {
            timer.observe(ms(20));
        }
        assert_eq!(timer.timeout(ms(2000)), MIN_TIMEOUT);
        for _ in 0..5 {
            timer.observe(ms(800));
        }
        let raised = timer.timeout(ms(2000));
        assert!(raised > ms(800), "{raised:?}");
        for _ in 0..100 {
            timer.observe(ms(20));
        }
        assert_eq!(timer.timeout(ms(2000)), MIN_TIMEOUT);
    }
}
