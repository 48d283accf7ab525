//! Supervision shared by the BrokerManager and the TraderManager: start a
//! service (child process or in-process task), accept its check-in, hold its
//! pipe, restart it when it dies, stop it on request, report its state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use futures_util::future::BoxFuture;
use lido_shared::access::Secret;
use lido_shared::client::agent::{Proof, ServiceLink, SERVICE_KEY_ENV};
use lido_shared::cluster::{ClusterEvent, RunMode, ServiceInfo, ServiceKind, ServiceState};
use lido_shared::pipe::{CheckIn, Command};
use lido_shared::tls::{TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::SupervisorConfig;
use crate::error::ApiError;
use crate::events::EventBus;
use crate::logbuf::LogBuffer;
use crate::pipe::{PipeEvents, PipeHandle, PipeSignal};
use crate::sandbox::Sandbox;

/// How to start a service.
#[derive(Clone)]
pub enum Launch {
    /// A child process. Its stdin is a pipe that closes when `lidod` dies,
    /// so children never outlive their node.
    /// Its environment is built, never inherited ([`crate::sandbox::child_env`]):
    /// the base, `pass` (names copied from lidod's environment), `env`.
    /// `own_cert`: on a TLS node, the folder where each start gets a pipe
    /// certificate of its own instead of the node's (hosted traders).
    /// `sandbox`: run it through `launcher` (`lidod sandbox …`) under Landlock.
    Process {
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        pass: Vec<String>,
        own_cert: Option<PathBuf>,
        sandbox: Option<(PathBuf, Sandbox)>,
    },
    /// A task inside `lidod`; it gets a token that stops it.
    Task(Arc<dyn Fn(CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>),
}

/// One child process to run, borrowed from its [`Launch::Process`].
struct ChildSpec<'a> {
    program: &'a PathBuf,
    args: &'a [String],
    env: &'a [(String, String)],
    pass: &'a [String],
    own_cert: Option<&'a std::path::Path>,
    sandbox: Option<&'a (PathBuf, Sandbox)>,
}

/// What the manager knows to (re)start a service.
#[derive(Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub kind: ServiceKind,
    pub service_type: String,
    pub options: BTreeMap<String, String>,
    pub launch: Option<Launch>,
}

/// One manager's set of supervised services.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ServiceKind,
    node: String,
    config: SupervisorConfig,
    bus: EventBus,
    services: Mutex<BTreeMap<String, Entry>>,
    /// Services stopped by an operator, with the pid of the incarnation
    /// stopped and when: that process may still check in while it exits,
    /// and must not come back as an adopted external service.
    stopped: Mutex<HashMap<String, (Option<u32>, Instant)>>,
    events: PipeEvents,
    signals: mpsc::UnboundedSender<(String, PipeSignal)>,
    /// Given to services (child processes in their environment); its secret
    /// is proven on every pipe dial.
    link: ServiceLink,
    /// The trust `wss://` pipes are dialed with (TLS nodes).
    dial_tls: Option<Arc<rustls::ClientConfig>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

struct Entry {
    info: ServiceInfo,
    pipe: Option<PipeHandle>,
    /// Stops the monitor (and so the service) for good.
    stop: CancellationToken,
    /// Kills the current incarnation; the monitor restarts it.
    bounce: CancellationToken,
    /// Set when a stop was asked: an exit is then not a crash.
    stopping: bool,
    /// Pipe frames counted at the last metrics sample.
    last_received: u64,
    /// The process's recent output, across restarts.
    logs: Arc<LogBuffer>,
    /// What its pipe is dialed with when it has its own certificate
    /// ([`Launch::Process`] `own_cert`): that certificate alone.
    pipe_trust: Option<Arc<rustls::ClientConfig>>,
    /// A hosted trader's check-in key, new at each start: it checks in with
    /// it (as this name only) and its pipe is dialed proving it. Traders
    /// never see the cluster secret.
    service_key: Option<Secret>,
}

/// How long a stopped service's name refuses check-ins from a process
/// whose pid is not known to differ (longer than a stop takes).
const STOPPED_MEMORY: Duration = Duration::from_secs(60);

/// Lines of output kept per service.
const LOG_LINES: usize = 2_000;

