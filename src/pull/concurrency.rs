//! How many requests a network source keeps in flight.
//!
//! A path far away needs many requests in flight to be used at all (at a
//! 50 ms round trip, 16 requests of small objects fetch 320 objects a
//! second whatever the bandwidth); a server nearby, or a pull bound by the
//! disk or the CPU, gains nothing from more and pays for them (connections
//! and their buffers on HTTP/1.1, a server's patience). So the limit is
//! found by measuring, not configured: [`Limiter`] starts at [`INITIAL`]
//! and multiplies it by four (slow start) while that raises the throughput
//! by 30% or more and requests do not queue; then it holds, and now and
//! then probes a quarter higher, keeping the step only if throughput
//! follows by 15%. A transient failure (reset, 5xx, 429, stall) halves the
//! limit, at most once per round of requests. `--jobs` is the ceiling.
//!
//! Two measurements, per round (at least 50 ms and as many completions as
//! the limit). Throughput, in work units: one per completed request plus
//! one per 64 KiB received, so that both a path bound by round trips (many
//! small objects) and one bound by bandwidth (big objects) show their
//! gains. And queueing: the median time to first byte against the least
//! ever seen (the path's own latency, which the pull's first requests,
//! sent alone, show): three times as long means requests wait behind each
//! other somewhere (a loopback server, the client's runtime), where more
//! in flight can only lengthen the wait. That second test is what keeps a
//! server nearby at 16 whatever the noise in throughput. The round after a
//! change is not judged (it mixes requests started under both limits), and
//! only rounds in which the limit was what held the pull back count:
//! requests were waiting to start, and at half or more of the completions
//! the consumer was idle for want of data. When the pull cannot use more
//! requests (it is discovering the tree, or the disk and CPU are slower
//! than the network), raising the limit could not show a gain.
//!
//! The measuring is pure (times are passed in), so the tests below drive
//! it with simulated paths.

use std::time::{Duration, Instant};

/// Requests in flight at the start (ostree keeps 8; today's servers take
/// 16 from one client without complaint).
pub const INITIAL: usize = 16;
/// A round (the unit of measurement) is at least this long, so that a
/// loopback server's thousands of completions a second are averaged.
const MIN_ROUND: Duration = Duration::from_millis(50);
/// …and at most this long, so that a very slow path still adapts.
const MAX_ROUND: Duration = Duration::from_secs(2);
/// Completions in a round, at least.
const MIN_ROUND_COMPLETIONS: u32 = 16;
/// A round counts when the limit held requests back for at least this
/// share of its completions.
const BINDING_SHARE: f64 = 0.5;
/// Gain that justifies a doubling in slow start, and a probe's step.
const SLOW_START_GAIN: f64 = 1.3;
/// How much slow start multiplies the limit by: a far path needs 128 or
/// more in flight, reached from 16 in two steps.
const SLOW_START_STEP: f64 = 4.0;
const PROBE_GAIN: f64 = 1.15;
/// Rounds to hold before probing higher again.
const HOLD_ROUNDS: u32 = 8;
/// Requests wait in a queue somewhere (the server, the consumer, the
/// client's own runtime) when the median time to first byte of a round is
/// more than this many times the least seen: then more in flight only
/// lengthen the wait. (A request on a connection just opened takes two
/// round trips, not one: below this.)
const QUEUEING: f64 = 3.0;
/// Times to first byte sampled per round, at most.
const TTFB_SAMPLES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Doubling; `prev` is the (limit, rate) before the last doubling.
    SlowStart { prev: Option<(usize, f64)> },
    /// Holding the limit for `rounds` more counted rounds.
    Hold { rounds: u32 },
    /// The limit was raised from `from`, whose rate was `rate`.
    Probe { from: usize, rate: f64 },
}

#[derive(Debug)]
pub struct Limiter {
    max: usize,
    limit: usize,
    state: State,
    round_start: Instant,
    units: f64,
    completions: u32,
    binding: u32,
    /// Completions and failures since the last decrease.
    since_decrease: usize,
    /// The round after a change of the limit is not judged: it mixes the
    /// requests started before with those started after.
    settling: bool,
    /// The least time to first byte seen: the path's own latency.
    min_ttfb: Option<Duration>,
    /// This round's times to first byte (the first [`TTFB_SAMPLES`]).
    ttfbs: Vec<Duration>,
}

