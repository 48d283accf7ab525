//! `lidoctl broker auth schwab --name s1 [--set k=v…]`: the first Schwab
//! login, by OAuth authorization code.
//!
//! It runs here rather than through lidod: the app secret stays in this
//! shell's environment, the one-time code never crosses the cluster API,
//! and the token file is written where the broker (on this machine) reads
//! it. It parses the same options as the broker, so `token_file`,
//! `auth_url` and `redirect_uri` resolve exactly as the broker resolves them.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use lidod::venue::schwab::rest;
use lidod::venue::schwab::token::{self, TokenFile};
use lidod::venue::schwab_broker::SchwabOptions;

use crate::cli::BrokerAuthArgs;

pub async fn run(args: &BrokerAuthArgs) -> anyhow::Result<()> {
    if !matches!(args.broker_type.as_str(), "schwab" | "tdameritrade") {
        anyhow::bail!("broker type {:?} has no login; only schwab (alias tdameritrade) does", args.broker_type);
    }
    let options = SchwabOptions::parse(&args.name, &args.set.iter().cloned().collect()).map_err(anyhow::Error::msg)?;
    let app = options.app_credentials().map_err(anyhow::Error::msg)?;
    let url = token::authorize_url(&options.auth_url, &app.key, &options.redirect_uri)?;
    eprintln!("Open this URL in a browser, log in to Schwab and allow the app:");
    println!("{url}");
    eprintln!("Then paste here the whole address the browser was sent to (it starts with {}):", options.redirect_uri);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the redirect URL from stdin")?;
    let code = token::code_from_redirect(&line)?;
    let http = rest::http_client(Duration::from_secs(30))?;
    let tokens = rest::exchange_code(&http, &options.auth_url, &app, &code, &options.redirect_uri)
        .await
        .context("the code exchange failed (codes are single-use and expire within minutes; log in again)")?;
    let file = TokenFile::new(&options.token_file);
    file.save(&tokens)?;
    println!(
        "Schwab login saved to {} (owner-only); the refresh token lasts until {}: log in again before then",
        file.path().display(),
        tokens.refresh_expires_at.to_rfc3339()
    );
    Ok(())
}
