//! What a load run sends and when: phases with a rate shape and a key distribution, read
//! from TOML or built from a preset, turned into intended send times.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_cache_core::size::HumanDuration;

use crate::LoadgenError;

/// A run: phases back to back, and its bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The phases, in order.
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
    /// Most requests the run may send, whatever the phases ask (default 2,000,000).
    #[serde(default = "default_max_requests")]
    pub max_requests: u64,
    /// Per-request timeout (default `5s`); a request still unanswered then is an error.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Requests queued or in flight at once, over all connections; a request due when its
    /// connections' queues are full is counted as an error of the generator
    /// (`saturated`), never delayed (default 20,000).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Keep-alive connections per edge (default 64).
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// HTTP/2 (h2c, prior knowledge) instead of HTTP/1.1: each connection carries up to
    /// its share of `max_inflight` requests at once as streams.
    #[serde(default)]
    pub http2: bool,
    /// Client failover: a request an edge refused or closed unanswered (nothing was
    /// served; a GET is idempotent) is sent once more, to the next edge not marked down,
    /// as HTTP clients and load balancers retry on a connection error. Its latency still
    /// counts from its intended time. Default off: each request goes to one edge.
    #[serde(default)]
    pub failover: bool,
}

fn default_connections() -> usize {
    64
}

fn default_max_requests() -> u64 {
    2_000_000
}
fn default_timeout() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_max_inflight() -> usize {
    20_000
}

/// One phase: a rate (constant, or a ramp to `rate_to`) for `duration`, plus an optional
/// burst of `burst` requests all due at its first instant (a flash crowd).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Its name in the report; a phase named `spike` is shaded in the charts.
    pub name: String,
    /// How long it lasts.
    pub duration: HumanDuration,
    /// Requests per second at its start.
    #[serde(default)]
    pub rate: f64,
    /// Requests per second at its end (a linear ramp); default `rate`.
    #[serde(default)]
    pub rate_to: Option<f64>,
    /// Requests due together at its start.
    #[serde(default)]
    pub burst: u64,
    /// How arrivals are spaced: `uniform` (default: exactly `1/rate` apart) or `poisson`
    /// (exponential gaps at the same mean rate, as independent users arrive).
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Which paths it asks for.
    pub keys: Keys,
    /// Each arrival is a viewer playing `keys` (a master playlist) with the ABR player,
    /// instead of one request.
    #[serde(default)]
    pub viewers: Option<Viewers>,
}

impl Phase {
    /// `rate` requests per second, evenly spaced, for `d`.
    pub fn constant(name: &str, d: Duration, rate: f64, keys: Keys) -> Self {
        Self {
            name: name.into(),
            duration: HumanDuration::millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            rate,
            rate_to: None,
            burst: 0,
            arrivals: Arrivals::Uniform,
            keys,
            viewers: None,
        }
    }
}

/// How a phase's arrivals are spaced.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Arrivals {
    /// Evenly.
    #[default]
    Uniform,
    /// A (non-homogeneous) Poisson process with the phase's rate.
    Poisson,
}

/// Viewer sessions of a `viewers` phase.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Viewers {
    /// Segments each viewer plays (default 10).
    #[serde(default = "default_viewer_segments")]
    pub segments: u64,
    /// Media seconds per wall second (default 4).
    #[serde(default = "default_viewer_speed")]
    pub speed: f64,
}

fn default_viewer_segments() -> u64 {
    10
}
fn default_viewer_speed() -> f64 {
    4.0
}

/// The paths a phase asks for.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Keys {
    /// Always this path (a flash crowd on one object).
    Fixed {
        /// Path and query.
        path: String,
    },
    /// `prefix` + an object index drawn uniformly from `0..objects`.
    Uniform {
        /// Path prefix.
        prefix: String,
        /// Objects.
        objects: u64,
    },
    /// `prefix` + an object index drawn from a Zipf distribution over `0..objects`.
    Zipf {
        /// Path prefix.
        prefix: String,
        /// Objects.
        objects: u64,
        /// Skew (0.6–1.2 is typical of web and CDN traffic).
        alpha: f64,
    },
    /// `prefix` + the object ids of a trace in the `shared/traces` format, in its order:
    /// at the phase's rate, or, with `speed`, at the trace's own timestamps divided by
    /// `speed` (requests sharing a timestamp spread evenly over its second).
    Trace {
        /// Path prefix.
        prefix: String,
        /// The trace file.
        file: PathBuf,
        /// Replay at the trace's timestamps, this many times faster.
        #[serde(default)]
        speed: Option<f64>,
    },
}

