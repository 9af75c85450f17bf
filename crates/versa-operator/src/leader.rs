//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas can run and only one acts. Updates use the Lease's
//! `resourceVersion`, so two candidates can never both win a round.
//!
//! The decision — may this candidate hold the Lease now? — is a pure
//! function; the loop around it only reads and writes the Lease.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;

/// Where the Lease is and who we are.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
}

/// Whether `identity` may take or keep the Lease at `now`.
pub fn may_hold(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
                return true;
            };
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            renewed.0 + SignedDuration::from_secs(duration) < now
        }
    }
}

/// The Lease spec after `identity` takes or renews it.
pub fn held_by(previous: Option<&LeaseSpec>, options: &LeaseOptions, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|s| s.holder_identity.as_deref()) == Some(&options.identity);
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(options.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(options.duration.as_secs()).unwrap_or(15)),
        acquire_time: if ours {
            previous.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// One attempt to take or renew the Lease: `Ok(true)` when we hold it.
pub async fn try_hold(api: &Api<Lease>, options: &LeaseOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    match api.get_opt(&options.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(options.name.clone()), ..ObjectMeta::default() },
                spec: Some(held_by(None, options, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            if !may_hold(lease.spec.as_ref(), &options.identity, now) {
                return Ok(false);
            }
            lease.spec = Some(held_by(lease.spec.as_ref(), options, now));
            // `replace` carries the resourceVersion we read: a concurrent
            // writer makes this fail with 409 instead of both winning.
            match api.replace(&options.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this candidate leads, then keeps renewing in the background.
/// The returned receiver turns `false` if leadership is lost (a renewal
/// could not be confirmed within the Lease duration); the caller must stop
/// acting then.
pub async fn lead(client: kube::Client, options: LeaseOptions) -> watch::Receiver<bool> {
    let api: Api<Lease> = Api::namespaced(client, &options.namespace);
    loop {
        match try_hold(&api, &options).await {
            Ok(true) => break,
            Ok(false) => tracing::debug!(lease = %options.name, "another replica leads"),
            Err(e) => tracing::warn!(lease = %options.name, error = %e, "lease not reachable"),
        }
        tokio::time::sleep(options.renew_every).await;
    }
    tracing::info!(lease = %options.name, identity = %options.identity, "leading");
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(options.renew_every).await;
            match try_hold(&api, &options).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %options.name, "leadership taken by another replica");
                    let _ = tx.send(false);
                    return;
                }
                Err(e) => tracing::warn!(lease = %options.name, error = %e, "lease renewal failed"),
            }
            if last_renewal.elapsed() >= options.duration {
                tracing::error!(lease = %options.name, "lease not renewed in time");
                let _ = tx.send(false);
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(identity: &str) -> LeaseOptions {
        LeaseOptions {
            namespace: "versa-system".into(),
            name: "versa-operator".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn a_held_lease_is_taken_only_after_it_expires() {
        let a = held_by(None, &options("a"), t("2026-11-25T10:00:00Z"));
        assert_eq!(a.lease_transitions, Some(0));
        assert!(may_hold(Some(&a), "a", t("2026-11-25T10:00:01Z")));
        assert!(!may_hold(Some(&a), "b", t("2026-11-25T10:00:14Z")));
        assert!(may_hold(Some(&a), "b", t("2026-11-25T10:00:16Z")));
        let b = held_by(Some(&a), &options("b"), t("2026-11-25T10:00:16Z"));
        assert_eq!(b.holder_identity.as_deref(), Some("b"));
        assert_eq!(b.lease_transitions, Some(1));
        assert_eq!(b.acquire_time, Some(MicroTime(t("2026-11-25T10:00:16Z"))));
        let renewed = held_by(Some(&b), &options("b"), t("2026-11-25T10:00:20Z"));
        assert_eq!(renewed.acquire_time, b.acquire_time, "renewal keeps the acquire time");
        assert_eq!(renewed.lease_transitions, Some(1));
        assert!(may_hold(None, "anyone", t("2026-11-25T10:00:00Z")));
    }
}