impl Supervisor {
    /// `events` receives every service event; pipe signals are handled here
    /// and forwarded to `signals_out` after the state is updated.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: ServiceKind,
        node: String,
        config: SupervisorConfig,
        bus: EventBus,
        events: PipeEvents,
        signals_out: Option<mpsc::UnboundedSender<(String, PipeSignal)>>,
        link: ServiceLink,
        dial_tls: Option<Arc<rustls::ClientConfig>>,
        cancel: CancellationToken,
    ) -> Self {
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            kind,
            node,
            config,
            bus,
            services: Mutex::new(BTreeMap::new()),
            stopped: Mutex::new(HashMap::new()),
            events,
            signals,
            link,
            dial_tls,
            cancel,
            tracker: TaskTracker::new(),
        });
        let sup = Self { inner };
        tokio::spawn(sup.clone().signal_loop(signals_rx, signals_out));
        sup
    }

    pub fn kind(&self) -> ServiceKind {
        self.inner.kind
    }

    /// What services of this node are given: the secret they prove on
    /// check-in and the TLS set-up (tasks get it from here, processes in
    /// their environment). Hosted traders are customers' code: they get the
    /// CA to trust, never the node's key; their `wss://` pipe uses a
    /// certificate of their own ([`Launch::Process`] `own_cert`).
    pub fn link(&self) -> ServiceLink {
        let mut link = self.inner.link.clone();
        if self.inner.kind == ServiceKind::Trader {
            link.tls = None;
        }
        link
    }

    /// The CA a service trusts on check-in (TLS nodes).
    pub fn manager_ca(&self) -> Option<PathBuf> {
        self.inner.link.manager_ca.clone()
    }

    /// Whether `given` is the check-in key of the current incarnation of
    /// the hosted service `name` (constant time).
    pub fn key_matches(&self, name: &str, given: &[u8]) -> bool {
        let key = self.lock().get(name).and_then(|e| e.service_key.clone());
        key.is_some_and(|key| crate::auth::secret::matches(given, &key))
    }

    pub fn list(&self) -> Vec<ServiceInfo> {
        let services = self.lock();
        services.values().map(|e| self.decorate(e)).collect()
    }

    pub fn get(&self, name: &str) -> Option<ServiceInfo> {
        self.lock().get(name).map(|e| self.decorate(e))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The pipe to a service, if it has checked in.
    pub fn pipe(&self, name: &str) -> Option<PipeHandle> {
        self.lock().get(name).and_then(|e| e.pipe.clone())
    }

    /// Starts a new service and keeps it running.
    pub fn spawn(&self, spec: ServiceSpec) -> Result<ServiceInfo, ApiError> {
        let stop = self.inner.cancel.child_token();
        let mode = match spec.launch {
            Some(Launch::Process { .. }) => RunMode::Process,
            Some(Launch::Task(_)) => RunMode::Task,
            None => RunMode::External,
        };
        let info = ServiceInfo {
            name: spec.name.clone(),
            kind: spec.kind,
            service_type: spec.service_type.clone(),
            state: ServiceState::Starting,
            node: self.inner.node.clone(),
            mode,
            pid: None,
            ws_url: None,
            restarts: 0,
            started_at: Some(Utc::now()),
            detail: None,
            options: spec.options.clone(),
            metrics: BTreeMap::new(),
        };
        {
            let mut services = self.lock();
            if services.contains_key(&spec.name) {
                return Err(ApiError::conflict(
                    "service_exists",
                    format!("a service named {:?} already exists; pick another --name", spec.name),
                ));
            }
            self.forget_stopped(&spec.name);
            services.insert(
                spec.name.clone(),
                Entry {
                    info: info.clone(),
                    pipe: None,
                    stop: stop.clone(),
                    bounce: stop.child_token(),
                    stopping: false,
                    last_received: 0,
                    logs: Arc::new(LogBuffer::new(LOG_LINES)),
                    pipe_trust: None,
                    service_key: None,
                },
            );
        }
        self.publish(&info);
        if let Some(launch) = spec.launch {
            self.inner.tracker.spawn(self.clone().monitor(spec.name.clone(), launch, stop));
        }
        info!(kind = %spec.kind, name = %spec.name, r#type = %spec.service_type, ?mode, "service spawned");
        Ok(info)
    }

    /// A service checked in: (re)attach its pipe. Unknown names are adopted
    /// as external services.
    pub fn checkin(&self, checkin: CheckIn) -> Result<(), ApiError> {
        let adopted = {
            let mut services = self.lock();
            let adopted = !services.contains_key(&checkin.name);
            if adopted {
                self.refuse_if_stopped(&checkin)?;
                let stop = self.inner.cancel.child_token();
                let info = ServiceInfo {
                    name: checkin.name.clone(),
                    kind: checkin.kind,
                    service_type: checkin.service_type.clone(),
                    state: ServiceState::Starting,
                    node: self.inner.node.clone(),
                    mode: RunMode::External,
                    pid: checkin.pid,
                    ws_url: None,
                    restarts: 0,
                    started_at: Some(Utc::now()),
                    detail: None,
                    options: BTreeMap::new(),
                    metrics: BTreeMap::new(),
                };
                services.insert(
                    checkin.name.clone(),
                    Entry {
                        info,
                        pipe: None,
                        bounce: stop.child_token(),
                        stop,
                        stopping: false,
                        last_received: 0,
                        logs: Arc::new(LogBuffer::new(LOG_LINES)),
                        pipe_trust: None,
                        service_key: None,
                    },
                );
            }
            let entry = services.get_mut(&checkin.name).expect("inserted above");
            if entry.info.service_type != checkin.service_type {
                return Err(ApiError::conflict(
                    "type_mismatch",
                    format!(
                        "service {:?} is a {} service, not {}",
                        checkin.name, entry.info.service_type, checkin.service_type
                    ),
                ));
            }
            entry.info.ws_url = Some(checkin.ws_url.clone());
            if checkin.pid.is_some() && entry.info.mode != RunMode::Task {
                entry.info.pid = checkin.pid;
            }
            let trust = entry.pipe_trust.clone().or_else(|| self.inner.dial_tls.clone());
            let proof = match &entry.service_key {
                Some(key) => Proof::ServiceKey(key.clone()),
                None => Proof::ClusterSecret(self.inner.link.cluster_secret.clone()),
            };
            match &entry.pipe {
                Some(pipe) => pipe.redial_with(checkin.ws_url.clone(), trust, proof),
                None => {
                    entry.pipe = Some(PipeHandle::start(
                        checkin.name.clone(),
                        checkin.ws_url.clone(),
                        self.inner.events.clone(),
                        self.inner.signals.clone(),
                        proof,
                        trust,
                        entry.stop.child_token(),
                    ))
                }
            }
            adopted
        };
        if adopted {
            self.inner.bus.log("info", format!("adopted external {} {}", checkin.kind, checkin.name));
        }
        info!(name = %checkin.name, ws_url = %checkin.ws_url, pid = ?checkin.pid, "service checked in");
        Ok(())
    }

    /// Refuses the check-in of a process an operator stopped (410: its agent
    /// then exits). A new process of that name, with another pid, is taken.
    fn refuse_if_stopped(&self, checkin: &CheckIn) -> Result<(), ApiError> {
        let mut stopped = self.inner.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let Some(&(pid, at)) = stopped.get(&checkin.name) else { return Ok(()) };
        let another_process = pid.is_some() && checkin.pid.is_some() && pid != checkin.pid;
        if another_process || at.elapsed() > STOPPED_MEMORY {
            stopped.remove(&checkin.name);
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::GONE,
            "service_stopped",
            format!(
                "service {:?} was stopped by an operator; this process should exit (start it again with \
                 `lidoctl spawn`, or as a new process)",
                checkin.name
            ),
        ))
    }

    fn forget_stopped(&self, name: &str) {
        self.inner.stopped.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// A service's output buffer and how it runs (only processes have output
    /// of their own; tasks log into lidod's log).
    pub fn logs(&self, name: &str) -> Option<(Arc<LogBuffer>, RunMode)> {
        self.lock().get(name).map(|e| (e.logs.clone(), e.info.mode))
    }

    /// Stops a service for good and forgets it.
    pub async fn stop(&self, name: &str) -> Result<ServiceInfo, ApiError> {
        let (stop, pipe) = {
            let mut services = self.lock();
            let entry = services.get_mut(name).ok_or_else(|| not_found(name))?;
            entry.stopping = true;
            (entry.stop.clone(), entry.pipe.clone())
        };
        self.set_state(name, ServiceState::Draining, Some("stopping".into()));
        // Ask politely first: the service finishes in-flight work and exits.
        if let Some(pipe) = &pipe {
            let _ = pipe.request(Command::Stop, Duration::from_millis(self.inner.config.stop_grace_ms)).await;
        }
        stop.cancel();
        if let Some(pipe) = &pipe {
            pipe.close();
        }
        let removed = self.lock().remove(name);
        let mut info = removed.map(|e| e.info).ok_or_else(|| not_found(name))?;
        self.inner
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (info.pid, Instant::now()));
        info.state = ServiceState::Stopped;
        self.inner.bus.publish(ClusterEvent::ServiceRemoved { name: name.to_string(), node: self.inner.node.clone() });
        info!(name, "service stopped");
        Ok(info)
    }

    /// Kills the current incarnation; the monitor starts a fresh one.
    pub fn restart(&self, name: &str) -> Result<ServiceInfo, ApiError> {
        let info = {
            let mut services = self.lock();
            let entry = services.get_mut(name).ok_or_else(|| not_found(name))?;
            if entry.info.mode == RunMode::External {
                return Err(ApiError::conflict(
                    "not_restartable",
                    format!("{name} runs outside lidod; restart it where it runs"),
                ));
            }
            entry.bounce.cancel();
            entry.bounce = entry.stop.child_token();
            entry.info.clone()
        };
        self.inner.bus.log("info", format!("restart of {name} requested"));
        Ok(info)
    }

    /// Stops everything, politely then firmly; waits for the monitors.
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        let stops = names.iter().map(|n| self.stop(n));
        futures_util::future::join_all(stops).await;
        self.inner.tracker.close();
        let _ = tokio::time::timeout(
            Duration::from_millis(self.inner.config.stop_grace_ms + 1000),
            self.inner.tracker.wait(),
        )
        .await;
    }

    pub fn set_state(&self, name: &str, state: ServiceState, detail: Option<String>) {
        let info = {
            let mut services = self.lock();
            let Some(entry) = services.get_mut(name) else { return };
            if entry.info.state == state && entry.info.detail == detail {
                return;
            }
            entry.info.state = state;
            entry.info.detail = detail;
            self.decorate(entry)
        };
        self.publish(&info);
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut ServiceInfo)) {
        let info = {
            let mut services = self.lock();
            let Some(entry) = services.get_mut(name) else { return };
            f(&mut entry.info);
            self.decorate(entry)
        };
        self.publish(&info);
    }

    /// Keeps the figures a service reports itself (`ServiceEvent::Metrics`,
    /// e.g. a venue's rate-limit level); they go out with the next sample.
    pub fn record_metrics(&self, name: &str, figures: &BTreeMap<String, f64>) {
        if let Some(entry) = self.lock().get_mut(name) {
            entry.info.metrics.extend(figures.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }

    /// Samples rates since the last call: updates each service's
    /// `messages_per_s` and returns every service's figures.
    pub fn sample_metrics(&self, elapsed: Duration) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut services = self.lock();
        let secs = elapsed.as_secs_f64().max(1e-3);
        services
            .iter_mut()
            .map(|(name, entry)| {
                if let Some(pipe) = &entry.pipe {
                    let received = pipe.received();
                    let rate = received.saturating_sub(entry.last_received) as f64 / secs;
                    entry.last_received = received;
                    entry.info.metrics.insert("messages_per_s".into(), (rate * 10.0).round() / 10.0);
                }
                (name.clone(), self.decorate(entry).metrics)
            })
            .collect()
    }

    fn decorate(&self, entry: &Entry) -> ServiceInfo {
        let mut info = entry.info.clone();
        if let Some(pipe) = &entry.pipe {
            info.metrics.insert("pipe_latency_ms".into(), pipe.rtt().as_secs_f64() * 1000.0);
        }
        info
    }

    fn publish(&self, info: &ServiceInfo) {
        self.inner.bus.publish(ClusterEvent::ServiceChanged { service: info.clone() });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_stopping(&self, name: &str) -> bool {
        self.lock().get(name).is_none_or(|e| e.stopping)
    }

    fn bounce_token(&self, name: &str) -> Option<CancellationToken> {
        self.lock().get(name).map(|e| e.bounce.clone())
    }

    async fn signal_loop(
        self,
        mut rx: mpsc::UnboundedReceiver<(String, PipeSignal)>,
        out: Option<mpsc::UnboundedSender<(String, PipeSignal)>>,
    ) {
        while let Some((name, signal)) = rx.recv().await {
            match &signal {
                PipeSignal::Up { .. } => self.set_state(&name, ServiceState::Running, None),
                PipeSignal::Down { reason } => {
                    if self.get(&name).is_some_and(|i| i.state == ServiceState::Running) {
                        self.set_state(&name, ServiceState::Degraded, Some(format!("pipe down: {reason}")));
                    }
                }
                PipeSignal::Status { state, detail } => self.set_state(&name, *state, detail.clone()),
            }
            if let Some(out) = &out {
                let _ = out.send((name, signal));
            }
        }
    }

    /// Runs a service, restarting it when it dies, until it is stopped.
    async fn monitor(self, name: String, launch: Launch, stop: CancellationToken) {
        let cfg = self.inner.config.clone();
        let mut delay = Duration::from_millis(cfg.restart_min_ms);
        let mut recent: Vec<Instant> = Vec::new();
        loop {
            let Some(bounce) = self.bounce_token(&name) else { return };
            let started = Instant::now();
            let outcome = match &launch {
                Launch::Process { program, args, env, pass, own_cert, sandbox } => {
                    let child = ChildSpec {
                        program,
                        args,
                        env,
                        pass,
                        own_cert: own_cert.as_deref(),
                        sandbox: sandbox.as_ref(),
                    };
                    self.run_process(&name, child, &bounce).await
                }
                Launch::Task(make) => {
                    let token = bounce.clone();
                    let task = tokio::spawn(make(token.clone()));
                    let _ = task.await;
                    if token.is_cancelled() {
                        Ok("stopped".into())
                    } else {
                        Err("task ended".to_string())
                    }
                }
            };
            if stop.is_cancelled() || self.is_stopping(&name) {
                return;
            }
            let why = match outcome {
                Ok(why) | Err(why) => why,
            };
            // Restart policy: exponential delay, reset after a healthy run;
            // give up after too many restarts in the window.
            if started.elapsed() > Duration::from_secs(cfg.restart_window_s) {
                delay = Duration::from_millis(cfg.restart_min_ms);
            }
            let window = Duration::from_secs(cfg.restart_window_s);
            recent.retain(|t| t.elapsed() < window);
            if recent.len() as u32 >= cfg.max_restarts {
                error!(%name, restarts = recent.len(), "service keeps dying, giving up");
                self.set_state(
                    &name,
                    ServiceState::Failed,
                    Some(format!("{why}; gave up after {} restarts in {}s", recent.len(), cfg.restart_window_s)),
                );
                self.inner.bus.log("error", format!("{name} failed: {why}; not restarting"));
                return;
            }
            recent.push(Instant::now());
            metrics::counter!("lido_service_restarts_total", "service" => name.clone(), "kind" => self.inner.kind.as_str())
                .increment(1);
            warn!(%name, reason = %why, delay_ms = delay.as_millis() as u64, "service exited, restarting");
            self.update(&name, |i| {
                i.state = ServiceState::Starting;
                i.detail = Some(format!("restarting: {why}"));
                i.restarts += 1;
                i.pid = None;
            });
            self.inner.bus.log("warn", format!("{name} exited ({why}); restarting"));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_millis(cfg.restart_max_ms));
        }
    }

    /// Runs one incarnation of a child process; returns why it ended.
    async fn run_process(
        &self,
        name: &str,
        child: ChildSpec<'_>,
        bounce: &CancellationToken,
    ) -> Result<String, String> {
        let ChildSpec { program, args, env, pass, own_cert, sandbox } = child;
        let mut cmd = match sandbox {
            Some((launcher, sandbox)) => {
                let mut cmd = tokio::process::Command::new(launcher);
                cmd.args(sandbox.launcher_args(program, args)).current_dir(&sandbox.work_dir);
                cmd
            }
            None => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args);
                cmd
            }
        };
        // Nothing of lidod's environment but what is named for this child.
        cmd.env_clear()
            .envs(crate::sandbox::child_env(pass, env))
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.inner.kind == ServiceKind::Trader {
            // Customers' code: a key for this start, never the cluster secret.
            let key = crate::auth::secret::generate();
            cmd.env(SERVICE_KEY_ENV, key.expose());
            if let Some(ca) = &self.inner.link.manager_ca {
                cmd.env(TLS_CA_ENV, ca);
            }
            if let Some(e) = self.lock().get_mut(name) {
                e.service_key = Some(key);
            }
        } else {
            for (var, value) in self.link().env() {
                if let Some(value) = value {
                    cmd.env(var, value);
                }
            }
        }
        if let Some(dir) = own_cert.filter(|_| self.inner.link.tls.is_some()) {
            let own = crate::tls::OwnPipeCert::make(dir).map_err(|e| format!("no pipe certificate: {e}"))?;
            cmd.env(TLS_CERT_ENV, &own.identity.cert).env(TLS_KEY_ENV, &own.identity.key);
            if let Some(e) = self.lock().get_mut(name) {
                e.pipe_trust = Some(own.trust);
            }
            info!(name, cert = %own.identity.cert.display(), "own pipe certificate made");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Err(format!("cannot start {}: {e}", program.display())),
        };
        // Held, never written: the child sees end-of-file when we close it
        // or die. (`Child::wait` would close it, so it is taken out first.)
        let stdin = child.stdin.take();
        if let Some(logs) = self.lock().get(name).map(|e| e.logs.clone()) {
            if let Some(out) = child.stdout.take() {
                tokio::spawn(capture(name.to_string(), out, logs.clone()));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(capture(name.to_string(), err, logs));
            }
        }
        let pid = child.id();
        self.update(name, |i| {
            i.pid = pid;
            i.started_at = Some(Utc::now());
        });
        info!(name, ?pid, "service process started");
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) => Err(format!("process exited with {s}")),
                Err(e) => Err(format!("cannot wait for process: {e}")),
            },
            _ = bounce.cancelled() => {
                // Closing stdin asks the child to exit; then the grace period.
                drop(stdin);
                let grace = Duration::from_millis(self.inner.config.stop_grace_ms);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    warn!(name, ?pid, "service did not exit in time, killing it");
                    let _ = child.kill().await;
                }
                Ok("stopped".into())
            }
        }
    }
}

