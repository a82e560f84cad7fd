//! Hidden `celeriac-beat bench`.

/// Bench flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(
    _args: BenchArgs,
    _config: celeriac_common::Config,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Ok(())
}
