//! lidoctl as a process against a real lidod: every verb, in every output
//! format it has, with its exit codes; JSON parsed into the shared types and
//! YAML checked to carry the same fields.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lido_shared::cluster::{
    ClusterEvent, ClusterSnapshot, NodeInfo, RunMode, ServiceDetail, ServiceInfo, ServiceKind, ServiceState,
    SessionInfo, SpawnRequest, WatchMessage,
};
use lido_tests::{eventually, lidoctl_path, TestDaemon};

/// lidoctl with a clean environment: no LIDO_* variables, no config file.
fn bare() -> Command {
    let mut cmd = Command::new(lidoctl_path());
    cmd.env("NO_COLOR", "1")
        .env("LIDO_CONFIG", "/nonexistent/lidoctl-test/config.toml")
        .env_remove("LIDO_URL")
        .env_remove("LIDO_TOKEN")
        .env_remove("LIDO_CONTEXT")
        .stdin(Stdio::null());
    cmd
}

/// lidoctl pointed at `d`.
fn ctl(d: &TestDaemon) -> Command {
    let mut cmd = bare();
    cmd.args(["--url", &d.url]);
    cmd
}

fn run(d: &TestDaemon, args: &[&str]) -> Output {
    ctl(d).args(args).output().expect("run lidoctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and asserts the exit code; returns stdout.
fn expect_code(d: &TestDaemon, args: &[&str], code: i32) -> String {
    let out = run(d, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "lidoctl {args:?}: expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ok(d: &TestDaemon, args: &[&str]) -> String {
    expect_code(d, args, 0)
}

/// `-o json` as a JSON value.
fn json_value(d: &TestDaemon, args: &[&str]) -> serde_json::Value {
    let out = ok(d, &[&["-o", "json"], args].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("lidoctl {args:?} -o json: {e}\n{out}"))
}

/// `-o json` parsed into the type the binding asks for.
macro_rules! json {
    ($d:expr, $args:expr) => {{
        let args: &[&str] = $args;
        let value = json_value($d, args);
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("lidoctl {args:?} -o json is not the documented type: {e}\n{value:#}"))
    }};
}

/// `-o yaml`, checked to have the same field names as the JSON `like`.
fn yaml_like(d: &TestDaemon, args: &[&str], like: &serde_json::Value) -> String {
    let out = ok(d, &[&["-o", "yaml"], args].concat());
    assert!(!out.trim_start().starts_with(['{', '[']) || out.trim() == "[]", "not YAML:\n{out}");
    assert_eq!(yaml_keys(&out), json_keys(like), "lidoctl {args:?} -o yaml has other fields than JSON:\n{out}");
    out
}

/// Every object key in a JSON value, at any depth.
fn json_keys(v: &serde_json::Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    keys.insert(k.clone());
                    stack.push(v);
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    keys
}

/// Every `key:` of a block-style YAML document (what serde-saphyr writes).
fn yaml_keys(yaml: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in yaml.lines() {
        let mut l = line.trim_start();
        while let Some(rest) = l.strip_prefix("- ") {
            l = rest.trim_start();
        }
        let key = match l.find(": ") {
            Some(i) => &l[..i],
            None => match l.strip_suffix(':') {
                Some(k) => k,
                None => continue,
            },
        };
        keys.insert(key.trim_matches(['\'', '"']).to_string());
    }
    keys
}

async fn wait_running(d: &TestDaemon, name: &str) -> ServiceInfo {
    let c = d.client();
    eventually(Duration::from_secs(15), &format!("{name} running"), || async {
        let s = c.cluster().await.ok()?;
        s.service(name).filter(|s| s.state == ServiceState::Running).cloned()
    })
    .await
}

/// The default daemon, settled: paper-1 running with metrics, so two
/// invocations (JSON, then YAML) see the same fields.
async fn settled() -> TestDaemon {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    wait_running(&d, "paper-1").await;
    eventually(Duration::from_secs(15), "paper-1 metrics", || async {
        let s = c.cluster().await.ok()?;
        (s.service("paper-1")?.metrics.contains_key("messages_per_s")
            && s.service("paper").is_some_and(|m| m.state == ServiceState::Running))
        .then_some(())
    })
    .await;
    d
}

/// A line of a table whose first column is `first`.
fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{table}"))
}

#[tokio::test]
async fn lidoctl_status_in_every_format() {
    let d = settled().await;
    let table = ok(&d, &["status"]);
    assert!(table.starts_with("1 node, 2 services"), "{table}");
    assert!(row(&table, "paper-1").contains("running"), "{table}");
    assert!(row(&table, "n1").contains("local"), "{table}");
    assert!(!table.contains('\u{1b}'), "no colour when piped:\n{table}");
    let wide = ok(&d, &["status", "-o", "wide"]);
    assert!(wide.contains("WS_URL") && wide.contains("API_URL") && wide.contains("broker:running"), "{wide}");

    let snapshot: ClusterSnapshot = json!(&d, &["status"]);
    assert_eq!(snapshot.nodes.len(), 1);
    assert_eq!(snapshot.nodes[0].id, "n1");
    assert!(snapshot.service("paper-1").is_some_and(|s| s.kind == ServiceKind::Broker));
    assert!(snapshot.service("paper").is_some_and(|s| s.kind == ServiceKind::Market));
    let yaml = yaml_like(&d, &["status"], &serde_json::to_value(&snapshot).unwrap());
    assert!(yaml.contains("name: paper-1"), "{yaml}");
}

#[tokio::test]
async fn lidoctl_get_every_noun_in_every_format() {
    let d = settled().await;
    // Nodes.
    let table = ok(&d, &["get", "nodes"]);
    assert!(table.starts_with("ID") && row(&table, "n1").contains("no"), "{table}");
    assert!(ok(&d, &["get", "no", "-o", "wide"]).contains("API_URL"));
    let nodes: Vec<NodeInfo> = json!(&d, &["get", "nodes"]);
    assert_eq!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["n1"]);
    let one: NodeInfo = json!(&d, &["get", "node", "n1"]);
    assert_eq!(one.id, "n1");
    yaml_like(&d, &["get", "node", "n1"], &serde_json::to_value(&one).unwrap());
    expect_code(&d, &["get", "node", "ghost"], 3);

    // Services, all and by kind.
    for (noun, kind, name) in [
        ("services", None, "paper-1"),
        ("brokers", Some(ServiceKind::Broker), "paper-1"),
        ("markets", Some(ServiceKind::Market), "paper"),
    ] {
        let table = ok(&d, &["get", noun]);
        assert!(table.starts_with("NAME") && row(&table, name).contains("running"), "get {noun}:\n{table}");
        assert!(ok(&d, &["get", noun, "-o", "wide"]).contains("DETAIL"), "get {noun} -o wide");
        let services: Vec<ServiceInfo> = json!(&d, &["get", noun]);
        assert!(services.iter().any(|s| s.name == name), "get {noun}: {services:?}");
        assert!(services.iter().all(|s| !matches!(kind, Some(k) if s.kind != k)), "get {noun}: {services:?}");
        let one: ServiceInfo = json!(&d, &["get", noun, name]);
        assert_eq!(one.name, name);
        let yaml = yaml_like(&d, &["get", noun, name], &serde_json::to_value(&one).unwrap());
        assert!(yaml.contains(&format!("name: {name}")), "{yaml}");
    }
    expect_code(&d, &["get", "market", "paper-1"], 3);

    // No traders: an empty list, and a note on stderr for people.
    let out = run(&d, &["get", "traders"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).is_empty() && text(&out.stderr).contains("no traders"), "{out:?}");
    let traders: Vec<ServiceInfo> = json!(&d, &["get", "traders"]);
    assert!(traders.is_empty());
    assert_eq!(ok(&d, &["-o", "yaml", "get", "traders"]).trim(), "[]");

    // Sessions.
    let c = d.client();
    let session = c.open_session("acme").await.unwrap();
    let table = ok(&d, &["get", "sessions"]);
    assert!(table.starts_with("ID") && table.contains("CUSTOMER") && table.contains("AGE"), "{table}");
    let id: String = session.session_id.chars().take(6).collect();
    let line = table.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("session in:\n{table}"));
    assert!(line.contains("acme") && line.contains("n1"), "{line}");
    assert!(!table.contains(&session.session_id), "the token is never shown whole");
    assert!(ok(&d, &["get", "sessions", "-o", "wide"]).contains("CREATED"));
    let sessions: Vec<SessionInfo> = json!(&d, &["get", "sessions"]);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].customer, "acme");
    assert!(session.session_id.starts_with(&sessions[0].id));
    let one: SessionInfo = json!(&d, &["get", "session", &sessions[0].id]);
    assert_eq!(one, sessions[0]);
    let yaml = yaml_like(&d, &["get", "sess"], &serde_json::to_value(&sessions).unwrap());
    assert!(yaml.contains("customer: acme"), "{yaml}");
    expect_code(&d, &["get", "sessions", "nope"], 3);
}

