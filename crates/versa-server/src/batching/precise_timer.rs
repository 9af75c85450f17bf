//! Waiting until an instant with a precision of tens of microseconds.
//! tokio's timer wheel has millisecond ticks and rounds every deadline up
//! to the next one, so a 200 µs batch timeout would wait about a
//! millisecond. The bulk of a long wait stays on tokio's timer; the last
//! stretch goes to one shared thread that sleeps on a condition variable
//! (a futex with a nanosecond timeout) and wakes each waiter when its
//! instant has come.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Waits longer than this partly on tokio's timer, which wakes up to a
/// tick late: the rest is left to the precise thread.
const COARSE_SLACK: Duration = Duration::from_millis(2);

struct Waiter {
    at: Instant,
    id: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

#[derive(Default)]
struct Queue {
    waiters: BinaryHeap<Reverse<Waiter>>,
    next_id: u64,
}

#[derive(Default)]
struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Timer {
    /// The one timer thread of the process, started on first use; `None`
    /// if it could not be started (waiters then use tokio's timer).
    fn shared() -> Option<&'static Arc<Timer>> {
        static TIMER: OnceLock<Option<Arc<Timer>>> = OnceLock::new();
        TIMER
            .get_or_init(|| {
                let timer = Arc::new(Timer::default());
                let worker = Arc::clone(&timer);
                match std::thread::Builder::new()
                    .name("versa-precise-timer".into())
                    .spawn(move || worker.run())
                {
                    Ok(_) => Some(timer),
                    Err(e) => {
                        tracing::warn!(error = %e, "no precise timer thread: batch timeouts use tokio's millisecond timer");
                        None
                    }
                }
            })
            .as_ref()
    }

    fn register(&self, at: Instant) -> oneshot::Receiver<()> {
        let (wake, woken) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let id = queue.next_id;
        queue.next_id = queue.next_id.wrapping_add(1);
        let earliest = queue.waiters.peek().is_none_or(|Reverse(w)| at < w.at);
        queue.waiters.push(Reverse(Waiter { at, id, wake }));
        drop(queue);
        if earliest {
            self.changed.notify_one();
        }
        woken
    }

    fn run(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            for waiter in queue.due(now) {
                // A waiter that went away (its batch filled) is dropped.
                let _ = waiter.wake.send(());
            }
            queue = match queue.waiters.peek().map(|Reverse(w)| w.at - now) {
                None => self.changed.wait(queue).unwrap_or_else(PoisonError::into_inner),
                Some(wait) => {
                    self.changed.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }
}

impl Queue {
    /// The waiters whose instant has come by `now`, earliest first.
    fn due(&mut self, now: Instant) -> Vec<Waiter> {
        let mut due = Vec::new();
        while self.waiters.peek().is_some_and(|Reverse(w)| w.at <= now) {
            if let Some(Reverse(w)) = self.waiters.pop() {
                due.push(w);
            }
        }
        due
    }
}

/// Waits until `at`, waking within tens of microseconds of it (tokio's
/// `sleep_until` wakes up to a millisecond late). Dropping the future
/// gives the wait up.
pub(super) async fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at <= now {
        return;
    }
    if at - now > COARSE_SLACK {
        tokio::time::sleep_until((at - COARSE_SLACK).into()).await;
    }
    if Instant::now() >= at {
        return;
    }
    match Timer::shared() {
        Some(timer) => {
            // Err only if the waiter was dropped unsent: fall back anyway.
            if timer.register(at).await.is_err() {
                tokio::time::sleep_until(at.into()).await;
            }
        }
        None => tokio::time::sleep_until(at.into()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn short_waits_end_within_tens_of_microseconds_not_a_timer_tick() {
        // Each wait starts where the previous one ended; on tokio's timer
        // that is a tick, so every one of these waits would end 300 to
        // 950 µs late (the deadline rounded up to the next millisecond).
        let mut lateness = Vec::new();
        for micros in [50u64, 200, 400, 700, 2_500] {
            for _ in 0..20 {
                let at = Instant::now() + Duration::from_micros(micros);
                sleep_until(at).await;
                let woke = Instant::now();
                assert!(woke >= at, "woke early");
                lateness.push(woke - at);
            }
        }
        lateness.sort();
        // The lower quartile: a loaded machine may delay some wake-ups.
        let quartile = lateness[lateness.len() / 4];
        assert!(quartile < Duration::from_micros(200), "lateness {lateness:?}");
    }

    #[test]
    fn waiters_are_woken_in_deadline_order_whatever_the_order_they_came_in() {
        let base = Instant::now();
        let mut queue = Queue::default();
        let mut keep = Vec::new();
        for (id, offset) in [900u64, 100, 500, 300, 700].into_iter().enumerate() {
            let (wake, woken) = oneshot::channel();
            keep.push(woken);
            let at = base + Duration::from_micros(offset);
            queue.waiters.push(Reverse(Waiter { at, id: id as u64, wake }));
        }
        let early = queue.due(base + Duration::from_micros(400));
        let woken: Vec<u64> = early.iter().map(|w| w.id).collect();
        assert_eq!(woken, [1, 3], "the 100 and 300 µs waiters, in that order");
        let rest: Vec<u64> =
            queue.due(base + Duration::from_secs(1)).iter().map(|w| w.id).collect();
        assert_eq!(rest, [2, 4, 0]);
        assert!(queue.waiters.is_empty());
    }

    #[tokio::test]
    async fn an_instant_already_past_returns_at_once() {
        let before = Instant::now();
        sleep_until(before - Duration::from_millis(1)).await;
        sleep_until(before).await;
        assert!(before.elapsed() < Duration::from_millis(50), "no wait for a tick or the thread");
    }
}
