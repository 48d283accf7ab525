//! How many orders a second the journal takes with its real settings (WAL,
//! `synchronous = FULL`): each order is journaled as Lido does it, an insert
//! (the intent, fsynced), an update (the venue's acknowledgement) and a fill
//! with its update, each its own transaction; the venue's two are written
//! without waiting for the fsync (`Durability::Venue`).
//!
//! `cargo run --release -p lidod --example journal_bench [ORDERS] [full|normal] [DIR]`
//! (`synchronous` defaults to full; DIR to a fresh temporary directory,
//! removed afterwards: pass one on the disk you mean to run lidod on).

use std::time::Instant;

use chrono::Utc;
use lido_shared::model::{Fill, Order, OrderStatus, OrderType, Side, Symbol, TimeInForce};
use lidod::journal::{Durability, Journal, Synchronous};
use rust_decimal::Decimal;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let synchronous = match args.next().as_deref() {
        None | Some("full") => Synchronous::Full,
        Some("normal") => Synchronous::Normal,
        Some(other) => anyhow::bail!("synchronous must be full or normal, got {other:?}"),
    };
    let (dir, temporary) = match args.next() {
        Some(d) => (std::path::PathBuf::from(d), false),
        None => (std::env::temp_dir().join(format!("lido-journal-bench-{}", std::process::id())), true),
    };
    let journal = Journal::open_with(&dir, synchronous)?;
    let symbol = Symbol::parse("BTC/USD").map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    for i in 0..count {
        let now = Utc::now();
        let mut order = Order {
            order_id: format!("bench-{}-{i}", std::process::id()),
            client_order_id: format!("c-{i}"),
            customer: "bench".into(),
            market: "paper".into(),
            symbol: symbol.clone(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            quantity: Decimal::ONE,
            limit_price: Some(Decimal::from(65_000)),
            filled_quantity: Decimal::ZERO,
            average_price: None,
            status: OrderStatus::New,
            reason: None,
            broker: Some("paper-1".into()),
            venue_order_id: None,
            adopted: false,
            created_at: now,
            updated_at: now,
        };
        journal.insert_order(&order)?;
        order.transition(OrderStatus::Accepted, now)?;
        journal.update_order(&order, None, Durability::Venue)?;
        let fill = Fill {
            fill_id: format!("F-{i}"),
            order_id: order.order_id.clone(),
            symbol: symbol.clone(),
            side: Side::Buy,
            price: Decimal::from(65_000),
            quantity: Decimal::ONE,
            fee: Decimal::from(65),
            ts: now,
        };
        order.apply_fill(&fill)?;
        journal.update_order(&order, Some(&fill), Durability::Venue)?;
    }
    let elapsed = started.elapsed();
    println!(
        "synchronous={synchronous:?}: {count} orders (3 commits each) in {:.3} s: {:.0} orders/s, {:.2} ms per commit",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / (3 * count) as f64
    );
    drop(journal);
    if temporary {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
