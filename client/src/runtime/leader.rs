//! Leader election over a `Lease` object, as client-go's `leaderelection` does it.
//!
//! Candidates share one Lease. A candidate takes it when it is absent, released (no holder) or
//! expired: its `renewTime` plus its `leaseDurationSeconds` is in the past by the local clock.
//! The leader writes a fresh `renewTime` every retry period. Every write carries the
//! resourceVersion just read, so when two candidates race for an expired lease one of them gets
//! Conflict and stays a candidate.
//!
//! Safety rests on one inequality: a leader that cannot renew steps down `renew_deadline` after
//! its last successful renewal began, while the others wait `lease_duration` (longer) after the
//! `renewTime` it wrote, which is later than that beginning. The clocks of the candidates'
//! hosts must agree to well within `lease_duration − renew_deadline` (NTP gives milliseconds).

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stratus_api::Timestamp;
pub use stratus_api::fence::Fence;
use stratus_api::v1::{Lease, LeaseSpec, ObjectMeta};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::ErrorChain;
use crate::Client;

/// What can go wrong in leader election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid leader election configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("reading lease {lease} failed")]
    GetLease {
        lease: String,
        #[source]
        source: crate::Error,
    },
    #[error("writing lease {lease} failed")]
    WriteLease {
        lease: String,
        #[source]
        source: crate::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which lease to compete for, as whom, and how fast.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    /// The namespace of the Lease; it must exist.
    pub namespace: String,
    /// The name of the Lease, the same for every candidate, e.g. `stratus-controllers`.
    pub name: String,
    /// This candidate's name, unique among the candidates (e.g. host name and process id).
    pub identity: String,
    /// How long a lease stays valid after its renewal. Written in whole seconds (rounded up).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it steps down. Shorter than
    /// `lease_duration`: the difference is the safety margin.
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate retries.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// client-go's defaults: a 15 s lease, a 10 s renew deadline, a 2 s retry period.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate. [`LeaderElector::subscribe`] tells whether it leads; [`LeaderElector::run`]
/// competes until shut down.
pub struct LeaderElector {
    client: Client,
    config: LeaderElectionConfig,
    /// The lease duration as written, in whole seconds.
    lease_seconds: i32,
    leader: watch::Sender<bool>,
    /// The term this candidate leads in, while it leads.
    fence: watch::Sender<Option<Fence>>,
}

impl LeaderElector {
    /// A candidate; fails if the configuration cannot be safe (`lease_duration` must exceed
    /// `renew_deadline`, which must exceed `retry_period`) or names no lease or identity.
    pub fn new(client: Client, config: LeaderElectionConfig) -> Result<LeaderElector> {
        if config.name.is_empty() || config.namespace.is_empty() {
            return Err(Error::InvalidConfig("the lease needs a namespace and a name"));
        }
        if config.identity.is_empty() {
            return Err(Error::InvalidConfig("the identity is empty"));
        }
        if config.retry_period.is_zero() || config.renew_deadline <= config.retry_period {
            return Err(Error::InvalidConfig("renew_deadline must be longer than a non-zero retry_period"));
        }
        if config.lease_duration <= config.renew_deadline {
            return Err(Error::InvalidConfig("lease_duration must be longer than renew_deadline"));
        }
        let lease_seconds =
            i32::try_from(config.lease_duration.as_secs() + u64::from(config.lease_duration.subsec_nanos() > 0))
                .map_err(|_| Error::InvalidConfig("lease_duration is too long"))?;
        Ok(LeaderElector {
            client,
            config,
            lease_seconds,
            leader: watch::Sender::new(false),
            fence: watch::Sender::new(None),
        })
    }

    /// The fence of the term this candidate leads in (`None` while it does not lead), set
    /// before [`LeaderElector::subscribe`] says it leads: the work of a term sends it with every
    /// request ([`Client::with_fence`]), so that the API server refuses that work's writes once
    /// the term is over, even before this candidate notices.
    pub fn fence(&self) -> watch::Receiver<Option<Fence>> {
        self.fence.subscribe()
    }

    /// Whether this candidate leads now; the receiver sees every change. Work that needs
    /// leadership must stop as soon as it turns false.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Competes for the lease until `shutdown` resolves: acquires it when it can, renews it while
    /// leading, signals the loss (and competes again) when renewal fails past the renew deadline
    /// or another candidate holds the lease. On shutdown while leading, it signals the end of
    /// leadership, then releases the lease (clears the holder) so that another candidate takes
    /// over at once: stop the work that needs leadership before resolving `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        loop {
            let (renewed, transitions) = tokio::select! {
                () = &mut shutdown => return,
                acquired = self.acquire() => acquired,
            };
            info!(lease = %self.lease(), identity = self.config.identity, transitions, "became leader");
            self.fence.send_replace(Some(Fence {
                namespace: self.config.namespace.clone(),
                name: self.config.name.clone(),
                holder: self.config.identity.clone(),
                transitions,
            }));
            self.leader.send_replace(true);
            tokio::select! {
                () = &mut shutdown => {
                    self.leader.send_replace(false);
                    self.fence.send_replace(None);
                    self.release().await;
                    return;
                }
                () = self.renew_until_lost(renewed) => {
                    warn!(lease = %self.lease(), identity = self.config.identity, "lost leadership");
                    self.leader.send_replace(false);
                    self.fence.send_replace(None);
                }
            }
        }
    }

    /// Retries until the lease is ours; returns when the successful attempt began, and the
    /// lease's transition count.
    async fn acquire(&self) -> (Instant, i32) {
        loop {
            let attempt = Instant::now();
            match self.try_acquire_or_renew().await {
                // An attempt that took longer than the renew deadline may have written a lease
                // that others see expiring soon: renew it before leading.
                Ok(Some(transitions)) if attempt.elapsed() < self.config.renew_deadline => {
                    return (attempt, transitions);
                }
                Ok(_) => {}
                Err(e) => warn!(error = %ErrorChain(&e), "acquiring the lease failed; retrying"),
            }
            // Candidates retry out of step, so that they do not race for every expiry together.
            tokio::time::sleep(self.config.retry_period.mul_f64(1.0 + 0.2 * rand::random::<f64>())).await;
        }
    }

    /// Renews every retry period; returns when leadership is lost: the lease went to another
    /// candidate, or `renew_deadline` passed since the last renewal that succeeded began.
    async fn renew_until_lost(&self, mut renewed: Instant) {
        loop {
            let deadline = renewed + self.config.renew_deadline;
            tokio::time::sleep_until((Instant::now() + self.config.retry_period).min(deadline)).await;
            let attempt = Instant::now();
            if attempt >= deadline {
                return;
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Some(_))) => renewed = attempt,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => warn!(error = %ErrorChain(&e), "renewing the lease failed; retrying"),
                Err(_) => return,
            }
        }
    }

    /// One round: read the lease and, if it is absent, free, expired or ours, write ourselves in
    /// as holder; `Ok(Some(transitions))` with the lease's transition count when it is ours.
    /// `Ok(None)`: another candidate holds it, or won the race to write it.
    async fn try_acquire_or_renew(&self) -> Result<Option<i32>> {
        let (namespace, name, identity) = (&self.config.namespace, &self.config.name, &self.config.identity);
        let current = match self.client.get::<Lease>(namespace, name).await {
            Ok(lease) => Some(lease),
            Err(crate::Error::NotFound(_)) => None,
            Err(source) => return Err(Error::GetLease { lease: self.lease(), source }),
        };
        let now = SystemTime::now();
        let lease = match current {
            None => {
                let spec = LeaseSpec {
                    holder_identity: identity.clone(),
                    lease_duration_seconds: self.lease_seconds,
                    acquire_time: Some(timestamp(now)),
                    renew_time: Some(timestamp(now)),
                    lease_transitions: 0,
                };
                let metadata = ObjectMeta { namespace: namespace.clone(), name: name.clone(), ..Default::default() };
                return match self
                    .client
                    .create(Lease { metadata: Some(metadata), spec: Some(spec), ..Default::default() })
                    .await
                {
                    Ok(_) => Ok(Some(0)),
                    Err(crate::Error::AlreadyExists(_)) => Ok(None),
                    Err(source) => Err(Error::WriteLease { lease: self.lease(), source }),
                };
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity != *identity {
                    if !spec.holder_identity.is_empty() && !expired(spec, now) {
                        return Ok(None);
                    }
                    spec.holder_identity.clone_from(identity);
                    spec.acquire_time = Some(timestamp(now));
                    spec.lease_transitions = spec.lease_transitions.saturating_add(1);
                }
                spec.lease_duration_seconds = self.lease_seconds;
                spec.renew_time = Some(timestamp(now));
                lease
            }
        };
        let transitions = lease.spec.as_ref().map_or(0, |s| s.lease_transitions);
        match self.client.update(lease).await {
            Ok(_) => Ok(Some(transitions)),
            Err(crate::Error::Conflict(_) | crate::Error::NotFound(_)) => Ok(None),
            Err(source) => Err(Error::WriteLease { lease: self.lease(), source }),
        }
    }

    /// Clears the holder if it is still us, within the renew deadline; failures are logged (the
    /// lease then expires on its own).
    async fn release(&self) {
        let release = async {
            let (namespace, name) = (&self.config.namespace, &self.config.name);
            let mut lease = self
                .client
                .get::<Lease>(namespace, name)
                .await
                .map_err(|source| Error::GetLease { lease: self.lease(), source })?;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity != self.config.identity {
                return Ok(());
            }
            spec.holder_identity.clear();
            spec.lease_duration_seconds = 1;
            spec.renew_time = Some(timestamp(SystemTime::now()));
            self.client.update(lease).await.map_err(|source| Error::WriteLease { lease: self.lease(), source })?;
            Ok::<_, Error>(())
        };
        match tokio::time::timeout(self.config.renew_deadline, release).await {
            Ok(Ok(())) => info!(lease = %self.lease(), "released the lease"),
            Ok(Err(e)) => warn!(error = %ErrorChain(&e), "releasing the lease failed; it will expire"),
            Err(_) => warn!(lease = %self.lease(), "releasing the lease timed out; it will expire"),
        }
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }
}

