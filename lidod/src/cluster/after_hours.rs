//! The after-hours window: the local time of day (in a time zone, daylight
//! saving time included) in which an idle draining node may be stopped.

use std::fmt;

use chrono::{DateTime, NaiveTime, Timelike, Utc};

use crate::config::AfterHoursConfig;

/// `start`-`end` in `tz`, both ends included, at minute resolution; a
/// window whose end is before its start crosses midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfterHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub tz: chrono_tz::Tz,
}

impl AfterHours {
    /// Reads `[cluster] after_hours`; errors say which field is wrong.
    pub fn parse(config: &AfterHoursConfig) -> anyhow::Result<Self> {
        let time = |field: &str, value: &str| {
            NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| {
                anyhow::anyhow!(
                    "[cluster] after_hours {field} must be a time of day as HH:MM (e.g. 16:30), got {value:?}"
                )
            })
        };
        let tz = config.tz.trim().parse::<chrono_tz::Tz>().map_err(|_| {
            anyhow::anyhow!(
                "[cluster] after_hours tz must be an IANA time zone such as America/New_York or UTC, got {:?}",
                config.tz
            )
        })?;
        Ok(Self { start: time("start", &config.start)?, end: time("end", &config.end)?, tz })
    }

    /// Whether `at` falls inside the window, in the window's time zone.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz).time();
        let minute = NaiveTime::from_hms_opt(local.hour(), local.minute(), 0).unwrap_or(local);
        if self.start <= self.end {
            self.start <= minute && minute <= self.end
        } else {
            minute >= self.start || minute <= self.end
        }
    }
}

impl fmt::Display for AfterHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{} {}", self.start.format("%H:%M"), self.end.format("%H:%M"), self.tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str, tz: &str) -> AfterHours {
        AfterHours::parse(&AfterHoursConfig { start: start.into(), end: end.into(), tz: tz.into() }).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn new_york_evening_across_the_dst_change() {
        let w = window("16:30", "20:00", "America/New_York");
        assert_eq!(w.to_string(), "16:30-20:00 America/New_York");
        // Friday 6 March 2026, EST (UTC-5).
        assert!(!w.contains(at("2026-03-06T20:45:00Z")), "15:45 EST is before the window");
        assert!(w.contains(at("2026-03-06T21:30:00Z")), "16:30 EST");
        assert!(w.contains(at("2026-03-07T01:00:00Z")), "20:00 EST");
        assert!(!w.contains(at("2026-03-07T01:30:00Z")), "20:30 EST");
        // Monday 9 March 2026, EDT (UTC-4) since the 8th: the same UTC times shift.
        assert!(w.contains(at("2026-03-09T20:45:00Z")), "16:45 EDT");
        assert!(!w.contains(at("2026-03-10T00:30:00Z")), "20:30 EDT");
        assert!(w.contains(at("2026-03-09T23:59:00Z")), "19:59 EDT");
    }

    #[test]
    fn windows_may_cross_midnight_and_cover_the_day() {
        let night = window("22:00", "06:00", "UTC");
        assert!(night.contains(at("2026-01-01T23:00:00Z")));
        assert!(night.contains(at("2026-01-01T05:59:00Z")));
        assert!(!night.contains(at("2026-01-01T12:00:00Z")));
        let always = window("00:00", "23:59", "UTC");
        assert!(always.contains(at("2026-01-01T00:00:00Z")));
        assert!(always.contains(at("2026-01-01T23:59:59Z")));
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let bad = |start: &str, tz: &str| {
            AfterHours::parse(&AfterHoursConfig { start: start.into(), end: "20:00".into(), tz: tz.into() })
                .unwrap_err()
                .to_string()
        };
        assert!(bad("4:30pm", "UTC").contains("start must be a time of day"));
        assert!(bad("16:30", "Mars/Base").contains("IANA time zone"));
    }
}
