//! Placeholder: filled in by its owner.

#[derive(clap::Args)]
pub struct ExtractArgs {}

pub fn extract(_a: ExtractArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct PatchArgs {}

pub fn patch(_a: PatchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct UnpatchArgs {}

pub fn unpatch(_a: UnpatchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct InspectArgs {}

pub fn inspect(_a: InspectArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct DiffArgs {}

pub fn diff(_a: DiffArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct SimilarityArgs {}

pub fn similarity(_a: SimilarityArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
