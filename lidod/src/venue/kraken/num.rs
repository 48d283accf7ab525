//! Decimals on Kraken's wire.
//!
//! Kraken's REST API quotes every price and volume as a JSON string
//! (`"37500.0"`), while WebSocket v2 sends JSON numbers (`37500.0`) and
//! sometimes strings in the same message. Both are read here into
//! [`Decimal`] without arithmetic on a float: a string is parsed as
//! written, and a number is taken from `serde_json::Number`'s shortest
//! round-trip text, which is exactly the decimal Kraken wrote for every
//! value with up to 15 significant digits (all of Kraken's prices and
//! quantities). Trailing zeros of a JSON number are not kept (`0.10000000`
//! reads as `0.1`); code that needs Kraken's own formatting, such as the
//! book checksum, rescales with the pair's precision.
//!
//! Use with `#[serde(with = "num::flex")]` or `#[serde(with = "num::flex_opt")]`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

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

struct FlexVisitor;

impl Visitor<'_> for FlexVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal as a JSON string or number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_decimal(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        let n = serde_json::Number::from_f64(v).ok_or_else(|| E::custom(format!("{v} is not a finite number")))?;
        from_json_number(&n).map_err(E::custom)
    }
}

/// A required decimal that may be a JSON string or number; written back as
/// a string (Kraken's REST form).
pub mod flex {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(FlexVisitor)
    }

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }
}

/// An optional decimal that may be a JSON string or number (or absent, or
/// `null`); written back as a string.
pub mod flex_opt {
    use super::*;

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Decimal>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal as a JSON string or number, or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(FlexVisitor).map(Some)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        d.deserialize_option(OptVisitor)
    }

    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

/// A decimal written as a JSON number, as WebSocket v2 requests expect
/// (`"order_qty": 1.25`); read back from a string or a number.
pub mod number {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        d.deserialize_any(FlexVisitor)
    }

    pub fn serialize<S: Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(to_exact_f64(*value).map_err(serde::ser::Error::custom)?)
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
