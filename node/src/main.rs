//! `ordinal-node`: the replica daemon. The transport, storage and driver arrive with the node
//! issue; for now the binary only reports that.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("ordinal-node: the replica daemon is not built yet (see the node issue)")
}
