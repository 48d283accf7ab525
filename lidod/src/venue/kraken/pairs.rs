//! Kraken's pairs, loaded from the public AssetPairs endpoint, mapped both
//! ways to Lido symbols.
//!
//! One Kraken pair has several names: the result key (`XXBTZUSD`), the
//! `altname` (`XBTUSD`), the WebSocket v1 `wsname` (`XBT/USD`), and on
//! WebSocket v2 the normalized `BTC/USD`. Kraken's legacy asset codes carry
//! an `X` (crypto) or `Z` (fiat) prefix (`XXBT`, `ZUSD`) and some have
//! aliases (`XBT` is Bitcoin, `XDG` is Dogecoin); Lido uses the common
//! codes (`BTC/USD`, `DOGE/USD`). [`PairMap`] resolves any of these names,
//! and each [`PairInfo`] carries what validates an order before it leaves:
//! tick size (`tick_size`, or `pair_decimals`), lot decimals, `ordermin`,
//! `costmin` and the pair's trading status.

use std::collections::{BTreeMap, HashMap};

use lido_shared::model::{AssetClass, Instrument, OrderType, Symbol};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::num;

/// Kraken asset codes whose common name differs (Kraken, Lido).
const ALIASES: &[(&str, &str)] = &[("XBT", "BTC"), ("XDG", "DOGE")];

/// Three-letter codes Kraken writes with a legacy `X`/`Z` prefix in REST
/// (`XXBT`, `XETH`, `ZUSD`, …).
const LEGACY_X: &[&str] = &["XBT", "ETH", "LTC", "XRP", "XLM", "XMR", "ZEC", "ETC", "REP", "MLN", "XDG", "NMC", "XTZ"];
const LEGACY_Z: &[&str] = &["USD", "EUR", "GBP", "CAD", "JPY", "AUD", "CHF"];

/// The Lido code for a Kraken asset code: legacy prefix dropped, aliases
/// applied (`XXBT` → `BTC`, `ZUSD` → `USD`, `XDG` → `DOGE`, `SOL` → `SOL`).
/// Suffixes such as `.F` (Kraken Earn) are kept.
pub fn lido_asset(kraken: &str) -> String {
    let (code, suffix) = match kraken.split_once('.') {
        Some((c, s)) => (c, Some(s)),
        None => (kraken, None),
    };
    let code = code.to_ascii_uppercase();
    let unprefixed = match code.len() {
        4 if code.starts_with('X') && LEGACY_X.contains(&&code[1..]) => &code[1..],
        4 if code.starts_with('Z') && LEGACY_Z.contains(&&code[1..]) => &code[1..],
        _ => code.as_str(),
    };
    let common = ALIASES.iter().find(|(k, _)| *k == unprefixed).map_or(unprefixed, |(_, l)| *l);
    match suffix {
        Some(s) => format!("{common}.{s}"),
        None => common.to_string(),
    }
}

/// The Kraken code for a Lido asset, as REST AddOrder `pair` names and
/// WebSocket v1 use it (`BTC` → `XBT`, `DOGE` → `XDG`).
pub fn kraken_asset(lido: &str) -> String {
    let upper = lido.to_ascii_uppercase();
    ALIASES.iter().find(|(_, l)| *l == upper).map_or(upper.clone(), |(k, _)| (*k).to_string())
}

/// One entry of the AssetPairs result, as Kraken sends it (only the fields
/// the broker uses; the rest is ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetPair {
    pub altname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wsname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aclass_base: Option<String>,
    pub base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aclass_quote: Option<String>,
    pub quote: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_decimals: Option<u32>,
    pub pair_decimals: u32,
    pub lot_decimals: u32,
    #[serde(default, with = "num::flex_opt", skip_serializing_if = "Option::is_none")]
    pub ordermin: Option<Decimal>,
    #[serde(default, with = "num::flex_opt", skip_serializing_if = "Option::is_none")]
    pub costmin: Option<Decimal>,
    #[serde(default, with = "num::flex_opt", skip_serializing_if = "Option::is_none")]
    pub tick_size: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A pair's trading status (AssetPairs `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairStatus {
    Online,
    CancelOnly,
    PostOnly,
    LimitOnly,
    ReduceOnly,
    Other(String),
}

