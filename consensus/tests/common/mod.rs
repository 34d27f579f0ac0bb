//! Helpers shared by the simulator scenario tests of both protocols.

use ordinal_consensus::sim::Report;

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
