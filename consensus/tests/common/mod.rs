//! Helpers shared by the simulator scenario tests of both protocols.

use std::time::Duration;

use ordinal_consensus::sim::{Behaviour, LinkFaults, Report, SimConfig};

/// No invariant broken, and every submitted request answered.
pub fn assert_clean(report: &Report, what: &str) {
    assert!(
        report.violations.is_empty(),
        "{what} (seed {}): {:?}",
        report.seed,
        report.violations
    );
    assert_eq!(
        report.answered, report.submitted,
        "{what}: every request answered"
    );
    assert!(report.submitted > 0);
}

/// `config` with `faulty` replicas and a lightly lossy network (2 % dropped, 2 % duplicated,
/// 5 % reordered) that heals after 2 s: the set-up of the Byzantine scenarios.
#[allow(dead_code)] // not every test file has Byzantine scenarios
pub fn with_byzantine(mut config: SimConfig, faulty: Vec<(usize, Behaviour)>) -> SimConfig {
    config.byzantine = faulty;
    config.link_faults = LinkFaults {
        drop: 0.02,
        duplicate: 0.02,
        reorder: 0.05,
    };
    config.heal_at = Duration::from_secs(2);
    config
}