impl PairStatus {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            None | Some("online") => Self::Online,
            Some("cancel_only") => Self::CancelOnly,
            Some("post_only") => Self::PostOnly,
            Some("limit_only") => Self::LimitOnly,
            Some("reduce_only") => Self::ReduceOnly,
            Some(other) => Self::Other(other.to_string()),
        }
    }
}

/// Everything about one pair, under all of its names.
#[derive(Debug, Clone, PartialEq)]
pub struct PairInfo {
    /// Lido's symbol, also the WebSocket v2 symbol (`BTC/USD`).
    pub symbol: Symbol,
    /// AssetPairs result key, used in REST result maps (`XXBTZUSD`).
    pub key: String,
    /// `XBTUSD`, accepted as `pair` by REST requests.
    pub altname: String,
    /// WebSocket v1 name (`XBT/USD`), when Kraken gives one.
    pub wsname: Option<String>,
    /// Kraken's asset codes (`XXBT`, `ZUSD`).
    pub kraken_base: String,
    pub kraken_quote: String,
    pub tick_size: Decimal,
    /// Decimals of a price (`pair_decimals`).
    pub price_decimals: u32,
    /// Decimals of a quantity (`lot_decimals`).
    pub lot_decimals: u32,
    pub cost_decimals: Option<u32>,
    /// Smallest order quantity (`ordermin`, else one lot).
    pub ordermin: Decimal,
    /// Smallest order value in the quote currency (`costmin`).
    pub costmin: Option<Decimal>,
    pub status: PairStatus,
}

impl PairInfo {
    /// Builds the info for one AssetPairs entry; `None` for pairs Lido does
    /// not trade (dark pools `.d`, non-currency classes, unparseable names)
    /// and for entries no real pair has: more decimals than a `Decimal`
    /// holds (28), a negative tick size or minimum.
    pub fn from_asset_pair(key: &str, pair: &AssetPair) -> Option<Self> {
        if pair.altname.ends_with(".d") || key.ends_with(".d") {
            return None;
        }
        const MAX_DECIMALS: u32 = 28;
        if pair.lot_decimals > MAX_DECIMALS || pair.pair_decimals > MAX_DECIMALS {
            return None;
        }
        let negative = |d: Option<Decimal>| d.is_some_and(|d| d.is_sign_negative() && !d.is_zero());
        if negative(pair.tick_size) || negative(pair.ordermin) || negative(pair.costmin) {
            return None;
        }
        let is_currency = |c: &Option<String>| !matches!(c.as_deref(), Some(class) if class != "currency");
        if !is_currency(&pair.aclass_base) || !is_currency(&pair.aclass_quote) {
            return None;
        }
        let (base, quote) = match pair.wsname.as_deref().and_then(|w| w.split_once('/')) {
            Some((b, q)) => (lido_asset(b), lido_asset(q)),
            None => (lido_asset(&pair.base), lido_asset(&pair.quote)),
        };
        let symbol = Symbol::parse(&format!("{base}/{quote}")).ok()?;
        let lot = Decimal::new(1, pair.lot_decimals);
        Some(Self {
            symbol,
            key: key.to_string(),
            altname: pair.altname.clone(),
            wsname: pair.wsname.clone(),
            kraken_base: pair.base.clone(),
            kraken_quote: pair.quote.clone(),
            tick_size: pair.tick_size.filter(|t| !t.is_zero()).unwrap_or_else(|| Decimal::new(1, pair.pair_decimals)),
            price_decimals: pair.pair_decimals,
            lot_decimals: pair.lot_decimals,
            cost_decimals: pair.cost_decimals,
            ordermin: pair.ordermin.filter(|m| !m.is_zero()).unwrap_or(lot),
            costmin: pair.costmin.filter(|m| !m.is_zero()),
            status: PairStatus::parse(pair.status.as_deref()),
        })
    }

    /// The WebSocket v2 symbol (`BTC/USD`).
    pub fn ws_symbol(&self) -> &str {
        self.symbol.as_str()
    }

    /// Smallest quantity increment: one unit of the last lot decimal.
    pub fn lot_size(&self) -> Decimal {
        Decimal::new(1, self.lot_decimals)
    }

