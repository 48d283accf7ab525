//! `lidoctl logs <service> [-f] [--tail N] [--since DURATION]`: a service
//! process's output, from `GET /v1/services/{name}/logs`.
//!
//! `--since` keeps the lines whose leading timestamp is recent enough; a line
//! without one goes with the line before it, and lines before the first
//! timestamp are kept (see [`SinceFilter`]).

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::cli::LogsArgs;
use crate::endpoints::Endpoints;
use crate::output::write_stdout;

/// The history `logs` asks for without `--tail` (lidod's default too).
const DEFAULT_TAIL: usize = 100;
/// The most history lidod gives; what `--since` without `--tail` scans.
const MAX_TAIL: usize = 10_000;

pub async fn run(endpoints: &Endpoints, args: &LogsArgs) -> anyhow::Result<()> {
    let name = args.service.as_str();
    let cutoff = args.since.map(|since| {
        let since = chrono::Duration::from_std(since).ok();
        since.and_then(|d| Utc::now().checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    // With --since the filter needs more history than it will show.
    let fetch = match (args.since, args.tail) {
        (Some(_), _) => MAX_TAIL,
        (None, tail) => tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL),
    };
    let mut filter = SinceFilter::new(cutoff);
    let what = format!("cannot get the logs of {name}");
    if !args.follow {
        let text = endpoints.run(what, |c| async move { c.logs(name, fetch).await }).await?;
        let kept = filter.lines(&text);
        let tail = args.tail.unwrap_or(if args.since.is_some() { usize::MAX } else { DEFAULT_TAIL });
        return write_stdout(&last_lines(&kept, tail));
    }
    let mut stream = endpoints.run(what, |c| async move { c.follow_logs(name, fetch).await }).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // The history arrives first (in one or more chunks), then live lines; a
    // chunk may in principle end inside a line, so keep the rest for later.
    let mut partial = String::new();
    let mut history_tail = args.since.and(args.tail);
    loop {
        let chunk = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            chunk = stream.next_chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("the log of {name} broke off"))),
        };
        partial.push_str(&chunk);
        let Some(end) = partial.rfind('\n') else { continue };
        let complete: String = partial.drain(..=end).collect();
        let kept = filter.lines(&complete);
        // `--since` with `--tail`: only the first chunk (the history) is cut.
        let text = match history_tail.take() {
            Some(tail) => last_lines(&kept, tail),
            None => kept,
        };
        write_stdout(&text)?;
    }
    if !partial.is_empty() {
        partial.push('\n');
        write_stdout(&filter.lines(&partial))?;
    }
    Ok(())
}

/// The last `n` lines of `text` (which ends with a newline, or is empty).
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| format!("{l}\n")).collect()
}

/// Keeps lines stamped at or after a cutoff. It remembers its last verdict,
/// so followed chunks are judged like one text.
#[derive(Clone, Debug)]
pub struct SinceFilter {
    cutoff: Option<DateTime<Utc>>,
    keeping: bool,
}

impl SinceFilter {
    pub fn new(cutoff: Option<DateTime<Utc>>) -> Self {
        Self { cutoff, keeping: true }
    }

    /// The lines of `text` to show, each ending with a newline.
    pub fn lines(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            if let (Some(cutoff), Some(ts)) = (self.cutoff, leading_timestamp(line)) {
                self.keeping = ts >= cutoff;
            }
            if self.keeping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The timestamp a log line starts with, if any: RFC 3339
/// (`2024-05-01T12:00:01.123456Z`, `…+02:00`), or a date and time with `T` or
/// a space and no zone (taken as UTC); ANSI colour codes and one `[` are skipped.
pub fn leading_timestamp(line: &str) -> Option<DateTime<Utc>> {
    let plain = strip_ansi(line);
    let s = plain.trim_start().trim_start_matches('[');
    // The longest prefix made of timestamp characters.
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || "-:.+TZ".contains(c) || (c == ' ' && i == 10)))
        .map_or(s.len(), |(i, _)| i);
    let candidate = s[..end].trim_end_matches([' ', '.', ':']);
    if candidate.len() < 19 {
        return None;
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(&candidate.replacen(' ', "T", 1)) {
        return Some(ts.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(candidate, format) {
            return Some(naive.and_utc());
        }
    }
    None
}

/// `line` without `ESC [ … letter` sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, h, m, s).unwrap()
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            leading_timestamp("2024-05-01T12:00:01.123456Z  INFO lidod: started"),
            Some(at(12, 0, 1) + chrono::Duration::microseconds(123_456))
        );
        assert_eq!(leading_timestamp("2024-05-01T14:00:01+02:00 x"), Some(at(12, 0, 1)));
        assert_eq!(leading_timestamp("2024-05-01 12:00:01 INFO x"), Some(at(12, 0, 1)));
        assert_eq!(leading_timestamp("[2024-05-01T12:00:01Z] x"), Some(at(12, 0, 1)));
        assert_eq!(
            leading_timestamp("\x1b[2m2024-05-01T12:00:01.5Z\x1b[0m \x1b[32m INFO\x1b[0m x"),
            Some(at(12, 0, 1) + chrono::Duration::milliseconds(500))
        );
        assert_eq!(leading_timestamp("   at lidod::main (src/main.rs:3)"), None);
        assert_eq!(leading_timestamp("2024-05-01 hello"), None);
        assert_eq!(leading_timestamp(""), None);
    }

    #[test]
    fn since_keeps_recent_lines_and_their_continuations() {
        let text = "\
banner without a time
2024-05-01T12:00:00Z old
  old continuation
2024-05-01T12:05:00Z new
  new continuation
";
        let mut f = SinceFilter::new(Some(at(12, 1, 0)));
        assert_eq!(f.lines(text), "banner without a time\n2024-05-01T12:05:00Z new\n  new continuation\n");
        // The verdict carries over to the next chunk.
        assert_eq!(f.lines("  more of new\n"), "  more of new\n");
        assert_eq!(SinceFilter::new(None).lines(text), text);
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\n", 5), "a\n");
        assert_eq!(last_lines("", 5), "");
        assert_eq!(last_lines("a\nb\n", 0), "");
    }
}
