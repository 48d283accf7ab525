//! One function per verb; [`execute`] matches the command line to it.

mod audit;
mod broker_auth;
mod config;
mod describe;
mod get;
mod log_level;
mod logs;
mod node;
mod service;
mod set;
mod spawn;
mod status;
mod token;
mod watch;

use clap::CommandFactory;

use crate::cli::{BrokerCommand, Cli, Command};
use crate::config::{process_env, Config};
use crate::endpoints::Endpoints;
use crate::output::{write_stdout, Output};

/// Runs the verb on the command line.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    let out = Output::from_args(&cli.global);
    // The config file is read only by verbs that talk to the cluster.
    let endpoints = || -> anyhow::Result<Endpoints> {
        let config = Config::load(&crate::config::path(cli.global.config.as_deref(), &process_env))?;
        let resolved = config.resolve(&cli.global, &process_env)?;
        Endpoints::new(&resolved.urls, resolved.token.as_deref(), cli.global.ca.as_deref())
    };
    match cli.command {
        Command::Status => status::run(&endpoints()?, out).await,
        Command::Get(args) => get::run(&endpoints()?, out, &args).await,
        Command::Describe(args) => describe::run(&endpoints()?, out, &args).await,
        Command::Logs(args) => logs::run(&endpoints()?, &args).await,
        Command::Spawn(spawn) => spawn::run(&endpoints()?, out, spawn).await,
        Command::Stop(args) => service::stop(&endpoints()?, out, &args).await,
        Command::Restart(args) => service::restart(&endpoints()?, out, &args).await,
        Command::Drain(args) => node::drain(&endpoints()?, out, &args).await,
        Command::Undrain(args) => node::undrain(&endpoints()?, out, &args).await,
        Command::Set(command) => set::run(&endpoints()?, out, command).await,
        Command::LogLevel(args) => log_level::run(&endpoints()?, out, &args).await,
        Command::Watch(args) => watch::run(&endpoints()?, out, &args).await,
        Command::Token(command) => token::run(&endpoints()?, out, command).await,
        Command::Audit(args) => audit::run(&endpoints()?, out, &args).await,
        Command::Config(command) => config::run(&cli.global, out, &command),
        Command::Broker(BrokerCommand::Auth(args)) => broker_auth::run(&args).await,
        Command::Version => write_stdout(&format!("lidoctl {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Completions(args) => {
            let mut buf = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "lidoctl", &mut buf);
            write_stdout(&String::from_utf8_lossy(&buf))
        }
    }
}