impl Limiter {
    pub fn new(max: usize, now: Instant) -> Limiter {
        let max = max.max(1);
        Limiter {
            max,
            limit: INITIAL.min(max),
            state: State::SlowStart { prev: None },
            round_start: now,
            units: 0.0,
            completions: 0,
            binding: 0,
            since_decrease: usize::MAX,
            settling: false,
            min_ttfb: None,
            ttfbs: Vec::new(),
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A request completed with `bytes` of body, its headers `ttfb` after
    /// it was sent. `binding`: requests were waiting to start because of
    /// the limit (not for another reason).
    pub fn on_complete(&mut self, now: Instant, bytes: u64, binding: bool, ttfb: Duration) {
        self.min_ttfb = Some(self.min_ttfb.map_or(ttfb, |m| m.min(ttfb)));
        if self.ttfbs.len() < TTFB_SAMPLES {
            self.ttfbs.push(ttfb);
        }
        self.units += 1.0 + bytes as f64 / 65536.0;
        self.completions += 1;
        self.binding += binding as u32;
        self.since_decrease = self.since_decrease.saturating_add(1);
        let elapsed = now.saturating_duration_since(self.round_start);
        let enough = self.completions as usize >= self.limit.max(MIN_ROUND_COMPLETIONS as usize)
            && elapsed >= MIN_ROUND;
        if enough || elapsed >= MAX_ROUND {
            self.end_round(now, elapsed);
        }
    }

    /// A request failed in a way that may mean the path or the server is
    /// overloaded (reset, 5xx, 429, stall): halve, once per round.
    pub fn on_failure(&mut self, now: Instant) {
        if self.since_decrease < self.limit {
            return;
        }
        self.limit = (self.limit / 2).max(1);
        self.since_decrease = 0;
        self.state = State::Hold {
            rounds: HOLD_ROUNDS,
        };
        self.settling = true;
        self.restart_round(now);
    }

    fn restart_round(&mut self, now: Instant) {
        self.round_start = now;
        self.units = 0.0;
        self.completions = 0;
        self.binding = 0;
        self.ttfbs.clear();
    }

    /// Whether this round's requests waited in a queue (see [`QUEUEING`]).
    fn queueing(&mut self) -> bool {
        let Some(min) = self.min_ttfb else {
            return false;
        };
        if self.ttfbs.is_empty() {
            return false;
        }
        let mid = self.ttfbs.len() / 2;
        let median = *self.ttfbs.select_nth_unstable(mid).1;
        median.as_secs_f64() > QUEUEING * min.as_secs_f64()
    }

    fn end_round(&mut self, now: Instant, elapsed: Duration) {
        let counted =
            self.completions > 0 && self.binding as f64 >= BINDING_SHARE * self.completions as f64;
        let rate = self.units / elapsed.as_secs_f64().max(1e-6);
        let queueing = self.queueing();
        self.restart_round(now);
        if !counted {
            return;
        }
        if std::mem::take(&mut self.settling) {
            return;
        }
        let before = self.limit;
        match self.state {
            State::SlowStart { prev } => match prev {
                // The last doubling did not pay: go back and hold.
                Some((from, prev_rate)) if rate < prev_rate * SLOW_START_GAIN => {
                    self.limit = from;
                    self.state = State::Hold {
                        rounds: HOLD_ROUNDS,
                    };
                }
                // Requests queue already: more would only wait longer.
                _ if queueing => {
                    self.state = State::Hold {
                        rounds: HOLD_ROUNDS,
                    };
                }
                _ => self.raise(rate, SLOW_START_STEP, |from, rate| State::SlowStart {
                    prev: Some((from, rate)),
                }),
            },
            State::Hold { rounds } if rounds > 1 || queueing => {
                self.state = State::Hold {
                    rounds: if rounds > 1 { rounds - 1 } else { HOLD_ROUNDS },
                };
            }
            State::Hold { .. } => self.raise(rate, 1.25, |from, rate| State::Probe { from, rate }),
            State::Probe { from, rate: was } => {
                if rate >= was * PROBE_GAIN && !queueing {
                    self.raise(rate, 1.25, |from, rate| State::Probe { from, rate });
                } else {
                    self.limit = from;
                    self.state = State::Hold {
                        rounds: HOLD_ROUNDS,
                    };
                }
            }
        }
        self.settling = self.limit != before;
    }

    /// Multiplies the limit by `factor` (at least +1), up to the ceiling;
    /// at the ceiling, holds.
    fn raise(&mut self, rate: f64, factor: f64, next: impl FnOnce(usize, f64) -> State) {
        if self.limit >= self.max {
            self.state = State::Hold {
                rounds: HOLD_ROUNDS,
            };
            return;
        }
        let from = self.limit;
        self.limit = ((from as f64 * factor) as usize)
            .max(from + 1)
            .min(self.max);
        self.state = next(from, rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated path: each request takes `rtt` plus its share of a
    /// bottleneck of `capacity` requests per second (the server, the disk
    /// or the bandwidth), whichever binds. Runs `seconds` of simulated
    /// time with requests always waiting, and returns the limit over time.
    fn simulate(
        max: usize,
        rtt: Duration,
        capacity: f64,
        seconds: f64,
        mut fail_at: impl FnMut(f64) -> bool,
    ) -> Vec<usize> {
        let start = Instant::now();
        let mut l = Limiter::new(max, start);
        // The pull's first requests (the commit, the root dirtree) go out
        // alone: they see the path's own latency.
        for _ in 0..4 {
            l.on_complete(start, 1000, false, rtt);
        }
        let mut t = 0.0;
        let mut limits = Vec::new();
        while t < seconds {
            let rate = (l.limit() as f64 / rtt.as_secs_f64()).min(capacity);
            t += 1.0 / rate;
            let now = start + Duration::from_secs_f64(t);
            if fail_at(t) {
                l.on_failure(now);
            } else {
                // The time to first byte: the round trip plus the queue
                // the bottleneck makes when more are in flight than it
                // serves in a round trip.
                let queue = (l.limit() as f64 / capacity - rtt.as_secs_f64()).max(0.0);
                l.on_complete(now, 20_000, true, rtt + Duration::from_secs_f64(queue));
            }
            limits.push(l.limit());
        }
        limits
    }

    #[test]
    fn grows_to_what_a_far_path_needs() {
        // 50 ms round trip, bottleneck at 5,000 requests/s: 250 in flight
        // are needed; the ceiling is 256.
        let limits = simulate(256, Duration::from_millis(50), 5_000.0, 5.0, |_| false);
        let last = *limits.last().unwrap();
        assert!(last >= 128, "ended at {last}");
        // It got there within the first second (slow start).
        let one_second = limits.len() / 5;
        assert!(limits[..one_second].iter().any(|&l| l >= 128));
    }

    #[test]
    fn stays_low_when_more_requests_do_not_help() {
        // Loopback: 0.5 ms round trip, the consumer does 3,000/s: 16 in
        // flight already saturate it.
        let limits = simulate(256, Duration::from_micros(500), 3_000.0, 10.0, |_| false);
        let max_seen = *limits.iter().max().unwrap();
        assert!(max_seen <= 40, "probed up to {max_seen}");
        assert!(*limits.last().unwrap() <= 20);
    }

    #[test]
    fn respects_the_ceiling() {
        let limits = simulate(24, Duration::from_millis(50), 1e9, 3.0, |_| false);
        assert!(limits.iter().all(|&l| l <= 24));
        assert_eq!(*limits.last().unwrap(), 24);
        let limits = simulate(1, Duration::from_millis(5), 1e9, 1.0, |_| false);
        assert!(limits.iter().all(|&l| l == 1));
    }

    #[test]
    fn failures_halve_once_per_round() {
        let start = Instant::now();
        let mut l = Limiter::new(256, start);
        assert_eq!(l.limit(), INITIAL);
        l.on_failure(start);
        assert_eq!(l.limit(), INITIAL / 2);
        // A burst of failures in the same round counts once.
        for _ in 0..3 {
            l.on_failure(start);
        }
        assert_eq!(l.limit(), INITIAL / 2);
        for _ in 0..INITIAL {
            l.on_complete(start, 0, true, Duration::from_millis(1));
        }
        l.on_failure(start);
        assert_eq!(l.limit(), INITIAL / 4);
        // Never below one.
        for _ in 0..20 {
            for _ in 0..16 {
                l.on_complete(start, 0, true, Duration::from_millis(1));
            }
            l.on_failure(start);
        }
        assert_eq!(l.limit(), 1);
    }

    #[test]
    fn recovers_after_a_burst_of_failures() {
        let limits = simulate(256, Duration::from_millis(20), 1e9, 20.0, |t| {
            (2.0..2.05).contains(&t)
        });
        assert!(*limits.last().unwrap() >= 128, "{:?}", limits.last());
    }

    #[test]
    fn rounds_where_the_limit_does_not_bind_prove_nothing() {
        let start = Instant::now();
        let mut l = Limiter::new(256, start);
        for i in 0..10_000u64 {
            l.on_complete(
                start + Duration::from_millis(i),
                0,
                false,
                Duration::from_millis(1),
            );
        }
        assert_eq!(l.limit(), INITIAL);
    }
}
