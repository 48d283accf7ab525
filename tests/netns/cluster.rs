//! The cluster on the hosts of [`Net`]: a 3-member etcd (one member per
//! host), two InfrastructureManagers, one shared paper exchange and two
//! nodes at two locations, every process bound to its host's own address
//! (so the address it binds is the one it advertises), all with `--auth
//! tokens` as anything serving beyond loopback must.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use lido_shared::access::{CreateToken, Role, CLUSTER_SECRET_HEADER};
use lido_shared::api::Session;
use lido_shared::client::LidoClient;
use lido_shared::cluster::NodeScaleStatus;
use lido_shared::exchange::{ExchangeFrame, ExchangeRequest, EXCHANGE_PATH};
use lido_shared::pipe::{Command as VenueCommand, Reply};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::net::{Net, Proc};

pub const SECRET: &str = "netns-cluster-secret-0123456789abcdef";
/// Every lidod listens on this port of its own host's address.
pub const PORT: u16 = 7700;
/// The hosts and the last octet of each one's address in 192.0.2.0/24.
pub const HOSTS: [(&str, u8); 10] = [
    ("console", 5),
    ("etcd1", 11),
    ("etcd2", 12),
    ("etcd3", 13),
    ("im1", 21),
    ("im2", 22),
    ("venue", 30),
    ("n1", 41),
    ("n2", 42),
    ("algo", 50),
];
pub const ETCD: [&str; 3] = ["etcd1", "etcd2", "etcd3"];
pub const IMS: [&str; 2] = ["im1", "im2"];
/// Node id (and host) → location.
pub const NODES: [(&str, &str); 2] = [("n1", "ny"), ("n2", "ldn")];
/// The customers, each trading from the algo host.
pub const CUSTOMERS: [(&str, &str); 2] = [("acme", "ny"), ("beta", "ldn")];
/// How long any one thing may take to come up.
pub const WAIT: Duration = Duration::from_secs(40);

/// Everything running; processes are killed before the network goes.
pub struct Cluster {
    pub procs: BTreeMap<String, Proc>,
    pub net: Net,
    pub dir: PathBuf,
    /// The bootstrap operator token (the first IM writes it; tokens live in etcd).
    pub operator: String,
    /// Customer → its API token.
    pub tokens: BTreeMap<String, String>,
    pub exchange_url: String,
}

