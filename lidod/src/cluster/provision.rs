//! Provisioners: how the node autoscaler gets a node and gives one back.
//!
//! - [`LocalProvisioner`] (`kind = "local"`) starts another `lidod` on this
//!   machine as a child process and stops it on release;
//! - [`CommandProvisioner`] (`kind = "command"`) runs an operator's shell
//!   command (`kubectl scale …`, a cloud CLI, …).
//!
//! Either way the new node checks in with the IMs by itself; the
//! provisioner only starts and stops it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::process::{Child, ChildStdin, Command};

/// What the autoscaler asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// The id the new node should take (`auto-N`, unused in the cluster).
    pub node_id: String,
    /// Where it should run; `None`: the provisioner's default.
    pub location: Option<String>,
    /// How many nodes the cluster should have with this one (checked in,
    /// draining and pending ones included): a replica count to scale to.
    pub nodes_wanted: usize,
}

/// A node the provisioner started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionedNode {
    /// The id it will check in with (the request's, or the one a command printed).
    pub node_id: String,
    /// Its API, when the provisioner knows it (a local node prints it).
    pub api_url: Option<String>,
    /// Its process, when it is our child.
    pub pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot start {what}: {cause}")]
    Start { what: String, cause: String },
    #[error("{what} exited with {code}: {stderr}")]
    Failed { what: String, code: String, stderr: String },
    #[error("{what} did not finish within {timeout_ms} ms; raise timeout_ms or check the command")]
    TimedOut { what: String, timeout_ms: u64 },
    #[error("node {0} was not started by this provisioner (started by another IM, or already released)")]
    UnknownNode(String),
    #[error("cannot prepare node {node}: {cause}")]
    Prepare { node: String, cause: String },
}

pub type Result<T> = std::result::Result<T, ProvisionError>;

#[async_trait]
pub trait Provisioner: Send + Sync + 'static {
    /// `local` or `command`, for status.
    fn kind(&self) -> &'static str;
    async fn provision(&self, req: &ProvisionRequest) -> Result<ProvisionedNode>;
    /// Stops the node (it was drained and is idle).
    async fn release(&self, node_id: &str) -> Result<()>;
}

/// Set on a node the local provisioner starts: it exits when its stdin (a
/// pipe from this IM) closes, so no node outlives the IM that started it.
pub const EXIT_WITH_PARENT_ENV: &str = "LIDO_EXIT_WITH_PARENT";

/// `[cluster.provisioner]`, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProvisionerConfig {
    Local(LocalProvisionerConfig),
    Command(CommandProvisionerConfig),
}

impl ProvisionerConfig {
    pub fn build(&self) -> std::sync::Arc<dyn Provisioner> {
        match self {
            Self::Local(cfg) => std::sync::Arc::new(LocalProvisioner::new(cfg.clone())),
            Self::Command(cfg) => std::sync::Arc::new(CommandProvisioner::new(cfg.clone())),
        }
    }
}

/// `kind = "local"`: more `lidod` processes on this machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalProvisionerConfig {
    /// The `lidod` to start; unset: this very program.
    pub exe: Option<PathBuf>,
    /// Each node's data dir is `base_dir/<node id>` (kept after release: the journal).
    pub base_dir: PathBuf,
    /// `--listen` of each node.
    pub listen: String,
    /// The IMs the nodes check in with (`--im`).
    pub ims: Vec<String>,
    /// The cluster secret the nodes share with the IMs.
    pub cluster_secret_file: Option<PathBuf>,
    /// A node config (TOML: brokers, markets, …) each node starts from; its
    /// id, location and cluster secret file are set on top of it.
    pub node_config: Option<PathBuf>,
    /// More arguments, after the generated ones.
    pub extra_args: Vec<String>,
    /// Pass `--role node --node-id … --location … --im …` (the node id and
    /// location also go in the generated config file). Off only for a
    /// `lidod` that predates those flags.
    pub cluster_flags: bool,
    /// How long a node may take to print its address.
    pub start_timeout_ms: u64,
    /// From SIGTERM to SIGKILL on release.
    pub stop_grace_ms: u64,
}

impl Default for LocalProvisionerConfig {
    fn default() -> Self {
        Self {
            exe: None,
            base_dir: std::env::temp_dir().join("lido-nodes"),
            listen: "127.0.0.1:0".into(),
            ims: Vec::new(),
            cluster_secret_file: None,
            node_config: None,
            extra_args: Vec::new(),
            cluster_flags: true,
            start_timeout_ms: 30_000,
            stop_grace_ms: 10_000,
        }
    }
}

/// `kind = "command"`: shell commands, run with `sh -c`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandProvisionerConfig {
    /// E.g. `kubectl scale statefulset lidod-node --replicas=$LIDO_NODES_WANTED`.
    /// Env: `LIDO_NODE_ID`, `LIDO_LOCATION`, `LIDO_NODES_WANTED`. A stdout
    /// line `LIDO_NODE_ID=<id>` names the node it started, if not that id.
    pub provision: String,
    /// Env: `LIDO_NODE_ID`.
    pub release: String,
    #[serde(default = "default_command_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_command_timeout_ms() -> u64 {
    60_000
}

