//! The venue in a process of its own: `lido-bench venue --count N` runs N
//! Kraken fakes (each with its own nonce counter and trading budget) and
//! prints their base URLs. The order paths then cross the process
//! boundaries a deployment has (algo, then lidod or a proxy, then the
//! venue), and the floor, the algo straight to the venue, is a call to
//! another process rather than to a server in the bench's own runtime.

use anyhow::bail;
use lido_tests::kraken_fake::FakeKraken;
use tokio::io::AsyncReadExt;

use crate::orders::rich_fake_config;

/// `lido-bench venue …`: the venue process.
#[derive(clap::Args, Debug)]
pub struct VenueArgs {
    /// How many fakes to run.
    #[arg(long, default_value_t = 1)]
    count: usize,
}

/// Serves the fakes until stdin closes (the bench ended, however it
/// ended); the first stdout line is `venue <base url>…`.
pub async fn serve(args: VenueArgs) -> anyhow::Result<()> {
    let mut fakes = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        fakes.push(FakeKraken::start(rich_fake_config()).await);
    }
    let urls: Vec<&str> = fakes.iter().map(|f| f.url.as_str()).collect();
    println!("venue {}", urls.join(" "));
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await? > 0 {}
    Ok(())
}

/// A running `lido-bench venue` process, killed on drop.
pub struct VenueProcess {
    /// Each fake's REST base URL (its WebSockets are under it).
    pub urls: Vec<String>,
    _child: tokio::process::Child,
}

impl VenueProcess {
    pub async fn start(count: usize) -> anyhow::Result<Self> {
        let (child, line) = crate::start_helper(&["venue", "--count", &count.to_string()]).await?;
        let urls: Vec<String> = line.split(' ').map(String::from).collect();
        if urls.len() != count {
            bail!("the venue process started {} fakes, not {count}: {line:?}", urls.len());
        }
        Ok(Self { urls, _child: child })
    }
}
