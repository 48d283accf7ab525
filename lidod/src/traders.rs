//! The TraderManager: hosts algos as supervised child processes. A hosted
//! trader gets the node's API URL and a session token in its environment,
//! checks in like any service, and is restarted if it dies. On a TLS node
//! its pipe is `wss://` with a certificate of its own, made at each start
//! in `<data_dir>/traders/<name>/` (never the node's key: it is customer
//! code), which its pipe alone trusts.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;

use lido_shared::cluster::{ServiceInfo, ServiceKind};

use crate::error::ApiError;
use crate::sessions::Sessions;
use crate::supervisor::{Launch, ServiceSpec, Supervisor};

/// Options a trader takes; anything else is passed as `LIDO_OPT_<KEY>`.
pub const TRADER_KEYS: &[&str] = &["exec", "customer", "args"];

#[derive(Clone)]
pub struct TraderManager {
    sup: Supervisor,
    api_url: String,
    sessions: Sessions,
    /// Each trader's own folder is `<data_dir>/traders/<name>`.
    data_dir: PathBuf,
}

impl Deref for TraderManager {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        &self.sup
    }
}

impl TraderManager {
    pub fn new(sup: Supervisor, api_url: String, sessions: Sessions, data_dir: PathBuf) -> Self {
        Self { sup, api_url, sessions, data_dir }
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
        let program = PathBuf::from(exec);
        let meta = std::fs::metadata(&program)
            .map_err(|e| ApiError::bad_request("invalid_option", format!("cannot run {exec:?}: {e}")))?;
        if !meta.is_file() {
            return Err(ApiError::bad_request("invalid_option", format!("{exec:?} is not a file")));
        }
        let customer = options.get("customer").cloned().unwrap_or_else(|| "default".to_string());
        crate::sessions::validate_customer(&customer)?;
        let session = self.sessions.open(&customer, node, &self.api_url);
        let mut env = vec![
            ("LIDO_API_URL".to_string(), self.api_url.clone()),
            ("LIDO_MANAGER_URL".to_string(), self.api_url.clone()),
            ("LIDO_SERVICE_NAME".to_string(), name.to_string()),
            ("LIDO_CUSTOMER".to_string(), customer),
            ("LIDO_TOKEN".to_string(), session.session_id),
            ("LIDO_EXIT_WITH_PARENT".to_string(), "1".to_string()),
        ];
        // The algo's own client trusts the node's CA (lido_shared::tls::CA_ENV).
        if let Some(ca) = self.sup.link().manager_ca {
            env.push((lido_shared::tls::CA_ENV.to_string(), ca.display().to_string()));
        }
        for (k, v) in &options {
            if !TRADER_KEYS.contains(&k.as_str()) {
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
                own_cert: Some(self.data_dir.join("traders").join(name)),
            }),
        })
    }
}
