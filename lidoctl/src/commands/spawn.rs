//! `lidoctl spawn broker|market|trader …` → `POST /v1/services`.

use lido_shared::cluster::{ServiceKind, SpawnRequest};

use crate::cli::{SpawnArgs, SpawnCommand};
use crate::endpoints::Endpoints;
use crate::output::{service_line, write_stdout, Output};

pub async fn run(endpoints: &Endpoints, out: Output, command: SpawnCommand) -> anyhow::Result<()> {
    let request = request(command);
    let what = format!("cannot spawn {}", describe(&request));
    let request = &request;
    let service = endpoints.run(what, |c| async move { c.spawn(request).await }).await?;
    if out.data(&service)? {
        return Ok(());
    }
    write_stdout(&format!("{}\n", service_line("spawned", &service)))
}

/// The request body for a spawn command line.
pub fn request(command: SpawnCommand) -> SpawnRequest {
    let (kind, service_type, name, common) = match command {
        SpawnCommand::Broker { service_type, common } => (ServiceKind::Broker, Some(service_type), None, common),
        SpawnCommand::Market { market, common } => (ServiceKind::Market, None, market, common),
        SpawnCommand::Trader { service_type, common } => (ServiceKind::Trader, service_type, None, common),
    };
    let SpawnArgs { name: flag_name, node, set } = common;
    SpawnRequest { kind, service_type, name: name.or(flag_name), node, options: set.into_iter().collect() }
}

fn describe(request: &SpawnRequest) -> String {
    let mut what = request.kind.to_string();
    if let Some(t) = &request.service_type {
        what.push_str(&format!(" {t}"));
    }
    if let Some(name) = &request.name {
        what.push_str(&format!(" {name}"));
    }
    what
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> SpawnRequest {
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Spawn(spawn) = cli.command else { panic!("not a spawn") };
        request(spawn)
    }

    #[test]
    fn broker_type_is_positional() {
        let r = parse(&["lidoctl", "spawn", "broker", "paper", "--name", "p2", "--node", "n1"]);
        assert_eq!(r.kind, ServiceKind::Broker);
        assert_eq!(r.service_type.as_deref(), Some("paper"));
        assert_eq!(r.name.as_deref(), Some("p2"));
        assert_eq!(r.node.as_deref(), Some("n1"));
    }

    #[test]
    fn market_positional_is_the_name() {
        let r = parse(&["lidoctl", "spawn", "market", "crypto", "--set", "brokers=k1,k2"]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind":"market","type":null,"name":"crypto","node":null,"options":{"brokers":"k1,k2"}})
        );
    }

    #[test]
    fn trader_type_is_optional() {
        let r =
            parse(&["lidoctl", "spawn", "trader", "--name", "t1", "--set", "exec=/bin/algo", "--set", "customer=acme"]);
        assert_eq!(r.kind, ServiceKind::Trader);
        assert_eq!(r.service_type, None);
        assert_eq!(r.options.get("exec").map(String::as_str), Some("/bin/algo"));
        assert_eq!(r.options.get("customer").map(String::as_str), Some("acme"));
    }

    #[test]
    fn later_set_wins() {
        let r = parse(&["lidoctl", "spawn", "broker", "paper", "--set", "a=1", "--set", "a=2"]);
        assert_eq!(r.options.get("a").map(String::as_str), Some("2"));
    }
}
