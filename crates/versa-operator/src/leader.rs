//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas can run and only one acts. Updates use the Lease's
//! `resourceVersion`, so two candidates can never both win a round.
//!
//! Time is measured as client-go does, never by comparing clocks of two
//! machines: a candidate times a held Lease on its own monotonic clock from
//! the moment it last saw the Lease record change, and takes it only when
//! the record has stood still for a whole lease duration. The leader stops
//! acting when it has not renewed within the renew deadline (shorter than
//! the lease), measured from the start of its last successful renewal; so it
//! stops before any standby may start, whatever the wall clocks say, and a
//! renewal that hangs cannot keep it acting.
//!
//! The decisions are pure functions; the loop around them only reads and
//! writes the Lease.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where the Lease is, who we are, and the three durations of client-go.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a standby waits, after the record last changed, before it
    /// takes the Lease.
    pub duration: Duration,
    /// How long the leader keeps acting without a successful renewal
    /// (shorter than `duration`).
    pub renew_deadline: Duration,
    /// How often the Lease is tried (well under `renew_deadline`).
    pub retry_period: Duration,
}

/// What a candidate has seen of the Lease record, on its own clock.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    record: Option<LeaseSpec>,
    seen_at: Option<Instant>,
    /// When a Lease held by another was last read: a Lease that vanishes
    /// is taken only a lease duration later (its holder may still act).
    foreign_seen_at: Option<Instant>,
    /// The highest epoch read, so a Lease made anew never goes below it.
    highest_epoch: u64,
}

impl Observation {
    /// Records what was read at `now`; the clock restarts only when the
    /// record changed.
    pub fn observe(&mut self, spec: Option<&LeaseSpec>, now: Instant) {
        if self.seen_at.is_none() || self.record.as_ref() != spec {
            self.record = spec.cloned();
            self.seen_at = Some(now);
        }
    }

    fn observe_lease(&mut self, lease: &Lease, identity: &str, now: Instant) {
        self.observe(lease.spec.as_ref(), now);
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        if holder.is_some_and(|h| !h.is_empty() && h != identity) {
            self.foreign_seen_at = Some(now);
        }
        self.highest_epoch = self.highest_epoch.max(epoch_of(lease).unwrap_or(0));
    }

    /// Whether a missing Lease may be created now.
    pub fn may_create(&self, now: Instant, duration: Duration) -> bool {
        self.foreign_seen_at.is_none_or(|t| now.saturating_duration_since(t) >= duration)
    }
}

/// Whether `identity` may take or keep the Lease at `now`, given what it has
/// observed. `default_duration` applies when the record states none.
pub fn may_hold(
    observation: &Observation,
    identity: &str,
    now: Instant,
    default_duration: Duration,
) -> bool {
    let Some(spec) = &observation.record else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            observation.seen_at.is_some_and(|seen| now.saturating_duration_since(seen) >= duration)
        }
    }
}

/// The Lease spec after `identity` takes or renews it. The times written are
/// wall-clock times for people and other tools; no decision here reads them.
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

/// Annotation on the Lease holding the leader epoch: it grows with every
/// change of leader, and sidecars refuse reloads from a lower one (a
/// replaced leader whose writes were still in flight).
pub const EPOCH_ANNOTATION: &str = "versa.dev/leader-epoch";

fn epoch_of(lease: &Lease) -> Option<u64> {
    lease.metadata.annotations.as_ref()?.get(EPOCH_ANNOTATION)?.parse().ok()
}

/// The epoch `identity` leads in after writing `previous`: the same while
/// it renews, one more on a change of leader; a Lease made anew (or one
/// without the annotation) starts from the wall clock's seconds, above any
/// epoch an earlier Lease of the same name can have reached.
pub fn next_epoch(previous: Option<&Lease>, identity: &str, unix_seconds: u64) -> u64 {
    let Some(lease) = previous else { return unix_seconds };
    let ours = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(identity);
    match epoch_of(lease) {
        Some(epoch) if ours => epoch,
        Some(epoch) => epoch.saturating_add(1),
        None => unix_seconds,
    }
}

fn with_epoch(mut meta: ObjectMeta, epoch: u64) -> ObjectMeta {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(EPOCH_ANNOTATION.into(), epoch.to_string());
    meta
}

