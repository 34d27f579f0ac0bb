//! Starting and stopping one replica: store, metrics, QUIC endpoint, peer links, and the
//! protocol thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ordinal_client::wire::{self, ReplicaStatus};
use ordinal_consensus::{RequestAuth, SettledStatements};
use ordinal_crypto::ReplicaId;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::LoadedConfig;
use crate::driver::Driver;
use crate::metrics::{self, Metrics};
use crate::store::{Store, StoreError};
use crate::transport::{self, ClientRegistry, Peers, Shared};

/// Events queued for the protocol thread, per channel (replica messages, client requests);
/// beyond this, connection tasks wait (backpressure).
pub(crate) const CORE_QUEUE: usize = 16_384;

/// A replica that is running.
pub struct RunningReplica {
    id: ReplicaId,
    shutdown: watch::Sender<bool>,
    finished: Option<oneshot::Receiver<Result<(), StoreError>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    endpoint: Option<quinn::Endpoint>,
    listen: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// Starts the replica `loaded` describes. Must run inside a multi-threaded tokio runtime.
pub async fn start(loaded: &LoadedConfig) -> anyhow::Result<RunningReplica> {
    let config = &loaded.config;
    let id = ReplicaId(config.id);
    let key = loaded.key()?;
    let committee = loaded.committee.clone();
    let cluster_id = config.cluster.cluster_id()?;
    let data_dir = loaded.data_dir();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let store = Arc::new(
        Store::open(&data_dir, config.storage.sync, &cluster_id)
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    let safety = store.safety().context("reading the safety state")?;
    let origin = Instant::now();
    let replica = {
        let mut failure = None;
        let log = store.log().map_while(|item| match item {
            Ok(batch) => Some(batch),
            Err(e) => {
                failure = Some(e);
                None
            }
        });
        let replica = ordinal_consensus::start_replica(
            config.cluster.protocol,
            id,
            ordinal_crypto::KeyPair::from_seed(key.secret_bytes()),
            committee.clone(),
            config.protocol.clone(),
            origin.elapsed(),
            safety.clone(),
            log,
        );
        if let Some(e) = failure {
            return Err(e).context("reading the committed log");
        }
        replica
    };
    let recovered = replica.status();

    let metrics = Metrics::new().context("creating metrics")?;
    for member in committee.members() {
        metrics
            .replica_weight
            .with_label_values(&[&member.id.0.to_string()])
            .set(member.weight as i64);
    }
    let metrics_listener = metrics::bind(config.metrics)
        .await
        .with_context(|| format!("metrics: binding {}", config.metrics))?;
    let mut endpoint = bind_endpoint(wire::quic_server_config(&key, id)?, config.listen)
        .await
        .with_context(|| format!("listen: binding {}", config.listen))?;
    let pinned = ordinal_crypto::tls::PinnedKeys::of(replica.committees().signers());
    endpoint.set_default_client_config(wire::quic_pinned_client_config(&key, pinned.clone())?);

    let (peer_tx, peer_rx) = mpsc::channel(CORE_QUEUE);
    let (client_tx, client_rx) = mpsc::channel(CORE_QUEUE);
    let shared = Arc::new(Shared {
        id,
        committee: committee.clone(),
        pinned,
        committees: std::sync::RwLock::new(Arc::new(replica.committees().clone())),
        config: config.protocol.clone(),
        cluster_id,
        metrics: metrics.clone(),
        store: store.clone(),
        peer_events: peer_tx,
        client_events: client_tx,
        replica_connections: Mutex::new(std::collections::HashMap::new()),
        client_slots: Arc::new(tokio::sync::Semaphore::new(transport::MAX_CLIENT_CONNECTIONS)),
        clients: ClientRegistry::default(),
        status: Mutex::new(ReplicaStatus::new(id, &recovered, &committee)),
        peer_receive_delay: Duration::from_millis(config.testing.peer_receive_delay_ms),
        // Room for replicas that join later; ids beyond go uncounted.
        refused: (0..committee.slots().max(transport::REFUSAL_SLOTS))
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
        admitted: (config.protocol.request_auth == RequestAuth::Signed)
            .then(|| transport::Admitted::new(transport::ADMITTED_CACHE_BYTES, &metrics.admitted_lookups)),
        // Every slot a replica still takes votes for.
        settled: Mutex::new(SettledStatements::new(2 * config.protocol.log_window as usize)),
    });
    let addresses: Vec<String> = config
        .cluster
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let (peers, mut tasks) = Peers::start(
        &endpoint,
        id,
        &addresses,
        &metrics,
        Duration::from_millis(config.testing.peer_send_delay_ms),
    );
    tasks.extend([
        tokio::spawn(transport::accept(endpoint.clone(), shared.clone())),
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(metrics_listener, metrics).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }),
    ]);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (finished_tx, finished) = oneshot::channel();
    let driver = Driver::new(replica, safety, shared.clone(), peers, origin, key.public());
    let thread = std::thread::Builder::new()
        .name(format!("ordinal-core-{}", id.0))
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(driver.run(peer_rx, client_rx, shutdown_rx)),
                Err(e) => Err(StoreError::Corrupt {
                    key: "runtime".into(),
                    reason: e.to_string(),
                }),
            };
            let _ = finished_tx.send(result);
        })
        .context("starting the protocol thread")?;
    tracing::info!(
        replica = id.0,
        listen = %config.listen,
        metrics = %config.metrics,
        committed_seq = recovered.committed_seq,
        view = recovered.view,
        "replica started"
    );
    Ok(RunningReplica {
        id,
        shutdown,
        finished: Some(finished),
        thread: Some(thread),
        endpoint: Some(endpoint),
        listen: config.listen,
        tasks,
        shared,
    })
}

