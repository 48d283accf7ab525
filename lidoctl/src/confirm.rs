//! The `[y/N]` question before a destructive verb.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;

use crate::exit::UsageError;

/// Goes on when `yes` is set or the operator answers y; asks on stderr when
/// stdin is a terminal and refuses (a usage error) when it is not.
pub fn confirm(action: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(UsageError(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes to go ahead"
        ))
        .into());
    }
    eprint!("{action}? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if !is_yes(&answer) {
        bail!("aborted: did not {action}");
    }
    Ok(())
}

/// `y` or `yes`, any case; everything else (including nothing) is no.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::is_yes;

    #[test]
    fn answers() {
        assert!(is_yes("y\n"));
        assert!(is_yes(" YES "));
        assert!(!is_yes("\n"));
        assert!(!is_yes("n"));
        assert!(!is_yes("yep"));
    }
}
