//! lidoctl as a process: exit codes, stderr, and JSON against a tiny fake
//! InfrastructureManager served on loopback by the test itself.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};

use assert_cmd::Command;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use lido_shared::cluster::{
    ClusterEvent, ClusterSnapshot, EventRecord, ManagerInfo, NodeInfo, NodeLoad, RunMode, ServiceDetail, ServiceInfo,
    ServiceKind, ServiceState, SessionInfo, SpawnRequest,
};
use lido_shared::ErrorBody;
use predicates::prelude::*;

/// lidoctl with no LIDO_* variables and no config file.
fn lidoctl() -> Command {
    let mut cmd = Command::cargo_bin("lidoctl").expect("lidoctl binary");
    cmd.env_remove("LIDO_URL")
        .env_remove("LIDO_TOKEN")
        .env_remove("LIDO_CONTEXT")
        .env("LIDO_CONFIG", "/nonexistent/lidoctl-cli-test/config.toml")
        .env("NO_COLOR", "1");
    cmd
}

/// A config file in a fresh temporary directory.
fn config_file(text: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir =
        std::env::temp_dir().join(format!("lidoctl-cli-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A URL where nothing listens: bind port 0, note the port, drop the listener.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn service(name: &str, kind: ServiceKind, service_type: &str, state: ServiceState) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        kind,
        service_type: service_type.into(),
        state,
        node: "n1".into(),
        mode: RunMode::Task,
        pid: None,
        ws_url: None,
        restarts: 0,
        started_at: Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()),
        detail: None,
        options: BTreeMap::new(),
        metrics: BTreeMap::new(),
    }
}

