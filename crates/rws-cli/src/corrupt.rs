//! Placeholder: filled in by its owner.

#[derive(clap::Args)]
pub struct CorruptArgs {}

pub fn run(_a: CorruptArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
