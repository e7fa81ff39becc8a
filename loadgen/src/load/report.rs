//! A run's results as a table and as one self-contained HTML file: the charts are inline
//! SVG drawn here, so the report needs no script and no network to view.

use std::fmt::Write;

use super::run::{PhaseSummary, Results, Second, ViewerSummary};

/// The summary's columns.
const COLUMNS: [&str; 13] = [
    "phase",
    "s",
    "sent",
    "ok",
    "errors",
    "answered/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "failed p99 ms",
    "hit ratio",
    "origin fetches",
];

/// One phase's cells, in [`COLUMNS`] order.
fn cells(p: &PhaseSummary) -> [String; 13] {
    [
        p.name.clone(),
        format!("{:.0}", p.duration_s),
        p.sent.to_string(),
        p.ok.to_string(),
        p.errors.to_string(),
        format!("{:.0}", p.rate),
        format!("{:.2}", p.p50_ms),
        format!("{:.2}", p.p99_ms),
        format!("{:.2}", p.p999_ms),
        format!("{:.1}", p.max_ms),
        if p.errors == 0 {
            "–".into()
        } else {
            format!("{:.2}", p.failed_p99_ms)
        },
        format!("{:.1}%", 100.0 * p.hit_ratio),
        p.origin_fetches.map_or("–".into(), |f| format!("{f:.0}")),
    ]
}

/// The per-phase table (Markdown).
pub fn table(r: &Results) -> String {
    let mut out = markdown(&COLUMNS, r.phases.iter().map(cells));
    if !r.viewers.is_empty() {
        out.push('\n');
        out.push_str(&markdown(
            &VIEWER_COLUMNS,
            r.viewers.iter().map(viewer_cells),
        ));
    }
    out
}

/// The viewers table's columns.
const VIEWER_COLUMNS: [&str; 8] = [
    "viewers phase",
    "sessions",
    "failed",
    "segments",
    "segment hits",
    "QoE/4 s",
    "stalls",
    "startup p50 s",
];

/// One viewers phase's cells, in [`VIEWER_COLUMNS`] order.
fn viewer_cells(v: &ViewerSummary) -> [String; 8] {
    [
        v.phase.clone(),
        v.sessions.to_string(),
        v.failed.to_string(),
        v.segments.to_string(),
        format!("{:.1}%", 100.0 * v.hits as f64 / v.segments.max(1) as f64),
        format!("{:.2}", v.qoe_4s),
        v.stalls.to_string(),
        format!("{:.2}", v.startup_p50_s),
    ]
}

/// A Markdown table: the first column left-aligned, the rest right.
fn markdown<const N: usize>(
    columns: &[&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> String {
    let mut out = format!(
        "| {} |\n|---|{}\n",
        columns.join(" | "),
        "---:|".repeat(N - 1)
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The same table in HTML, cells escaped.
fn html_table<const N: usize>(
    columns: &[&str; N],
    rows: impl Iterator<Item = [String; N]>,
) -> String {
    let head: String = columns.iter().map(|c| format!("<th>{c}</th>")).collect();
    let body: String = rows
        .map(|row| {
            let tds: String = row
                .iter()
                .map(|c| format!("<td>{}</td>", escape(c)))
                .collect();
            format!("<tr>{tds}</tr>")
        })
        .collect();
    format!("<table><tr>{head}</tr>{body}</table>")
}

const W: f64 = 880.0;
const H: f64 = 180.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

struct Series<'a> {
    name: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// One chart: lines over the run's seconds, the spike phases shaded, y from 0 (or log10).
fn chart(title: &str, unit: &str, r: &Results, series: &[Series<'_>], log: bool) -> String {
    let seconds = r.timeline.len().max(1) as f64;
    let y_of = |v: f64| if log { (v.max(0.01)).log10() } else { v };
    let (lo, hi) = if log {
        let vals = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1.max(0.01)));
        let max = vals.fold(1.0f64, f64::max);
        (-2.0, max.log10().ceil().max(0.0))
    } else {
        let max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max);
        (0.0, if max > 0.0 { max * 1.1 } else { 1.0 })
    };
    let x = |t: f64| LEFT + (W - LEFT - 10.0) * t / seconds;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (y_of(v) - lo) / (hi - lo).max(1e-9));
    let mut svg = format!(
        "<figure><figcaption>{title}</figcaption><svg class=\"chart\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{title}\">"
    );
    for p in r.phases.iter().filter(|p| p.name.contains("spike")) {
        let (x0, x1) = (
            x(p.start_s),
            x((p.start_s + p.duration_s).min(seconds - 1.0)),
        );
        let _ = write!(
            svg,
            "<rect class=\"spike\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f4c7c3\" opacity=\"0.6\"/>",
            (x1 - x0).max(1.0),
            H - TOP - BOTTOM
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#888\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#888\"/>",
        b = H - BOTTOM,
        r = W - 10.0
    );
    let label = |v: f64| {
        let v = if log { 10f64.powf(v) } else { v };
        if v >= 100.0 || (log && v >= 1.0) {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    for v in [lo, (lo + hi) / 2.0, hi] {
        let py = TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo).max(1e-9));
        let _ = write!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            py + 3.0,
            label(v)
        );
    }
    let step = (seconds / 10.0).ceil().max(1.0) as usize;
    for t in (0..=r.timeline.len()).step_by(step) {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.0}\" font-size=\"10\" text-anchor=\"middle\">{t}s</text>",
            x(t as f64),
            H - 8.0
        );
    }
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" data-name=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>",
            s.name,
            s.colour,
            pts.join(" ")
        );
    }
    svg.push_str("</svg><p class=\"legend\">");
    for s in series {
        let _ = write!(
            svg,
            "<span style=\"color:{}\">■</span> {} &nbsp; ",
            s.colour, s.name
        );
    }
    let _ = write!(svg, "({unit})</p></figure>");
    svg
}