/// Whether the lease's last renewal plus its duration is before `now`. A lease never renewed is
/// expired.
fn expired(spec: &LeaseSpec, now: SystemTime) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let renewed = UNIX_EPOCH
        + Duration::new(u64::try_from(renewed.seconds).unwrap_or(0), u32::try_from(renewed.nanos).unwrap_or(0));
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds).unwrap_or(0));
    renewed + duration < now
}

fn timestamp(t: SystemTime) -> Timestamp {
    // A clock before 1970 is broken; the epoch is as good an answer as any.
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: SystemTime, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.into(),
            lease_duration_seconds: seconds,
            renew_time: Some(timestamp(renewed)),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_expires_its_duration_after_renewal() {
        let now = SystemTime::now();
        assert!(!expired(&spec("a", now - Duration::from_secs(14), 15), now));
        assert!(expired(&spec("a", now - Duration::from_secs(16), 15), now));
        assert!(expired(&LeaseSpec { holder_identity: "a".into(), ..Default::default() }, now));
    }

    #[tokio::test]
    async fn unsafe_configurations_are_refused() {
        let client = Client::new("http://127.0.0.1:1").expect("client");
        let ok = LeaderElectionConfig::new("stratus-system", "controllers", "a");
        assert!(LeaderElector::new(client.clone(), ok.clone()).is_ok());
        let bad = [
            LeaderElectionConfig { renew_deadline: ok.lease_duration, ..ok.clone() },
            LeaderElectionConfig { retry_period: ok.renew_deadline, ..ok.clone() },
            LeaderElectionConfig { identity: String::new(), ..ok.clone() },
        ];
        for config in bad {
            assert!(matches!(LeaderElector::new(client.clone(), config), Err(Error::InvalidConfig(_))));
        }
        let fractional = LeaderElectionConfig { lease_duration: Duration::from_millis(10_500), ..ok };
        assert_eq!(LeaderElector::new(client, fractional).map(|e| e.lease_seconds).ok(), Some(11));
    }
}