    /// The Lido instrument.
    pub fn instrument(&self) -> Instrument {
        let (base, quote) = self.symbol.as_str().split_once('/').unwrap_or((self.symbol.as_str(), "USD"));
        Instrument {
            symbol: self.symbol.clone(),
            asset_class: AssetClass::Crypto,
            base: base.to_string(),
            quote: quote.to_string(),
            tick_size: self.tick_size,
            lot_size: self.lot_size(),
            min_quantity: self.ordermin,
        }
    }

    /// Why Kraken would refuse this order, checked before it leaves:
    /// trading status, `ordermin`, lot decimals, tick size and `costmin`.
    /// `price` is the limit price (or a reference price for market orders,
    /// to check `costmin`; `None` skips that check).
    pub fn check_order(&self, order_type: OrderType, quantity: Decimal, price: Option<Decimal>) -> Result<(), String> {
        match &self.status {
            PairStatus::Online | PairStatus::ReduceOnly => {}
            PairStatus::PostOnly | PairStatus::LimitOnly if order_type == OrderType::Limit => {}
            PairStatus::PostOnly | PairStatus::LimitOnly => {
                return Err(format!("{} accepts only limit orders now", self.symbol));
            }
            PairStatus::CancelOnly => return Err(format!("{} is in cancel-only mode", self.symbol)),
            PairStatus::Other(s) => return Err(format!("{} is not trading (status {s})", self.symbol)),
        }
        let instrument = self.instrument();
        instrument.check_quantity(quantity)?;
        if let (OrderType::Limit, Some(p)) = (order_type, price) {
            instrument.check_price(p)?;
        }
        if order_type == OrderType::Limit && price.is_none() {
            return Err("a limit order needs a limit price".to_string());
        }
        if let (Some(min), Some(p)) = (self.costmin, price) {
            // A product too large for a Decimal is far above any minimum.
            let cost = p.checked_mul(quantity).unwrap_or(Decimal::MAX);
            if cost < min {
                return Err(format!(
                    "order value {cost} is below the minimum {min} {} for {}",
                    self.quote(),
                    self.symbol
                ));
            }
        }
        Ok(())
    }

    fn quote(&self) -> &str {
        self.symbol.quote().unwrap_or("")
    }

    /// `quantity` as it goes on the wire: no more decimals than the pair's
    /// `lot_decimals` (trailing zeros dropped; Kraken refuses a volume with
    /// more decimals than the pair takes, whatever their value). Refused,
    /// never rounded, when it is not a whole number of lots: the trader
    /// chose the size.
    pub fn wire_quantity(&self, quantity: Decimal) -> Result<Decimal, String> {
        let q = quantity.normalize();
        if q.scale() > self.lot_decimals {
            return Err(format!(
                "quantity {quantity} has more than the {} decimals kraken takes for {}",
                self.lot_decimals, self.symbol
            ));
        }
        Ok(q)
    }

    /// `price` as it goes on the wire: on the pair's tick and with no more
    /// than `pair_decimals` decimals (trailing zeros dropped). A price off
    /// the tick is refused with the nearest ticks named, never moved: a
    /// limit price rounded for the trader could trade where the trader did
    /// not ask.
    pub fn wire_price(&self, price: Decimal) -> Result<Decimal, String> {
        let p = price.normalize();
        let tick = self.tick_size;
        let on_tick = tick <= Decimal::ZERO || matches!(p.checked_rem(tick), Some(r) if r.is_zero());
        if !on_tick {
            let below = (p / tick).floor() * tick;
            return Err(format!(
                "price {price} is not on the tick {tick} for {}: use {} or {}",
                self.symbol,
                below.normalize(),
                (below + tick).normalize()
            ));
        }
        if p.scale() > self.price_decimals {
            return Err(format!(
                "price {price} has more than the {} decimals kraken takes for {}",
                self.price_decimals, self.symbol
            ));
        }
        Ok(p)
    }
}

/// All tradable pairs, by every name.
#[derive(Debug, Clone, Default)]
pub struct PairMap {
    pairs: Vec<PairInfo>,
    by_symbol: HashMap<Symbol, usize>,
    by_name: HashMap<String, usize>,
}

