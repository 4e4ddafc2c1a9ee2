//! `tandem recover`: offline recovery of a stopped node (written once the log store offers offline appends).

/// Placeholder until offline appends exist: refuses clearly.
pub async fn recover(_args: &crate::cli::RecoverArgs) -> anyhow::Result<()> {
    anyhow::bail!("tandem recover is not implemented yet")
}
