//! Metrics exposition formats. Shoal's servers render with `prometheus-client`, which writes
//! OpenMetrics text; scrapers that ask for OpenMetrics (`Accept:
//! application/openmetrics-text`, as Prometheus does) get exactly that, and everyone else
//! (curl, older scrapers, `promtool check metrics`) gets the Prometheus text format 0.0.4,
//! each under its own content type, as the Go client library negotiates.
//!
//! For the metric types Shoal uses (counters, gauges, histograms; no exemplars, no
//! `_created`) the two formats differ in three places: a counter family is named with
//! `_total` in `# HELP`/`# TYPE` in 0.0.4, `# UNIT` lines do not exist there, and there is
//! no `# EOF`.

/// Content type of OpenMetrics text 1.0.0.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The format a scraper asked for with `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    PrometheusText,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::PrometheusText,
        }
    }

    /// The content type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS,
            Self::PrometheusText => PROMETHEUS_TEXT,
        }
    }

    /// `openmetrics` (as `prometheus-client` writes it) in this format.
    pub fn render(self, openmetrics: String) -> String {
        match self {
            Self::OpenMetrics => openmetrics,
            Self::PrometheusText => to_prometheus_text(&openmetrics),
        }
    }
}

/// OpenMetrics text (counters, gauges, histograms) as Prometheus text 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_take_total_and_eof_goes() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{s=\"1\"} 3\n\
                  # HELP a_inflight In flight.\n# TYPE a_inflight gauge\na_inflight 0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{s=\"1\"} 3\n\
             # HELP a_inflight In flight.\n# TYPE a_inflight gauge\na_inflight 0\n"
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(None).render(om.into()),
            to_prometheus_text(om)
        );
    }
}
