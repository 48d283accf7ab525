//! One function per verb; [`execute`] matches the command line to it.

mod get;
mod node;
mod service;
mod spawn;
mod status;
mod watch;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::endpoints::Endpoints;
use crate::output::{write_stdout, Output};

/// Runs the verb on the command line.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    let out = Output::from_args(&cli.global);
    let endpoints = || Endpoints::new(&cli.global.url, cli.global.token.as_deref());
    match cli.command {
        Command::Status => status::run(&endpoints()?, out).await,
        Command::Get(args) => get::run(&endpoints()?, out, &args).await,
        Command::Spawn(spawn) => spawn::run(&endpoints()?, out, spawn).await,
        Command::Stop(args) => service::stop(&endpoints()?, out, &args).await,
        Command::Restart(args) => service::restart(&endpoints()?, out, &args).await,
        Command::Drain(args) => node::drain(&endpoints()?, out, &args).await,
        Command::Undrain(args) => node::undrain(&endpoints()?, out, &args).await,
        Command::Watch => watch::run(&endpoints()?, out).await,
        Command::Version => write_stdout(&format!("lidoctl {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Completions(args) => {
            let mut buf = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "lidoctl", &mut buf);
            write_stdout(&String::from_utf8_lossy(&buf))
        }
    }
}