impl Cluster {
    /// Starts everything on the hosts of `net` (made from [`HOSTS`]).
    pub async fn start(net: Net) -> anyhow::Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("lido-netns-{:x}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let secret_file = dir.join("cluster-secret");
        std::fs::write(&secret_file, format!("{SECRET}\n"))?;
        let mut cluster = Cluster {
            procs: BTreeMap::new(),
            net,
            dir,
            operator: String::new(),
            tokens: BTreeMap::new(),
            exchange_url: String::new(),
        };
        cluster.start_etcd()?;
        let lidod = lido_tests::bin_dir().join("lidod");
        let endpoints: Vec<String> = ETCD.iter().map(|h| cluster.net.host(h).url(2379)).collect();
        for h in ETCD {
            let url = format!("{}/health", cluster.net.host(h).url(2379));
            wait_until(WAIT, &format!("etcd on {h} healthy"), || async {
                let body = reqwest::get(&url).await.ok()?.text().await.ok()?;
                body.contains("\"health\":\"true\"").then_some(())
            })
            .await
            .with_context(|| cluster.procs[h].tail())?;
        }

        // The exchange, on a host of its own.
        let venue = cluster.net.host("venue");
        let args = vec![
            "venue".into(),
            "paper".into(),
            "--listen".into(),
            format!("{}:{PORT}", venue.addr),
            "--data-dir".into(),
            cluster.path("venue"),
            "--cluster-secret-file".into(),
            secret_file.display().to_string(),
            "--set".into(),
            "seed=7".into(),
            "--set".into(),
            "tick_ms=250".into(),
        ];
        cluster.exchange_url = format!("ws://{}:{PORT}{EXCHANGE_PATH}", venue.addr);
        let proc = Proc::start(venue, "venue", &lidod, &args, cluster.dir.join("venue.log"))?;
        cluster.procs.insert("venue".into(), proc);

        // Two IMs sharing etcd, each with its own data dir: tokens live in
        // etcd, so a customer's token made at the first works at either IM.
        let autoscale = "[cluster.autoscale]\nenabled = true\nmin_nodes = 1\nmax_nodes = 2\n\
                         high_load_per_node = 100000\nlow_load_per_node = 0\n\
                         [cluster.provisioner]\nkind = \"command\"\n\
                         provision = \"echo this test provisions no node >&2; exit 1\"\nrelease = \"exit 1\"\n";
        let im_config = dir_file(
            &cluster.dir,
            "im.toml",
            &format!(
                "cluster_secret_file = {:?}\n[cluster]\nregistry = \"etcd\"\netcd_endpoints = {endpoints:?}\n\
                 checkin_interval_ms = 250\nnode_ttl_ms = 3000\n{autoscale}",
                secret_file.display().to_string()
            ),
        )?;
        for (i, im) in IMS.iter().enumerate() {
            let host = cluster.net.host(im);
            let im_data = cluster.path(&format!("{im}-data"));
            let args = vec![
                "--listen".into(),
                format!("{}:{PORT}", host.addr),
                "--data-dir".into(),
                im_data.clone(),
                "--config".into(),
                im_config.clone(),
                "--role".into(),
                "im".into(),
                "--node-id".into(),
                im.to_string(),
                "--auth".into(),
                "tokens".into(),
            ];
            let proc = Proc::start(host, im, &lidod, &args, cluster.dir.join(format!("{im}.log")))?;
            cluster.procs.insert(im.to_string(), proc);
            let url = host.url(PORT);
            wait_until(WAIT, &format!("{im} answering"), || async {
                reqwest::get(format!("{url}/healthz")).await.ok()?.status().is_success().then_some(())
            })
            .await
            .with_context(|| cluster.procs[*im].tail())?;
            if i == 0 {
                // The first IM of a new cluster writes the bootstrap token.
                let path = PathBuf::from(&im_data).join("bootstrap-token");
                cluster.operator = std::fs::read_to_string(&path).context("the bootstrap token")?.trim().to_string();
                let op = LidoClient::new(url)?.with_token(cluster.operator.clone());
                for (customer, _) in CUSTOMERS {
                    let made = op
                        .create_token(&CreateToken {
                            role: Role::Customer,
                            customer: Some(customer.into()),
                            name: Some(format!("{customer} algo")),
                            expires_at: None,
                        })
                        .await?;
                    cluster.tokens.insert(customer.into(), made.token);
                }
            }
        }

        // Two nodes, each at its location, both trading on the exchange.
        let node_config = dir_file(
            &cluster.dir,
            "node.toml",
            &format!(
                "cluster_secret_file = {:?}\n[cluster]\ncheckin_interval_ms = 250\nnode_ttl_ms = 3000\n\
                 [[broker]]\nname = \"paper-1\"\ntype = \"paper\"\n[broker.options]\nexchange = {:?}\n\
                 [[market]]\nname = \"paper\"\nbrokers = [\"paper-1\"]\n",
                secret_file.display().to_string(),
                cluster.exchange_url,
            ),
        )?;
        for (id, location) in NODES {
            let host = cluster.net.host(id);
            let mut args = vec![
                "--listen".into(),
                format!("{}:{PORT}", host.addr),
                "--data-dir".into(),
                cluster.path(id),
                "--config".into(),
                node_config.clone(),
                "--role".into(),
                "node".into(),
                "--node-id".into(),
                id.into(),
                "--location".into(),
                location.into(),
                "--auth".into(),
                "tokens".into(),
            ];
            for im in IMS {
                args.extend(["--im".into(), cluster.net.host(im).url(PORT)]);
            }
            let proc = Proc::start(host, id, &lidod, &args, cluster.dir.join(format!("{id}.log")))?;
            cluster.procs.insert(id.into(), proc);
        }
        let all: Vec<&str> = NODES.iter().map(|(id, _)| *id).collect();
        for im in IMS {
            cluster.wait_nodes(im, &all).await?;
        }
        Ok(cluster)
    }

