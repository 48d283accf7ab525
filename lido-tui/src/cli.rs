//! Command-line arguments.

use clap::Parser;

/// Lido's live console: nodes, services and events, with stop/restart/drain.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "lido-tui",
    version,
    about,
    after_help = "Keys: j/k move, s stop, r restart, d drain/undrain, ? help, q quit.\n\nExamples:\n  lido-tui\n  lido-tui --url http://im1:7700,http://im2:7700 --readonly"
)]
pub struct Args {
    /// InfrastructureManager URL; several comma-separated are tried in turn
    #[arg(long, env = "LIDO_URL", default_value = "http://127.0.0.1:7700", value_delimiter = ',')]
    pub url: Vec<String>,
    /// Bearer token for the operator API
    #[arg(long, env = "LIDO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Look, do not touch: stop, restart and drain are hidden and refused
    #[arg(long)]
    pub readonly: bool,
}
