//! Placeholder: filled in by its owner.

#[derive(clap::Args)]
pub struct TrainArgs {}

pub fn train(_a: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct EvalArgs {}

pub fn eval(_a: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}

#[derive(clap::Args)]
pub struct BnAdaptArgs {}

pub fn bn_adapt(_a: BnAdaptArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