    fn start_etcd(&mut self) -> anyhow::Result<()> {
        let initial: Vec<String> = ETCD.iter().map(|h| format!("{h}={}", self.net.host(h).url(2380))).collect();
        let initial = initial.join(",");
        for h in ETCD {
            let host = self.net.host(h);
            let (client, peer) = (host.url(2379), host.url(2380));
            let args: Vec<String> = [
                "--name",
                h,
                "--data-dir",
                &self.path(h),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                &format!("lido-netns-{:x}", std::process::id()),
                "--initial-cluster-state",
                "new",
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let proc = Proc::start(host, h, std::path::Path::new("etcd"), &args, self.dir.join(format!("{h}.log")))?;
            self.procs.insert(h.to_string(), proc);
        }
        Ok(())
    }

    /// A path under the run's directory, as a string.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn im_urls(&self) -> Vec<String> {
        IMS.iter().map(|im| self.net.host(im).url(PORT)).collect()
    }

    /// An operator's client of `im`.
    pub fn im(&self, im: &str) -> LidoClient {
        LidoClient::new(self.net.host(im).url(PORT)).expect("client").with_token(self.operator.clone())
    }

    /// Waits until `im` lists exactly `nodes`, each reachable.
    pub async fn wait_nodes(&self, im: &str, nodes: &[&str]) -> anyhow::Result<()> {
        let client = self.im(im);
        wait_until(WAIT, &format!("nodes {nodes:?} reachable in {im}'s view"), || async {
            let snapshot = client.cluster().await.ok()?;
            let seen: Vec<&str> = snapshot.nodes.iter().map(|n| n.id.as_str()).collect();
            (seen == nodes).then_some(())
        })
        .await
    }

    /// The sticky assignments, from the first IM that answers.
    pub async fn assignments(&self) -> Option<BTreeMap<String, String>> {
        for im in IMS {
            let c = self.im(im);
            let req = c.req(reqwest::Method::GET, "/v1/cluster/assignments").timeout(Duration::from_secs(3));
            if let Ok(map) = c.send::<BTreeMap<String, String>>(req).await {
                return Some(map);
            }
        }
        None
    }

    /// `GET /healthz` of `im`: its status code and body.
    pub async fn healthz(&self, im: &str) -> Option<(u16, serde_json::Value)> {
        let url = format!("{}/healthz", self.net.host(im).url(PORT));
        let answer = reqwest::Client::new().get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
        let status = answer.status().as_u16();
        Some((status, answer.json().await.ok()?))
    }

    /// `GET /v1/cluster/autoscale` of `im`.
    pub async fn autoscale(&self, im: &str) -> Option<NodeScaleStatus> {
        let c = self.im(im);
        c.send(c.req(reqwest::Method::GET, "/v1/cluster/autoscale").timeout(Duration::from_secs(2))).await.ok()
    }

    /// A session of `customer` on node `node` itself, opened as an IM does
    /// (with the cluster secret), to read that node's books.
    pub async fn node_session(&self, node: &str, customer: &str) -> anyhow::Result<LidoClient> {
        let c = LidoClient::new(self.net.host(node).url(PORT))?;
        let req = c
            .req(reqwest::Method::POST, "/v1/sessions")
            .header(CLUSTER_SECRET_HEADER, SECRET)
            .json(&serde_json::json!({ "customer": customer }));
        let session: Session = c.send(req).await?;
        Ok(c.with_token(session.session_id))
    }

    /// Asks the exchange `command` over its own protocol.
    pub async fn exchange(&self, command: VenueCommand) -> anyhow::Result<Reply> {
        let mut request = self.exchange_url.as_str().into_client_request()?;
        request.headers_mut().insert(CLUSTER_SECRET_HEADER, SECRET.parse()?);
        let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .context("connecting to the exchange")??;
        ws.send(Message::text(serde_json::to_string(&ExchangeRequest { id: 1, command })?)).await?;
        let reply = tokio::time::timeout(WAIT, async {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                if let Ok(ExchangeFrame::Reply { id: 1, reply }) = serde_json::from_str(&text) {
                    return Ok(reply);
                }
            }
            bail!("the exchange closed the socket before answering")
        })
        .await
        .context("the exchange's answer")??;
        let _ = ws.close(None).await;
        Ok(reply)
    }

    /// Fails with the process's log if one of them died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for proc in self.procs.values_mut() {
            if !proc.alive() {
                bail!("{} exited; its log ends:\n{}", proc.name, proc.tail());
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.procs.clear();
        if std::thread::panicking() {
            eprintln!("the cluster's logs are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn dir_file(dir: &std::path::Path, name: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

/// Polls `f` every 100 ms until it gives `Some`, at most `within`.
pub async fn wait_until<T, F, Fut>(within: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
