//! Advertise addresses (`--advertise-url`): an IM reaches a node at the URL
//! it advertises, not at the address it binds; a node bound to `0.0.0.0`
//! without one is refused at check-in with a message naming the flag; a bad
//! advertise URL stops `lidod` at start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lido_shared::api::SessionRequest;
use lido_shared::client::LidoClient;
use lido_tests::{eventually, lidod_path, temp_data_dir, TestDaemon};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SECRET: &str = "advertise-test-secret-0123456789";

/// A config shared by the IM and its nodes: the secret file, fast check-ins.
fn cluster_config(dir: &Path) -> PathBuf {
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let text = format!(
        "cluster_secret_file = {:?}\n[cluster]\ncheckin_interval_ms = 200\nnode_ttl_ms = 1500\n",
        secret.display().to_string()
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A TCP relay on 127.0.0.1:0 to a target set later, counting connections:
/// an address that reaches the node but is not the one it binds.
struct Relay {
    url: String,
    target: watch::Sender<Option<String>>,
    connections: Arc<AtomicUsize>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (target, targets) = watch::channel(None::<String>);
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let mut targets = targets.clone();
                tokio::spawn(async move {
                    let Ok(to) = targets.wait_for(Option::is_some).await.map(|t| t.clone().unwrap()) else {
                        return;
                    };
                    let Ok(mut outbound) = TcpStream::connect(&to).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { url, target, connections }
    }

    fn forward_to(&self, url: &str) {
        let addr = url.strip_prefix("http://").expect("a plain http node").to_string();
        self.target.send_replace(Some(addr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_im_reaches_a_node_at_its_advertise_url_not_its_bound_address() {
    let dir = temp_data_dir();
    let config = cluster_config(&dir);
    let relay = Relay::start().await;
    let im_daemon = TestDaemon::spawn(&["--config", config.to_str().unwrap(), "--role", "im", "--node-id", "im1"]);
    let node = TestDaemon::spawn(&[
        "--config",
        config.to_str().unwrap(),
        "--role",
        "node",
        "--im",
        &im_daemon.url,
        "--node-id",
        "n1",
        "--advertise-url",
        &relay.url,
    ]);
    assert_ne!(node.url, relay.url, "the node binds one address and advertises another");
    relay.forward_to(&node.url);
    let im = im_daemon.client();

    let listed = eventually(Duration::from_secs(20), "n1 in the IM's view", || async {
        im.cluster().await.ok()?.nodes.into_iter().find(|n| n.id == "n1")
    })
    .await;
    assert_eq!(listed.api_url, relay.url, "the IM lists the advertised URL");
    // The IM watches the node through the advertised URL (its watch socket).
    eventually(Duration::from_secs(10), "the IM dialing the advertised URL", || async {
        (relay.connections.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;

    // Algos are sent there too, and trade through it.
    let req = SessionRequest { customer: "acme".into(), location: None };
    let session: lido_shared::api::Session = eventually(Duration::from_secs(10), "a session", || async {
        im.send(im.req(reqwest::Method::POST, "/v1/sessions").json(&req)).await.ok()
    })
    .await;
    assert_eq!(session.market_manager_url, relay.url);
    let before = relay.connections.load(Ordering::SeqCst);
    let algo = LidoClient::new(session.market_manager_url.clone()).unwrap().with_token(session.session_id.clone());
    eventually(Duration::from_secs(20), "a quote through the advertised URL", || async {
        algo.quote("paper", "BTC/USD").await.ok()
    })
    .await;
    assert!(relay.connections.load(Ordering::SeqCst) > before, "the algo's calls went through the advertised URL");
    drop(node);
    drop(im_daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_im_refuses_a_node_that_advertises_an_unspecified_address() {
    let dir = temp_data_dir();
    let config = cluster_config(&dir);
    let im = TestDaemon::spawn(&["--config", config.to_str().unwrap(), "--role", "im", "--node-id", "im1"]);
    // What a node bound to 0.0.0.0:7700 without --advertise-url sends.
    let checkin = serde_json::json!({
        "info": {"id": "n1", "location": "ny", "draining": false, "api_url": "http://0.0.0.0:7700",
                 "managers": [], "services": [], "load": {"sessions": 0, "streams": 0, "open_orders": 0}},
        "watch_url": "ws://0.0.0.0:7700/v1/cluster/watch",
    });
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/nodes/checkin", im.url))
        .header(lido_shared::access::CLUSTER_SECRET_HEADER, SECRET)
        .json(&checkin)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "advertise_url_required", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("--advertise-url") && message.contains("0.0.0.0"), "{message}");
    let snapshot = im.client().cluster().await.unwrap();
    assert!(snapshot.nodes.is_empty(), "a refused node is not listed: {snapshot:?}");
    drop(im);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_advertise_url_stops_lidod_at_start() {
    for (url, says) in [
        ("ftp://10.0.0.5:7700", "http:// or https://"),
        ("http://0.0.0.0:7700", "unspecified"),
        ("http://:7700", "not a URL"),
        ("10.0.0.5:7700", "not a URL"),
    ] {
        let dir = temp_data_dir();
        let mut child = Command::new(lidod_path())
            .args(["--listen", "127.0.0.1:0", "--advertise-url", url, "--data-dir"])
            .arg(&dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = lido_tests::wait_child(&mut child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("lidod ran with {url:?}"));
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{url}: {status}");
        assert!(stderr.contains(says) && stderr.contains("--advertise-url"), "{url}: {stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A network namespace this test creates (loopback only, reachable from
/// nowhere) and removes on drop; `None` without the rights to make one.
struct Netns(String);

impl Netns {
    fn create() -> Result<Self, String> {
        let name = format!("lido-adv-{}", std::process::id());
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
            out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string())
        };
        run(&["netns", "add", &name])?;
        let ns = Self(name);
        run(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// A `lidod` started inside a namespace; killed on drop.
struct NsLidod {
    child: Child,
    log: PathBuf,
    first_line: String,
}

impl NsLidod {
    fn start(ns: &Netns, dir: &Path, name: &str, args: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let data = dir.join(name);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .arg(lidod_path())
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env("LIDO_LOG", "info,lidod=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).unwrap();
        Self { child, log, first_line }
    }

    fn url(&self) -> &str {
        self.first_line.trim().strip_prefix("lidod listening on ").unwrap_or_else(|| panic!("{:?}", self.first_line))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsLidod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Real nodes bound to `0.0.0.0`, inside a namespace of their own so
/// nothing outside can reach them: one without an advertise URL warns at
/// start and is refused by the IM; one with `http://127.0.0.1:0` (port 0:
/// the bound port) checks in.
#[tokio::test]
async fn a_node_on_an_unspecified_address_needs_an_advertise_url() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipped: cannot create a network namespace ({why}); run as root to exercise real 0.0.0.0 nodes");
            return;
        }
    };
    let dir = temp_data_dir();
    let config = cluster_config(&dir);
    let config = config.to_str().unwrap();
    let im = NsLidod::start(&ns, &dir, "im", &["--config", config, "--role", "im", "--listen", "127.0.0.1:0"]);
    let node_args = |id: &'static str| {
        vec!["--config", config, "--role", "node", "--listen", "0.0.0.0:0", "--auth", "tokens", "--node-id", id]
    };
    let mut bare = node_args("bare");
    bare.extend(["--im", im.url()]);
    let bare = NsLidod::start(&ns, &dir, "bare", &bare);
    let mut told = node_args("told");
    told.extend(["--im", im.url(), "--advertise-url", "http://127.0.0.1:0"]);
    let told = NsLidod::start(&ns, &dir, "told", &told);
    let told_port = told.url().rsplit(':').next().unwrap().to_string();

    eventually(Duration::from_secs(20), "the bare node's warning and the IM's refusal", || async {
        let log = bare.log_text();
        (log.contains("no advertise URL") && log.contains("advertise_url_required")).then_some(())
    })
    .await;
    let log = bare.log_text();
    assert!(log.contains("--advertise-url"), "the node says what to set: {log}");
    let advertised = format!("api_url=http://127.0.0.1:{told_port}");
    eventually(Duration::from_secs(20), "the node with an advertise URL checked in", || async {
        let log = im.log_text();
        log.lines()
            .any(|l| l.contains("node checked in") && l.contains("node=told") && l.contains(&advertised))
            .then_some(())
    })
    .await;
    assert!(
        !im.log_text().lines().any(|l| l.contains("node checked in") && l.contains("node=bare")),
        "the bare node never joins: {}",
        im.log_text()
    );
    drop((bare, told, im));
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}
