//! lidoctl, Lido's operator command line. It speaks only the
//! InfrastructureManager's operator API, through [`lido_shared::client`].
//!
//! - [`cli`]: the verb–noun grammar (clap derive) and its global flags.
//! - [`commands`]: one module per verb: `status`, `get`, `describe`, `logs`,
//!   `spawn`, `stop`, `restart`, `drain`/`undrain`, `watch`, `config`,
//!   `version`, `completions`, and `broker auth`, the one verb that runs
//!   locally instead of through the cluster: a venue login (Schwab OAuth).
//! - [`config`]: named contexts in `~/.config/lido/config.toml`, and the
//!   precedence flag > environment > context > default for URLs and token.
//! - [`endpoints`]: the URL list, failing over to the next URL when one
//!   is unreachable.
//! - [`output`]: tables (coloured only on a terminal), describe-style fields,
//!   JSON and YAML; the shapes are documented in `OUTPUT.md`.
//! - [`confirm`]: the `[y/N]` question of destructive verbs and `--yes`.
//! - [`exit`]: exit codes (documented in `lidoctl --help`) and error reports.

pub mod cli;
pub mod commands;
pub mod config;
pub mod confirm;
pub mod endpoints;
pub mod exit;
pub mod output;

use exit::Exit;

/// Runs one command line to completion, reporting any failure on stderr.
pub fn run(cli: cli::Cli) -> Exit {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return exit::report(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(commands::execute(cli)) {
        Ok(()) => Exit::Ok,
        Err(e) => exit::report(&e),
    }
}
