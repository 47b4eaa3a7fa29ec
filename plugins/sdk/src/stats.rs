//! Operation counts, errors and time, for plugins whose operations are slow enough that a
//! short lock per operation does not matter (database and keyval calls). The metrics
//! plugin reads them at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An operation's name and whether it succeeded.
type Outcome = (&'static str, bool);

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: u64,
    seconds: f64,
}

#[derive(Debug, Default)]
pub struct OpStats {
    ops: Mutex<BTreeMap<Outcome, Tally>>,
}

impl OpStats {
    pub fn record(&self, op: &'static str, ok: bool, elapsed: Duration) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let t = ops.entry((op, ok)).or_default();
        t.count += 1;
        t.seconds += elapsed.as_secs_f64();
    }

    /// Runs `f`, recording it under `op`.
    pub async fn time<T, E>(
        &self,
        op: &'static str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let out = f.await;
        self.record(op, out.is_ok(), start.elapsed());
        out
    }

    /// `(operation, ok, count, seconds)` for every operation seen.
    pub fn snapshot(&self) -> Vec<(&'static str, bool, u64, f64)> {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.iter()
            .map(|((op, ok), t)| (*op, *ok, t.count, t.seconds))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_and_outcome() {
        let s = OpStats::default();
        s.record("get", true, Duration::from_millis(10));
        s.record("get", true, Duration::from_millis(30));
        s.record("get", false, Duration::from_millis(5));
        let snap = s.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!((snap[1].0, snap[1].1, snap[1].2), ("get", true, 2));
        assert!((snap[1].3 - 0.04).abs() < 1e-9);
    }
}
