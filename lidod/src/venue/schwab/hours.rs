//! Whether an equity order may leave now, from Schwab's market hours
//! (`GET /marketdata/v1/markets?markets=equity`, product `EQ`).
//!
//! A `NORMAL` session order goes only during the regular market; a
//! `SEAMLESS` one (the broker's `extended_hours=true`) also during the pre-
//! and post-market sessions. Anything else is refused before it is sent,
//! with the next opening in the message when Schwab gave one.
//!
//! Which day's hours to ask for is the exchange's date, in New York time
//! ([`exchange_date`]), daylight saving time included; the sessions Schwab
//! returns carry their own UTC offsets, so the boundaries are exact.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::America::New_York;

use super::error::SchwabError;
use super::wire::{Interval, MarketHours};

/// The Schwab `session` an order asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Regular hours only (`NORMAL`).
    Normal,
    /// Pre-market, regular and post-market (`SEAMLESS`).
    Seamless,
}

impl Session {
    pub fn wire(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Seamless => "SEAMLESS",
        }
    }
}

/// The US equity exchanges' date at `now` (their clocks run on New York
/// time: UTC-5 in winter, UTC-4 in summer).
pub fn exchange_date(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&New_York).date_naive()
}

/// `Ok` when an order for `session` may be sent at `now`.
pub fn check(hours: &MarketHours, session: Session, now: DateTime<Utc>) -> Result<(), SchwabError> {
    let sessions = hours.session_hours.as_ref().filter(|_| hours.is_open);
    let Some(sessions) = sessions else {
        return Err(SchwabError::MarketClosed(format!(
            "the US equity market is closed on {}; the order was not sent",
            hours.date
        )));
    };
    let inside = |list: &[Interval]| list.iter().any(|i| i.start <= now && now < i.end);
    let open = match session {
        Session::Normal => inside(&sessions.regular_market),
        Session::Seamless => {
            inside(&sessions.pre_market) || inside(&sessions.regular_market) || inside(&sessions.post_market)
        }
    };
    if open {
        return Ok(());
    }
    let next = sessions.regular_market.iter().map(|i| i.start).find(|s| *s > now);
    let when = next.map(|s| format!("; the regular session opens at {}", s.to_rfc3339())).unwrap_or_default();
    let hint = match session {
        Session::Normal => " (set the broker option extended_hours=true to trade pre- and post-market)",
        Session::Seamless => "",
    };
    Err(SchwabError::MarketClosed(format!(
        "outside the US equity {} session{when}; the order was not sent{hint}",
        if session == Session::Normal { "regular" } else { "extended" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> MarketHours {
        serde_json::from_str(
            r#"{"date":"2026-12-02","marketType":"EQUITY","product":"EQ","isOpen":true,"sessionHours":{
            "preMarket":[{"start":"2026-12-02T07:00:00-05:00","end":"2026-12-02T09:30:00-05:00"}],
            "regularMarket":[{"start":"2026-12-02T09:30:00-05:00","end":"2026-12-02T16:00:00-05:00"}],
            "postMarket":[{"start":"2026-12-02T16:00:00-05:00","end":"2026-12-02T20:00:00-05:00"}]}}"#,
        )
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn regular_session_only_for_normal_orders() {
        let h = day();
        assert!(check(&h, Session::Normal, at("2026-12-02T14:30:00Z")).is_ok());
        assert!(check(&h, Session::Normal, at("2026-12-02T20:59:59Z")).is_ok());
        let early = check(&h, Session::Normal, at("2026-12-02T13:00:00Z")).unwrap_err();
        assert_eq!(early.code(), "market_closed");
        assert!(early.to_string().contains("opens at 2026-12-02T09:30:00-05:00"), "{early}");
        assert!(early.to_string().contains("extended_hours=true"));
        assert!(check(&h, Session::Normal, at("2026-12-02T21:00:00Z")).is_err());
    }

    #[test]
    fn seamless_orders_go_pre_and_post_market() {
        let h = day();
        assert!(check(&h, Session::Seamless, at("2026-12-02T13:00:00Z")).is_ok());
        assert!(check(&h, Session::Seamless, at("2026-12-02T22:00:00Z")).is_ok());
        assert!(check(&h, Session::Seamless, at("2026-12-03T01:00:00Z")).is_err());
    }

    #[test]
    fn exchange_date_follows_new_york_across_daylight_saving_changes() {
        let date = |s: &str| exchange_date(at(s)).to_string();
        // Winter (EST, UTC-5) before 2026-03-08 02:00 local.
        assert_eq!(date("2026-03-08T04:59:59Z"), "2026-03-07");
        assert_eq!(date("2026-03-08T05:00:00Z"), "2026-03-08");
        // Summer (EDT, UTC-4) from then: the day starts at 04:00 UTC.
        assert_eq!(date("2026-03-09T03:59:59Z"), "2026-03-08");
        assert_eq!(date("2026-03-09T04:30:00Z"), "2026-03-09");
        assert_eq!(date("2026-10-31T04:30:00Z"), "2026-10-31");
        // Back to EST after 2026-11-01 02:00 local (06:00 UTC).
        assert_eq!(date("2026-11-01T03:59:59Z"), "2026-10-31");
        assert_eq!(date("2026-11-01T04:00:00Z"), "2026-11-01");
        assert_eq!(date("2026-11-02T04:30:00Z"), "2026-11-01");
        assert_eq!(date("2026-11-02T05:00:00Z"), "2026-11-02");
    }

    #[test]
    fn the_first_summer_session_opens_at_0930_new_york_time() {
        let monday: MarketHours = serde_json::from_str(
            r#"{"date":"2026-03-09","marketType":"EQUITY","product":"EQ","isOpen":true,"sessionHours":{
            "regularMarket":[{"start":"2026-03-09T09:30:00-04:00","end":"2026-03-09T16:00:00-04:00"}]}}"#,
        )
        .unwrap();
        let open = at("2026-03-09T13:30:00Z");
        assert_eq!(exchange_date(open).to_string(), monday.date);
        assert!(check(&monday, Session::Normal, at("2026-03-09T13:29:59Z")).is_err());
        assert!(check(&monday, Session::Normal, open).is_ok());
        assert!(check(&monday, Session::Normal, at("2026-03-09T19:59:59Z")).is_ok());
        assert!(check(&monday, Session::Normal, at("2026-03-09T20:00:00Z")).is_err());
    }

    #[test]
    fn closed_day_refuses_everything() {
        let closed: MarketHours =
            serde_json::from_str(r#"{"date":"2026-12-25","marketType":"EQUITY","product":"EQ","isOpen":false}"#)
                .unwrap();
        let e = check(&closed, Session::Seamless, at("2026-12-25T15:00:00Z")).unwrap_err();
        assert!(e.to_string().contains("closed on 2026-12-25"));
    }
}
