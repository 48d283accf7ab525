//! Named contexts (like kubeconfig) and where the URLs and token come from.
//!
//! The file (`--config`, `LIDO_CONFIG`, else `$XDG_CONFIG_HOME/lido/config.toml`
//! or `~/.config/lido/config.toml`):
//!
//! ```toml
//! current-context = "local"
//!
//! [contexts.local]
//! urls = ["http://127.0.0.1:7700"]
//! token_env = "LIDO_TOKEN"   # or: token = "…"
//! ```
//!
//! Precedence, for the context, the URLs and the token alike: flag >
//! environment > context > default. A missing file is an empty one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::GlobalArgs;
use crate::exit::UsageError;

/// The URL used when nothing else names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";

/// The config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "current-context", default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
    /// Where it was read from, for messages.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// One named cluster: its IM URLs and where its operator token comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// InfrastructureManager URLs, tried in order.
    #[serde(default)]
    pub urls: Vec<String>,
    /// The environment variable holding the token (read when set and not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// The token itself, when `token_env` gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(&'static str),
    Context(String),
    /// The config file's `current-context`.
    File,
    Default,
}

/// The context chosen, and what chose it.
#[derive(Clone, Debug)]
pub struct Selected<'a> {
    pub name: &'a str,
    pub context: &'a Context,
    pub source: Source,
}

/// The settings a command runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The context in use, if any.
    pub context: Option<String>,
    pub context_source: Source,
    pub urls: Vec<String>,
    pub urls_source: Source,
    pub token: Option<String>,
    pub token_source: Source,
}

/// The config file's path: `--config`, `LIDO_CONFIG`, then the XDG default.
pub fn path(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(flag) = flag {
        return flag.to_path_buf();
    }
    if let Some(p) = env("LIDO_CONFIG") {
        return PathBuf::from(p);
    }
    let base = match (env("XDG_CONFIG_HOME"), env("HOME")) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => Path::new(&home).join(".config"),
        (None, None) => PathBuf::from(".config"),
    };
    base.join("lido").join("config.toml")
}

impl Config {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { path: Some(path.to_path_buf()), ..Self::default() })
            }
            Err(e) => return Err(UsageError(format!("cannot read config file {}: {e}", path.display())).into()),
        };
        let mut config =
            Self::parse(&text).map_err(|e| UsageError(format!("bad config file {}: {e}", path.display())))?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    /// The context to use: `--context`, then `LIDO_CONTEXT`, then `current-context`.
    /// Naming one the file lacks is a usage error.
    pub fn select(
        &self,
        flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Selected<'_>>, UsageError> {
        let (name, source) = match (flag, env("LIDO_CONTEXT"), self.current_context.as_deref()) {
            (Some(flag), _, _) => (flag.to_string(), Source::Flag),
            (None, Some(env), _) => (env, Source::Env("LIDO_CONTEXT")),
            (None, None, Some(current)) if !current.is_empty() => (current.to_string(), Source::File),
            _ => return Ok(None),
        };
        match self.contexts.get_key_value(&name) {
            Some((name, context)) => Ok(Some(Selected { name, context, source })),
            None => Err(UsageError(format!(
                "no context named {name:?} in {} (it has: {})",
                self.path.as_deref().map_or("the config file".into(), |p| p.display().to_string()),
                self.known_contexts().unwrap_or_else(|| "none".into())
            ))),
        }
    }

    fn known_contexts(&self) -> Option<String> {
        (!self.contexts.is_empty()).then(|| self.contexts.keys().cloned().collect::<Vec<_>>().join(", "))
    }

    /// The settings for a command line, reading the environment through `env`.
    pub fn resolve(&self, global: &GlobalArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved, UsageError> {
        let selected = self.select(global.context.as_deref(), env)?;
        let context = selected.as_ref().map(|s| (s.name, s.context));
        let context_source = selected.as_ref().map_or(Source::Default, |s| s.source.clone());
        let from_context = |name: &str| Source::Context(name.to_string());
        let split = |s: &str| s.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect::<Vec<_>>();

        let flag_urls: Vec<String> =
            global.url.iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        let env_urls = env("LIDO_URL").map(|u| split(&u)).filter(|u| !u.is_empty());
        let (urls, urls_source) = if !flag_urls.is_empty() {
            (flag_urls, Source::Flag)
        } else if let Some(urls) = env_urls {
            (urls, Source::Env("LIDO_URL"))
        } else if let Some((name, ctx)) = context.filter(|(_, c)| !c.urls.is_empty()) {
            (ctx.urls.clone(), from_context(name))
        } else {
            (vec![DEFAULT_URL.to_string()], Source::Default)
        };

        let context_token = context.and_then(|(name, ctx)| {
            let from_env = ctx.token_env.as_deref().and_then(env);
            from_env.or_else(|| ctx.token.clone()).filter(|t| !t.is_empty()).map(|t| (t, from_context(name)))
        });
        let (token, token_source) = match (global.token.clone(), env("LIDO_TOKEN"), context_token) {
            (Some(token), _, _) => (Some(token), Source::Flag),
            (None, Some(token), _) => (Some(token), Source::Env("LIDO_TOKEN")),
            (None, None, Some((token, source))) => (Some(token), source),
            (None, None, None) => (None, Source::Default),
        };
        Ok(Resolved {
            context: context.map(|(name, _)| name.to_string()),
            context_source,
            urls,
            urls_source,
            token,
            token_source,
        })
    }
}

