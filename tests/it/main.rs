//! Integration tests: each starts real `lidod` processes on 127.0.0.1:0 and
//! drives them only through their public APIs (REST, WebSockets, signals).

mod advertise;
mod algo;
mod auth;
mod autoscale;
mod bad_input;
mod cluster;
mod cluster_orders;
mod conformance;
mod failover;
mod ha;
mod kraken_broker;
mod kraken_fake_rules;
mod kraken_limits;
mod kraken_recovery;
mod kraken_rest;
mod lidoctl_verbs;
mod nodescale;
mod observability;
mod operator;
mod paper_exchange;
mod recovery;
mod registry;
mod schwab_broker;
mod schwab_rest;
mod schwab_truth;
mod shutdown;
mod slow_consumer;
mod stream_orders;
mod supervision;
mod tls;
mod tokens;
mod trader;
mod trust;
mod tui_tmux;