/// Copies a child's output into its log buffer and on to lidod's stderr,
/// prefixed with the service name.
async fn capture(name: String, from: impl tokio::io::AsyncRead + Unpin, logs: Arc<LogBuffer>) {
    use std::io::Write;

    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        // One write per line (stderr is unbuffered: `writeln!` would make
        // five), and never a panic, unlike eprintln!, if our stderr is gone.
        let text = format!("[{name}] {line}\n");
        let _ = std::io::stderr().write_all(text.as_bytes());
        logs.push(line);
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("unknown_service", format!("no service named {name:?}; `lidoctl status` lists them"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> Supervisor {
        let (events, _) = mpsc::channel(16);
        Supervisor::new(
            ServiceKind::Broker,
            "n1".into(),
            SupervisorConfig { stop_grace_ms: 10, ..SupervisorConfig::default() },
            EventBus::new(),
            events,
            None,
            ServiceLink { cluster_secret: Secret::new("s"), tls: None, manager_ca: None, in_memory: false },
            None,
            CancellationToken::new(),
        )
    }

    fn checkin(pid: u32) -> CheckIn {
        CheckIn {
            name: "b1".into(),
            kind: ServiceKind::Broker,
            service_type: "paper".into(),
            // Nothing listens there: the pipe just keeps re-dialing.
            ws_url: "ws://127.0.0.1:9/pipe".into(),
            pid: Some(pid),
            instance: format!("i-{pid}"),
        }
    }

    #[tokio::test]
    async fn a_stopped_process_checking_in_again_is_refused_not_adopted() {
        let sup = supervisor();
        sup.checkin(checkin(4242)).unwrap();
        sup.stop("b1").await.unwrap();

        let refused = sup.checkin(checkin(4242)).unwrap_err();
        assert_eq!(refused.status, StatusCode::GONE);
        assert_eq!(refused.code, "service_stopped");
        assert!(sup.get("b1").is_none(), "the stopped service stays gone");

        sup.checkin(checkin(4343)).expect("a new process of that name is adopted");
        assert_eq!(sup.get("b1").map(|s| s.pid), Some(Some(4343)));
    }
}
