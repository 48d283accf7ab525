//! `lidoctl audit [--since T] [--limit N]`: operator actions, oldest first.

use lido_shared::access::AuditQuery;

use crate::cli::AuditArgs;
use crate::endpoints::Endpoints;
use crate::output::{time, write_stdout, Cell, Output, Table};

pub async fn run(endpoints: &Endpoints, out: Output, args: &AuditArgs) -> anyhow::Result<()> {
    let query = AuditQuery { since: args.since, limit: Some(args.limit) };
    let query = &query;
    let records = endpoints.run("cannot read the audit log", |c| async move { c.audit(query).await }).await?;
    if out.data(&records)? {
        return Ok(());
    }
    if records.is_empty() {
        return write_stdout("no audit records\n");
    }
    let mut headers = vec!["TIME", "ACTOR", "ACTION", "TARGET", "RESULT"];
    if out.wide() {
        headers.push("DETAIL");
    }
    let mut table = Table::new(headers);
    for r in &records {
        let mut row: Vec<Cell> = vec![
            time(r.ts).into(),
            r.actor.as_str().into(),
            r.action.as_str().into(),
            r.target.as_str().into(),
            r.result.as_str().into(),
        ];
        if out.wide() {
            row.push(r.detail.as_deref().unwrap_or("-").into());
        }
        table.row(row);
    }
    out.table(&table)
}