#[tokio::test]
async fn lidoctl_describe_in_every_format() {
    let d = settled().await;
    for args in [&["describe", "broker", "paper-1"][..], &["describe", "svc", "paper-1", "-o", "wide"][..]] {
        let out = ok(&d, args);
        for want in
            ["Name:", "paper-1", "Kind:", "broker", "State:", "running", "Metrics:", "messages_per_s", "Events:"]
        {
            assert!(out.contains(want), "{args:?} lacks {want:?}:\n{out}");
        }
        assert!(row(&out, "SEQ").contains("EVENT"), "an events table:\n{out}");
    }
    let detail: ServiceDetail = json!(&d, &["describe", "broker", "paper-1"]);
    assert_eq!(detail.service.name, "paper-1");
    assert!(!detail.events.is_empty());
    assert!(detail.events.windows(2).all(|w| w[0].seq < w[1].seq), "newest last: {:?}", detail.events);
    assert!(detail.events.iter().any(
        |e| matches!(&e.event, ClusterEvent::ServiceChanged { service } if service.state == ServiceState::Running)
    ));
    let yaml = ok(&d, &["-o", "yaml", "describe", "service", "paper-1"]);
    assert!(yaml.contains("service:") && yaml.contains("events:") && yaml.contains("event: service_changed"), "{yaml}");
    let market: ServiceDetail = json!(&d, &["describe", "market", "paper"]);
    assert_eq!(market.service.kind, ServiceKind::Market);

    // A kind that does not match, or a name that does not exist: not found.
    let out = run(&d, &["describe", "market", "paper-1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("describe broker paper-1"), "{}", text(&out.stderr));
    expect_code(&d, &["describe", "service", "ghost"], 3);
    expect_code(&d, &["describe", "widget", "x"], 2);

    // A node, from the snapshot, with its services' events.
    let out = ok(&d, &["describe", "node", "n1"]);
    for want in ["ID:", "n1", "Location:", "Draining:", "Load:", "Managers:", "Services:", "paper-1", "Events:"] {
        assert!(out.contains(want), "describe node lacks {want:?}:\n{out}");
    }
    let node: NodeInfo = json!(&d, &["describe", "node", "n1"]);
    assert_eq!(node.id, "n1");
    let yaml = ok(&d, &["-o", "yaml", "describe", "no", "n1"]);
    assert!(yaml.contains("id: n1") && yaml.contains("managers:"), "{yaml}");
    expect_code(&d, &["describe", "node", "ghost"], 3);
}

#[tokio::test]
async fn lidoctl_spawn_restart_stop_in_every_format() {
    let d = settled().await;
    let out = ok(&d, &["spawn", "broker", "paper", "--name", "p2"]);
    assert!(out.starts_with("spawned p2 (broker paper) on node n1"), "{out}");
    let p3: ServiceInfo =
        json!(&d, &["spawn", "broker", "paper", "--name", "p3", "--set", "mode=task", "--set", "seed=3"]);
    assert_eq!((p3.name.as_str(), p3.kind, p3.mode), ("p3", ServiceKind::Broker, RunMode::Task));
    assert_eq!(p3.options.get("seed").map(String::as_str), Some("3"));
    let yaml = ok(&d, &["-o", "yaml", "spawn", "market", "m1", "--set", "brokers=p2"]);
    assert!(yaml.contains("name: m1") && yaml.contains("kind: market") && yaml.contains("brokers: p2"), "{yaml}");
    let wide = ok(&d, &["-o", "wide", "spawn", "broker", "paper", "--name", "p4"]);
    assert!(wide.contains("spawned p4"), "{wide}");
    // A taken name is refused.
    expect_code(&d, &["spawn", "broker", "paper", "--name", "p2"], 5);
    for name in ["p2", "p3", "p4"] {
        wait_running(&d, name).await;
    }

    let out = ok(&d, &["restart", "p2"]);
    assert!(out.starts_with("restarted p2 (broker paper)"), "{out}");
    let restarted: ServiceInfo = json!(&d, &["restart", "p3"]);
    assert_eq!(restarted.name, "p3");
    assert!(ok(&d, &["-o", "yaml", "restart", "p4"]).contains("name: p4"));
    expect_code(&d, &["restart", "ghost"], 3);

    // Destructive: refused without --yes when stdin is not a terminal.
    expect_code(&d, &["stop", "m1"], 2);
    assert!(d.client().cluster().await.unwrap().service("m1").is_some(), "nothing was stopped");
    let out = ok(&d, &["stop", "m1", "--yes"]);
    assert!(out.starts_with("stopped m1 (market)"), "{out}");
    let stopped: ServiceInfo = json!(&d, &["stop", "p3", "--yes"]);
    assert_eq!(stopped.state, ServiceState::Stopped);
    assert!(ok(&d, &["-o", "yaml", "stop", "p2", "-y"]).contains("state: stopped"));
    assert!(ok(&d, &["-o", "wide", "stop", "p4", "-y"]).contains("stopped p4"));
    expect_code(&d, &["stop", "p2", "--yes"], 3);
    let snapshot = d.client().cluster().await.unwrap();
    for gone in ["m1", "p2", "p3", "p4"] {
        assert!(snapshot.service(gone).is_none(), "{gone} still there");
    }
}

#[tokio::test]
async fn lidoctl_drain_and_undrain_in_every_format() {
    let d = settled().await;
    expect_code(&d, &["drain", "node", "n1"], 2);
    assert!(!d.client().cluster().await.unwrap().nodes[0].draining, "not drained without --yes");
    let out = ok(&d, &["drain", "node", "n1", "--yes"]);
    assert!(out.starts_with("node n1 is draining"), "{out}");
    // Draining: no new spawns.
    let out = run(&d, &["spawn", "broker", "paper", "--name", "late"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("node_draining"), "{}", text(&out.stderr));
    let out = ok(&d, &["undrain", "node", "n1"]);
    assert!(out.starts_with("node n1 is no longer draining"), "{out}");

    let node: NodeInfo = json!(&d, &["drain", "n1", "-y"]);
    assert!(node.draining);
    let node: NodeInfo = json!(&d, &["undrain", "n1"]);
    assert!(!node.draining);
    assert!(ok(&d, &["-o", "yaml", "drain", "n1", "--yes"]).contains("draining: true"));
    assert!(ok(&d, &["-o", "yaml", "undrain", "n1"]).contains("draining: false"));
    assert!(ok(&d, &["-o", "wide", "drain", "n1", "--yes"]).contains("draining"));
    assert!(ok(&d, &["-o", "wide", "undrain", "n1"]).contains("no longer draining"));
    expect_code(&d, &["drain", "ghost", "--yes"], 3);
    expect_code(&d, &["undrain", "node", "ghost"], 3);
    expect_code(&d, &["drain", "nod", "n1", "--yes"], 2);
}

/// A `lidoctl watch` (or `logs -f`) child: its stdout lines as they come;
/// killed when dropped.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Streaming {
    fn start(d: &TestDaemon, args: &[&str]) -> Self {
        let mut child = ctl(d).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start lidoctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits for a line matching `f`; panics after `within`.
    async fn wait_for(&mut self, within: Duration, what: &str, f: impl Fn(&str) -> bool) -> String {
        match self.try_wait_for(within, what, f).await {
            Some(line) => line,
            None => panic!("timed out waiting for {what}; output:\n{}", self.seen.join("\n")),
        }
    }

    /// Waits for a line matching `f`, or `None` after `within`.
    async fn try_wait_for(&mut self, within: Duration, what: &str, f: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line.clone());
                if f(&line) {
                    return Some(line);
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lidoctl exited with {status} before {what}; output:\n{}", self.seen.join("\n"));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every line seen so far (after a short drain of what is in flight).
    async fn all(&mut self) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch_message(line: &str) -> WatchMessage {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a WatchMessage: {e}: {line}"))
}

#[tokio::test]
async fn lidoctl_watch_prints_json_lines_and_hides_metrics() {
    let d = settled().await;
    let mut watch = Streaming::start(&d, &["watch", "-o", "json"]);
    let first = watch.wait_for(Duration::from_secs(10), "the snapshot", |_| true).await;
    assert!(matches!(watch_message(&first), WatchMessage::Snapshot { .. }), "snapshot first: {first}");
    let spawned = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("w1".into()),
        ..Default::default()
    };
    d.client().spawn(&spawned).await.unwrap();
    watch
        .wait_for(Duration::from_secs(15), "w1 running", |l| {
            matches!(watch_message(l), WatchMessage::Event { event: ClusterEvent::ServiceChanged { service }, .. }
                if service.name == "w1" && service.state == ServiceState::Running)
        })
        .await;
    // Metrics come every second: after 2.5s there would have been some.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let lines = watch.all().await;
    let mut last_seq = None;
    for line in &lines {
        match watch_message(line) {
            WatchMessage::Event { seq, event, .. } => {
                assert!(!matches!(event, ClusterEvent::Metrics { .. }), "metrics without --metrics: {line}");
                assert!(!matches!(last_seq, Some(last) if seq <= last), "numbered in order: {line}");
                last_seq = Some(seq);
            }
            WatchMessage::Snapshot { seq, .. } => last_seq = Some(seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(watch);

    let mut metrics = Streaming::start(&d, &["watch", "--metrics", "-o", "json"]);
    let line = metrics
        .wait_for(Duration::from_secs(10), "a metrics event", |l| {
            matches!(watch_message(l), WatchMessage::Event { event: ClusterEvent::Metrics { .. }, .. })
        })
        .await;
    let WatchMessage::Event { event: ClusterEvent::Metrics { node, services }, .. } = watch_message(&line) else {
        unreachable!()
    };
    assert_eq!(node, "n1");
    assert!(services.get("paper-1").is_some_and(|m| m.contains_key("messages_per_s")), "{line}");
    drop(metrics);

    // The table: one line per message; metrics only when asked.
    let mut table = Streaming::start(&d, &["watch", "--metrics"]);
    let first = table.wait_for(Duration::from_secs(10), "the snapshot line", |_| true).await;
    assert!(first.contains("snapshot") && first.contains("1 node(s)"), "{first}");
    let line = table.wait_for(Duration::from_secs(10), "a metrics line", |l| l.contains(" metrics ")).await;
    assert!(line.contains("n1:") && line.contains("messages_per_s="), "{line}");
    drop(table);
    let mut plain = Streaming::start(&d, &["watch", "-o", "wide"]);
    plain.wait_for(Duration::from_secs(10), "the snapshot line", |l| l.contains("snapshot")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!plain.all().await.iter().any(|l| l.contains(" metrics ")), "metrics are hidden by default");
}

#[tokio::test]
async fn lidoctl_watch_orders_follows_the_order_flow() {
    let d = settled().await;
    let session = d.client().open_session("acme").await.unwrap();
    let acme = d.client().with_token(&session.session_id);
    let mut watch = Streaming::start(&d, &["watch", "--orders", "-o", "json"]);
    watch.wait_for(Duration::from_secs(10), "the snapshot", |_| true).await;
    let mut table = Streaming::start(&d, &["watch", "--orders"]);
    table.wait_for(Duration::from_secs(10), "the snapshot line", |_| true).await;
    // The follow command may land a moment after the snapshot: place orders
    // until one shows, then one more for the table watcher.
    let place = |n: u32| {
        let acme = acme.clone();
        async move {
            let order =
                lido_tests::paper_limit("AAPL", lido_shared::model::Side::Buy, 1.into(), 1.into(), &format!("ctl-{n}"));
            acme.place_order(&order).await.is_ok()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let order = loop {
        assert!(Instant::now() < deadline, "no order showed in `watch --orders`:\n{}", watch.seen.join("\n"));
        n += 1;
        if !place(n).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let id = format!("ctl-{n}");
        let shown = watch.try_wait_for(
            Duration::from_secs(1),
            "an order",
            |l| matches!(watch_message(l), WatchMessage::Order { order, .. } if order.client_order_id == id),
        );
        if let Some(line) = shown.await {
            break line;
        }
    };
    assert!(place(n + 1).await);
    let WatchMessage::Order { node, order } = watch_message(&order) else { unreachable!() };
    assert_eq!((node.as_str(), order.customer.as_str()), ("n1", "acme"));
    let line = table.wait_for(Duration::from_secs(5), "an order line", |l| l.contains(" order ")).await;
    assert!(line.contains("acme buy 1 AAPL limit") && line.contains("ctl-"), "{line}");
    // The reply to lidoctl's own follow command is not printed.
    assert!(!watch.all().await.iter().any(|l| matches!(watch_message(l), WatchMessage::Reply { .. })));
}

#[tokio::test]
async fn lidoctl_logs_of_the_paper_broker() {
    let d = settled().await;
    let started = "paper broker started";
    let logs = eventually(Duration::from_secs(15), "paper-1's output", || async {
        let out = run(&d, &["logs", "paper-1"]);
        let logs = text(&out.stdout);
        (out.status.success() && logs.contains(started)).then_some(logs)
    })
    .await;
    assert!(logs.lines().count() <= 100, "the default tail");
    assert_eq!(ok(&d, &["logs", "paper-1", "--tail", "1"]).lines().count(), 1);
    assert_eq!(ok(&d, &["logs", "paper-1", "--tail", "0"]), "");
    assert!(ok(&d, &["logs", "paper-1", "--since", "1h"]).contains(started));
    assert_eq!(ok(&d, &["logs", "paper-1", "--since", "1h", "--tail", "2"]).lines().count(), 2);
    // The start line is older than a second by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!ok(&d, &["logs", "paper-1", "--since", "1s"]).contains(started));
    // -o is ignored: the text is the service's own.
    assert!(ok(&d, &["-o", "json", "logs", "paper-1"]).contains(started));
    expect_code(&d, &["logs", "paper-1", "--since", "soon"], 2);

    // Markets run inside lidod: refused. Unknown: not found.
    let out = run(&d, &["logs", "paper"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no_logs"), "{}", text(&out.stderr));
    expect_code(&d, &["logs", "ghost"], 3);

    // -f: new lines as they come, here from a restart.
    let mut follow = Streaming::start(&d, &["logs", "paper-1", "-f", "--tail", "0"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.client().restart_service("paper-1").await.unwrap();
    follow.wait_for(Duration::from_secs(15), "the restarted broker's start line", |l| l.contains(started)).await;
}

#[tokio::test]
async fn lidoctl_version_help_and_completions() {
    let out = bare().arg("version").output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("lidoctl "), "{}", text(&out.stdout));
    let help = text(&bare().arg("--help").output().unwrap().stdout);
    for verb in ["status", "get", "describe", "logs", "spawn", "stop", "drain", "watch", "config", "completions"] {
        assert!(help.contains(verb), "--help lacks {verb}");
    }
    assert!(help.contains("Exit codes") && help.contains("LIDO_CONTEXT"), "{help}");
    for verb in [&["describe"][..], &["logs"], &["watch"], &["get"], &["config", "use-context"]] {
        let out = bare().args(verb).arg("--help").output().unwrap();
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Example"), "{verb:?} --help has examples");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = bare().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "completions {shell}");
        let script = text(&out.stdout);
        for word in ["lidoctl", "describe", "logs", "sessions", "use-context"] {
            assert!(script.contains(word), "completions {shell} lack {word}");
        }
    }
    assert_eq!(bare().args(["completions", "tcsh"]).output().unwrap().status.code(), Some(2));
}

#[tokio::test]
async fn lidoctl_contexts_against_a_real_daemon() {
    let d = settled().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = std::env::temp_dir().join(format!("lidoctl-contexts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "# contexts for the test\ncurrent-context = \"dead\"\n\n[contexts.dead]\nurls = [\"{dead}\"]\n\n\
             [contexts.live]\nurls = [\"{dead}\", \"{url}\"]\ntoken_env = \"LIDO_TEST_TOKEN\"\n",
            url = d.url
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        let mut cmd = bare();
        cmd.env("LIDO_CONFIG", &path).args(args);
        cmd
    };
    let code = |mut cmd: Command| cmd.output().unwrap().status.code();

    // current-context beats the default; the context's URLs fail over.
    assert_eq!(code(with_config(&["get", "nodes"])), Some(4));
    assert_eq!(code(with_config(&["--context", "live", "get", "nodes"])), Some(0));
    let mut env = with_config(&["get", "nodes"]);
    env.env("LIDO_CONTEXT", "live");
    assert_eq!(code(env), Some(0), "LIDO_CONTEXT beats current-context");
    let mut env = with_config(&["get", "nodes"]);
    env.env("LIDO_URL", &d.url);
    assert_eq!(code(env), Some(0), "LIDO_URL beats the context");
    let mut flag = with_config(&["--url", &dead, "get", "nodes"]);
    flag.env("LIDO_URL", &d.url);
    assert_eq!(code(flag), Some(4), "--url beats LIDO_URL");
    let mut flag = with_config(&["--context", "live", "get", "nodes"]);
    flag.env("LIDO_CONTEXT", "dead");
    assert_eq!(code(flag), Some(0), "--context beats LIDO_CONTEXT");
    let out = with_config(&["--context", "nope", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("get-contexts"), "{}", text(&out.stderr));

    // The config verbs.
    let out = with_config(&["config", "get-contexts"]).output().unwrap();
    let table = text(&out.stdout);
    assert!(row(&table, "*").contains("dead") && table.contains("$LIDO_TEST_TOKEN"), "{table}");
    let contexts: serde_json::Value =
        serde_json::from_slice(&with_config(&["config", "get-contexts", "-o", "json"]).output().unwrap().stdout)
            .unwrap();
    assert_eq!(contexts[0]["name"], "dead");
    assert_eq!(contexts[0]["current"], true);
    assert_eq!(contexts[1]["urls"][1], d.url.as_str());
    let out = with_config(&["config", "use-context", "live"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.starts_with("# contexts for the test\ncurrent-context = \"live\"\n"), "{file}");
    assert_eq!(text(&with_config(&["config", "current-context"]).output().unwrap().stdout), "live\n");
    assert_eq!(code(with_config(&["get", "nodes"])), Some(0), "the new current context");
    assert_eq!(code(with_config(&["config", "use-context", "nope"])), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn lidoctl_log_level_changes_the_filter_at_run_time() {
    let d = TestDaemon::spawn(&[]);
    let said = ok(&d, &["log-level", "warn,lidod=trace"]);
    assert_eq!(said.trim(), "log filter is now warn,lidod=trace");
    eventually(Duration::from_secs(10), "lidod to log the new filter", || async {
        d.log_text().contains("log filter changed").then_some(())
    })
    .await;

    let set: lido_shared::cluster::LogLevel =
        serde_json::from_value(json_value(&d, &["log-level", "info"])).expect("a LogLevel");
    assert_eq!(set.filter, "info");

    // A filter lidod cannot read is refused, and changes nothing.
    let out = run(&d, &["log-level", "lidod=loud"]);
    assert_eq!(out.status.code(), Some(5), "a bad filter is refused: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invalid_filter"), "stderr names the error: {}", text(&out.stderr));
}
