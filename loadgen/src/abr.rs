//! `shoal abr`: every ABR rule of [`shoal_client::abr`] played over a directory of real
//! throughput traces (`shared/abr-traces`), in simulated time, with the QoE of each.

use std::path::{Path, PathBuf};

use serde::Serialize;
use shoal_client::abr::{Qoe, Rule, SimConfig, Trace, simulate};

use crate::LoadgenError;

/// One session: a rule over one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The rule.
    pub rule: String,
    /// The trace file, relative to the directory.
    pub trace: String,
    /// Its QoE.
    pub qoe: Qoe,
}

/// The trace files under `dir` (one level of subdirectories; README and MANIFEST skipped),
/// sorted.
pub fn trace_files(dir: &Path) -> Result<Vec<PathBuf>, LoadgenError> {
    let io = |path: &Path, source| LoadgenError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    let mut depth = 0;
    while !dirs.is_empty() && depth < 2 {
        let mut next = Vec::new();
        for d in dirs {
            for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
                let p = e.map_err(|e| io(&d, e))?.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if p.is_dir() {
                    next.push(p);
                } else if !name.ends_with(".md")
                    && !name.ends_with(".tsv")
                    && !name.starts_with('.')
                {
                    out.push(p);
                }
            }
        }
        dirs = next;
        depth += 1;
    }
    out.sort();
    Ok(out)
}

/// Plays `segments` 2 s segments of `bitrates` with each rule over each trace in `dir`
/// (with mid-segment abandonment when `abandon`; rules are then named `<rule>+abandon`).
pub fn evaluate(
    dir: &Path,
    rules: &[Rule],
    bitrates: &[u64],
    segments: u64,
    abandon: bool,
) -> Result<Vec<Session>, LoadgenError> {
    let mut out = Vec::new();
    for path in trace_files(dir)? {
        let trace = Trace::read(&path)?;
        let name = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        for &rule in rules {
            let r = simulate(
                &trace,
                &SimConfig {
                    bitrates: bitrates.to_vec(),
                    segment: 2.0,
                    segments,
                    rule,
                    rtt: 0.08,
                    max_buffer: 60.0,
                    start: 0.0,
                    abandon,
                },
            )?;
            let suffix = if abandon { "+abandon" } else { "" };
            out.push(Session {
                rule: format!("{rule:?}{suffix}").to_lowercase(),
                trace: name.clone(),
                qoe: r.qoe,
            });
        }
    }
    Ok(out)
}

/// One row per rule: means over the traces, and the median QoE.
pub fn render(sessions: &[Session]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "| rule | traces | QoE per 4 s, mean / median | mean bitrate kb/s | rebuffer ratio | stalls per session | switches/min | startup s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut rules: Vec<&str> = Vec::new();
    for s in sessions {
        if !rules.contains(&s.rule.as_str()) {
            rules.push(&s.rule);
        }
    }
    for rule in rules {
        let q: Vec<&Qoe> = sessions
            .iter()
            .filter(|s| s.rule == rule)
            .map(|s| &s.qoe)
            .collect();
        let n = q.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Qoe) -> f64| q.iter().map(|x| f(x)).sum::<f64>() / n;
        let mut qoes: Vec<f64> = q.iter().map(|x| x.qoe_4s).collect();
        qoes.sort_by(f64::total_cmp);
        let median = qoes.get(qoes.len() / 2).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "| {rule} | {} | {:.2} / {:.2} | {:.0} | {:.3} | {:.1} | {:.1} | {:.2} |",
            q.len(),
            mean(&|x| x.qoe_4s),
            median,
            mean(&|x| x.mean_kbps),
            mean(&|x| x.rebuffer_ratio),
            mean(&|x| x.stalls as f64),
            mean(&|x| x.switches_per_min),
            mean(&|x| x.startup_s),
        );
    }
    out
}
