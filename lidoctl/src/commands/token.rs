//! `lidoctl token create|list|revoke`: API tokens, operators only.

use lido_shared::access::{CreateToken, Role, TokenInfo};

use crate::cli::{TokenCommand, TokenCreateArgs, TokenRevokeArgs};
use crate::confirm::confirm;
use crate::endpoints::Endpoints;
use crate::output::{time, write_stdout, Cell, Output, Table};

pub async fn run(endpoints: &Endpoints, out: Output, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => create(endpoints, out, &args).await,
        TokenCommand::List => list(endpoints, out).await,
        TokenCommand::Revoke(args) => revoke(endpoints, out, &args).await,
    }
}

async fn create(endpoints: &Endpoints, out: Output, args: &TokenCreateArgs) -> anyhow::Result<()> {
    let role = if args.operator { Role::Operator } else { Role::Customer };
    let expires_at = match args.expires_in {
        Some(d) => Some(
            chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_add_signed(d))
                .ok_or_else(|| anyhow::anyhow!("--expires-in is too far in the future; give at most a few years"))?,
        ),
        None => None,
    };
    let request = CreateToken { role, customer: args.customer.clone(), name: args.name.clone(), expires_at };
    let request = &request;
    let created = endpoints.run("cannot create the token", |c| async move { c.create_token(request).await }).await?;
    if out.data(&created)? {
        return Ok(());
    }
    let whom = created.info.customer.as_deref().map_or(String::new(), |c| format!(" for customer {c}"));
    let until = created.info.expires_at.map_or(String::new(), |at| format!(", expires {}", time(at)));
    write_stdout(&format!(
        "created {} token {}{whom}{until}\n{}\nshown once: store it now (LIDO_TOKEN, or token in a lidoctl context)\n",
        created.info.role, created.info.id, created.token
    ))
}

async fn list(endpoints: &Endpoints, out: Output) -> anyhow::Result<()> {
    let tokens = endpoints.run("cannot list the tokens", |c| async move { c.tokens().await }).await?;
    if out.data(&tokens)? {
        return Ok(());
    }
    if tokens.is_empty() {
        return write_stdout("no tokens\n");
    }
    out.table(&tokens_table(&tokens))
}

async fn revoke(endpoints: &Endpoints, out: Output, args: &TokenRevokeArgs) -> anyhow::Result<()> {
    let id = args.id.as_str();
    confirm(&format!("revoke token {id}"), args.yes)?;
    let token = endpoints.run(format!("cannot revoke token {id}"), |c| async move { c.revoke_token(id).await }).await?;
    if out.data(&token)? {
        return Ok(());
    }
    write_stdout(&format!("token {} revoked; the sessions it opened have ended\n", token.id))
}

fn tokens_table(tokens: &[TokenInfo]) -> Table {
    let mut table = Table::new(["ID", "ROLE", "CUSTOMER", "NAME", "CREATED", "EXPIRES", "REVOKED"]);
    for t in tokens {
        let row: Vec<Cell> = vec![
            t.id.as_str().into(),
            t.role.as_str().into(),
            t.customer.as_deref().unwrap_or("-").into(),
            t.name.as_deref().unwrap_or("-").into(),
            time(t.created_at).into(),
            t.expires_at
                .map_or("-".to_string(), |at| {
                    if t.expired(chrono::Utc::now()) {
                        format!("{} (expired)", time(at))
                    } else {
                        time(at)
                    }
                })
                .into(),
            t.revoked_at.map_or("-".to_string(), time).into(),
        ];
        table.row(row);
    }
    table
}
