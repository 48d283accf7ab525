//! `lidoctl config get-contexts|use-context NAME|current-context`.

use std::path::Path;

use serde::Serialize;

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::config::{process_env, set_current_context, Config, Source};
use crate::exit::NotFound;
use crate::output::{write_stdout, Cell, Output, Table};

/// A context as `config get-contexts -o json|yaml` shows it: never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContextView {
    pub name: String,
    /// True for the context in use (after `--context` and `LIDO_CONTEXT`).
    pub current: bool,
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Whether the file holds a literal token.
    pub token_set: bool,
}

pub fn run(global: &GlobalArgs, out: Output, command: &ConfigCommand) -> anyhow::Result<()> {
    let path = crate::config::path(global.config.as_deref(), &process_env);
    let config = Config::load(&path)?;
    match command {
        ConfigCommand::GetContexts => get_contexts(global, out, &path, &config),
        ConfigCommand::UseContext { name } => use_context(&path, &config, name),
        ConfigCommand::CurrentContext => {
            let Some(selected) = config.select(global.context.as_deref(), &process_env)? else {
                return Err(NotFound(format!(
                    "no current context: {} sets none (use `lidoctl config use-context NAME`)",
                    path.display()
                ))
                .into());
            };
            let name = selected.name;
            let from = match selected.source {
                Source::Flag => " (from --context)",
                Source::Env(_) => " (from LIDO_CONTEXT)",
                _ => "",
            };
            if out.data(&name)? {
                return Ok(());
            }
            write_stdout(&format!("{name}\n"))?;
            if !from.is_empty() {
                eprintln!("note: {name}{from}, not the file's current-context");
            }
            Ok(())
        }
    }
}

fn get_contexts(global: &GlobalArgs, out: Output, path: &Path, config: &Config) -> anyhow::Result<()> {
    // An unknown --context or LIDO_CONTEXT is no reason not to list the file.
    let current = config.select(global.context.as_deref(), &process_env).ok().flatten().map(|s| s.name);
    let views: Vec<ContextView> = config
        .contexts
        .iter()
        .map(|(name, c)| ContextView {
            name: name.clone(),
            current: current == Some(name.as_str()),
            urls: c.urls.clone(),
            token_env: c.token_env.clone(),
            token_set: c.token.is_some(),
        })
        .collect();
    if out.data(&views)? {
        return Ok(());
    }
    if views.is_empty() {
        eprintln!("no contexts in {}", path.display());
        return Ok(());
    }
    let mut table = Table::new(["CURRENT", "NAME", "URLS", "TOKEN"]);
    for v in &views {
        let token = match (&v.token_env, v.token_set) {
            (Some(var), true) => format!("${var}, else set in file"),
            (Some(var), false) => format!("${var}"),
            (None, true) => "set in file".into(),
            (None, false) => String::new(),
        };
        // Blank, not `-`, beside the contexts not in use.
        let current = Cell { text: if v.current { "*" } else { "" }.into(), paint: None };
        table.row(vec![current, v.name.as_str().into(), v.urls.join(",").into(), token.into()]);
    }
    out.table(&table)
}

fn use_context(path: &Path, config: &Config, name: &str) -> anyhow::Result<()> {
    // The same check and message as --context.
    config.select(Some(name), &|_| None)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let updated = set_current_context(&text, name);
    // Never write a file that would not load again.
    Config::parse(&updated).map_err(|e| anyhow::anyhow!("cannot update {}: {e}", path.display()))?;
    std::fs::write(path, updated).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    write_stdout(&format!("switched to context {name:?}\n"))
}
