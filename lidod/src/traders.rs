//! The TraderManager: hosts algos as supervised child processes. A hosted
//! trader is customers' code, so it gets only what its customer may use:
//! the node's API URL and a session for its customer, a check-in key good
//! for this one trader and this one start (never the cluster secret), its
//! options as `LIDO_OPT_*`, and what the operator passes it explicitly
//! (`env.NAME=value`, `env_pass=NAME,…`); nothing else of lidod's
//! environment. It runs in its own work dir, `<data_dir>/traders/<name>/`
//! (also `HOME` and, under `tmp/`, `TMPDIR`), under Landlock unless the
//! operator turned that off ([`crate::sandbox`]): it cannot read the rest
//! of the data dir. On a TLS node its pipe is `wss://` with a certificate
//! of its own, made at each start in its work dir (never the node's key),
//! which its pipe alone trusts.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;

use lido_shared::cluster::{ServiceInfo, ServiceKind};

use crate::error::ApiError;
use crate::sandbox::{Sandbox, SandboxMode, TradersConfig, NEVER_PASSED};
use crate::sessions::Sessions;
use crate::supervisor::{Launch, ServiceSpec, Supervisor};

/// Options a trader takes; anything else is passed as `LIDO_OPT_<KEY>`,
/// except `env.NAME` (sets `NAME`) and `env_pass` (names copied from
/// lidod's environment).
pub const TRADER_KEYS: &[&str] = &["exec", "customer", "args", "env_pass"];

/// The prefix of an option that sets one variable of the trader's environment.
pub const ENV_PREFIX: &str = "env.";

#[derive(Clone)]
pub struct TraderManager {
    sup: Supervisor,
    api_url: String,
    sessions: Sessions,
    /// Each trader's own folder is `<data_dir>/traders/<name>`.
    data_dir: PathBuf,
    /// `lidod` itself: `lidod sandbox …` starts a trader under Landlock.
    launcher: PathBuf,
    config: TradersConfig,
    /// Why Landlock cannot be used here, if it cannot.
    landlock: Result<(), String>,
}

impl Deref for TraderManager {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        &self.sup
    }
}

impl TraderManager {
    pub fn new(
        sup: Supervisor,
        api_url: String,
        sessions: Sessions,
        data_dir: PathBuf,
        launcher: PathBuf,
        config: TradersConfig,
    ) -> Self {
        let landlock = match config.sandbox {
            SandboxMode::Landlock => crate::sandbox::landlock_available(),
            SandboxMode::Off => Ok(()),
        };
        match (&landlock, config.sandbox) {
            (Err(why), _) => tracing::error!(reason = %why,
                "hosted traders will be refused: they must run under Landlock (set [traders] sandbox = \"off\" to run them unconfined)"),
            (Ok(()), SandboxMode::Off) => tracing::warn!(
                "[traders] sandbox = \"off\": hosted traders can read everything lidod's user can, the data dir too"
            ),
            (Ok(()), SandboxMode::Landlock) => {}
        }
        Self { sup, api_url, sessions, data_dir, launcher, config, landlock }
    }

