//! lidoctl, Lido's operator command line. It speaks only the
//! InfrastructureManager's operator API, through [`lido_shared::client`].
//!
//! - [`cli`]: the verb–noun grammar (clap derive) and its global flags.
//! - [`commands`]: one module per verb: `status`, `get`, `spawn`, `stop`,
//!   `restart`, `drain`/`undrain`, `watch`, `version`, `completions`.
//! - [`endpoints`]: the `--url` list, failing over to the next URL when one
//!   is unreachable.
//! - [`output`]: tables (coloured only on a terminal), JSON and YAML.
//! - [`confirm`]: the `[y/N]` question of destructive verbs and `--yes`.
//! - [`exit`]: exit codes (documented in `lidoctl --help`) and error reports.

pub mod cli;
pub mod commands;
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
