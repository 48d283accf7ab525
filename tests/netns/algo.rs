//! An algo on the algo host: a thread of the test process that has joined
//! the algo host's network namespace (`setns`), running its own tokio
//! runtime, so every socket it opens is that host's and all its traffic
//! crosses the bridge. It trades as real algos do, through
//! `ClusterClient`, and keeps a quote stream open (re-opened through the
//! client when it breaks or goes silent).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lido_shared::api::{Channel, ServerMessage};
use lido_shared::client::ClusterClient;
use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce(Arc<ClusterClient>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A quiet stream is taken for a broken one after this long (quotes tick
/// every 250 ms).
const SILENCE: Duration = Duration::from_secs(3);

/// One customer's algo; its thread ends when this is dropped.
pub struct Algo {
    pub customer: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Quotes received so far.
    quotes: Arc<AtomicU64>,
    /// Streams opened so far (the first included).
    streams: Arc<AtomicU64>,
}

impl Algo {
    /// Starts the algo of `customer` in namespace `ns`.
    pub fn start(ns: &str, customer: &str, token: &str, location: &str, ims: &[String]) -> anyhow::Result<Algo> {
        let (jobs, mut rx) = mpsc::channel::<Job>(16);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let quotes = Arc::new(AtomicU64::new(0));
        let streams = Arc::new(AtomicU64::new(0));
        let (ns, customer_owned, token, location, ims) =
            (ns.to_string(), customer.to_string(), token.to_string(), location.to_string(), ims.to_vec());
        let (q, s) = (quotes.clone(), streams.clone());
        let thread = std::thread::Builder::new().name(format!("algo-{customer}")).spawn(move || {
            let joined = crate::net::join_namespace(&ns).map_err(|e| format!("{e:#}"));
            let runtime = joined.and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("build the algo's runtime: {e}"))
            });
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let client = match ClusterClient::new(&ims, &customer_owned, Some(&token), None) {
                    Ok(c) => Arc::new(c.prefer_location(location)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let streamer = tokio::spawn(stream_quotes(client.clone(), q, s));
                while let Some(job) = rx.recv().await {
                    tokio::spawn(job(client.clone()));
                }
                streamer.abort();
            });
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("the algo thread did not start: {e}"))?
            .map_err(anyhow::Error::msg)?;
        Ok(Algo { customer: customer.to_string(), jobs: Some(jobs), thread: Some(thread), quotes, streams })
    }

    /// Runs `f` with the algo's client on the algo host; its answer.
    pub async fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Arc<ClusterClient>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |client| {
            Box::pin(async move {
                let _ = tx.send(f(client).await);
            })
        });
        self.jobs.as_ref().expect("running").send(job).await.expect("the algo thread runs");
        rx.await.expect("the algo thread answers")
    }

    pub fn quotes(&self) -> u64 {
        self.quotes.load(Ordering::Relaxed)
    }

    pub fn streams(&self) -> u64 {
        self.streams.load(Ordering::Relaxed)
    }
}

impl Drop for Algo {
    fn drop(&mut self) {
        // Closing the job channel ends the runtime's loop, then the thread.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads quotes; a broken or silent stream is re-opened through the
/// cluster client (on another node if its node is gone).
async fn stream_quotes(client: Arc<ClusterClient>, quotes: Arc<AtomicU64>, streams: Arc<AtomicU64>) {
    loop {
        let opened = tokio::time::timeout(Duration::from_secs(10), client.stream()).await;
        let Ok(Ok(mut stream)) = opened else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let subscribed =
            tokio::time::timeout(Duration::from_secs(5), stream.subscribe(Channel::Quotes, "paper", Some("BTC/USD")))
                .await;
        if !matches!(subscribed, Ok(Ok(()))) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        streams.fetch_add(1, Ordering::Relaxed);
        let mut last = Instant::now();
        loop {
            match tokio::time::timeout(SILENCE, stream.next()).await {
                Ok(Ok(ServerMessage::Event(_))) => {
                    quotes.fetch_add(1, Ordering::Relaxed);
                    last = Instant::now();
                }
                Ok(Ok(_)) if last.elapsed() < SILENCE => {}
                _ => break,
            }
        }
    }
}