    /// Starts `options["exec"]` as the customer's trader.
    pub fn spawn_trader(
        &self,
        name: &str,
        node: &str,
        options: BTreeMap<String, String>,
    ) -> Result<ServiceInfo, ApiError> {
        let exec = options.get("exec").ok_or_else(|| {
            ApiError::bad_request("invalid_option", "a trader needs the program to run: --set exec=/path/to/algo")
        })?;
        let meta = std::fs::metadata(exec)
            .map_err(|e| ApiError::bad_request("invalid_option", format!("cannot run {exec:?}: {e}")))?;
        if !meta.is_file() {
            return Err(ApiError::bad_request("invalid_option", format!("{exec:?} is not a file")));
        }
        // Absolute: the trader starts in its own work dir.
        let program = std::fs::canonicalize(exec)
            .map_err(|e| ApiError::bad_request("invalid_option", format!("cannot run {exec:?}: {e}")))?;
        let customer = options.get("customer").cloned().unwrap_or_else(|| "default".to_string());
        crate::sessions::validate_customer(&customer)?;
        let OperatorEnv { set: operator_env, pass } = operator_env(&options)?;
        let work_dir = self.data_dir.join("traders").join(name);
        let sandbox = self.sandbox(&program, &work_dir)?;
        let tmp = work_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| {
            tracing::error!(dir = %tmp.display(), error = %e, "cannot make a trader's work dir");
            ApiError::unavailable("work_dir_unavailable", format!("cannot make the trader's work dir: {e}"))
        })?;
        let session = self.sessions.open(&customer, node, &self.api_url);
        let mut env = operator_env;
        env.extend([
            ("HOME".to_string(), work_dir.display().to_string()),
            ("TMPDIR".to_string(), tmp.display().to_string()),
            ("LIDO_API_URL".to_string(), self.api_url.clone()),
            ("LIDO_MANAGER_URL".to_string(), self.api_url.clone()),
            ("LIDO_SERVICE_NAME".to_string(), name.to_string()),
            ("LIDO_CUSTOMER".to_string(), customer),
            ("LIDO_TOKEN".to_string(), session.session_id),
            ("LIDO_EXIT_WITH_PARENT".to_string(), "1".to_string()),
        ]);
        // The algo's own client trusts the node's CA (lido_shared::tls::CA_ENV).
        if let Some(ca) = self.sup.manager_ca() {
            env.push((lido_shared::tls::CA_ENV.to_string(), ca.display().to_string()));
        }
        for (k, v) in &options {
            if !TRADER_KEYS.contains(&k.as_str()) && !k.starts_with(ENV_PREFIX) {
                env.push((format!("LIDO_OPT_{}", k.to_ascii_uppercase()), v.clone()));
            }
        }
        let args = options.get("args").map(|a| a.split_whitespace().map(String::from).collect()).unwrap_or_default();
        let service_type =
            program.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| exec.clone());
        env.push(("LIDO_SERVICE_TYPE".to_string(), service_type.clone()));
        self.sup.spawn(ServiceSpec {
            name: name.to_string(),
            kind: ServiceKind::Trader,
            service_type,
            options,
            launch: Some(Launch::Process {
                program,
                args,
                env,
                pass,
                own_cert: Some(work_dir),
                sandbox: sandbox.map(|s| (self.launcher.clone(), s)),
            }),
        })
    }

    /// The Landlock confinement of a trader, or why none can be had.
    fn sandbox(&self, program: &std::path::Path, work_dir: &std::path::Path) -> Result<Option<Sandbox>, ApiError> {
        if self.config.sandbox == SandboxMode::Off {
            return Ok(None);
        }
        self.landlock.clone().map_err(|why| {
            ApiError::unavailable(
                "sandbox_unavailable",
                format!(
                    "{why}: hosted traders run under Landlock so that they cannot read the node's data dir; use a \
                     kernel with Landlock (5.13+, enabled in the lsm= boot list) or set [traders] sandbox = \"off\""
                ),
            )
        })?;
        let mut read = vec![program.to_path_buf()];
        read.extend(self.sup.manager_ca());
        read.extend(self.config.read_paths.iter().cloned());
        let sandbox = Sandbox { work_dir: work_dir.to_path_buf(), read };
        sandbox.check_against(&self.data_dir).map_err(|why| ApiError::unavailable("sandbox_unavailable", why))?;
        Ok(Some(sandbox))
    }
}

/// What the operator passes a trader explicitly: `env.NAME=value` options
/// and the names in `env_pass`. Names are checked: no `LIDO_` name (the
/// trader contract's own) and nothing of lidod's credentials.
fn operator_env(options: &BTreeMap<String, String>) -> Result<OperatorEnv, ApiError> {
    let check = |name: &str, how: &str| -> Result<(), ApiError> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::bad_request(
                "invalid_option",
                format!("{how}: {name:?} is not an environment variable name (letters, digits, _)"),
            ));
        }
        if name.starts_with("LIDO_") || NEVER_PASSED.contains(&name) {
            return Err(ApiError::bad_request(
                "invalid_option",
                format!(
                    "{how}: {name} is lidod's or the trader contract's own; pass a trader setting as --set KEY=VALUE \
                     (it gets LIDO_OPT_KEY)"
                ),
            ));
        }
        Ok(())
    };
    let mut set = Vec::new();
    for (k, v) in options {
        if let Some(name) = k.strip_prefix(ENV_PREFIX) {
            check(name, "env.NAME")?;
            set.push((name.to_string(), v.clone()));
        }
    }
    let mut pass = Vec::new();
    for name in
        options.get("env_pass").map(|p| p.split(',').map(str::trim).filter(|n| !n.is_empty())).into_iter().flatten()
    {
        check(name, "env_pass")?;
        pass.push(name.to_string());
    }
    Ok(OperatorEnv { set, pass })
}

/// What the operator passes a trader: variables set, names copied from lidod's environment.
#[derive(Debug)]
struct OperatorEnv {
    set: Vec<(String, String)>,
    pass: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_operator_sets_and_passes_variables_by_name_but_never_lidods_own() {
        let OperatorEnv { set, pass } =
            operator_env(&opts(&[("env.FOO", "1"), ("env_pass", "HTTPS_PROXY, DATA"), ("qty", "2")])).unwrap();
        assert_eq!(set, [("FOO".to_string(), "1".to_string())]);
        assert_eq!(pass, ["HTTPS_PROXY", "DATA"]);
        for bad in [
            opts(&[("env_pass", "LIDO_CLUSTER_SECRET")]),
            opts(&[("env.LIDO_TOKEN", "x")]),
            opts(&[("env_pass", "LIDO_TLS_KEY")]),
            opts(&[("env.A-B", "x")]),
        ] {
            assert_eq!(operator_env(&bad).unwrap_err().code, "invalid_option", "{bad:?}");
        }
    }
}
