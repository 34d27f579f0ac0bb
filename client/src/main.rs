//! `ordinal`: the client command-line tool (arrives with the node issue).

fn main() -> anyhow::Result<()> {
    anyhow::bail!("ordinal: the client tool is not built yet (see the node issue)")
}
