//! lido-tui end to end: the real binary in a detached tmux session (120x40)
//! against a real lidod; keys go in with `tmux send-keys`, the screen comes
//! back with `tmux capture-pane -p`.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lido_shared::api::PlaceOrder;
use lido_shared::model::{OrderType, Side, TimeInForce};
use lido_tests::TestDaemon;

fn lido_tui_path() -> PathBuf {
    lido_tests::ensure_built();
    lido_tests::bin_dir().join("lido-tui")
}

fn tmux(args: &[&str]) -> Output {
    match Command::new("tmux").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("tmux is not installed: the lido-tui end-to-end test needs it (Debian/Ubuntu: apt-get install tmux)")
        }
        Err(e) => panic!("cannot run tmux: {e}"),
    }
}

/// A detached tmux session, killed on drop (also when the test fails).
struct Session {
    name: String,
}

impl Session {
    fn start(command: &str) -> Self {
        let name = format!("lido-tui-e2e-{}-{}", std::process::id(), Instant::now().elapsed().as_nanos());
        let out = tmux(&["new-session", "-d", "-s", &name, "-x", "120", "-y", "40", command]);
        assert!(out.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&out.stderr));
        // Keep the pane after lido-tui exits, so a crash stays readable.
        tmux(&["set-option", "-t", &name, "remain-on-exit", "on"]);
        Self { name }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &self.name]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.name.as_str()];
        args.extend_from_slice(keys);
        let out = tmux(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls the screen until `ok` holds, or fails with the last screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether lido-tui has exited (the pane is dead).
    fn exited(&self) -> bool {
        let out = tmux(&["display-message", "-p", "-t", &self.name, "#{pane_dead}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.name]).output();
    }
}

#[test]
fn lido_tui_in_tmux_shows_the_cluster_and_follows_keys() {
    let tui = lido_tui_path();
    let daemon = TestDaemon::spawn(&[]);
    let command = format!("TERM=xterm-256color {} --url {}", tui.display(), daemon.url);
    let session = Session::start(&command);

    let screen = session.wait_for("connected with paper-1", |s| s.contains("connected") && s.contains("paper-1"));
    assert!(screen.contains(&daemon.url), "the IM is always named:\n{screen}");
    assert!(screen.contains("n1"), "{screen}");
    // The tree: node, then each manager with its services under it.
    for manager in ["▾ broker manager", "▾ market manager", "▾ trader manager"] {
        assert!(screen.contains(manager), "{manager} row:\n{screen}");
    }

    // j selects the broker manager, j again its broker: the broker's detail
    // pane with the rate sparklines.
    session.keys(&["j"]);
    session.wait_for("the broker manager's detail pane", |s| s.contains("┌ broker manager on "));
    session.keys(&["j"]);
    session.wait_for("paper-1's detail pane", |s| s.contains("┌ paper-1 ") && s.contains("messages/s"));
    session.wait_for("a messages/s figure", |s| s.contains("messages/s") && !s.contains("messages/s: no samples"));

    // ? shows the help, Escape closes it.
    session.keys(&["?"]);
    session.wait_for("the help", |s| s.contains("stop the selected service") && s.contains(":market"));
    session.keys(&["Escape"]);
    session.wait_for("the help to close", |s| !s.contains("stop the selected service"));

    // / filters the table.
    session.keys(&["/", "m", "a", "r", "k", "e", "t", "Enter"]);
    let screen = session.wait_for("the filter", |s| s.contains("[filter: market]"));
    // (The events pane below the table may still name paper-1.)
    let broker_row = |l: &&str| l.contains("  paper-1 ") && l.contains(" broker ");
    assert!(!screen.lines().any(|l| broker_row(&l)), "the broker row is filtered out:\n{screen}");
    assert!(!screen.contains("broker manager"), "and its manager, with no match under it:\n{screen}");
    assert!(screen.contains("market manager"), "the matching manager stays:\n{screen}");
    session.keys(&["Escape"]);
    session.wait_for("the filter to clear", |s| !s.contains("[filter:"));

    // The market view: pick the first market and symbol, see quotes and a book.
    session.keys(&["m"]);
    session.wait_for("the picker", |s| s.contains("Pick a market and symbol") && s.contains("BTC/USD"));
    session.keys(&["Enter"]);
    let screen =
        session.wait_for("live quotes and a book", |s| s.contains("● live") && s.contains("bid ") && s.contains("BID"));
    assert!(screen.contains("Order flow"), "{screen}");

    // An order placed through the algo API shows in the order flow.
    let order = PlaceOrder {
        market: "paper".into(),
        symbol: "BTC/USD".into(),
        side: Side::Buy,
        order_type: OrderType::Limit,
        quantity: "0.01".parse().unwrap(),
        limit_price: Some("1000".parse().unwrap()),
        time_in_force: TimeInForce::Gtc,
        client_order_id: Some("tui-e2e-1".into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(daemon.client().place_order(&order)).expect("place an order");
    session.wait_for("the order in the order flow", |s| s.contains("0.01") && s.contains("default"));

    // Back, then :q quits.
    session.keys(&["Escape"]);
    session.wait_for("the cluster screen", |s| s.contains("Nodes and services"));
    session.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !session.exited() {
        assert!(Instant::now() < deadline, "q did not quit; the screen:\n{}", session.screen());
        std::thread::sleep(Duration::from_millis(50));
    }
}
