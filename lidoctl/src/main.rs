//! `lidoctl`: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = lidoctl::cli::Cli::parse();
    ExitCode::from(lidoctl::run(cli).code())
}
