//! The end-to-end throughput harness (arrives with the benchmark issue).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("ordinal-benches: the end-to-end harness is not built yet (see the benchmark issue)")
}
