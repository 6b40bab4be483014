//! The Prometheus samples of one scrape, encoded by the `prometheus-client`
//! crate in the OpenMetrics text format (correct escaping, `# TYPE`,
//! `# HELP`, `_total` counters, `# EOF`).
//!
//! Every value lanparty reports is a counter or gauge it already keeps, so a
//! scrape collects them afresh ([`Metrics::counter`], [`Metrics::gauge`])
//! into a registry made for that scrape and encodes it.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The content type of [`Metrics::finish`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct MetricFamily {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(Labels, u64)>,
}

/// The samples of one scrape, grouped by metric name.
#[derive(Default)]
pub struct Metrics {
    families: Vec<MetricFamily>,
}

impl Metrics {
    fn sample(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: u64) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(family) => family.samples.push((labels, value)),
            None => self.families.push(MetricFamily {
                name: name.to_string(),
                help: help.to_string(),
                kind,
                samples: vec![(labels, value)],
            }),
        }
    }

    /// A monotonically increasing count; `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, help, Kind::Counter, labels, value);
    }

    /// A value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, help, Kind::Gauge, labels, value);
    }

    /// The OpenMetrics exposition text, ending in `# EOF`.
    pub fn finish(self) -> String {
        let mut registry = Registry::default();
        for f in self.families {
            match f.kind {
                Kind::Counter => {
                    // The encoder adds `_total` to counters.
                    let name = f.name.strip_suffix("_total").unwrap_or(&f.name);
                    let family = Family::<Labels, Counter<u64, AtomicU64>>::default();
                    for (labels, value) in &f.samples {
                        family.get_or_create(labels).inc_by(*value);
                    }
                    registry.register(name, f.help, family);
                }
                Kind::Gauge => {
                    let family = Family::<Labels, Gauge<u64, AtomicU64>>::default();
                    for (labels, value) in &f.samples {
                        family.get_or_create(labels).set(*value);
                    }
                    registry.register(f.name, f.help, family);
                }
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_group_under_one_family_and_labels_are_escaped() {
        let mut m = Metrics::default();
        m.counter("x_total", "X", &[("room", "a\"b\\c\nd")], 1);
        m.gauge("y", "Y", &[], 2);
        m.counter("x_total", "X", &[("room", "c")], 3);
        let text = m.finish();
        // One header per family; samples in any order; OpenMetrics' end.
        assert!(
            text.starts_with("# HELP x X.\n# TYPE x counter\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE x counter").count(), 1, "{text}");
        assert!(
            text.contains("\nx_total{room=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("\nx_total{room=\"c\"} 3\n"), "{text}");
        assert!(
            text.ends_with("# HELP y Y.\n# TYPE y gauge\ny 2\n# EOF\n"),
            "{text}"
        );
    }
}