/// One attempt to take or renew the Lease: the epoch we lead in when we
/// hold it, `None` when another does (or may still act). A write that
/// loses a race (409) is an error, retried until the renew deadline, not a
/// loss: an unrelated write to the Lease must not cost the leadership.
pub async fn try_hold(
    api: &Api<Lease>,
    options: &LeaseOptions,
    observation: &mut Observation,
) -> Result<Option<u64>, kube::Error> {
    let unix = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
    match api.get_opt(&options.name).await? {
        None => {
            if !observation.may_create(Instant::now(), options.duration) {
                return Ok(None);
            }
            let epoch =
                next_epoch(None, &options.identity, unix).max(observation.highest_epoch + 1);
            let meta = ObjectMeta { name: Some(options.name.clone()), ..ObjectMeta::default() };
            let lease = Lease {
                metadata: with_epoch(meta, epoch),
                spec: Some(held_by(None, options, Timestamp::now())),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Some(epoch)),
                Err(e) => Err(e),
            }
        }
        Some(lease) => {
            observation.observe_lease(&lease, &options.identity, Instant::now());
            if !may_hold(observation, &options.identity, Instant::now(), options.duration) {
                return Ok(None);
            }
            let epoch = next_epoch(Some(&lease), &options.identity, unix);
            let mut next = lease.clone();
            next.metadata = with_epoch(lease.metadata.clone(), epoch);
            next.spec = Some(held_by(lease.spec.as_ref(), options, Timestamp::now()));
            // `replace` carries the resourceVersion we read: a concurrent
            // writer makes this fail with 409 instead of both winning.
            api.replace(&options.name, &PostParams::default(), &next).await.map(|_| Some(epoch))
        }
    }
}

/// Whether this replica may act now: true only within the renew deadline
/// of the start of its last successful renewal. Checked before every pass
/// and every write, so a leader that was frozen (SIGSTOP, a long GC-like
/// stall, a hung call) does nothing when it wakes after its deadline.
#[derive(Debug, Clone)]
pub struct Leadership {
    renewed: Arc<Mutex<Option<Instant>>>,
    epoch: Arc<std::sync::atomic::AtomicU64>,
    renew_deadline: Duration,
}

impl Leadership {
    fn new(renew_deadline: Duration) -> Self {
        Self { renewed: Arc::new(Mutex::new(None)), epoch: Default::default(), renew_deadline }
    }

    /// The epoch this replica leads in (sent with every reload).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn renewed_at(&self, started: Instant) {
        *self.renewed.lock().unwrap_or_else(PoisonError::into_inner) = Some(started);
    }

    fn last_renewal(&self) -> Option<Instant> {
        *self.renewed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True while the last renewal is younger than the renew deadline.
    pub fn acting(&self) -> bool {
        self.last_renewal().is_some_and(|t| t.elapsed() < self.renew_deadline)
    }
}

