//! The BrokerManager: starts broker services (child processes by default),
//! supervises them and gives the MarketManager their pipes.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use lido_shared::cluster::{RunMode, ServiceInfo, ServiceKind};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::supervisor::{Launch, ServiceSpec, Supervisor};
use crate::venue::paper_broker::{self, PaperOptions};
use crate::venue::BROKER_TYPES;

/// Cheap to clone; derefs to its [`Supervisor`].
#[derive(Clone)]
pub struct BrokerManager {
    sup: Supervisor,
    /// The program that runs `service broker …` (this lidod).
    exe: PathBuf,
    /// Where services check in (this node's listener).
    manager_url: String,
}

impl Deref for BrokerManager {
    type Target = Supervisor;
    fn deref(&self) -> &Supervisor {
        &self.sup
    }
}

impl BrokerManager {
    pub fn new(sup: Supervisor, exe: PathBuf, manager_url: String) -> Self {
        debug_assert_eq!(sup.kind(), ServiceKind::Broker);
        Self { sup, exe, manager_url }
    }

    /// Validates and starts a broker.
    pub fn spawn_broker(
        &self,
        broker_type: &str,
        name: &str,
        mode: RunMode,
        options: BTreeMap<String, String>,
    ) -> Result<ServiceInfo, ApiError> {
        if !BROKER_TYPES.contains(&broker_type) {
            return Err(ApiError::bad_request(
                "unknown_broker_type",
                format!("unknown broker type {broker_type:?}; this build supports: {}", BROKER_TYPES.join(", ")),
            ));
        }
        let parsed = PaperOptions::parse(&options).map_err(|m| ApiError::bad_request("invalid_option", m))?;
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
                Launch::Process { program: self.exe.clone(), args, env: Vec::new() }
            }
            RunMode::Task => {
                let name = name.to_string();
                let url = self.manager_url.clone();
                let secret = self.sup.cluster_secret().clone();
                Launch::Task(Arc::new(move |token: CancellationToken| {
                    let (name, url, parsed, secret) = (name.clone(), url.clone(), parsed.clone(), secret.clone());
                    Box::pin(async move {
                        if let Err(e) = paper_broker::run(name.clone(), url, secret, parsed, None, token).await {
                            tracing::error!(%name, error = %e, "paper broker task failed");
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