impl PairMap {
    /// Builds the map from the AssetPairs `result` object. Pairs Lido does
    /// not trade are left out; when two pairs map to one Lido symbol the
    /// first key in Kraken's order wins (the map is keyed in sorted order).
    pub fn from_asset_pairs(result: &BTreeMap<String, AssetPair>) -> Self {
        let mut map = Self::default();
        for (key, pair) in result {
            let Some(info) = PairInfo::from_asset_pair(key, pair) else { continue };
            if map.by_symbol.contains_key(&info.symbol) {
                continue;
            }
            let i = map.pairs.len();
            map.by_symbol.insert(info.symbol.clone(), i);
            let mut names = vec![info.key.clone(), info.altname.clone(), info.symbol.to_string()];
            names.extend(info.wsname.clone());
            for name in names {
                map.by_name.entry(name.to_ascii_uppercase()).or_insert(i);
            }
            map.pairs.push(info);
        }
        map
    }

    /// Parses an AssetPairs REST body (envelope included).
    pub fn from_body(body: &str) -> Result<Self, super::envelope::KrakenError> {
        let result: BTreeMap<String, AssetPair> = super::envelope::decode(body)?;
        Ok(Self::from_asset_pairs(&result))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PairInfo> {
        self.pairs.iter()
    }

    /// The pair for a Lido symbol.
    pub fn by_symbol(&self, symbol: &Symbol) -> Option<&PairInfo> {
        self.by_symbol.get(symbol).map(|&i| &self.pairs[i])
    }

    /// The pair for any Kraken or Lido name: result key (`XXBTZUSD`),
    /// altname (`XBTUSD`), wsname (`XBT/USD`), WebSocket v2 or Lido symbol
    /// (`BTC/USD`), with aliases (`XDG/USD` or `DOGE/USD`), any case.
    pub fn resolve(&self, name: &str) -> Option<&PairInfo> {
        let upper = name.trim().to_ascii_uppercase();
        if let Some(&i) = self.by_name.get(&upper) {
            return Some(&self.pairs[i]);
        }
        let (b, q) = upper.split_once('/')?;
        let symbol = Symbol::parse(&format!("{}/{}", lido_asset(b), lido_asset(q))).ok()?;
        self.by_symbol(&symbol)
    }

    /// The Lido instruments, in symbol order.
    pub fn instruments(&self) -> Vec<Instrument> {
        let mut all: Vec<Instrument> = self.pairs.iter().map(PairInfo::instrument).collect();
        all.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        all
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    /// Shaped as Kraken's own AssetPairs example (krakenfx api-specs and
    /// docs.kraken.com "Get Tradable Asset Pairs"), fee tables shortened,
    /// plus pairs that exercise aliases, missing `tick_size` and exclusions.
    const ASSET_PAIRS: &str = r#"{"error":[],"result":{
      "XETHXXBT":{"altname":"ETHXBT","wsname":"ETH/XBT","aclass_base":"currency","base":"XETH","aclass_quote":"currency","quote":"XXBT","lot":"unit","cost_decimals":6,"pair_decimals":5,"lot_decimals":8,"lot_multiplier":1,"leverage_buy":[2,3,4,5],"leverage_sell":[2,3,4,5],"fees":[[0,0.26],[50000,0.24]],"fees_maker":[[0,0.16],[50000,0.14]],"fee_volume_currency":"ZUSD","margin_call":80,"margin_stop":40,"ordermin":"0.01","costmin":"0.00002","tick_size":"0.00001","status":"online","long_position_limit":1100,"short_position_limit":400},
      "XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","aclass_base":"currency","base":"XXBT","aclass_quote":"currency","quote":"ZUSD","lot":"unit","cost_decimals":5,"pair_decimals":1,"lot_decimals":8,"lot_multiplier":1,"leverage_buy":[2,3,4,5],"leverage_sell":[2,3,4,5],"fees":[[0,0.26],[50000,0.24]],"fees_maker":[[0,0.16],[50000,0.14]],"fee_volume_currency":"ZUSD","margin_call":80,"margin_stop":40,"ordermin":"0.0001","costmin":"0.5","tick_size":"0.1","status":"online","long_position_limit":250,"short_position_limit":200},
      "XETHZUSD":{"altname":"ETHUSD","wsname":"ETH/USD","aclass_base":"currency","base":"XETH","aclass_quote":"currency","quote":"ZUSD","lot":"unit","cost_decimals":5,"pair_decimals":2,"lot_decimals":8,"lot_multiplier":1,"fee_volume_currency":"ZUSD","ordermin":"0.002","costmin":"0.5","tick_size":"0.01","status":"online"},
      "XDGUSD":{"altname":"XDGUSD","wsname":"XDG/USD","aclass_base":"currency","base":"XXDG","aclass_quote":"currency","quote":"ZUSD","lot":"unit","pair_decimals":7,"lot_decimals":8,"lot_multiplier":1,"ordermin":"40","status":"cancel_only"},
      "SOLUSD":{"altname":"SOLUSD","wsname":"SOL/USD","aclass_base":"currency","base":"SOL","aclass_quote":"currency","quote":"ZUSD","lot":"unit","cost_decimals":5,"pair_decimals":2,"lot_decimals":8,"lot_multiplier":1,"ordermin":"0.02","costmin":"0.5","status":"online"},
      "XXBTZUSD.d":{"altname":"XBTUSD.d","wsname":"XBT/USD.d","aclass_base":"currency","base":"XXBT","aclass_quote":"currency","quote":"ZUSD","pair_decimals":1,"lot_decimals":8,"ordermin":"0.0001"},
      "AAPLxUSD":{"altname":"AAPLxUSD","wsname":"AAPLx/USD","aclass_base":"tokenized_asset","base":"AAPLx","aclass_quote":"currency","quote":"ZUSD","pair_decimals":2,"lot_decimals":8,"ordermin":"0.01"}
    }}"#;

    fn map() -> PairMap {
        PairMap::from_body(ASSET_PAIRS).unwrap()
    }

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    /// Found by the `kraken_rest` fuzz target: 40 lot decimals used to
    /// panic building the lot size.
    #[test]
    fn impossible_entries_are_left_out_not_panicked_on() {
        let body = r#"{"error":[],"result":{
          "A":{"altname":"AUSD","wsname":"A/USD","base":"A","quote":"ZUSD","pair_decimals":1,"lot_decimals":40},
          "B":{"altname":"BUSD","wsname":"B/USD","base":"B","quote":"ZUSD","pair_decimals":99,"lot_decimals":8},
          "C":{"altname":"CUSD","wsname":"C/USD","base":"C","quote":"ZUSD","pair_decimals":1,"lot_decimals":8,"tick_size":"-0.1"},
          "D":{"altname":"DUSD","wsname":"D/USD","base":"D","quote":"ZUSD","pair_decimals":1,"lot_decimals":8,"costmin":"1"}
        }}"#;
        let map = PairMap::from_body(body).unwrap();
        assert_eq!(map.iter().map(|p| p.symbol.to_string()).collect::<Vec<_>>(), ["D/USD"]);
        let d = map.by_symbol(&sym("D/USD")).unwrap();
        // Whole increments, and a cost too large for a Decimal: no overflow panic.
        assert_eq!(d.check_order(OrderType::Limit, Decimal::MAX, Some(Decimal::MAX)), Ok(()));
    }

    #[test]
    fn asset_codes_both_ways() {
        for (k, l) in [("XXBT", "BTC"), ("XBT", "BTC"), ("ZUSD", "USD"), ("XETH", "ETH"), ("XXDG", "DOGE")] {
            assert_eq!(lido_asset(k), l, "{k}");
        }
        for (k, l) in [("XDG", "DOGE"), ("SOL", "SOL"), ("USDT", "USDT"), ("XTZ", "XTZ"), ("ZEUS", "ZEUS")] {
            assert_eq!(lido_asset(k), l, "{k}");
        }
        assert_eq!(lido_asset("XETH.F"), "ETH.F");
        assert_eq!(kraken_asset("BTC"), "XBT");
        assert_eq!(kraken_asset("doge"), "XDG");
        assert_eq!(kraken_asset("ETH"), "ETH");
    }

    #[test]
    fn maps_every_name_to_the_lido_symbol_and_back() {
        let m = map();
        assert_eq!(m.len(), 5, "dark pool and tokenized pairs are left out");
        let btc = m.by_symbol(&sym("BTC/USD")).unwrap();
        assert_eq!((btc.key.as_str(), btc.altname.as_str()), ("XXBTZUSD", "XBTUSD"));
        assert_eq!(btc.wsname.as_deref(), Some("XBT/USD"));
        assert_eq!(btc.ws_symbol(), "BTC/USD");
        for name in ["XXBTZUSD", "XBTUSD", "XBT/USD", "BTC/USD", "btc/usd", "xbtusd"] {
            assert_eq!(m.resolve(name).map(|p| p.symbol.as_str()), Some("BTC/USD"), "{name}");
        }
        assert_eq!(m.resolve("ETH/XBT").unwrap().symbol, sym("ETH/BTC"));
        assert_eq!(m.resolve("XETHXXBT").unwrap().symbol, sym("ETH/BTC"));
        assert_eq!(m.resolve("ETHUSD").unwrap().key, "XETHZUSD");
        assert_eq!(m.resolve("DOGE/USD").unwrap().key, "XDGUSD");
        assert_eq!(m.resolve("XDG/USD").unwrap().symbol, sym("DOGE/USD"));
        assert!(m.resolve("XBTUSD.d").is_none());
        assert!(m.resolve("LTC/USD").is_none());
        assert!(m.resolve("nonsense").is_none());
    }

    #[test]
    fn instruments_carry_tick_lot_and_minimum() {
        let m = map();
        let btc = m.by_symbol(&sym("BTC/USD")).unwrap().instrument();
        assert_eq!((btc.base.as_str(), btc.quote.as_str()), ("BTC", "USD"));
        assert_eq!(btc.asset_class, AssetClass::Crypto);
        assert_eq!((btc.tick_size, btc.lot_size, btc.min_quantity), (dec!(0.1), dec!(0.00000001), dec!(0.0001)));
        // No tick_size: one unit of pair_decimals.
        let sol = m.by_symbol(&sym("SOL/USD")).unwrap();
        assert_eq!(sol.tick_size, dec!(0.01));
        let eth_btc = m.by_symbol(&sym("ETH/BTC")).unwrap();
        assert_eq!(
            (eth_btc.tick_size, eth_btc.price_decimals, eth_btc.costmin),
            (dec!(0.00001), 5, Some(dec!(0.00002)))
        );
        let symbols: Vec<String> = m.instruments().iter().map(|i| i.symbol.to_string()).collect();
        assert_eq!(symbols, ["BTC/USD", "DOGE/USD", "ETH/BTC", "ETH/USD", "SOL/USD"]);
    }

    #[test]
    fn checks_orders_before_they_leave() {
        let m = map();
        let btc = m.by_symbol(&sym("BTC/USD")).unwrap();
        assert_eq!(btc.check_order(OrderType::Limit, dec!(0.01), Some(dec!(50000.1))), Ok(()));
        assert_eq!(btc.check_order(OrderType::Market, dec!(0.01), None), Ok(()));
        assert!(btc.check_order(OrderType::Limit, dec!(0.00005), Some(dec!(50000))).unwrap_err().contains("minimum"));
        assert!(btc.check_order(OrderType::Limit, dec!(0.000100001), Some(dec!(50000))).unwrap_err().contains("lot"));
        assert!(btc.check_order(OrderType::Limit, dec!(0.01), Some(dec!(50000.05))).unwrap_err().contains("tick"));
        assert!(btc.check_order(OrderType::Limit, dec!(0.01), None).unwrap_err().contains("limit price"));
        // 0.0001 BTC at 1000 USD is 0.1 USD, under costmin 0.5.
        assert!(btc.check_order(OrderType::Limit, dec!(0.0001), Some(dec!(1000))).unwrap_err().contains("value"));
        let doge = m.by_symbol(&sym("DOGE/USD")).unwrap();
        assert_eq!(doge.status, PairStatus::CancelOnly);
        assert!(doge.check_order(OrderType::Limit, dec!(100), Some(dec!(0.1))).unwrap_err().contains("cancel-only"));
    }

    #[test]
    fn an_error_envelope_is_an_error() {
        let err = PairMap::from_body(r#"{"error":["EQuery:Unknown asset pair"]}"#).unwrap_err();
        assert_eq!(err.reason(), "EQuery:Unknown asset pair");
    }
}
