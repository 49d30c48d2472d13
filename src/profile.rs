//! `DISTILL_PROFILE=1`: where a training step's (or a teacher-cache batch's) time goes. The
//! device is synchronized at each phase boundary, so every phase is charged its own kernels
//! (and the steps lose the overlap of host and device work: the total is a little above a
//! steady step). Off by default: then a mark costs nothing and nothing is synchronized. A
//! neutral home, like `device`: training and the teacher cache both use it.

use std::time::Instant;

use burn::tensor::Device;

pub struct PhaseTimer {
    device: Option<Device>,
    last: Instant,
    totals: Vec<(&'static str, f64)>,
    counts: Vec<(&'static str, u64)>,
    steps: usize,
    /// Print the report under this name when dropped (for loops that end inside a closure).
    report_on_drop: Option<&'static str>,
}

impl PhaseTimer {
    pub fn from_env(device: &Device) -> Self {
        let on = std::env::var("DISTILL_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
        PhaseTimer {
            device: on.then(|| device.clone()),
            last: Instant::now(),
            totals: Vec::new(),
            counts: Vec::new(),
            steps: 0,
            report_on_drop: None,
        }
    }

    /// [`PhaseTimer::from_env`] that prints its report, titled `name`, when dropped.
    pub fn reporting_on_drop(device: &Device, name: &'static str) -> Self {
        let mut t = Self::from_env(device);
        t.report_on_drop = Some(name);
        t
    }

    /// Charge the time since the previous mark to `phase`.
    pub fn mark(&mut self, phase: &'static str) {
        let Some(device) = &self.device else { return };
        let _ = device.sync();
        let dt = self.last.elapsed().as_secs_f64();
        match self.totals.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, t)) => *t += dt,
            None => self.totals.push((phase, dt)),
        }
        self.last = Instant::now();
    }

    /// Add `n` to the event counter `what` (reported as a total).
    pub fn count(&mut self, what: &'static str, n: u64) {
        if self.device.is_none() {
            return;
        }
        match self.counts.iter_mut().find(|(p, _)| *p == what) {
            Some((_, c)) => *c += n,
            None => self.counts.push((what, n)),
        }
    }

    /// Start a step: time between steps (logging, checkpoints) is not charged.
    pub fn start_step(&mut self) {
        if self.device.is_some() {
            self.steps += 1;
            self.last = Instant::now();
        }
    }

    /// The table of mean milliseconds per step, or `None` when profiling is off. The first
    /// `skip` steps' share is not separable, so pass a timer reset after warm-up if needed.
    pub fn report(&self) -> Option<String> {
        self.device.as_ref()?;
        let total: f64 = self.totals.iter().map(|(_, t)| t).sum();
        let n = self.steps.max(1) as f64;
        let mut s = format!("profile (DISTILL_PROFILE): mean ms per step over {} steps\n", self.steps);
        for (p, t) in &self.totals {
            s += &format!("  {p:<16} {:>9.1} ms {:>5.1}%\n", 1e3 * t / n, 100.0 * t / total);
        }
        s += &format!("  {:<16} {:>9.1} ms", "total", 1e3 * total / n);
        for (what, c) in &self.counts {
            s += &format!("\n  {what}: {c} in all");
        }
        Some(s)
    }

    /// Forget what was measured so far (after warm-up steps).
    pub fn reset(&mut self) {
        self.totals.clear();
        self.counts.clear();
        self.steps = 0;
    }
}

impl Drop for PhaseTimer {
    fn drop(&mut self) {
        if let (Some(name), Some(r)) = (self.report_on_drop, self.report()) {
            eprintln!("{name} {r}");
        }
    }
}