impl RunningReplica {
    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// The latest status the protocol thread published.
    pub fn status(&self) -> ReplicaStatus {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Completes if the protocol thread stops by itself (a store failure).
    pub async fn failed(&mut self) -> anyhow::Error {
        match self.finished.as_mut() {
            Some(finished) => match finished.await {
                Ok(Err(e)) => anyhow::Error::new(e).context("the store failed; the replica stopped"),
                Ok(Ok(())) => anyhow::anyhow!("the protocol thread stopped"),
                Err(_) => anyhow::anyhow!("the protocol thread ended unexpectedly"),
            },
            None => std::future::pending().await,
        }
    }

    /// Stops cleanly: the protocol thread finishes its round (everything acknowledged is
    /// durable), then connections close.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let result = match self.finished.take() {
            Some(finished) => finished.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.close(0u32.into(), b"shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
        }
        // Every task holding the endpoint (peer links, the acceptor) or the metrics listener
        // ends here, so that a replica started again at once finds its ports free.
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        // Connections keep their endpoint (and its socket) alive.
        self.shared
            .replica_connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        wait_until_bindable(self.listen).await;
        tracing::info!(replica = self.id.0, "replica stopped");
        result.context("stopping")
    }
}

/// Binds the QUIC endpoint, retrying for a bounded while if the address is taken: a replica
/// restarted right after a stop (by an operator or `local`) may find its previous endpoint still
/// draining closed connections on the same socket.
async fn bind_endpoint(
    server: quinn::ServerConfig,
    address: std::net::SocketAddr,
) -> std::io::Result<quinn::Endpoint> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY;
    loop {
        match quinn::Endpoint::server(server.clone(), address) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
}

/// How long a start waits for its QUIC port to come free.
const BIND_RETRY: Duration = Duration::from_secs(10);

/// Waits (a bounded while) until the QUIC endpoint's driver has let its UDP socket go.
async fn wait_until_bindable(address: std::net::SocketAddr) {
    for _ in 0..100 {
        if std::net::UdpSocket::bind(address).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(%address, "the QUIC socket is still bound after stopping");
}

impl Drop for RunningReplica {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for SIGINT")
    }
}
