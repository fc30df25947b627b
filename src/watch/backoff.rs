//! Retry timing for transient failures: 1 s doubling to 5 min, with ±20 %
//! jitter so that many nodes behind one registry do not retry in step.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wait before the first retry.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest wait, however many retries failed (before jitter).
pub const MAX: Duration = Duration::from_secs(300);

/// The wait before retry number `attempt` (1-based), jittered by `seed`.
pub fn delay(attempt: u32, seed: &impl Hash) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let base = FIRST.saturating_mul(1u32 << doublings).min(MAX);
    // No RNG crate for one number: the clock's nanoseconds hashed with the
    // file's path spread retries well enough.
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    let unit = (h.finish() % 1000) as f64 / 1000.0; // 0.0 ..< 1.0
    base.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_five_minutes_with_jitter() {
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (99, 300)] {
            let d = delay(attempt, &"a.yaml");
            let base = Duration::from_secs(base);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{attempt}: {d:?}"
            );
        }
    }
}