/// The arguments of a local node's `lidod`.
pub fn local_args(cfg: &LocalProvisionerConfig, req: &ProvisionRequest, config: &Path, data_dir: &Path) -> Vec<String> {
    let mut args = Vec::new();
    if cfg.cluster_flags {
        args.extend(["--role".into(), "node".into(), "--node-id".into(), req.node_id.clone()]);
        if let Some(location) = &req.location {
            args.extend(["--location".into(), location.clone()]);
        }
        for im in &cfg.ims {
            args.extend(["--im".into(), im.clone()]);
        }
    }
    args.extend([
        "--listen".into(),
        cfg.listen.clone(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ]);
    args.extend(cfg.extra_args.iter().cloned());
    args
}

/// The config file of a local node: its id, location and the cluster secret,
/// on top of the node config text `base`, if any. Fails when `base` is not
/// valid TOML or its `node` key is not a table.
pub fn local_config_from(
    cfg: &LocalProvisionerConfig,
    req: &ProvisionRequest,
    base: Option<&str>,
) -> std::result::Result<String, String> {
    let mut root: toml::Table = match base {
        Some(text) => text.parse().map_err(|e| format!("it is not valid TOML: {e}"))?,
        None => toml::Table::new(),
    };
    let mut node = match root.remove("node") {
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(format!("its `node` is a {}, not a table", other.type_str())),
        None => toml::Table::new(),
    };
    node.insert("id".into(), req.node_id.clone().into());
    if let Some(location) = &req.location {
        node.insert("location".into(), location.clone().into());
    }
    if let Some(secret) = &cfg.cluster_secret_file {
        root.insert("cluster_secret_file".into(), secret.display().to_string().into());
    }
    root.insert("node".into(), node.into());
    toml::to_string(&root).map_err(|e| format!("cannot write the node config: {e}"))
}

/// A local node we started.
struct LocalNode {
    child: Child,
    /// Held so the child's stdin stays open while we run (closed when we die).
    _stdin: Option<ChildStdin>,
}

pub struct LocalProvisioner {
    cfg: LocalProvisionerConfig,
    nodes: Mutex<HashMap<String, LocalNode>>,
}

impl LocalProvisioner {
    pub fn new(cfg: LocalProvisionerConfig) -> Self {
        Self { cfg, nodes: Mutex::new(HashMap::new()) }
    }

    fn exe(&self) -> Result<PathBuf> {
        match &self.cfg.exe {
            Some(exe) => Ok(exe.clone()),
            None => std::env::current_exe()
                .map_err(|e| ProvisionError::Start { what: "lidod (this program)".into(), cause: e.to_string() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalNode>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids of the nodes running as our children.
    pub fn running(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[async_trait]
impl Provisioner for LocalProvisioner {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<ProvisionedNode> {
        let id = &req.node_id;
        if self.lock().contains_key(id) {
            return Err(ProvisionError::Prepare { node: id.clone(), cause: "it is already running".into() });
        }
        let prepare = |cause: std::io::Error| ProvisionError::Prepare { node: id.clone(), cause: cause.to_string() };
        let data_dir = self.cfg.base_dir.join(id);
        tokio::fs::create_dir_all(&data_dir).await.map_err(prepare)?;
        let config = self.cfg.base_dir.join(format!("{id}.toml"));
        let base = match &self.cfg.node_config {
            Some(path) => Some(tokio::fs::read_to_string(path).await.map_err(|e| ProvisionError::Prepare {
                node: id.clone(),
                cause: format!("cannot read node_config {}: {e}", path.display()),
            })?),
            None => None,
        };
        let text = local_config_from(&self.cfg, req, base.as_deref()).map_err(|cause| ProvisionError::Prepare {
            node: id.clone(),
            cause: match &self.cfg.node_config {
                Some(path) => format!("node_config {}: {cause}", path.display()),
                None => cause,
            },
        })?;
        tokio::fs::write(&config, text).await.map_err(prepare)?;
        let exe = self.exe()?;
        let args = local_args(&self.cfg, req, &config, &data_dir);
        let what = format!("node {id} ({})", exe.display());
        let mut child = Command::new(&exe)
            .args(&args)
            .env("NO_COLOR", "1")
            .env(EXIT_WITH_PARENT_ENV, "1")
            // The IM's own advertise URL is not the node's: give a node one
            // with --advertise-url in extra_args or advertise_url in node_config.
            .env_remove("LIDO_ADVERTISE_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProvisionError::Start { what: what.clone(), cause: e.to_string() })?;
        let stdin = child.stdin.take();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ProvisionError::Start { what, cause: "no stdout/stderr pipe".into() });
        };
        forward(id.clone(), BufReader::new(stderr).lines());
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_millis(self.cfg.start_timeout_ms), lines.next_line()).await;
        let api_url = match first {
            Ok(Ok(Some(line))) => line.trim().strip_prefix("lidod listening on ").map(str::to_string),
            Ok(Ok(None)) | Ok(Err(_)) => {
                let code = match child.wait().await {
                    Ok(status) => status.code().map_or("a signal".to_string(), |c| format!("code {c}")),
                    Err(e) => e.to_string(),
                };
                return Err(ProvisionError::Failed {
                    what,
                    code,
                    stderr: "see the log lines of this node above".into(),
                });
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(ProvisionError::TimedOut { what, timeout_ms: self.cfg.start_timeout_ms });
            }
        };
        forward(id.clone(), lines);
        let pid = child.id();
        tracing::info!(node = %id, pid, api = api_url.as_deref().unwrap_or("?"), args = ?args, "local provisioner: node started");
        self.lock().insert(id.clone(), LocalNode { child, _stdin: stdin });
        Ok(ProvisionedNode { node_id: id.clone(), api_url, pid })
    }

    async fn release(&self, node_id: &str) -> Result<()> {
        let Some(mut node) = self.lock().remove(node_id) else {
            return Err(ProvisionError::UnknownNode(node_id.to_string()));
        };
        if let Some(pid) = node.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let grace = Duration::from_millis(self.cfg.stop_grace_ms);
        match tokio::time::timeout(grace, node.child.wait()).await {
            Ok(status) => tracing::info!(node = %node_id, status = ?status.ok(), "local provisioner: node stopped"),
            Err(_) => {
                tracing::warn!(node = %node_id, grace_ms = self.cfg.stop_grace_ms, "local provisioner: node still running after SIGTERM, killing it");
                let _ = node.child.kill().await;
            }
        }
        Ok(())
    }
}

impl Drop for LocalProvisioner {
    fn drop(&mut self) {
        for (id, node) in self.lock().iter_mut() {
            tracing::info!(node = %id, "local provisioner: stopping node (the provisioner is going away)");
            let _ = node.child.start_kill();
        }
    }
}

/// Logs a child's output, one line per event, prefixed with its node id.
fn forward<R: AsyncRead + Unpin + Send + 'static>(node: String, mut lines: Lines<BufReader<R>>) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "lidod::node", "[{node}] {line}");
        }
    });
}

pub struct CommandProvisioner {
    cfg: CommandProvisionerConfig,
}

impl CommandProvisioner {
    pub fn new(cfg: CommandProvisionerConfig) -> Self {
        Self { cfg }
    }

    /// Runs `script` with `sh -c` and `env`; its stdout on success.
    async fn run(&self, what: &str, script: &str, env: &[(&str, String)]) -> Result<String> {
        let what = format!("{what} command `{script}`");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProvisionError::Start { what: what.clone(), cause: e.to_string() })?;
        let output = tokio::time::timeout(Duration::from_millis(self.cfg.timeout_ms), child.wait_with_output())
            .await
            .map_err(|_| ProvisionError::TimedOut { what: what.clone(), timeout_ms: self.cfg.timeout_ms })?
            .map_err(|e| ProvisionError::Start { what: what.clone(), cause: e.to_string() })?;
        if !output.status.success() {
            let code = output.status.code().map_or("a signal".to_string(), |c| format!("code {c}"));
            return Err(ProvisionError::Failed { what, code, stderr: tail(&String::from_utf8_lossy(&output.stderr)) });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// The last few hundred characters of a command's stderr, on one line.
fn tail(stderr: &str) -> String {
    const KEEP: usize = 400;
    let text = stderr.trim().replace('\n', " | ");
    if text.is_empty() {
        return "(no stderr)".into();
    }
    let chars = text.chars().count();
    if chars <= KEEP {
        return text;
    }
    format!("…{}", text.chars().skip(chars - KEEP).collect::<String>())
}

#[async_trait]
impl Provisioner for CommandProvisioner {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn provision(&self, req: &ProvisionRequest) -> Result<ProvisionedNode> {
        let env = [
            ("LIDO_NODE_ID", req.node_id.clone()),
            ("LIDO_LOCATION", req.location.clone().unwrap_or_default()),
            ("LIDO_NODES_WANTED", req.nodes_wanted.to_string()),
        ];
        let stdout = self.run("provision", &self.cfg.provision, &env).await?;
        let named = stdout.lines().rev().find_map(|l| l.trim().strip_prefix("LIDO_NODE_ID=").map(str::to_string));
        let node_id = named.filter(|id| !id.is_empty()).unwrap_or_else(|| req.node_id.clone());
        tracing::info!(node = %node_id, wanted = req.nodes_wanted, "command provisioner: node provisioned");
        Ok(ProvisionedNode { node_id, api_url: None, pid: None })
    }

    async fn release(&self, node_id: &str) -> Result<()> {
        self.run("release", &self.cfg.release, &[("LIDO_NODE_ID", node_id.to_string())]).await?;
        tracing::info!(node = %node_id, "command provisioner: node released");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