/// The process environment, with empty values counted as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `text` with its top-level `current-context` set to `name`; every other
/// line (comments included) is kept as it was.
pub fn set_current_context(text: &str, name: &str) -> String {
    let line = format!("current-context = {}", toml::Value::String(name.to_string()));
    let mut out = Vec::new();
    let mut replaced = false;
    let mut in_table = false;
    for l in text.lines() {
        let trimmed = l.trim_start();
        in_table |= trimmed.starts_with('[');
        let is_key = trimmed
            .strip_prefix("current-context")
            .or_else(|| trimmed.strip_prefix("\"current-context\""))
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if !in_table && !replaced && is_key {
            out.push(line.clone());
            replaced = true;
        } else {
            out.push(l.to_string());
        }
    }
    if !replaced {
        out.insert(0, line);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    const FILE: &str = r#"
# my clusters
current-context = "local"

[contexts.local]
urls = ["http://127.0.0.1:7700"]
token_env = "LOCAL_TOKEN"

[contexts.prod]
urls = ["http://im-a:7700", "http://im-b:7700"]
token = "prod-secret"
"#;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["lidoctl"];
        argv.extend_from_slice(args);
        argv.push("status");
        Cli::try_parse_from(argv).unwrap().global
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn config() -> Config {
        Config::parse(FILE).unwrap()
    }

    #[test]
    fn parses_the_documented_shape() {
        let c = config();
        assert_eq!(c.current_context.as_deref(), Some("local"));
        assert_eq!(c.contexts["prod"].urls.len(), 2);
        assert_eq!(c.contexts["local"].token_env.as_deref(), Some("LOCAL_TOKEN"));
        assert!(Config::parse("[contexts.x]\nurl = \"typo\"").unwrap_err().contains("url"));
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn nothing_set_gives_the_default() {
        let r = Config::default().resolve(&global(&[]), &env_of(&[])).unwrap();
        assert_eq!(r.urls, [DEFAULT_URL]);
        assert_eq!(r.urls_source, Source::Default);
        assert_eq!((r.token, r.context), (None, None));
    }

    #[test]
    fn the_current_context_beats_the_default() {
        let r = config().resolve(&global(&[]), &env_of(&[("LOCAL_TOKEN", "lt")])).unwrap();
        assert_eq!(r.context.as_deref(), Some("local"));
        assert_eq!(r.urls, ["http://127.0.0.1:7700"]);
        assert_eq!(r.urls_source, Source::Context("local".into()));
        assert_eq!(r.token.as_deref(), Some("lt"), "token_env is read");
        // The variable unset: no token from this context.
        let r = config().resolve(&global(&[]), &env_of(&[])).unwrap();
        assert_eq!(r.token, None);
    }

    #[test]
    fn env_beats_the_context() {
        let env = env_of(&[("LIDO_URL", "http://e1:1, http://e2:2"), ("LIDO_TOKEN", "et"), ("LOCAL_TOKEN", "lt")]);
        let r = config().resolve(&global(&[]), &env).unwrap();
        assert_eq!(r.urls, ["http://e1:1", "http://e2:2"]);
        assert_eq!(r.urls_source, Source::Env("LIDO_URL"));
        assert_eq!((r.token.as_deref(), r.token_source), (Some("et"), Source::Env("LIDO_TOKEN")));
        // LIDO_CONTEXT picks the context over current-context.
        let r = config().resolve(&global(&[]), &env_of(&[("LIDO_CONTEXT", "prod")])).unwrap();
        assert_eq!(r.context.as_deref(), Some("prod"));
        assert_eq!(r.urls, ["http://im-a:7700", "http://im-b:7700"]);
        assert_eq!(r.token.as_deref(), Some("prod-secret"));
    }

    #[test]
    fn flags_beat_everything() {
        let env = env_of(&[("LIDO_URL", "http://e:1"), ("LIDO_TOKEN", "et"), ("LIDO_CONTEXT", "local")]);
        let r =
            config().resolve(&global(&["--url", "http://f:1", "--token", "ft", "--context", "prod"]), &env).unwrap();
        assert_eq!((r.urls, r.urls_source), (vec!["http://f:1".to_string()], Source::Flag));
        assert_eq!((r.token.as_deref(), r.token_source), (Some("ft"), Source::Flag));
        assert_eq!((r.context.as_deref(), r.context_source), (Some("prod"), Source::Flag));
        // --context alone: its URLs and token beat the default and current-context.
        let r = config().resolve(&global(&["--context", "prod"]), &env_of(&[])).unwrap();
        assert_eq!(r.urls_source, Source::Context("prod".into()));
        assert_eq!(r.token.as_deref(), Some("prod-secret"));
    }

    #[test]
    fn an_unknown_context_is_a_usage_error() {
        let err = config().resolve(&global(&["--context", "nope"]), &env_of(&[])).unwrap_err();
        assert!(err.0.contains("\"nope\"") && err.0.contains("it has: local, prod"), "{}", err.0);
        let err = Config::default().resolve(&global(&[]), &env_of(&[("LIDO_CONTEXT", "x")])).unwrap_err();
        assert!(err.0.contains("\"x\""), "{}", err.0);
    }

    #[test]
    fn the_path() {
        let none = env_of(&[]);
        assert_eq!(path(Some(Path::new("/f.toml")), &env_of(&[("LIDO_CONFIG", "/e.toml")])), Path::new("/f.toml"));
        assert_eq!(path(None, &env_of(&[("LIDO_CONFIG", "/e.toml"), ("HOME", "/h")])), Path::new("/e.toml"));
        assert_eq!(path(None, &env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")])), Path::new("/x/lido/config.toml"));
        assert_eq!(path(None, &env_of(&[("HOME", "/h")])), Path::new("/h/.config/lido/config.toml"));
        assert!(path(None, &none).ends_with("lido/config.toml"));
    }

    #[test]
    fn use_context_keeps_the_rest_of_the_file() {
        let text = set_current_context(FILE, "prod");
        assert!(text.contains("# my clusters"));
        assert!(text.contains("current-context = \"prod\"\n"));
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.current_context.as_deref(), Some("prod"));
        assert_eq!(c.contexts, config().contexts);
        // No current-context yet: it goes first, before any table.
        let text = set_current_context("[contexts.a]\nurls = []\n", "a");
        assert!(text.starts_with("current-context = \"a\"\n[contexts.a]"), "{text}");
        assert_eq!(Config::parse(&text).unwrap().current_context.as_deref(), Some("a"));
    }
}