/// One attempt, bounded by `limit`: a hung call counts as a failure.
async fn attempt(
    api: &Api<Lease>,
    options: &LeaseOptions,
    observation: &mut Observation,
    limit: Duration,
) -> Result<Option<u64>, String> {
    match tokio::time::timeout(limit, try_hold(api, options, observation)).await {
        Ok(Ok(held)) => Ok(held),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// Waits until this candidate leads, then keeps renewing in the background.
/// The returned [`Leadership`] says whether to act at each moment; the
/// receiver turns `false` once leadership is lost (taken by another, or not
/// renewed within the renew deadline), and the caller must stop then.
pub async fn lead(
    client: kube::Client,
    options: LeaseOptions,
) -> (Leadership, watch::Receiver<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &options.namespace);
    let leadership = Leadership::new(options.renew_deadline);
    let mut observation = Observation::default();
    loop {
        let started = Instant::now();
        match attempt(&api, &options, &mut observation, options.renew_deadline).await {
            Ok(Some(epoch)) => {
                leadership.epoch.store(epoch, std::sync::atomic::Ordering::Release);
                leadership.renewed_at(started);
                break;
            }
            Ok(None) => tracing::debug!(lease = %options.name, "another replica leads"),
            Err(e) => tracing::warn!(lease = %options.name, error = %e, "lease not reachable"),
        }
        tokio::time::sleep(options.retry_period).await;
    }
    tracing::info!(lease = %options.name, identity = %options.identity, epoch = leadership.epoch(), "leading");
    let (tx, rx) = watch::channel(true);
    let handle = leadership.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(options.retry_period).await;
            if !handle.acting() {
                tracing::error!(lease = %options.name, "lease not renewed within the renew deadline; stopping");
                let _ = tx.send(false);
                return;
            }
            let left = handle
                .last_renewal()
                .map_or(Duration::ZERO, |t| options.renew_deadline.saturating_sub(t.elapsed()));
            let started = Instant::now();
            match attempt(&api, &options, &mut observation, left).await {
                Ok(Some(_)) => handle.renewed_at(started),
                Ok(None) => {
                    tracing::error!(lease = %options.name, "leadership taken by another replica");
                    let _ = tx.send(false);
                    return;
                }
                Err(e) => tracing::warn!(lease = %options.name, error = %e, "lease renewal failed"),
            }
        }
    });
    (leadership, rx)
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
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn a_held_lease_is_taken_only_after_its_record_stood_still_for_a_lease_duration() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let a = held_by(None, &options("a"), t("2026-11-25T10:00:00Z"));
        assert_eq!(a.lease_transitions, Some(0));
        let mut seen = Observation::default();
        seen.observe(Some(&a), at(0));
        assert!(may_hold(&seen, "a", at(1), Duration::from_secs(15)));
        assert!(!may_hold(&seen, "b", at(14), Duration::from_secs(15)));
        // The holder renews at 10 s: the clock starts again.
        let renewed = held_by(Some(&a), &options("a"), t("2026-11-25T10:00:10Z"));
        seen.observe(Some(&renewed), at(10));
        assert!(!may_hold(&seen, "b", at(16), Duration::from_secs(15)));
        // Reading the same record again does not restart it.
        seen.observe(Some(&renewed), at(20));
        assert!(may_hold(&seen, "b", at(25), Duration::from_secs(15)));
        let b = held_by(Some(&renewed), &options("b"), t("2026-11-25T10:00:25Z"));
        assert_eq!(b.holder_identity.as_deref(), Some("b"));
        assert_eq!(b.lease_transitions, Some(1));
        let again = held_by(Some(&b), &options("b"), t("2026-11-25T10:00:30Z"));
        assert_eq!(again.acquire_time, b.acquire_time, "renewal keeps the acquire time");
        assert!(may_hold(&Observation::default(), "anyone", at(0), Duration::from_secs(15)));
    }

    #[test]
    fn wall_clock_skew_never_lets_a_standby_take_a_renewed_lease() {
        // The holder's clock is an hour behind: its renew times look long
        // expired to the standby, which must still wait for the record to
        // stop changing.
        let start = Instant::now();
        let mut seen = Observation::default();
        for i in 0..10u64 {
            let skewed = held_by(
                None,
                &options("a"),
                t("2026-11-25T09:00:00Z") + Duration::from_secs(i * 5),
            );
            let mut spec = skewed;
            spec.lease_transitions = Some(0);
            seen.observe(Some(&spec), start + Duration::from_secs(i * 5));
            assert!(
                !may_hold(
                    &seen,
                    "b",
                    start + Duration::from_secs(i * 5 + 4),
                    Duration::from_secs(15)
                ),
                "round {i}"
            );
        }
    }

    #[test]
    fn the_epoch_grows_with_every_change_of_leader_and_never_restarts_low() {
        let lease = |holder: &str, epoch: Option<u64>| Lease {
            metadata: epoch
                .map_or_else(ObjectMeta::default, |e| with_epoch(ObjectMeta::default(), e)),
            spec: Some(held_by(None, &options(holder), t("2026-11-25T10:00:00Z"))),
        };
        assert_eq!(next_epoch(None, "a", 1_800_000_000), 1_800_000_000, "a new Lease");
        assert_eq!(next_epoch(Some(&lease("a", Some(7))), "a", 1), 7, "renewing keeps it");
        assert_eq!(next_epoch(Some(&lease("a", Some(7))), "b", 1), 8, "a takeover raises it");
        assert_eq!(next_epoch(Some(&lease("a", None)), "b", 99), 99, "no annotation yet");
    }

    #[test]
    fn a_vanished_lease_is_made_anew_only_a_lease_duration_after_its_holder_was_seen() {
        let start = Instant::now();
        let held = Lease {
            metadata: with_epoch(ObjectMeta::default(), 9),
            spec: Some(held_by(None, &options("a"), t("2026-11-25T10:00:00Z"))),
        };
        let mut seen = Observation::default();
        assert!(seen.may_create(start, Duration::from_secs(15)), "never saw a holder");
        seen.observe_lease(&held, "b", start);
        assert!(!seen.may_create(start + Duration::from_secs(14), Duration::from_secs(15)));
        assert!(seen.may_create(start + Duration::from_secs(15), Duration::from_secs(15)));
        assert_eq!(seen.highest_epoch, 9);
    }

    #[test]
    fn a_leader_stops_acting_at_its_renew_deadline() {
        let l = Leadership::new(Duration::from_millis(50));
        assert!(!l.acting(), "not before the first renewal");
        l.renewed_at(Instant::now());
        assert!(l.acting());
        l.renewed_at(Instant::now() - Duration::from_millis(60));
        assert!(!l.acting());
    }
}
