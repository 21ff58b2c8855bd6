use std::process::ExitCode;

pub fn main(_args: crate::cli::DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
