//! `ovltrace layers`: the layer stack of every running container.
use std::process::ExitCode;

pub fn main(_args: crate::cli::LayersArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