impl Plan {
    /// Reads a plan from TOML, checked.
    pub fn from_toml(text: &str) -> Result<Self, LoadgenError> {
        let plan: Self = toml::from_str(text).map_err(|e| LoadgenError::Plan(e.to_string()))?;
        plan.check()?;
        Ok(plan)
    }

    /// A spike: `rate` for `before`, `factor × rate` for `during`, `rate` again for `after`.
    pub fn spike(rate: f64, factor: f64, phases: [Duration; 3], keys: Keys) -> Self {
        let phase = |name: &str, d: Duration, r| Phase::constant(name, d, r, keys.clone());
        Self::new(vec![
            phase("baseline", phases[0], rate),
            phase("spike", phases[1], rate * factor),
            phase("after", phases[2], rate),
        ])
    }

    /// `phases`, with the default bounds and connections.
    pub fn new(phases: Vec<Phase>) -> Self {
        Self {
            phases,
            max_requests: default_max_requests(),
            timeout: default_timeout(),
            max_inflight: default_max_inflight(),
            connections: default_connections(),
            http2: false,
            failover: false,
        }
    }

    /// Refuses what cannot run: no phases, a rate that is negative or not a number, a
    /// phase over an hour, an empty key space.
    pub fn check(&self) -> Result<(), LoadgenError> {
        let bad = |m: String| Err(LoadgenError::Plan(m));
        if self.phases.is_empty() {
            return bad("a plan needs at least one [[phase]]".into());
        }
        if self.max_inflight == 0 {
            return bad("max_inflight must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.connections) {
            return bad("connections must be between 1 and 10,000 per edge".into());
        }
        for p in &self.phases {
            let rates = [Some(p.rate), p.rate_to];
            if rates.iter().flatten().any(|r| !(0.0..=1e7).contains(r)) {
                return bad(format!(
                    "phase {:?}: rates must be in 0..=10,000,000/s",
                    p.name
                ));
            }
            if p.duration.get() > Duration::from_secs(3600) {
                return bad(format!("phase {:?}: longer than an hour", p.name));
            }
            match &p.keys {
                Keys::Uniform { objects: 0, .. } | Keys::Zipf { objects: 0, .. } => {
                    return bad(format!("phase {:?}: objects must be at least 1", p.name));
                }
                Keys::Zipf { alpha, .. } if !(alpha.is_finite() && *alpha > 0.0) => {
                    return bad(format!("phase {:?}: alpha must be positive", p.name));
                }
                Keys::Trace { speed: Some(s), .. } if !(s.is_finite() && *s > 0.0) => {
                    return bad(format!("phase {:?}: speed must be positive", p.name));
                }
                Keys::Fixed { path } if !path.starts_with('/') => {
                    return bad(format!("phase {:?}: path must start with /", p.name));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The whole run's length.
    pub fn duration(&self) -> Duration {
        self.phases.iter().map(|p| p.duration.get()).sum()
    }
}

impl Phase {
    /// Offsets from the phase's start at which its requests are due, in order: the burst
    /// at 0, then one request every `1/rate(t)` (a ramp integrates its rate linearly), or
    /// with exponential gaps for Poisson arrivals (drawn from `seed`).
    pub fn offsets(&self, seed: u64) -> impl Iterator<Item = Duration> + '_ {
        let t_end = self.duration.get().as_secs_f64();
        let (r0, r1) = (self.rate, self.rate_to.unwrap_or(self.rate));
        let burst = (0..self.burst).map(|_| Duration::ZERO);
        let mut rng = fastrand::Rng::with_seed(seed);
        let poisson = self.arrivals == Arrivals::Poisson;
        // Arrivals are evenly spaced in "expected count" N; Poisson ones have unit-mean
        // exponential gaps there, so the rate follows the ramp either way.
        let mut n = 0.0f64;
        let paced = (0u64..).map_while(move |i| {
            if poisson {
                n += -(1.0 - rng.f64()).ln();
            } else {
                n = i as f64;
            }
            // N(t) = r0·t + (r1 − r0)·t²/(2T); the i-th request is due where N(t) = i.
            let a = (r1 - r0) / (2.0 * t_end.max(1e-9));
            let t = if a.abs() < 1e-12 {
                (r0 > 0.0).then(|| n / r0)?
            } else {
                let disc = r0 * r0 + 4.0 * a * n;
                if disc < 0.0 {
                    return None;
                }
                (-r0 + disc.sqrt()) / (2.0 * a)
            };
            (t.is_finite() && t >= 0.0 && t < t_end).then(|| Duration::from_secs_f64(t))
        });
        burst.chain(paced)
    }
}

/// Draws paths for a phase's requests.
#[derive(Debug)]
pub struct KeySource {
    kind: Source,
    rng: fastrand::Rng,
    timed: Option<Vec<Duration>>,
}

#[derive(Debug)]
enum Source {
    Fixed(String),
    Uniform(String, u64),
    /// Prefix and the cumulative distribution.
    Zipf(String, Vec<f64>),
    Trace(String, Vec<u32>, usize),
}

/// A trace's timestamps as offsets from its first, `speed` times faster; requests that
/// share a timestamp are spread evenly over its second.
pub fn trace_offsets(times: &[u64], speed: f64) -> Vec<Duration> {
    let Some(&t0) = times.first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(times.len());
    let mut i = 0;
    while i < times.len() {
        let run = times[i..].iter().take_while(|t| **t == times[i]).count();
        let base = times[i].saturating_sub(t0) as f64;
        for j in 0..run {
            let secs = (base + j as f64 / run as f64) / speed;
            out.push(Duration::from_secs_f64(secs.max(0.0)));
        }
        i += run;
    }
    out
}

impl KeySource {
    /// A source for `keys`, seeded.
    pub fn new(keys: &Keys, seed: u64) -> Result<Self, LoadgenError> {
        let mut timed = None;
        let kind = match keys {
            Keys::Fixed { path } => Source::Fixed(path.clone()),
            Keys::Uniform { prefix, objects } => Source::Uniform(prefix.clone(), *objects),
            Keys::Zipf {
                prefix,
                objects,
                alpha,
            } => {
                let n = usize::try_from(*objects)
                    .ok()
                    .filter(|n| *n <= 10_000_000)
                    .ok_or_else(|| LoadgenError::Plan("zipf: at most 10,000,000 objects".into()))?;
                let mut cdf = Vec::with_capacity(n);
                let mut sum = 0.0;
                for k in 1..=n {
                    sum += 1.0 / (k as f64).powf(*alpha);
                    cdf.push(sum);
                }
                cdf.iter_mut().for_each(|c| *c /= sum);
                Source::Zipf(prefix.clone(), cdf)
            }
            Keys::Trace {
                prefix,
                file,
                speed,
            } => {
                let t = crate::replay::trace::Trace::load(file)?;
                let ids = t.requests.iter().map(|r| r.object).collect();
                timed = speed.map(|s| trace_offsets(&t.times, s));
                Source::Trace(prefix.clone(), ids, 0)
            }
        };
        Ok(Self {
            kind,
            rng: fastrand::Rng::with_seed(seed),
            timed,
        })
    }

    /// For a trace replayed at its own timestamps: when each request is due.
    pub fn timed(&mut self) -> Option<Vec<Duration>> {
        self.timed.take()
    }

    /// The next path.
    pub fn next_path(&mut self) -> String {
        match &mut self.kind {
            Source::Fixed(p) => p.clone(),
            Source::Uniform(prefix, n) => format!("{prefix}{}", self.rng.u64(0..*n)),
            Source::Zipf(prefix, cdf) => {
                let u = self.rng.f64();
                let k = cdf.partition_point(|c| *c < u).min(cdf.len() - 1);
                format!("{prefix}{k}")
            }
            Source::Trace(prefix, ids, i) => {
                let id = ids.get(*i % ids.len().max(1)).copied().unwrap_or(0);
                *i += 1;
                format!("{prefix}{id}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(rate: f64, rate_to: Option<f64>, secs: u64, burst: u64) -> Phase {
        Phase {
            name: "p".into(),
            duration: HumanDuration::secs(secs),
            rate,
            rate_to,
            burst,
            arrivals: Arrivals::Uniform,
            keys: Keys::Fixed { path: "/a".into() },
            viewers: None,
        }
    }

    #[test]
    fn constant_ramps_and_bursts_are_due_when_they_should_be() {
        let c: Vec<_> = phase(4.0, None, 2, 0).offsets(0).collect();
        assert_eq!(c.len(), 8);
        assert_eq!(c[1], Duration::from_millis(250));
        // A ramp from 0 to 100/s over 10 s sends the area under it: 500 requests, more of
        // them late than early.
        let r: Vec<_> = phase(0.0, Some(100.0), 10, 0).offsets(0).collect();
        assert!((499..=501).contains(&r.len()), "{}", r.len());
        let first_half = r.iter().filter(|t| **t < Duration::from_secs(5)).count();
        assert!((124..=126).contains(&first_half), "{first_half}");
        let b: Vec<_> = phase(0.0, None, 1, 50).offsets(0).collect();
        assert_eq!(b.len(), 50);
        assert!(b.iter().all(|t| t.is_zero()));
        // Poisson arrivals at 200/s for 10 s: about 2,000, gaps irregular, mean 5 ms.
        let mut p = phase(200.0, None, 10, 0);
        p.arrivals = Arrivals::Poisson;
        let a: Vec<_> = p.offsets(3).collect();
        assert!((1850..2150).contains(&a.len()), "{}", a.len());
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let short = gaps.iter().filter(|g| **g < 0.005).count() as f64 / gaps.len() as f64;
        // P(gap < mean) = 1 − 1/e ≈ 0.63 for exponential gaps; 0 or 1 for even ones.
        assert!((0.58..0.68).contains(&short), "{short}");
        assert_eq!(p.offsets(3).count(), a.len(), "seeded: the same run twice");
    }

    #[test]
    fn a_spike_plan_and_a_toml_plan_describe_the_same_run() {
        let keys = Keys::Zipf {
            prefix: "/o/".into(),
            objects: 100,
            alpha: 0.9,
        };
        let s = Plan::spike(10.0, 10.0, [Duration::from_secs(2); 3], keys.clone());
        let n: Vec<usize> = s.phases.iter().map(|p| p.offsets(0).count()).collect();
        assert_eq!(n, [20, 200, 20]);
        let t = Plan::from_toml(
            r#"
            [[phase]]
            name = "baseline"
            duration = "2s"
            rate = 10
            keys = { kind = "zipf", prefix = "/o/", objects = 100, alpha = 0.9 }
            [[phase]]
            name = "crowd"
            duration = "1s"
            burst = 500
            keys = { kind = "fixed", path = "/new" }
            "#,
        )
        .expect("plan");
        assert_eq!(t.phases[0].keys, keys);
        assert_eq!(t.phases[1].offsets(0).count(), 500);
        assert_eq!(t.duration(), Duration::from_secs(3));
        for (bad, want) in [
            ("max_inflight = 1", "phase"),
            (
                "[[phase]]\nname='x'\nduration='1s'\nrate=-1\nkeys={kind='fixed',path='/a'}",
                "rates",
            ),
            (
                "[[phase]]\nname='x'\nduration='1s'\nkeys={kind='zipf',prefix='/',objects=0,alpha=1}",
                "objects",
            ),
            (
                "[[phase]]\nname='x'\nduration='1s'\nkeys={kind='fixed',path='a'}",
                "start with /",
            ),
        ] {
            let e = Plan::from_toml(bad).expect_err(bad).to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn trace_timestamps_replay_scaled_and_spread_over_their_second() {
        let t = trace_offsets(&[10, 10, 11, 13, 13, 13, 13], 2.0);
        let ms: Vec<u128> = t.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 1500, 1625, 1750, 1875]);
        assert!(trace_offsets(&[], 1.0).is_empty());
    }

    #[test]
    fn zipf_keys_favour_the_first_objects() {
        let keys = Keys::Zipf {
            prefix: "/o/".into(),
            objects: 1000,
            alpha: 1.0,
        };
        let mut src = KeySource::new(&keys, 7).expect("source");
        let draws: Vec<String> = (0..10_000).map(|_| src.next_path()).collect();
        let top = draws.iter().filter(|p| *p == "/o/0").count();
        // P(rank 1) = 1 / H(1000) ≈ 0.134.
        assert!((1150..1550).contains(&top), "{top}");
        assert!(draws.iter().all(|p| p.starts_with("/o/")));
    }
}
