//! Weighted traffic splits between a model's labels: which label serves a
//! request that names neither a version nor a label. Pure functions.
//!
//! With a routing key the choice is weighted rendezvous hashing: every label
//! scores `-ln(u) / weight` with `u` a uniform hash of (key, label), and the
//! lowest score wins. The same key always gets the same label while the split
//! is unchanged, and raising one label's weight only lowers that label's
//! scores, so keys only ever move *to* it — for any number of labels.
//! Without a key the choice is weighted random.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// Label → weight (percent) for one model, kept sorted by label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficSplit {
    entries: Vec<(String, u32)>,
}

impl TrafficSplit {
    pub fn new(weights: impl IntoIterator<Item = (String, u32)>) -> Self {
        let mut entries: Vec<(String, u32)> = weights.into_iter().collect();
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        Self { entries }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(String, u32)] {
        &self.entries
    }

    pub fn weight(&self, label: &str) -> Option<u32> {
        self.entries.iter().find(|(l, _)| l == label).map(|(_, w)| *w)
    }

    pub fn total(&self) -> u64 {
        self.entries.iter().map(|(_, w)| u64::from(*w)).sum()
    }

    /// The split's labels in the order a key prefers them: best first. Labels
    /// with weight 0 come last (they only ever serve as fallbacks).
    pub fn preference_for_key(&self, key: &str) -> Vec<&str> {
        let mut scored: Vec<(f64, &str)> = self
            .entries
            .iter()
            .map(|(label, weight)| {
                let score = if *weight == 0 {
                    f64::INFINITY
                } else {
                    -unit_hash(key, label).ln() / f64::from(*weight)
                };
                (score, label.as_str())
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        scored.into_iter().map(|(_, l)| l).collect()
    }

    /// The label a key goes to.
    pub fn choose_for_key(&self, key: &str) -> Option<&str> {
        self.preference_for_key(key).into_iter().next()
    }

    /// The label a uniform draw `r` in [0, 1) goes to, by weight.
    pub fn choose_for_draw(&self, r: f64) -> Option<&str> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let mut target = r * total as f64;
        for (label, weight) in &self.entries {
            if *weight == 0 {
                continue;
            }
            if target < f64::from(*weight) {
                return Some(label);
            }
            target -= f64::from(*weight);
        }
        self.entries.iter().rev().find(|(_, w)| *w > 0).map(|(l, _)| l.as_str())
    }

    /// Fallback order after `first`: the remaining labels by descending weight.
    pub fn fallbacks_after<'a>(&'a self, first: &str) -> Vec<&'a str> {
        let mut rest: Vec<&(String, u32)> =
            self.entries.iter().filter(|(l, _)| l != first).collect();
        rest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rest.into_iter().map(|(l, _)| l.as_str()).collect()
    }
}

/// A stable 64-bit hash of (key, label): FNV-1a, then a splitmix64 finish.
fn hash64(key: &str, label: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(std::iter::once(0xff)).chain(label.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// (key, label) → a uniform value in the open interval (0, 1): the same
/// pair always gives the same value.
pub fn unit_hash(key: &str, label: &str) -> f64 {
    ((hash64(key, label) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish() | 1);
}

/// A uniform draw in [0, 1) from a per-thread xorshift generator (seeded
/// randomly per thread; not for anything security-related).
pub fn uniform_draw() -> f64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(entries: &[(&str, u32)]) -> TrafficSplit {
        TrafficSplit::new(entries.iter().map(|(l, w)| ((*l).to_owned(), *w)))
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user-{i}")).collect()
    }

    #[test]
    fn the_same_key_always_gets_the_same_label() {
        let s = split(&[("stable", 90), ("canary", 10)]);
        for key in keys(200) {
            let first = s.choose_for_key(&key);
            assert!((0..50).all(|_| s.choose_for_key(&key) == first));
        }
    }

    #[test]
    fn keyed_shares_follow_the_weights() {
        for (stable, canary) in [(90u32, 10u32), (50, 50), (10, 90), (100, 0)] {
            let s = split(&[("stable", stable), ("canary", canary)]);
            let n = 20_000;
            let to_canary =
                keys(n).iter().filter(|k| s.choose_for_key(k) == Some("canary")).count();
            let share = to_canary as f64 * 100.0 / n as f64;
            assert!((share - f64::from(canary)).abs() < 1.5, "{canary}% canary, got {share:.2}%");
        }
    }

    #[test]
    fn raising_a_weight_only_moves_keys_towards_that_label() {
        let keys = keys(5000);
        let mut previous: Vec<Option<String>> = Vec::new();
        for canary in (0..=100).step_by(5) {
            let s = split(&[("stable", 100 - canary), ("canary", canary)]);
            let now: Vec<Option<String>> =
                keys.iter().map(|k| s.choose_for_key(k).map(str::to_owned)).collect();
            if !previous.is_empty() {
                for (before, after) in previous.iter().zip(&now) {
                    if before.as_deref() == Some("canary") {
                        assert_eq!(
                            after.as_deref(),
                            Some("canary"),
                            "a canary key went back at {canary}%"
                        );
                    }
                }
            }
            previous = now;
        }
    }

    #[test]
    fn monotone_with_three_labels_too() {
        let keys = keys(3000);
        let before = split(&[("a", 50), ("b", 30), ("c", 20)]);
        let after = split(&[("a", 50), ("b", 30), ("c", 40)]);
        for k in &keys {
            let (x, y) = (before.choose_for_key(k), after.choose_for_key(k));
            assert!(x == y || y == Some("c"), "{k}: {x:?} → {y:?}");
        }
    }

    #[test]
    fn draws_follow_the_weights_and_skip_zero_weights() {
        let s = split(&[("stable", 70), ("canary", 30), ("shadow", 0)]);
        assert_eq!(s.choose_for_draw(0.0), Some("canary")); // sorted: canary, shadow, stable
        assert_eq!(s.choose_for_draw(0.299), Some("canary"));
        assert_eq!(s.choose_for_draw(0.3), Some("stable"));
        assert_eq!(s.choose_for_draw(0.999), Some("stable"));
        let n = 50_000;
        let canary = (0..n).filter(|_| s.choose_for_draw(uniform_draw()) == Some("canary")).count();
        let share = canary as f64 * 100.0 / n as f64;
        assert!((share - 30.0).abs() < 1.0, "{share}");
        assert!(split(&[("a", 0)]).choose_for_draw(0.5).is_none());
    }

    #[test]
    fn fallbacks_go_by_weight() {
        let s = split(&[("a", 10), ("b", 60), ("c", 30)]);
        assert_eq!(s.fallbacks_after("b"), vec!["c", "a"]);
        assert_eq!(s.preference_for_key("k").len(), 3);
    }
}