fn snapshot() -> ClusterSnapshot {
    ClusterSnapshot {
        nodes: vec![NodeInfo {
            id: "n1".into(),
            location: "local".into(),
            draining: false,
            api_url: "http://127.0.0.1:7700".into(),
            managers: vec![ManagerInfo { kind: ServiceKind::Broker, state: ServiceState::Running, services: 1 }],
            services: vec![
                service("paper", ServiceKind::Broker, "paper", ServiceState::Running),
                service("sim", ServiceKind::Market, "", ServiceState::Degraded),
            ],
            load: NodeLoad { sessions: 2, streams: 3, open_orders: 1 },
        }],
        ts: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Json<ErrorBody>) {
    (status, Json(ErrorBody::new(code, message)))
}

/// Serves a canned cluster on 127.0.0.1:0 from a background thread.
fn fake_im() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/cluster", get(|| async { Json(snapshot()) }))
        .route(
            "/v1/services",
            post(|Json(req): Json<SpawnRequest>| async move {
                let name = req.name.unwrap_or_else(|| "auto-1".into());
                let mut s = service(&name, req.kind, req.service_type.as_deref().unwrap_or(""), ServiceState::Starting);
                s.options = req.options;
                (StatusCode::CREATED, Json(s))
            }),
        )
        .route(
            "/v1/sessions",
            get(|| async {
                let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
                Json(vec![SessionInfo {
                    id: "s-0123abcd".into(),
                    customer: "acme".into(),
                    node: "n1".into(),
                    created_at: at,
                }])
            }),
        )
        .route(
            "/v1/services/{name}/logs",
            get(|Path(name): Path<String>| async move {
                match name.as_str() {
                    "paper" => {
                        Ok("2000-01-01T00:00:00Z  INFO old line\n  continued\n2999-01-01T00:00:00Z  INFO future line\n")
                    }
                    "sim" => Err(error(StatusCode::CONFLICT, "no_logs", "sim runs inside lidod")),
                    _ => Err(error(StatusCode::NOT_FOUND, "unknown_service", &format!("no service named {name}"))),
                }
            }),
        )
        .route(
            "/v1/services/{name}",
            get(|Path(name): Path<String>| async move {
                let Some(service) = snapshot().service(&name).cloned() else {
                    return Err(error(StatusCode::NOT_FOUND, "unknown_service", &format!("no service named {name}")));
                };
                let ts = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
                let events =
                    vec![EventRecord { seq: 1, ts, event: ClusterEvent::ServiceChanged { service: service.clone() } }];
                Ok(Json(ServiceDetail { service, events }))
            })
            .delete(|Path(name): Path<String>| async move {
                let Some(mut s) = snapshot().service(&name).cloned() else {
                    return Err(error(StatusCode::NOT_FOUND, "unknown_service", &format!("no service named {name}")));
                };
                s.state = ServiceState::Stopped;
                Ok(Json(s))
            }),
        )
        .route(
            "/v1/nodes/{id}/drain",
            post(|Path(id): Path<String>| async move {
                error(StatusCode::CONFLICT, "node_draining", &format!("node {id} is already draining"))
            }),
        );
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

#[test]
fn help_lists_the_verbs_and_exit_codes() {
    let assert = lidoctl().arg("--help").assert().success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    for verb in [
        "status",
        "get",
        "describe",
        "logs",
        "spawn",
        "stop",
        "restart",
        "drain",
        "undrain",
        "watch",
        "config",
        "version",
        "completions",
    ] {
        assert!(out.contains(verb), "--help lacks {verb}:\n{out}");
    }
    assert!(out.contains("Exit codes"), "{out}");
}

#[test]
fn every_verb_has_an_example() {
    for verb in [
        "status",
        "get",
        "describe",
        "logs",
        "stop",
        "restart",
        "drain",
        "undrain",
        "watch",
        "audit",
        "version",
        "completions",
    ] {
        lidoctl().args([verb, "--help"]).assert().success().stdout(predicate::str::contains("lidoctl "));
    }
    for kind in ["broker", "market", "trader"] {
        lidoctl()
            .args(["spawn", kind, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("lidoctl spawn {kind}")));
    }
}

#[test]
fn version() {
    lidoctl()
        .arg("version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(format!("lidoctl {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn completions() {
    lidoctl().args(["completions", "bash"]).assert().success().stdout(predicate::str::contains("lidoctl"));
}

#[test]
fn usage_errors_exit_2() {
    lidoctl().arg("frobnicate").assert().code(2);
    lidoctl().args(["get", "widgets"]).assert().code(2);
    lidoctl()
        .args(["spawn", "broker", "paper", "--set", "foo"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("KEY=VALUE"));
}

#[test]
fn token_verbs_check_their_arguments() {
    for sub in ["create", "list", "revoke"] {
        lidoctl().args(["token", sub, "--help"]).assert().success().stdout(predicate::str::contains("lidoctl token"));
    }
    // Exactly one role.
    lidoctl().args(["token", "create"]).assert().code(2);
    lidoctl().args(["token", "create", "--operator", "--customer", "acme"]).assert().code(2);
    lidoctl().args(["audit", "--since", "yesterday"]).assert().code(2);
    // Revoking is destructive: refused without --yes before any network call.
    lidoctl()
        .args(["--url", &dead_url(), "token", "revoke", "t-1"])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--yes"));
}

#[test]
fn unreachable_exits_4_with_a_hint() {
    lidoctl()
        .args(["--url", &dead_url(), "status"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("error: ").and(predicate::str::contains("is lidod running?")));
}

#[test]
fn destructive_verbs_need_yes_without_a_terminal() {
    // Refused before any network call: the URL is dead on purpose.
    let url = dead_url();
    lidoctl()
        .args(["--url", &url, "stop", "x"])
        .write_stdin("")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--yes"));
    lidoctl()
        .args(["--url", &url, "drain", "node", "n1"])
        .write_stdin("y\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--yes"));
}

#[test]
fn status_json_against_a_fake_im() {
    let url = format!("http://{}", fake_im());
    let assert = lidoctl().args(["--url", &url, "-o", "json", "status"]).assert().success();
    let snapshot: ClusterSnapshot = serde_json::from_slice(&assert.get_output().stdout).expect("stdout is a snapshot");
    assert_eq!(snapshot.nodes[0].id, "n1");
    assert_eq!(snapshot.services().count(), 2);
}

#[test]
fn status_table_when_piped() {
    let url = format!("http://{}", fake_im());
    lidoctl().args(["--url", &url, "status"]).assert().success().stdout(
        predicate::str::contains("NAME")
            .and(predicate::str::contains("RESTARTS"))
            .and(predicate::str::contains("degraded"))
            .and(predicate::str::contains("\u{1b}[").not()),
    );
}

#[test]
fn failover_to_the_next_url() {
    let url = format!("{},http://{}", dead_url(), fake_im());
    lidoctl()
        .args(["--url", &url, "get", "nodes", "-o", "json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"n1\""));
}

#[test]
fn get_filters_by_kind() {
    let url = format!("http://{}", fake_im());
    let assert = lidoctl().args(["--url", &url, "get", "brokers", "-o", "json"]).assert().success();
    let services: Vec<ServiceInfo> = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["paper"]);
    lidoctl().args(["--url", &url, "get", "market", "nope"]).assert().code(3);
}

#[test]
fn stop_unknown_exits_3() {
    let url = format!("http://{}", fake_im());
    lidoctl()
        .args(["--url", &url, "stop", "nope", "--yes"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no service named nope"));
    lidoctl()
        .args(["--url", &url, "stop", "paper", "-y"])
        .assert()
        .success()
        .stdout(predicate::str::contains("stopped paper"));
}

#[test]
fn refused_exits_5() {
    let url = format!("http://{}", fake_im());
    lidoctl()
        .args(["--url", &url, "drain", "n1", "--yes"])
        .assert()
        .code(5)
        .stderr(predicate::str::contains("already draining"));
}

#[test]
fn spawn_prints_the_service() {
    let url = format!("http://{}", fake_im());
    lidoctl()
        .args(["--url", &url, "spawn", "broker", "paper", "--name", "p2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("spawned p2 (broker paper) on node n1"));
    let assert = lidoctl()
        .args(["--url", &url, "-o", "json", "spawn", "market", "crypto", "--set", "brokers=k1,k2"])
        .assert()
        .success();
    let service: ServiceInfo = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(service.name, "crypto");
    assert_eq!(service.options.get("brokers").map(String::as_str), Some("k1,k2"));
}

#[test]
fn get_sessions_against_a_fake_im() {
    let url = format!("http://{}", fake_im());
    lidoctl().args(["--url", &url, "get", "sessions"]).assert().success().stdout(
        predicate::str::starts_with("ID")
            .and(predicate::str::contains("CUSTOMER"))
            .and(predicate::str::contains("s-0123abcd   acme")),
    );
    let assert = lidoctl().args(["--url", &url, "get", "sessions", "-o", "json"]).assert().success();
    let sessions: Vec<SessionInfo> = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(sessions[0].customer, "acme");
    lidoctl().args(["--url", &url, "get", "session", "nope"]).assert().code(3);
}

#[test]
fn describe_against_a_fake_im() {
    let url = format!("http://{}", fake_im());
    lidoctl().args(["--url", &url, "describe", "broker", "paper"]).assert().success().stdout(
        predicate::str::contains("Name:      paper")
            .and(predicate::str::contains("Events:"))
            .and(predicate::str::contains("service_changed")),
    );
    let assert = lidoctl().args(["--url", &url, "describe", "svc", "sim", "-o", "json"]).assert().success();
    let detail: ServiceDetail = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    assert_eq!(detail.service.kind, ServiceKind::Market);
    lidoctl()
        .args(["--url", &url, "describe", "trader", "sim"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("it is a market"));
    lidoctl().args(["--url", &url, "describe", "node", "n1"]).assert().success().stdout(
        predicate::str::contains("Managers:")
            .and(predicate::str::contains("Services:"))
            .and(predicate::str::contains("sim")),
    );
    lidoctl().args(["--url", &url, "describe", "node", "n9"]).assert().code(3);
}

#[test]
fn logs_since_against_a_fake_im() {
    let url = format!("http://{}", fake_im());
    lidoctl()
        .args(["--url", &url, "logs", "paper"])
        .assert()
        .success()
        .stdout("2000-01-01T00:00:00Z  INFO old line\n  continued\n2999-01-01T00:00:00Z  INFO future line\n");
    lidoctl()
        .args(["--url", &url, "logs", "paper", "--since", "1h"])
        .assert()
        .success()
        .stdout("2999-01-01T00:00:00Z  INFO future line\n");
    lidoctl()
        .args(["--url", &url, "logs", "paper", "--tail", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("future"));
    lidoctl().args(["--url", &url, "logs", "sim"]).assert().code(5).stderr(predicate::str::contains("inside lidod"));
    lidoctl().args(["--url", &url, "logs", "ghost"]).assert().code(3);
}

#[test]
fn contexts_pick_the_url_and_flags_win() {
    let live = format!("http://{}", fake_im());
    let dead = dead_url();
    let path = config_file(&format!(
        "# mine\ncurrent-context = \"dead\"\n\n[contexts.dead]\nurls = [\"{dead}\"]\n\n[contexts.live]\nurls = [\"{live}\"]\ntoken = \"t\"\n"
    ));
    let with = |args: &[&str]| {
        let mut cmd = lidoctl();
        cmd.env("LIDO_CONFIG", &path).args(args);
        cmd
    };
    with(&["get", "nodes"]).assert().code(4);
    with(&["--context", "live", "get", "nodes"]).assert().success();
    with(&["get", "nodes"]).env("LIDO_CONTEXT", "live").assert().success();
    with(&["get", "nodes"]).env("LIDO_URL", &live).assert().success();
    with(&["--url", &dead, "get", "nodes"]).env("LIDO_URL", &live).assert().code(4);
    // --config beats LIDO_CONFIG.
    lidoctl().args(["--config", path.to_str().unwrap(), "--context", "live", "get", "nodes"]).assert().success();
    with(&["--context", "nope", "get", "nodes"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no context named \"nope\"").and(predicate::str::contains("get-contexts")));

    with(&["config", "get-contexts"]).assert().success().stdout(
        predicate::str::contains("*         dead")
            .and(predicate::str::contains("set in file"))
            .and(predicate::str::contains("\"t\"").not()),
    );
    with(&["config", "current-context"]).assert().success().stdout("dead\n");
    with(&["config", "use-context", "live"]).assert().success();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# mine\ncurrent-context = \"live\"\n"), "{text}");
    with(&["get", "nodes"]).assert().success();
    with(&["config", "use-context", "nope"]).assert().code(2);
    with(&["config", "current-context"]).env("LIDO_CONTEXT", "dead").assert().success().stdout("dead\n");
    // No file: no contexts, and the default URL.
    lidoctl().args(["config", "get-contexts"]).assert().success().stderr(predicate::str::contains("no contexts"));
    lidoctl().args(["config", "current-context"]).assert().code(3);
    let bad = config_file("current-context = 3\n");
    lidoctl()
        .args(["--config", bad.to_str().unwrap(), "status"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad config file"));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    let _ = std::fs::remove_dir_all(bad.parent().unwrap());
}
