//! Families whose values other parts keep in their own counters (auth failures, rule
//! reloads, pool state ...), read at scrape time: no plugin needs to know the registry.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// `(label values, value)` samples.
pub type Samples = Vec<(Vec<String>, f64)>;

pub struct Callback {
    desc: Desc,
    kind: MetricType,
    labels: Vec<String>,
    read: Box<dyn Fn() -> Samples + Send + Sync>,
    /// Unlabelled families are present from start-up (SPEC 9).
    always: bool,
}

impl Callback {
    pub fn new(
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[&str],
        read: impl Fn() -> Samples + Send + Sync + 'static,
    ) -> prometheus::Result<Callback> {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        Ok(Callback {
            desc: Desc::new(name.into(), help.into(), labels.clone(), Default::default())?,
            kind,
            always: labels.is_empty(),
            labels,
            read: Box::new(read),
        })
    }
}

impl Collector for Callback {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let samples = (self.read)();
        if samples.is_empty() && !self.always {
            return Vec::new();
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(self.kind);
        for (values, v) in samples {
            let mut m = Metric::default();
            let pairs = self
                .labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut p = LabelPair::default();
                    p.set_name(name.clone());
                    p.set_value(value);
                    p
                })
                .collect();
            m.set_label(pairs);
            match self.kind {
                MetricType::COUNTER => {
                    let mut c = Counter::default();
                    c.set_value(v);
                    m.set_counter(c);
                }
                _ => {
                    let mut g = Gauge::default();
                    g.set_value(v);
                    m.set_gauge(g);
                }
            }
            family.mut_metric().push(m);
        }
        vec![family]
    }
}
