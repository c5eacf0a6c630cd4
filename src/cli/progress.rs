//! Progress bars and notes for the library's progress events, and the
//! interrupt flag set by SIGINT/SIGTERM.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbor::progress::{Event, Phase, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Set by the first SIGINT or SIGTERM; long operations stop when they see
/// it. A second signal ends the process at once (exit 130).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as it was before this
        // signal: only a second signal exits.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

type Counts = (u64, Option<u64>, u64);

/// Draws one bar per running phase on stderr (only on a terminal, and not
/// with `quiet`), prints notes with `verbose`, and remembers how far each
/// phase got, for the message printed when an operation is interrupted.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Phase, ProgressBar>>,
    /// Per phase: (done, total, bytes) of its last report.
    last: Mutex<HashMap<Phase, Counts>>,
    draw: bool,
    verbose: bool,
}

impl Bars {
    pub fn new(verbose: bool, quiet: bool) -> Bars {
        let draw = !quiet && std::io::stderr().is_terminal();
        Bars {
            multi: MultiProgress::with_draw_target(if draw {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            }),
            bars: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            draw,
            verbose,
        }
    }

    fn bar(&self, phase: Phase, total: Option<u64>) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(phase)
            .or_insert_with(|| {
                let pb = self.multi.add(ProgressBar::new(total.unwrap_or(0)));
                let template = if matches!(phase, Phase::Fetch | Phase::ApplyDelta) {
                    "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}"
                } else if total.is_some() {
                    "{spinner} {prefix} [{bar:30}] {pos}/{len} ({msg}, eta {eta})"
                } else {
                    "{spinner} {prefix} {pos} files ({msg})"
                };
                pb.set_style(
                    ProgressStyle::with_template(template)
                        .expect("static template")
                        .progress_chars("=> "),
                );
                pb.set_prefix(phase.describe());
                if !matches!(phase, Phase::Fetch | Phase::ApplyDelta) {
                    pb.set_message("0/s");
                }
                if self.draw {
                    pb.enable_steady_tick(Duration::from_millis(200));
                }
                pb
            })
            .clone()
    }

    /// What the phases got through, for a message after an interrupt:
    /// e.g. `pulling: 1204 of 5330 objects, 12.1 MiB`.
    pub fn summary(&self) -> String {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut parts: Vec<String> = last
            .iter()
            .map(|(phase, (done, total, bytes))| {
                let mut s = format!("{}: {done}", phase.describe());
                if let Some(t) = total {
                    s.push_str(&format!(" of {t}"));
                }
                if *bytes > 0 {
                    s.push_str(&format!(", {}", format_bytes(*bytes)));
                }
                s
            })
            .collect();
        parts.sort();
        parts.join("; ")
    }

    /// Removes every bar (before printing results).
    pub fn clear(&self) {
        for (_, pb) in self.bars.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            pb.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl Progress for Bars {
    fn report(&self, event: Event<'_>) {
        match event {
            Event::Start { phase, total } => {
                let pb = self.bar(phase, total);
                if let Some(t) = total {
                    pb.set_length(t);
                }
            }
            Event::Advance {
                phase,
                done,
                total,
                bytes,
            } => {
                self.last
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(phase, (done, total, bytes));
                if !self.draw {
                    return;
                }
                let pb = self.bar(phase, total);
                if let Some(t) = total {
                    pb.set_length(t);
                }
                pb.set_position(done);
                let secs = pb.elapsed().as_secs_f64().max(0.001);
                if bytes > 0 {
                    pb.set_message(format!(
                        "{} ({}/s)",
                        format_bytes(bytes),
                        format_bytes((bytes as f64 / secs) as u64)
                    ));
                } else if !matches!(phase, Phase::Fetch | Phase::ApplyDelta) {
                    // indicatif's {per_sec} prints four decimals.
                    pb.set_message(format!("{}/s", (done as f64 / secs) as u64));
                }
            }
            Event::Finish { phase } => {
                if let Some(pb) = self
                    .bars
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&phase)
                {
                    pb.finish_and_clear();
                }
            }
            Event::Note(text) if self.verbose => {
                if self.draw {
                    let _ = self.multi.println(text);
                } else {
                    eprintln!("{text}");
                }
            }
            _ => {}
        }
    }
}

/// `n` bytes for people: `812 B`, `3.4 MiB`.
pub(crate) fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
