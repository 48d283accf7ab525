//! `lidoctl set market NAME --set KEY=VALUE…` → `PUT /v1/markets/{name}`:
//! a live market's pool, changed at run time; `lidoctl set nodescale --set
//! KEY=VALUE…` → `PUT /v1/cluster/autoscale`: the node autoscaler's rules.

use lido_shared::cluster::MarketPool;

use crate::cli::{PoolField, SetCommand};
use crate::endpoints::Endpoints;
use crate::output::{service_line, write_stdout, Output};

pub async fn run(endpoints: &Endpoints, out: Output, command: SetCommand) -> anyhow::Result<()> {
    let (name, set) = match command {
        SetCommand::Market { name, set } => (name, set),
        SetCommand::Nodescale { set } => return nodescale(endpoints, out, set).await,
    };
    let pool = pool(set);
    let what = format!("cannot change market {name}");
    let (name, pool) = (name.as_str(), &pool);
    let market = endpoints.run(what, |c| async move { c.set_market(name, pool).await }).await?;
    if out.data(&market)? {
        return Ok(());
    }
    write_stdout(&format!("{}\n", service_line("changed", &market)))
}

/// `set nodescale`: the fields given, over the rules in force.
async fn nodescale(endpoints: &Endpoints, out: Output, set: Vec<(String, serde_json::Value)>) -> anyhow::Result<()> {
    let changes = serde_json::Value::Object(set.into_iter().collect());
    let changes = &changes;
    let rules = endpoints
        .run("cannot change the node autoscaler's rules", |c| async move { c.set_node_autoscale(changes).await })
        .await?;
    if out.data(&rules)? {
        return Ok(());
    }
    let mut text = String::from("node autoscaler rules changed, for every IM:\n");
    if let serde_json::Value::Object(fields) = &rules {
        for (k, v) in fields {
            text.push_str(&format!("  {k} = {v}\n"));
        }
    }
    write_stdout(&text)
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

#[cfg(test)]
mod nodescale_tests {
    use clap::Parser;

    use crate::cli::{Cli, Command, SetCommand};

    #[test]
    fn numbers_and_flags_are_typed_the_rest_is_text() {
        let args =
            ["lidoctl", "set", "nodescale", "--set", "max_nodes=6", "--set", "enabled=false", "--set", "location=ny"];
        let Command::Set(SetCommand::Nodescale { set }) = Cli::try_parse_from(args).unwrap().command else {
            panic!("not a set nodescale")
        };
        let body = serde_json::Value::Object(set.into_iter().collect());
        assert_eq!(body, serde_json::json!({"max_nodes": 6, "enabled": false, "location": "ny"}));
        assert!(Cli::try_parse_from(["lidoctl", "set", "nodescale", "--set", "=3"]).is_err());
        assert!(Cli::try_parse_from(["lidoctl", "set", "nodescale"]).is_err(), "at least one --set");
    }
}
