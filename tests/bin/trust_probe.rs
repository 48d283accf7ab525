//! A hostile hosted trader, for `it/trust.rs`: run by a TraderManager, it
//! checks in like any trader, then tries to reach what a customer's code
//! must not: every credential in its environment against every operator
//! and internal route of its node and of the IM, and the node's files.
//! It writes what it found to `report.json` in its work dir and keeps
//! running until stopped.
//!
//! Settings (trader options, so `LIDO_OPT_*`): `IM_URL`, `NODE` (its node
//! id), `FILES` (comma-separated paths it must not read).

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use lido_shared::client::agent::{exit_with_parent, Agent, AgentConfig, CommandHandler};
use lido_shared::cluster::ServiceKind;
use lido_shared::pipe::{Command, Reply, ReplyBody};
use lido_shared::ErrorDetail;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Control(CancellationToken);

impl CommandHandler for Control {
    async fn handle(&self, command: Command) -> Reply {
        match command {
            Command::Stop => {
                self.0.cancel();
                Reply::Ok(ReplyBody::Done)
            }
            other => Reply::Err(ErrorDetail::new("unsupported", format!("a probe does not handle {other:?}"))),
        }
    }
}

/// One attempt: a route, how the credential was presented, the answer.
struct Attempt {
    target: &'static str,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let shutdown = CancellationToken::new();
    exit_with_parent(shutdown.clone());
    let name = var("LIDO_SERVICE_NAME");
    let node_url = var("LIDO_API_URL");
    let config = AgentConfig::new(name.clone(), ServiceKind::Trader, var("LIDO_SERVICE_TYPE"), var("LIDO_MANAGER_URL"));
    let (_events, events_rx) = tokio::sync::mpsc::channel(16);
    let agent =
        Agent::start(config, std::sync::Arc::new(Control(shutdown.clone())), events_rx, shutdown.clone()).await?;

    let env: Vec<(String, String)> = std::env::vars().collect();
    let files: Vec<String> = var("LIDO_OPT_FILES").split(',').filter(|f| !f.is_empty()).map(String::from).collect();
    let mut reads = serde_json::Map::new();
    let parent_environ = format!("/proc/{}/environ", std::os::unix::process::parent_id());
    for path in files.iter().cloned().chain([parent_environ]) {
        let outcome = match std::fs::read(&path) {
            Ok(_) => "read".to_string(),
            Err(e) => format!("{:?}", e.kind()),
        };
        reads.insert(path, json!(outcome));
    }
    let own_file = std::fs::write("own-file", b"mine").and_then(|_| std::fs::read("own-file")).is_ok();
    let system_file = std::fs::read("/etc/hostname").is_ok() || std::fs::read("/etc/passwd").is_ok();

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let denied = probe_routes(&http, &env, &name, &node_url, &var("LIDO_OPT_IM_URL"), &var("LIDO_OPT_NODE")).await;

    // What it may do: trade for its customer with its session.
    let order = json!({"market": "paper", "symbol": "BTC/USD", "side": "buy", "type": "limit",
        "quantity": "0.001", "limit_price": "1000", "time_in_force": "gtc", "client_order_id": "probe-1"});
    let placed = http
        .post(format!("{node_url}/v1/orders"))
        .bearer_auth(var("LIDO_TOKEN"))
        .json(&order)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);

    let report = json!({
        "env": env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "values": env.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "reads": reads,
        "own_file": own_file,
        "system_file": system_file,
        "attempts": denied.0,
        "not_denied": denied.1,
        "order_status": placed,
    });
    std::fs::write("report.json.tmp", serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename("report.json.tmp", "report.json")?;
    shutdown.cancelled().await;
    let _ = agent.wait().await;
    Ok(())
}

/// Every credential-looking value of the environment (and none at all),
/// presented every way the API takes one, against every operator and
/// internal route. Returns how many attempts were made and those not
/// answered 401 or 403.
async fn probe_routes(
    http: &reqwest::Client,
    env: &[(String, String)],
    me: &str,
    node: &str,
    im: &str,
    node_id: &str,
) -> (usize, Vec<String>) {
    let mut routes = routes(me, node_id);
    // A route a target does not serve at all (404/405 without a credential) is not tried there.
    let mut served = Vec::new();
    for route in &routes {
        served.push(!matches!(send(http, route, node, im, None, "bearer").await, Some(404 | 405)));
    }
    let mut served = served.into_iter();
    routes.retain(|_| served.next().unwrap_or(true));
    let mut secrets: BTreeSet<Option<String>> = env.iter().map(|(_, v)| Some(v.clone())).collect();
    secrets.insert(None);
    let ways = ["bearer", "lido-cluster-secret", "lido-service-key"];
    let mut jobs = Vec::new();
    for route in &routes {
        for secret in &secrets {
            for way in ways {
                jobs.push((route, secret.clone(), way));
            }
        }
    }
    let total = jobs.len();
    let not_denied: Vec<String> = futures_util::stream::iter(jobs)
        .map(|(route, secret, way)| async move {
            let status = send(http, route, node, im, secret.as_deref(), way).await?;
            (status != 401 && status != 403).then(|| {
                let shown = secret.map(|s| format!("{}…", s.chars().take(6).collect::<String>()));
                format!("{} {} {} via {way} {shown:?} → {status}", route.target, route.method, route.path)
            })
        })
        .buffer_unordered(16)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    (total, not_denied)
}

