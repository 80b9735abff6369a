//! Leader election on a `coordination.k8s.io/v1` Lease, so that of the Deployment's replicas
//! exactly one runs the controller (every replica keeps serving admission).
//!
//! The algorithm is client-go's (`tools/leaderelection/leaderelection.go`, `tryAcquireOrRenew`,
//! `release`; `tools/leaderelection/resourcelock/leaselock.go`): read the Lease, create it when
//! missing, take it only when nobody holds it or the holder has not renewed it for a whole lease
//! duration *as measured on our own clock since we last saw the record change* (so clock skew
//! between replicas does not matter), and write with an `update` carrying the resourceVersion we
//! read, so of two candidates racing for it the API server lets exactly one win (409 for the
//! other). A leader that cannot renew within the renew deadline (shorter than the lease duration)
//! stops reconciling before anyone else may take over.
//!
//! Why our own and not a crate: `kube-leader-election` 0.44 needs kube 4; `kube-lease-manager`
//! 0.13 fits kube 5 / k8s-openapi 0.29 but its mutual exclusion rests on server-side apply field
//! ownership conflicts plus strategic merge patches without resourceVersion preconditions, a
//! different protocol from client-go's that our fake API server (and its tests) would have to
//! model field ownership for. This is ~200 lines with the decision pure and tested.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use rand::Rng;
use tokio::time::Instant;

use crate::names;

/// The Lease both replicas compete for, in the install namespace.
pub const LEASE_NAME: &str = "kubevirt-bmc-controller";

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    pub identity: String,
    /// How long a follower waits without seeing a renewal before it takes the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps reconciling without a successful renewal.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {step}: {source}")]
    Api {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// What a candidate or the leader does after reading the Lease (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the Lease with us as holder; `transitions` is the new leaseTransitions.
    Take { transitions: i32, renew: bool },
    /// Someone else holds a valid Lease.
    Wait { holder: String },
}

/// client-go `tryAcquireOrRenew`: a held Lease is valid while `observed_for < lease_duration`,
/// where `observed_for` is how long ago (on our clock) the record last changed.
pub fn decide(
    spec: Option<&LeaseSpec>,
    identity: &str,
    observed_for: Duration,
    lease_duration: Duration,
) -> Decision {
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    if holder == identity {
        return Decision::Take {
            transitions,
            renew: true,
        };
    }
    // A Lease released by its holder has an empty holder; client-go also lets its 1 s duration
    // lapse, which the empty holder makes moot.
    if !holder.is_empty() && observed_for < lease_duration {
        return Decision::Wait { holder };
    }
    Decision::Take {
        transitions: transitions.saturating_add(1),
        renew: false,
    }
}

/// What a candidate remembers of the Lease between reads (client-go `observedRecord` and
/// `observedTime`).
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Observed,
    acquire_time: Option<MicroTime>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    pub fn new(client: Client, config: ElectionConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed {
                record: None,
                since: Instant::now(),
            },
            acquire_time: None,
        }
    }

    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    fn spec(&self, transitions: i32, acquire_time: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds(self.config.lease_duration)),
            acquire_time,
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt; `Ok(true)` when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let params = PostParams {
            field_manager: Some(names::FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let current = match self.api.get_opt(LEASE_NAME).await {
            Ok(current) => current,
            Err(source) => {
                return Err(LeaseError::Api {
                    step: "get",
                    source,
                });
            }
        };
        let Some(mut lease) = current else {
            let acquire = now();
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, Some(acquire.clone()))),
            };
            return match self.api.create(&params, &lease).await {
                Ok(_) => {
                    self.acquire_time = Some(acquire);
                    Ok(true)
                }
                // Another candidate created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(source) => Err(LeaseError::Api {
                    step: "create",
                    source,
                }),
            };
        };
        let spec = lease.spec.clone();
        let record = spec
            .as_ref()
            .map(|s| (s.holder_identity.clone(), s.renew_time.clone()));
        if self.observed.record != record {
            self.observed = Observed {
                record,
                since: Instant::now(),
            };
        }
        match decide(
            spec.as_ref(),
            &self.config.identity,
            self.observed.since.elapsed(),
            self.config.lease_duration,
        ) {
            Decision::Wait { .. } => Ok(false),
            Decision::Take { transitions, renew } => {
                let acquire = if renew {
                    spec.and_then(|s| s.acquire_time)
                        .or_else(|| self.acquire_time.clone())
                } else {
                    Some(now())
                };
                lease.spec = Some(self.spec(transitions, acquire.clone()));
                // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
                match self.api.replace(LEASE_NAME, &params, &lease).await {
                    Ok(_) => {
                        self.acquire_time = acquire;
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(source) => Err(LeaseError::Api {
                        step: "update",
                        source,
                    }),
                }
            }
        }
    }

    /// client-go `release`: an empty holder lets the next candidate take over at once instead
    /// of after a whole lease duration.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let Some(mut lease) =
            self.api
                .get_opt(LEASE_NAME)
                .await
                .map_err(|source| LeaseError::Api {
                    step: "get",
                    source,
                })?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        let params = PostParams {
            field_manager: Some(names::FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        self.api
            .replace(LEASE_NAME, &params, &lease)
            .await
            .map(|_| ())
            .map_err(|source| LeaseError::Api {
                step: "release",
                source,
            })
    }

    /// Waits until we hold the Lease, retrying every retry period with client-go's jitter
    /// (`wait.JitterUntil`, factor 1.2), so replicas do not retry in step.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or write the leader Lease"),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews every retry period; returns when a renewal has not succeeded for the renew
    /// deadline (or another holder took the Lease): from then on we are not the leader.
    pub async fn hold(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
            }
            if last_renewal.elapsed() >= self.config.renew_deadline {
                return;
            }
        }
    }
}

fn jittered(base: Duration) -> Duration {
    base + base.mul_f64(rand::rng().random_range(0.0..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    const DURATION: Duration = Duration::from_secs(10);

    #[test]
    fn a_valid_lease_of_another_holder_is_left_alone() {
        let spec = held_by(Some("b"), 3);
        assert_eq!(
            decide(Some(&spec), "a", Duration::from_secs(9), DURATION),
            Decision::Wait {
                holder: "b".to_owned()
            }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_and_counts_a_transition() {
        let expired = held_by(Some("b"), 3);
        assert_eq!(
            decide(Some(&expired), "a", Duration::from_secs(10), DURATION),
            Decision::Take {
                transitions: 4,
                renew: false
            }
        );
        let released = held_by(None, 4);
        assert_eq!(
            decide(Some(&released), "a", Duration::ZERO, DURATION),
            Decision::Take {
                transitions: 5,
                renew: false
            }
        );
        assert_eq!(
            decide(None, "a", Duration::ZERO, DURATION),
            Decision::Take {
                transitions: 1,
                renew: false
            }
        );
    }

    #[test]
    fn the_holder_renews_without_a_transition() {
        let ours = held_by(Some("a"), 2);
        assert_eq!(
            decide(Some(&ours), "a", Duration::from_secs(60), DURATION),
            Decision::Take {
                transitions: 2,
                renew: true
            }
        );
    }

    #[test]
    fn jitter_stays_within_client_gos_factor() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(2) && d < Duration::from_millis(4400),
                "{d:?}"
            );
        }
    }
}
