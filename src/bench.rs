pub fn storage(_o: &StorageBenchOptions) -> anyhow::Result<()> {
    Ok(())
}
#[derive(clap::Args, Debug)]
pub struct StorageBenchOptions {}