/// One request; its status, 0 if it failed, `None` if it could not be
/// made (a value that is no valid header is never sent: nothing to learn).
async fn send(
    http: &reqwest::Client,
    route: &Attempt,
    node: &str,
    im: &str,
    secret: Option<&str>,
    way: &str,
) -> Option<u16> {
    let base = if route.target == "node" { node } else { im };
    let mut req = http.request(route.method.clone(), format!("{base}{}", route.path));
    if route.path.ends_with("/watch") {
        req = req
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    }
    if let Some(secret) = secret {
        req = match way {
            "bearer" => req.bearer_auth(secret),
            header => req.header(header, secret),
        };
    }
    if let Some(body) = &route.body {
        req = req.json(body);
    }
    match req.send().await {
        Ok(r) => Some(r.status().as_u16()),
        Err(e) if e.is_builder() => None,
        Err(_) => Some(0),
    }
}

/// The operator and internal routes, on the node and on the IM.
fn routes(me: &str, node_id: &str) -> Vec<Attempt> {
    use reqwest::Method;
    let spawn = json!({"kind": "trader", "name": "evil", "options": {"exec": "/bin/true"}});
    let checkin = |name: &str, kind: &str, service_type: &str| {
        json!({"name": name, "kind": kind, "type": service_type, "ws_url": "ws://127.0.0.1:9/pipe",
            "pid": 1, "instance": "probe"})
    };
    let mut out = Vec::new();
    for target in ["node", "im"] {
        let mut add = |method: Method, path: String, body: Option<Value>| {
            out.push(Attempt { target, method, path, body });
        };
        add(Method::GET, "/v1/cluster".into(), None);
        add(Method::GET, "/v1/cluster/watch".into(), None);
        add(Method::POST, "/v1/services".into(), Some(spawn.clone()));
        add(Method::GET, format!("/v1/services/{me}"), None);
        add(Method::DELETE, format!("/v1/services/{me}"), None);
        add(Method::GET, format!("/v1/services/{me}/logs"), None);
        add(Method::POST, format!("/v1/services/{me}/restart"), None);
        add(Method::POST, "/v1/services/paper-1/drain".into(), None);
        add(Method::POST, "/v1/services/paper-1/undrain".into(), None);
        add(Method::DELETE, "/v1/services/paper-1".into(), None);
        add(Method::POST, format!("/v1/nodes/{node_id}/drain"), None);
        add(Method::POST, format!("/v1/nodes/{node_id}/undrain"), None);
        add(Method::GET, "/v1/tokens".into(), None);
        add(Method::POST, "/v1/tokens".into(), Some(json!({"name": "evil", "role": "operator"})));
        add(Method::DELETE, "/v1/tokens/tok_0".into(), None);
        add(Method::GET, "/v1/audit".into(), None);
        add(Method::PUT, "/v1/log-level".into(), Some(json!({"filter": "trace"})));
        add(Method::PUT, "/v1/markets/paper".into(), Some(json!({"brokers": ["paper-1"]})));
        add(Method::GET, "/v1/sessions".into(), None);
        add(Method::GET, "/metrics".into(), None);
        add(Method::POST, "/v1/node/shutdown".into(), None);
        // Well-formed bodies: the credential, not the body, must decide.
        let node = json!({"id": "evil", "location": "x", "draining": false, "api_url": "http://127.0.0.1:9",
            "managers": [], "services": [], "load": {"sessions": 0, "streams": 0, "open_orders": 0}});
        add(Method::POST, "/v1/nodes/checkin".into(), Some(json!({"info": node, "watch_url": "ws://127.0.0.1:9/w"})));
        add(Method::POST, "/v1/nodes/order-claims".into(), Some(json!({"order_id": "o-1", "node": "evil"})));
        add(Method::GET, "/v1/autoscale".into(), None);
        add(Method::GET, "/v1/cluster/autoscale".into(), None);
        add(Method::PUT, "/v1/cluster/autoscale".into(), Some(json!({})));
        add(Method::GET, "/v1/cluster/assignments".into(), None);
        // Check-ins as anything but itself.
        add(Method::POST, "/v1/internal/checkin".into(), Some(checkin("paper-1", "broker", "paper")));
        add(Method::POST, "/v1/internal/checkin".into(), Some(checkin("other-trader", "trader", "trust_probe")));
        add(Method::POST, "/v1/internal/checkin".into(), Some(checkin(me, "broker", "paper")));
    }
    out
}
