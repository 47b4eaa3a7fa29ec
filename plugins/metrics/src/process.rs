//! The standard process metrics (SPEC 9, `process_*`), with CPU time in fractions of a
//! second.

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;
use prometheus::core::{Collector, Desc};
use prometheus::process_collector::ProcessCollector;
use prometheus::proto::{Counter, MetricFamily};

/// The prometheus crate's process collector, except that `process_cpu_seconds_total`
/// keeps its fraction. The crate counts whole seconds (an `IntCounter`, tikv/rust-
/// prometheus#451), so a gateway using 5% of a core read 0 and then took a one-second
/// step every 20 s: `rate()` over a minute swung between 0 and 1.7% of a core.
pub struct ProcessMetrics {
    inner: ProcessCollector,
}

impl ProcessMetrics {
    pub fn for_self() -> ProcessMetrics {
        ProcessMetrics {
            inner: ProcessCollector::for_self(),
        }
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        let Some(seconds) = cpu_seconds() else {
            return families;
        };
        for family in &mut families {
            if family.name() == "process_cpu_seconds_total" {
                for metric in family.mut_metric() {
                    let mut counter = Counter::default();
                    counter.set_value(seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// User and system CPU time of every thread of this process, in seconds (microseconds
/// precise; the workers, child processes, are not counted, as before).
fn cpu_seconds() -> Option<f64> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(seconds(usage.user_time()) + seconds(usage.system_time()))
}
