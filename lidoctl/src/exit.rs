//! Exit codes and how a failure is told to the operator.

use std::fmt;

use lido_shared::client::ClientError;

/// What `lidoctl --help` says about exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  other error
  2  usage error (bad arguments, or a destructive verb without --yes when stdin is not a terminal)
  3  not found (HTTP 404: unknown service or node)
  4  unreachable (no URL answered)
  5  refused (any other 4xx, e.g. 409 node_draining)

Environment:
  LIDO_URL      default for --url (comma-separated list allowed)
  LIDO_TOKEN    default for --token
  LIDO_CA       default for --ca
  LIDO_CONTEXT  default for --context
  LIDO_CONFIG   default for --config
  NO_COLOR      disables colour

Contexts (~/.config/lido/config.toml, or $XDG_CONFIG_HOME/lido/config.toml):
  current-context = \"local\"
  [contexts.local]
  urls = [\"http://127.0.0.1:7700\"]
  token_env = \"LIDO_TOKEN\"     # or: token = \"…\"
A flag beats the environment, which beats the context, which beats the
default (http://127.0.0.1:7700, no token).

Output: tables by default (coloured on a terminal); -o json|yaml print the
API's own types, described in lidoctl/OUTPUT.md.";

/// A process exit code with a meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Other = 1,
    Usage = 2,
    NotFound = 3,
    Unreachable = 4,
    Refused = 5,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Classifies a failure by the first [`ClientError`] or [`UsageError`] in its chain.
    pub fn of(err: &anyhow::Error) -> Self {
        for cause in err.chain() {
            if cause.downcast_ref::<UsageError>().is_some() {
                return Self::Usage;
            }
            if cause.downcast_ref::<NotFound>().is_some() {
                return Self::NotFound;
            }
            if let Some(client) = cause.downcast_ref::<ClientError>() {
                return Self::of_client(client);
            }
        }
        Self::Other
    }

    pub fn of_client(err: &ClientError) -> Self {
        if err.is_unreachable() {
            return Self::Unreachable;
        }
        match err.status() {
            Some(404) => Self::NotFound,
            Some(400..=499) => Self::Refused,
            _ => Self::Other,
        }
    }
}

/// Bad input found after parsing (clap reports its own usage errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Something asked for by name does not exist (found out locally, without a 404).
#[derive(Debug)]
pub struct NotFound(pub String);

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFound {}

/// A hint for the operator after `error: …`, where one helps.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    let client = err.chain().find_map(|c| c.downcast_ref::<ClientError>());
    if let Some(client) = client {
        if client.is_unreachable() {
            return Some("is lidod running? start it with `cargo run -p lidod` or pass --url".into());
        }
        let status = client.status()?;
        let message = client.to_string();
        return match status {
            401 | 403 => Some("pass an operator token with --token or LIDO_TOKEN".into()),
            // Lido's own message may already say what to do.
            404 if !message.contains("lidoctl") => {
                Some("list what exists with `lidoctl get services` or `lidoctl get nodes`".into())
            }
            500..=599 => Some("lidod failed; its log has the cause".into()),
            _ => None,
        };
    }
    if let Some(usage) = err.chain().find_map(|c| c.downcast_ref::<UsageError>()) {
        if usage.0.contains("--yes") {
            return None;
        }
        if usage.0.starts_with("no context named") {
            return Some("list the contexts with `lidoctl config get-contexts`".into());
        }
        return Some("see `lidoctl --help`".into());
    }
    None
}

/// The error and its causes joined by `: `, skipping a cause whose text the
/// message already carries (client errors quote their source).
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        if let Some(ClientError::Unreachable { url, .. }) = cause.downcast_ref::<ClientError>() {
            // reqwest's chain is long; its root says what went wrong.
            let root = err.chain().last().map(ToString::to_string).unwrap_or_default();
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&format!("cannot reach {url}: {root}"));
            break;
        }
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints `error: …` (with its causes) and a hint to stderr and returns the exit code.
pub fn report(err: &anyhow::Error) -> Exit {
    eprintln!("error: {}", message(err));
    if let Some(hint) = hint(err) {
        eprintln!("hint: {hint}");
    }
    Exit::of(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> ClientError {
        ClientError::Api { status, code: code.into(), message: "m".into() }
    }

    #[test]
    fn classification() {
        assert_eq!(Exit::of(&anyhow::Error::new(api(404, "unknown_service"))), Exit::NotFound);
        assert_eq!(Exit::of(&anyhow::Error::new(api(409, "node_draining"))), Exit::Refused);
        assert_eq!(Exit::of(&anyhow::Error::new(api(400, "invalid_request"))), Exit::Refused);
        assert_eq!(Exit::of(&anyhow::Error::new(api(500, "internal"))), Exit::Other);
        assert_eq!(Exit::of(&anyhow::Error::new(UsageError("x".into()))), Exit::Usage);
        assert_eq!(Exit::of(&anyhow::anyhow!("other")), Exit::Other);
        let wrapped = anyhow::Error::new(api(404, "not_found")).context("cannot stop x");
        assert_eq!(Exit::of(&wrapped), Exit::NotFound);
    }

    #[test]
    fn hints() {
        assert_eq!(hint(&anyhow::Error::new(api(409, "node_draining"))), None);
        assert!(hint(&anyhow::Error::new(api(401, "unauthorized"))).unwrap().contains("--token"));
        assert!(hint(&anyhow::Error::new(api(404, "unknown_service"))).unwrap().contains("get services"));
        assert_eq!(hint(&anyhow::anyhow!("other")), None);
    }
}
