//! Decimals on Kraken's wire.
//!
//! Kraken's REST API quotes every price and volume as a JSON string
//! (`"37500.0"`), while WebSocket v2 sends JSON numbers (`37500.0`) and
//! sometimes strings in the same message. Both are read here into
//! [`Decimal`] from the text Kraken wrote, never through a float: the
//! value is taken as a [`RawValue`] (serde_json's `raw_value` feature, on
//! in the workspace), and a string's contents or a number's digits are
//! parsed as a decimal. A JSON number keeps its scale (`0.10000000` reads
//! as `0.10000000`), as a string does.
//!
//! Decimals that go out as JSON numbers (WebSocket v2 `order_qty`,
//! `limit_price`) are written as the decimal's own digits, again through a
//! [`RawValue`], so what Kraken receives is exactly the decimal Lido chose.
//!
//! Use with `#[serde(with = "num::flex")]` or `#[serde(with = "num::flex_opt")]`.
//! These read only through serde_json's own deserializers (`from_str`,
//! `from_slice`, `from_value`), the only ones the Kraken code uses.

use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::de;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Parses a decimal as Kraken writes it: plain (`"0.00100000"`), with a sign,
/// or in scientific notation (`"1e-8"`, as a float's shortest text may be).
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    let parsed = if t.contains(['e', 'E']) { Decimal::from_scientific(t) } else { Decimal::from_str(t) };
    parsed.map_err(|e| format!("{text:?} is not a decimal: {e}"))
}

/// The decimal a JSON number stands for.
pub fn from_json_number(n: &serde_json::Number) -> Result<Decimal, String> {
    parse_decimal(&n.to_string())
}

/// `value` as a JSON number, refused if the float would not read back as
/// exactly the same decimal (it always does for Kraken's precisions).
pub fn to_exact_f64(value: Decimal) -> Result<f64, String> {
    let f = value.to_f64().ok_or_else(|| format!("{value} does not fit a JSON number"))?;
    let back = serde_json::Number::from_f64(f)
        .ok_or_else(|| format!("{value} does not fit a JSON number"))
        .and_then(|n| from_json_number(&n))?;
    if back != value {
        return Err(format!("{value} is not exactly representable as a JSON number"));
    }
    Ok(f)
}

/// A decimal that reads from a JSON string or number and writes as a
/// string: for maps and arrays of Kraken amounts (`{"ZUSD":"2970172.7962"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Flex(#[serde(with = "flex")] pub Decimal);

/// The decimal a raw JSON value stands for: a string's contents or a
/// number's digits, parsed as written.
pub fn from_raw(raw: &RawValue) -> Result<Decimal, String> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(|e| format!("{text} is not a JSON string: {e}"))?;
            parse_decimal(&s)
        }
        Some(b'-' | b'0'..=b'9') => parse_decimal(text),
        _ => Err(format!("{text} is not a decimal as a JSON string or number")),
    }
}

/// `value` as a raw JSON number with exactly its digits (`0.01000000`).
pub fn to_raw_number(value: Decimal) -> Result<Box<RawValue>, String> {
    RawValue::from_string(value.to_string()).map_err(|e| format!("{value} is not a JSON number: {e}"))
}

fn deserialize_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    from_raw(&raw).map_err(de::Error::custom)
}

/// A required decimal that may be a JSON string or number; written back as
/// a string (Kraken's REST form).
pub mod flex {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        deserialize_decimal(d)
    }

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }
}

/// An optional decimal that may be a JSON string or number (or absent, or
/// `null`); written back as a string.
pub mod flex_opt {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        match Option::<Box<RawValue>>::deserialize(d)? {
            None => Ok(None),
            Some(raw) if raw.get().trim() == "null" => Ok(None),
            Some(raw) => from_raw(&raw).map(Some).map_err(de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

/// A decimal written as a JSON number with exactly its digits, as
/// WebSocket v2 requests expect (`"order_qty": 1.25`); read back from a
/// string or a number.
pub mod number {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        deserialize_decimal(d)
    }

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        to_raw_number(*value).map_err(serde::ser::Error::custom)?.serialize(s)
    }
}

/// An optional decimal written as a JSON number; see [`number`].
pub mod number_opt {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        super::flex_opt::deserialize(d)
    }

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::number::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Row {
        #[serde(with = "flex")]
        a: Decimal,
        #[serde(default, with = "flex_opt", skip_serializing_if = "Option::is_none")]
        b: Option<Decimal>,
    }

    #[test]
    fn reads_strings_exactly_and_keeps_their_scale() {
        let r: Row = serde_json::from_str(r#"{"a":"0.10000000","b":"45283.5"}"#).unwrap();
        assert_eq!(r.a.to_string(), "0.10000000");
        assert_eq!(r.b, Some(dec!(45283.5)));
    }

    #[test]
    fn reads_numbers_without_float_noise() {
        // 0.1 + 0.2 style values and Kraken-like prices come back as written.
        for (json, want) in [
            ("0.1", dec!(0.1)),
            ("0.10025", dec!(0.10025)),
            ("26599.9", dec!(26599.9)),
            ("1098.3947558", dec!(1098.3947558)),
            ("4831.75496356", dec!(4831.75496356)),
            ("1e-8", dec!(0.00000001)),
            ("12", dec!(12)),
            ("-0.00017", dec!(-0.00017)),
        ] {
            let r: Row = serde_json::from_str(&format!(r#"{{"a":{json}}}"#)).unwrap();
            assert_eq!(r.a, want, "{json}");
            assert_eq!(r.b, None);
        }
    }

    #[test]
    fn numbers_beyond_a_float_are_read_digit_for_digit() {
        // 19 and 20 significant digits: a float would keep ~16 of them.
        let r: Row = serde_json::from_str(r#"{"a":1234567.123456789012,"b":0.10000000000000000555}"#).unwrap();
        assert_eq!(r.a, dec!(1234567.123456789012));
        assert_eq!(r.b, Some(dec!(0.10000000000000000555)));
        // A number keeps Kraken's scale, as a string does.
        let r: Row = serde_json::from_str(r#"{"a":0.10000000}"#).unwrap();
        assert_eq!(r.a.to_string(), "0.10000000");
    }

    #[test]
    fn ws_numbers_are_written_with_the_decimal_s_own_digits() {
        #[derive(Serialize)]
        struct Out {
            #[serde(with = "number")]
            q: Decimal,
            #[serde(with = "number_opt")]
            p: Option<Decimal>,
        }
        let text = serde_json::to_string(&Out { q: dec!(0.01000000), p: Some(dec!(1234567.123456789012)) }).unwrap();
        assert_eq!(text, r#"{"q":0.01000000,"p":1234567.123456789012}"#);
    }

    #[test]
    fn null_and_garbage() {
        let r: Row = serde_json::from_str(r#"{"a":1,"b":null}"#).unwrap();
        assert_eq!(r.b, None);
        assert!(serde_json::from_str::<Row>(r#"{"a":"abc"}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"a":true}"#).is_err());
    }

    #[test]
    fn writes_strings_for_rest_and_exact_numbers_for_ws() {
        let r = Row { a: dec!(37500.10), b: None };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"a":"37500.10"}"#);
        assert_eq!(to_exact_f64(dec!(1.25)).unwrap(), 1.25);
        assert_eq!(to_exact_f64(dec!(26500.4)).unwrap(), 26500.4);
        // 28 significant digits cannot survive a float.
        assert!(to_exact_f64(dec!(1.000000000000000000000000001)).is_err());
    }
}
