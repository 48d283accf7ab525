//! `lido-bench`: Lido measured against the floor (the same algo talking to
//! the venue directly, a bare proxy, a bare broadcast server) and a peer
//! (Python ccxt), all on 127.0.0.1 against the Kraken fake, printed as one
//! table. See BENCHMARKS.md for the command and a run's figures.
//!
//! `lido-bench subscribe …` is the subscriber process the fan-out
//! measurement spawns (subscribers live in another process than lidod
//! and the bench); `lido-bench proxy …` is the bare forwarding proxy the
//! order round trip spawns, a process of its own as lidod is, and
//! `lido-bench venue …` the Kraken fakes it places on.

mod cluster;
mod control;
mod daemon;
mod fanout;
mod orders;
mod peer;
mod proxy;
mod stats;
mod table;
mod venue;

use std::ffi::OsStr;
use std::process::Stdio;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};

pub use daemon::Lidod;

#[derive(Parser)]
#[command(about = "Benchmarks lidod against the floor and a peer; prints one table")]
struct Cli {
    /// A short run (fewer samples, shorter windows) to check the harness.
    #[arg(long)]
    quick: bool,
    /// Offered market-data rate, ticker messages per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Measure only these parts (comma-separated); all when absent.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand)]
enum Sub {
    /// The fan-out subscriber process (spawned by the bench itself).
    Subscribe(fanout::SubscribeArgs),
    /// The control plane: check-ins two IMs on etcd hold, sessions per second.
    Cluster(cluster::ClusterArgs),
    /// The bare forwarding proxy process (spawned by the bench itself).
    Proxy(proxy::ProxyArgs),
    /// The Kraken fakes of the order round trip, a process of their own
    /// (spawned by the bench itself).
    Venue(venue::VenueArgs),
}

/// The parts of a run, in the order they run.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    Orders,
    Fanout,
    MaxRate,
    Control,
    Peer,
}

/// How much each measurement samples.
pub struct Plan {
    pub orders: usize,
    pub warmup: usize,
    pub fanout_seconds: f64,
    pub starts: usize,
    pub sessions: usize,
}

// Full runs place 950 resting orders, under the node's default limit of
// 1,000 open orders per customer (the bench never cancels: a cancel within
// 5 s costs 8 points of Kraken's trading budget).
impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self { orders: 100, warmup: 10, fanout_seconds: 2.0, starts: 3, sessions: 50 }
        } else {
            Self { orders: 900, warmup: 50, fanout_seconds: 5.0, starts: 10, sessions: 200 }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Some(Sub::Subscribe(args)) => runtime.block_on(fanout::subscribe(args)),
        Some(Sub::Cluster(args)) => runtime.block_on(cluster::run(args)),
        Some(Sub::Proxy(args)) => runtime.block_on(proxy::serve(args)),
        Some(Sub::Venue(args)) => runtime.block_on(venue::serve(args)),
        None => runtime.block_on(bench(cli.quick, cli.rate, &cli.only)),
    }
}

async fn bench(quick: bool, rate: u32, only: &[Part]) -> anyhow::Result<()> {
    let lidod = Lidod::build()?;
    let plan = Plan::new(quick);
    let runs = |part: Part| only.is_empty() || only.contains(&part);
    let mut report = table::Report::new(quick, rate);
    if runs(Part::Orders) {
        eprintln!("lido-bench: order round trips ({} per path)…", plan.orders);
        report.orders = Some(orders::run(&lidod, plan.orders, plan.warmup).await?);
    }
    if runs(Part::Fanout) {
        eprintln!("lido-bench: fan-out at {rate} msgs/s…");
        report.fanout = fanout::run(&lidod, rate, &[10, 100, 1000], plan.fanout_seconds).await?;
    }
    if runs(Part::MaxRate) {
        eprintln!("lido-bench: fan-out, highest rate held at 1000 subscribers (steps {:?})…", fanout::RATE_STEPS);
        report.max_rate = Some(fanout::max_rate(&lidod, 1000, plan.fanout_seconds).await?);
    }
    if runs(Part::Control) {
        eprintln!("lido-bench: control plane…");
        report.control = Some(control::run(&lidod, plan.starts, plan.sessions).await?);
    }
    if runs(Part::Peer) {
        eprintln!("lido-bench: peer (ccxt)…");
        report.peer = peer::run(plan.orders.min(500), plan.warmup).await?;
        report.peer_ran = true;
    }
    println!("{}", report.render());
    Ok(())
}

/// Starts `lido-bench <args>`, a helper process of the bench's own (the
/// proxy, the venue), and answers it with what its first stdout line says
/// after `<args[0]> `. The process is killed when the child is dropped, and
/// its stdin stays open until then (the venue ends when it closes).
pub async fn start_helper<S: AsRef<OsStr>>(args: &[S]) -> anyhow::Result<(tokio::process::Child, String)> {
    let what = args.first().map(|a| a.as_ref().to_string_lossy().into_owned()).unwrap_or_default();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the {what} process"))?;
    let mut lines = BufReader::new(child.stdout.take().context("the helper's stdout")?).lines();
    let line = lines.next_line().await?.with_context(|| format!("the {what} process said nothing"))?;
    match line.strip_prefix(&format!("{what} ")) {
        Some(rest) => Ok((child, rest.to_string())),
        None => bail!("unexpected first line from the {what} process: {line:?}"),
    }
}
