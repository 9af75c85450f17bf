//! Which requests a mirror copies. Pure.

use crate::config::Sampling;

/// The salt that makes a key's mirror draw independent of its split draws.
const SALT: &str = "\u{0}versa-mirror";

/// Whether a request is copied: `percent` of them, chosen by route key when
/// sampling by key and the request has one (the same keys always), else by
/// `draw` (uniform in [0, 1)).
pub fn is_sampled(percent: u32, sampling: Sampling, route_key: Option<&str>, draw: f64) -> bool {
    if percent == 0 {
        return false;
    }
    if percent >= 100 {
        return true;
    }
    let u = match (sampling, route_key) {
        (Sampling::RouteKey, Some(key)) => versa_core::routing::unit_hash(key, SALT),
        _ => draw,
    };
    u * 100.0 < f64::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_keys_are_always_copied_and_in_proportion() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let copied: Vec<&String> =
            keys.iter().filter(|k| is_sampled(10, Sampling::RouteKey, Some(k), 0.99)).collect();
        let share = copied.len() as f64 / keys.len() as f64 * 100.0;
        assert!((share - 10.0).abs() < 1.0, "{share}%");
        assert!(copied.iter().all(|k| is_sampled(10, Sampling::RouteKey, Some(k), 0.0)));
        // Raising the percentage only adds keys.
        assert!(copied.iter().all(|k| is_sampled(30, Sampling::RouteKey, Some(k), 0.5)));
    }

    #[test]
    fn random_sampling_ignores_the_key_and_bounds_hold() {
        assert!(is_sampled(10, Sampling::Random, Some("k"), 0.05));
        assert!(!is_sampled(10, Sampling::Random, Some("k"), 0.15));
        assert!(is_sampled(10, Sampling::RouteKey, None, 0.05));
        assert!(!is_sampled(0, Sampling::Random, None, 0.0));
        assert!(is_sampled(100, Sampling::RouteKey, Some("k"), 0.999));
    }
}
