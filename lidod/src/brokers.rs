//! The BrokerManager: starts broker services (child processes by default),
//! supervises them and gives the MarketManager their pipes. A broker
//! process gets the cluster secret (it is lidod's own) and, of lidod's
//! environment, only the base, [`crate::sandbox::BROKER_ENV`] and the
//! variables its own options name for its venue credentials: one broker's
//! keys never reach another broker or a trader.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use lido_shared::client::agent::ServiceLink;
use lido_shared::cluster::{RunMode, ServiceInfo, ServiceKind};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::supervisor::{Launch, ServiceSpec, Supervisor};
use crate::venue::{BrokerOptions, BrokerOptionsError};

/// Cheap to clone; derefs to its [`Supervisor`].
#[derive(Clone)]
pub struct BrokerManager {
    sup: Supervisor,
    /// The program that runs `service broker …` (this lidod).
    exe: PathBuf,
    /// Where services check in (this node's listener).
    manager_url: String,
    /// The node's data dir: brokers keep what must outlive their process
    /// under it (paper venue state, Kraken nonces, Schwab order maps).
    data_dir: PathBuf,
}

impl Deref for BrokerManager {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        &self.sup
    }
}

impl BrokerManager {
    pub fn new(sup: Supervisor, exe: PathBuf, manager_url: String, data_dir: PathBuf) -> Self {
        debug_assert_eq!(sup.kind(), ServiceKind::Broker);
        Self { sup, exe, manager_url, data_dir }
    }

    /// Validates and starts a broker.
    pub fn spawn_broker(
        &self,
        broker_type: &str,
        name: &str,
        mode: RunMode,
        mut options: BTreeMap<String, String>,
    ) -> Result<ServiceInfo, ApiError> {
        // State that must outlive the broker process lives in the node's
        // data dir unless the operator names a file.
        let default_file = match broker_type {
            "paper" => Some(("state_file", self.data_dir.join("paper").join(format!("{name}.json")))),
            "kraken" => Some(("nonce_file", self.data_dir.join("kraken").join(format!("{name}.nonce")))),
            "schwab" | "tdameritrade" => {
                Some(("orders_file", self.data_dir.join("schwab").join(format!("{name}.orders.json"))))
            }
            _ => None,
        };
        if let Some((key, path)) = default_file {
            options.entry(key.to_string()).or_insert_with(|| path.display().to_string());
        }
        let parsed = BrokerOptions::parse(broker_type, name, &options).map_err(|e| match e {
            BrokerOptionsError::UnknownType(m) => ApiError::bad_request("unknown_broker_type", m),
            BrokerOptionsError::Option(m) => ApiError::bad_request("invalid_option", m),
        })?;
        let launch = match mode {
            RunMode::Process => {
                let mut args = vec![
                    "service".to_string(),
                    "broker".to_string(),
                    broker_type.to_string(),
                    "--name".to_string(),
                    name.to_string(),
                    "--manager-url".to_string(),
                    self.manager_url.clone(),
                    "--exit-with-parent".to_string(),
                ];
                for (k, v) in &options {
                    args.push("--set".into());
                    args.push(format!("{k}={v}"));
                }
                Launch::Process {
                    program: self.exe.clone(),
                    args,
                    env: Vec::new(),
                    pass: broker_env(&parsed),
                    own_cert: None,
                    sandbox: None,
                }
            }
            RunMode::Task => {
                let name = name.to_string();
                let url = self.manager_url.clone();
                // A task serves its pipe in memory: same frames, no socket.
                let link = ServiceLink { in_memory: true, ..self.sup.link() };
                Launch::Task(Arc::new(move |token: CancellationToken| {
                    let (name, url, parsed, link) = (name.clone(), url.clone(), parsed.clone(), link.clone());
                    Box::pin(async move {
                        if let Err(e) = parsed.run(name.clone(), url, link, None, token).await {
                            tracing::error!(%name, error = %e, "broker task failed");
                        }
                    })
                }))
            }
            RunMode::External => {
                return Err(ApiError::bad_request(
                    "invalid_option",
                    "mode external: start the service yourself with --manager-url",
                ))
            }
        };
        self.sup.spawn(ServiceSpec {
            name: name.to_string(),
            kind: ServiceKind::Broker,
            service_type: broker_type.to_string(),
            options,
            launch: Some(launch),
        })
    }
}

/// What a broker process takes from lidod's environment: the broker base
/// and the variables its options name for its credentials.
fn broker_env(options: &BrokerOptions) -> Vec<String> {
    let mut names: Vec<String> = crate::sandbox::BROKER_ENV.iter().map(|n| n.to_string()).collect();
    match options {
        BrokerOptions::Paper(_) => {}
        BrokerOptions::Kraken(o) => names.extend([o.api_key_env.clone(), o.api_secret_env.clone()]),
        BrokerOptions::Schwab { options, .. } => {
            names.extend([options.app_key_env.clone(), options.app_secret_env.clone()])
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_takes_the_credentials_its_options_name_only() {
        let kraken = BTreeMap::from([("api_secret_env".to_string(), "K2_SECRET".to_string())]);
        let kraken = BrokerOptions::parse("kraken", "k2", &kraken).unwrap();
        let names = broker_env(&kraken);
        assert!(names.contains(&"KRAKEN_API_KEY".to_string()) && names.contains(&"K2_SECRET".to_string()));
        assert!(!names.iter().any(|n| n == "KRAKEN_API_SECRET" || n.starts_with("SCHWAB")), "{names:?}");
        let paper = BrokerOptions::parse("paper", "p1", &BTreeMap::new()).unwrap();
        assert!(!broker_env(&paper)
            .iter()
            .any(|n| n.contains("KRAKEN") || n.contains("SCHWAB") || n.contains("SECRET")));
    }
}
