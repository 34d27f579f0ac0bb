//! `ordinal-node membership`: the operator adds or removes a replica through the ordered log.
//!
//! The command reads the certified log to learn the current schedule, checks the change the
//! way every replica will (so a change that would be refused is reported here, with the
//! reason, and never submitted), submits it as a request signed with the operator key, and
//! waits for its receipt and for the schedule that results.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use ordinal_client::{load_cluster, Client, ClientOptions};
use ordinal_consensus::epoch::{Committees, MembershipChange, QuorumEntry};
use ordinal_crypto::{KeyPair, MembershipEdit, PublicKey, ReplicaId};

use crate::config::LoadedConfig;

/// Who joins or leaves.
#[derive(Clone, Debug)]
pub enum Change {
    /// A replica with this key, listening at this address, takes the next free id.
    Join {
        /// Its public key.
        public_key: PublicKey,
        /// Where its peers reach it (`host:port`).
        address: String,
        /// The id its configuration names, which must be the next free one.
        expected_id: Option<u16>,
    },
    /// This member leaves.
    Leave(ReplicaId),
}

impl Change {
    /// A join described by a spare replica's `config.toml`: its id, its key file and its
    /// `listen` address (which must name a host its peers can dial).
    pub fn join_from_config(path: &Path) -> anyhow::Result<Change> {
        let loaded = LoadedConfig::load(path)?;
        if !loaded.joining() {
            bail!(
                "{}: replica {} is already in the configured membership",
                path.display(),
                loaded.config.id
            );
        }
        let key = loaded.key()?;
        if loaded.config.listen.ip().is_unspecified() {
            bail!(
                "{}: listen {} names no host peers can dial; pass --public-key and --address instead",
                path.display(),
                loaded.config.listen
            );
        }
        Ok(Change::Join {
            public_key: key.public(),
            address: loaded.config.listen.to_string(),
            expected_id: Some(loaded.config.id),
        })
    }
}

/// What became of a submitted change.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The sequence number it was ordered at.
    pub ordered_at: u64,
    /// The epoch of the new membership and where it starts.
    pub epoch: u64,
    /// Its first sequence number.
    pub start: u64,
    /// The members from then on, by id.
    pub members: Vec<u16>,
    /// The id a joining replica got.
    pub joined: Option<u16>,
}

/// Submits `change` to the cluster of `cluster_file`, signed with the operator key in
/// `operator_key_file`, and waits until it is ordered and scheduled.
pub async fn submit(
    cluster_file: &Path,
    operator_key_file: &Path,
    change: Change,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let cluster = load_cluster(cluster_file)?;
    let operator = KeyPair::load(operator_key_file)
        .with_context(|| format!("reading the operator key {}", operator_key_file.display()))?;
    match cluster.operator_key()? {
        Some(key) if key == operator.public() => {}
        Some(_) => bail!(
            "{} is not the operator key the cluster names in [membership]",
            operator_key_file.display()
        ),
        None => bail!("the cluster has no [membership] table: membership cannot change"),
    }
    let options = ClientOptions {
        key: Some(std::sync::Arc::new(operator)),
        always_sign: true,
        timeout,
        ..ClientOptions::default()
    };
    let client = Client::connect(cluster, options).await?;
    let before = client.sync_schedule().await.context("reading the log")?;
    let epoch = before.latest().epoch() + 1;
    let (edit, address) = match change {
        Change::Join {
            public_key,
            address,
            expected_id,
        } => {
            let next = before.latest().slots() as u16;
            if let Some(id) = expected_id.filter(|id| *id != next) {
                bail!("the joining replica is configured as id {id}, but the next free id is {next}");
            }
            (MembershipEdit::Join(public_key), address)
        }
        Change::Leave(id) => (MembershipEdit::Leave(id), String::new()),
    };
    let entry = MembershipChange { epoch, edit, address };
    // The replicas decide with exactly this check when they execute the entry; failing it
    // here saves a round trip through the log and names the reason.
    let mut preview: Committees = before.clone();
    preview
        .schedule_membership(preview.applied_through() + 1, &entry)
        .map_err(|refused| anyhow::anyhow!("the replicas would refuse this change: {refused}"))?;
    let receipt = client
        .submit(QuorumEntry::Membership(entry).payload())
        .await
        .context("submitting the change")?;
    let ordered_at = receipt.seq;
    // Learn the schedule through the entry's batch.
    let deadline = tokio::time::Instant::now() + timeout;
    let after = loop {
        let schedule = client.sync_schedule().await.context("reading the log")?;
        if schedule.applied_through() >= ordered_at {
            break schedule;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("ordered at {ordered_at}, but the log could not be read that far in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let scheduled = after
        .epochs()
        .iter()
        .rev()
        .find(|e| e.decided_at == ordered_at && e.committee.epoch() >= epoch)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ordered at {ordered_at} but refused there (another change got in first?); run the command again"
            )
        })?;
    Ok(Outcome {
        ordered_at,
        epoch: scheduled.committee.epoch(),
        start: scheduled.start,
        members: scheduled.committee.ids().map(|id| id.0).collect(),
        joined: scheduled.joined.as_ref().map(|(id, _)| id.0),
    })
}
