//! Command-line arguments.

use clap::Parser;

/// Lido's live console: nodes, services, rates and events, a market view,
/// with spawn/stop/restart/drain.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "lido-tui",
    version,
    about,
    after_help = "Keys: j/k move, n spawn, s stop, r restart, d drain/undrain, m market view, / filter, : command, ? help, q quit.\nCommands: :spawn broker paper p2, :stop NAME, :drain n1, :undrain n1, :market paper BTC/USD, :q\n\nExamples:\n  lido-tui\n  lido-tui --url http://im1:7700,http://im2:7700 --readonly\n  lido-tui --url https://lido.internal:7700 --ca ca.pem"
)]
pub struct Args {
    /// InfrastructureManager URL; several comma-separated are tried in turn
    #[arg(long, env = "LIDO_URL", default_value = "http://127.0.0.1:7700", value_delimiter = ',')]
    pub url: Vec<String>,
    /// Bearer token for the operator API
    #[arg(long, env = "LIDO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// URL whose certificate is
    /// private (for a self-signed one, the certificate itself)
    #[arg(long, env = "LIDO_CA", value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
    /// Look, do not touch: spawn, stop, restart and drain are hidden and refused
    #[arg(long)]
    pub readonly: bool,
}