/// One point per second, at the middle of the second it counts.
fn points(t: &[Second], f: impl Fn(&Second) -> Option<f64>) -> Vec<(f64, f64)> {
    t.iter()
        .filter_map(|s| f(s).map(|v| (s.t as f64 + 0.5, v)))
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The viewers' sessions, if the run had any.
fn viewer_table(r: &Results) -> String {
    if r.viewers.is_empty() {
        return String::new();
    }
    format!(
        "<h2>Viewers</h2>{}",
        html_table(&VIEWER_COLUMNS, r.viewers.iter().map(viewer_cells))
    )
}

/// The report: summary table and five charts (rate, latency, errors, hit ratio, origin
/// load), with the spike shaded.
pub fn html(title: &str, r: &Results) -> String {
    let t = &r.timeline;
    let errors = |s: &Second| Some(s.errors.values().sum::<u64>() as f64);
    let charts = [
        chart(
            "Rate",
            "requests/s by intended time",
            r,
            &[
                Series {
                    name: "sent",
                    colour: "#1f77b4",
                    points: points(t, |s| Some(s.sent as f64)),
                },
                Series {
                    name: "ok",
                    colour: "#2ca02c",
                    points: points(t, |s| Some(s.ok as f64)),
                },
            ],
            false,
        ),
        chart(
            "Latency from intended send time",
            "ms, log scale",
            r,
            &[
                Series {
                    name: "p50",
                    colour: "#2ca02c",
                    points: points(t, |s| (s.sent > 0).then_some(s.p50_ms)),
                },
                Series {
                    name: "p99",
                    colour: "#ff7f0e",
                    points: points(t, |s| (s.sent > 0).then_some(s.p99_ms)),
                },
                Series {
                    name: "p99.9",
                    colour: "#d62728",
                    points: points(t, |s| (s.sent > 0).then_some(s.p999_ms)),
                },
            ],
            true,
        ),
        chart(
            "Errors",
            "errors/s, all kinds",
            r,
            &[Series {
                name: "errors",
                colour: "#d62728",
                points: points(t, errors),
            }],
            false,
        ),
        chart(
            "Hit ratio",
            "% of answered requests served from cache",
            r,
            &[Series {
                name: "hit ratio",
                colour: "#9467bd",
                points: points(t, |s| {
                    (s.ok > 0).then(|| 100.0 * s.hits as f64 / s.ok as f64)
                }),
            }],
            false,
        ),
        chart(
            "Origin load and edge saturation",
            "origin fetches/s; requests in flight at the edges",
            r,
            &[
                Series {
                    name: "origin fetches/s",
                    colour: "#8c564b",
                    points: points(t, |s| s.origin_fetches),
                },
                Series {
                    name: "edge in-flight",
                    colour: "#7f7f7f",
                    points: points(t, |s| s.edge_inflight),
                },
            ],
            false,
        ),
    ];
    let phases = html_table(&COLUMNS, r.phases.iter().map(cells));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}\
figure{{margin:18px 0}}figcaption{{font-weight:bold}}.legend{{font-size:12px;margin:2px 0 0 60px}}\
</style></head><body><h1>{t}</h1><p>Latency is counted from each request's intended send time \
(open loop). Spike phases are shaded. {paths} distinct paths.</p>{phases}\
{viewers}{charts}</body></html>\n",
        t = escape(title),
        paths = r.distinct_paths,
        viewers = viewer_table(r),
        charts = charts.concat(),
    )
}
