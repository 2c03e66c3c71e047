//! Progress display: an `indicatif` bar on a terminal, plain log lines otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// How to report progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines on stderr at every log step.
    Lines,
    /// Nothing.
    Off,
}

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    max_steps: u64,
    start: Instant,
    start_step: u64,
    total_batch: u64,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode, max_steps: u64, start_step: u64, total_batch: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && terminal).then(|| {
            let bar = ProgressBar::new(max_steps);
            let style =
                ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(start_step);
            bar
        });
        Progress {
            bar,
            lines: mode == ProgressMode::Lines || (mode == ProgressMode::Auto && !terminal),
            max_steps,
            start: Instant::now(),
            start_step,
            total_batch,
        }
    }

    fn rate(&self, step: u64) -> (f64, f64) {
        let secs = self.start.elapsed().as_secs_f64();
        let done = step.saturating_sub(self.start_step) as f64;
        let samples_per_s = if secs > 0.0 { done * self.total_batch as f64 / secs } else { 0.0 };
        let eta = if done > 0.0 { secs / done * (self.max_steps.saturating_sub(step)) as f64 } else { 0.0 };
        (samples_per_s, eta)
    }

    pub(crate) fn step(&self, step: u64, loss: f64, lr: f64) {
        if let Some(bar) = &self.bar {
            let (sps, _) = self.rate(step);
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4} lr {lr:.3e} {sps:.1} samples/s"));
        }
    }

    pub(crate) fn log(&self, step: u64, epoch: f64, loss: f64, lr: f64) {
        if self.lines {
            let (sps, eta) = self.rate(step);
            eprintln!(
                "step {step}/{} | epoch {epoch:.2} | loss {loss:.4} | lr {lr:.3e} | {sps:.1} samples/s | eta {}",
                self.max_steps,
                hms(eta)
            );
        }
    }

    pub(crate) fn message(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.lines => eprintln!("{text}"),
            None => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
