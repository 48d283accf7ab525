//! `lidoctl set market NAME --set KEY=VALUE…` → `PUT /v1/markets/{name}`:
//! a live market's pool, changed at run time.

use lido_shared::cluster::MarketPool;

use crate::cli::{PoolField, SetCommand};
use crate::endpoints::Endpoints;
use crate::output::{service_line, write_stdout, Output};

pub async fn run(endpoints: &Endpoints, out: Output, command: SetCommand) -> anyhow::Result<()> {
    let SetCommand::Market { name, set } = command;
    let pool = pool(set);
    let what = format!("cannot change market {name}");
    let (name, pool) = (name.as_str(), &pool);
    let market = endpoints.run(what, |c| async move { c.set_market(name, pool).await }).await?;
    if out.data(&market)? {
        return Ok(());
    }
    write_stdout(&format!("{}\n", service_line("changed", &market)))
}

/// The request body for the `--set` pairs; a later pair wins.
fn pool(set: Vec<(PoolField, String)>) -> MarketPool {
    let mut pool = MarketPool::default();
    for (field, value) in set {
        let slot = match field {
            PoolField::Brokers => &mut pool.brokers,
            PoolField::Fallback => &mut pool.fallback,
            PoolField::Symbols => &mut pool.symbols,
        };
        *slot = Some(value);
    }
    pool
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<(String, MarketPool), clap::Error> {
        let Command::Set(SetCommand::Market { name, set }) = Cli::try_parse_from(args)?.command else {
            panic!("not a set market")
        };
        Ok((name, pool(set)))
    }

    #[test]
    fn options_left_out_stay_unset_and_later_ones_win() {
        let (name, body) =
            parse(&["lidoctl", "set", "market", "crypto", "--set", "brokers=k1", "--set", "brokers=k2,k1"]).unwrap();
        assert_eq!(name, "crypto");
        assert_eq!(body, MarketPool { brokers: Some("k2,k1".into()), ..MarketPool::default() });
        let (_, body) = parse(&["lidoctl", "set", "market", "crypto", "--set", "fallback="]).unwrap();
        assert_eq!(body.fallback.as_deref(), Some(""), "an empty value clears the fallback");
    }

    #[test]
    fn unknown_options_and_no_options_are_usage_errors() {
        let err = parse(&["lidoctl", "set", "market", "crypto", "--set", "pool=k1"]).unwrap_err();
        assert!(err.to_string().contains("known: brokers, fallback, symbols"), "{err}");
        assert_eq!(err.exit_code(), 2);
        assert!(parse(&["lidoctl", "set", "market", "crypto"]).is_err(), "at least one --set");
    }
}
