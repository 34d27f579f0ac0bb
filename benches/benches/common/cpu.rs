//! This process's CPU time, for benchmarks whose cost lives in threads criterion does not time
//! (QUIC drivers, RocksDB's flushes). Shared by the benches of `ordinal-benches` and
//! `ordinal-node` (included by path).

use std::time::Duration;

/// Process CPU time (user + system), all threads, from `/proc/self/stat` (zero where absent).
pub fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10) // USER_HZ is 100 on Linux
}
