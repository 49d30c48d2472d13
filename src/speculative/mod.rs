//! Speculative decoding with the student as drafter (Leviathan et al. 2023, Chen et al. 2023):
//! the student drafts `k` tokens one at a time, the teacher scores all of them in one forward
//! pass, and each draft `x` is accepted with probability `min(1, p(x) / q(x))` (p the
//! teacher's distribution, q the student's, both as [`Sampling`] shapes them). At the first
//! rejection the token is drawn from `normalize(max(0, p - q))`; after a fully accepted draft
//! the teacher's last distribution gives one more token. The output is distributed exactly as
//! the teacher's own sampling (greedy: equal to the teacher's greedy output), whatever the
//! student; a better student only makes it faster.
//!
//! One prompt at a time (the usual drafter setting, latency-bound), on both models' KV caches:
//! rejected columns are cut from attention caches; a Mamba-2 state cannot be cut, so a model
//! with Mamba-2 layers restores the round's starting cache and feeds the kept tokens again.

use burn::tensor::Device;

use crate::generate::sample::{distribution, draw};
use crate::generate::{Generated, Sampling, Stop};
use crate::model::Decoder;
use crate::model::decoder::Cache;
use crate::rng::SplitMix;

/// What a run of speculative decoding did, summed over rounds (and prompts).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SpecStats {
    /// Draft tokens proposed and accepted (vLLM's acceptance rate is their ratio).
    pub drafted: usize,
    pub accepted: usize,
    /// Teacher forward passes (one per round) and the tokens they produced (accepted drafts
    /// plus one drawn by the teacher each round, when the row had not ended).
    pub teacher_calls: usize,
    pub tokens: usize,
    pub seconds: f64,
}

impl SpecStats {
    /// Accepted drafts over proposed drafts.
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Tokens produced per teacher forward pass (teacher-only decoding: 1).
    pub fn tokens_per_call(&self) -> f64 {
        self.tokens as f64 / self.teacher_calls.max(1) as f64
    }
}

impl std::ops::AddAssign for SpecStats {
    fn add_assign(&mut self, o: SpecStats) {
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        self.teacher_calls += o.teacher_calls;
        self.tokens += o.tokens;
        self.seconds += o.seconds;
    }
}

/// The expected tokens per teacher call at acceptance rate `a` and draft length `k` when each
/// draft is accepted independently with probability `a` (Leviathan et al., eq. 1).
pub fn expected_tokens_per_call(a: f64, k: usize) -> f64 {
    if a >= 1.0 { (k + 1) as f64 } else { (1.0 - a.powi(k as i32 + 1)) / (1.0 - a) }
}

/// A model and its cache in one decoding: the cache holds `seq[..cache.pos]`.
struct Side<'a> {
    model: &'a Decoder,
    cache: Cache,
}

impl Side<'_> {
    /// The logits rows `[n, vocab]` (on the host) of the last `n` of `tokens`, fed after the cache.
    fn feed(&mut self, tokens: &[u32], n: usize, device: &Device) -> Vec<Vec<f32>> {
        let t = crate::model::token_tensor(tokens, device);
        let last = self.model.forward_cached_tail(t, &mut self.cache, n);
        let v = last.dims()[2];
        let flat: Vec<f32> = last.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        flat.chunks(v).map(|r| r.to_vec()).collect()
    }

    /// Keep the first `len` columns of the cache: cut, or (Mamba-2 states) restore `start` and
    /// feed `seq[start.pos..len]` again.
    fn rewind(&mut self, len: usize, start: &Cache, seq: &[u32], device: &Device) {
        if self.cache.truncate(len) {
            return;
        }
        self.cache = start.clone();
        if len > self.cache.pos {
            let t = crate::model::token_tensor(&seq[self.cache.pos..len], device);
            let _ = self.model.forward_cached_last(t, &mut self.cache);
        }
    }
}

/// The probability of `id` under `dist` (0 outside its support).
fn prob(dist: &[(u32, f64)], id: u32) -> f64 {
    dist.iter().find(|c| c.0 == id).map_or(0.0, |c| c.1)
}

/// `normalize(max(0, p - q))`; `p` itself where the difference is nowhere positive (p = q,
/// where a rejection cannot happen).
fn residual(p: &[(u32, f64)], q: &[(u32, f64)]) -> Vec<(u32, f64)> {
    let r: Vec<(u32, f64)> =
        p.iter().map(|&(id, pp)| (id, (pp - prob(q, id)).max(0.0))).filter(|c| c.1 > 0.0).collect();
    match r.is_empty() {
        true => p.to_vec(),
        false => r,
    }
}

/// The teacher's continuation of `prompt`, drafted by the student `draft_len` tokens at a time;
/// stops, limits and prompt handling as [`crate::generate::generate_batch`] (the context is the
/// smaller of the two models'). Both models share the vocabulary.
#[allow(clippy::too_many_arguments)]
pub fn speculate(
    teacher: &Decoder,
    student: &Decoder,
    prompt: &[u32],
    stops: &[u32],
    s: &Sampling,
    draft_len: usize,
    rng: &mut SplitMix,
    device: &Device,
) -> (Generated, SpecStats) {
    let clock = std::time::Instant::now();
    let ctx = teacher.config.shape.max_seq_len.min(student.config.shape.max_seq_len);
    let mut seq: Vec<u32> = crate::generate::fit_prompt(prompt, stops, ctx).to_vec();
    let prompt_len = seq.len();
    let mut out = Generated { tokens: Vec::new(), stop: Stop::Limit, ended_by: None };
    let mut stats = SpecStats::default();
    let (mut t, mut d) =
        (Side { model: teacher, cache: teacher.new_cache() }, Side { model: student, cache: student.new_cache() });
    loop {
        // Tokens this row may still produce; a round produces at most k + 1.
        let room = s.max_tokens.saturating_sub(out.tokens.len()).min(ctx.saturating_sub(seq.len()));
        if room == 0 {
            out.stop = if seq.len() >= ctx { Stop::Context } else { Stop::Limit };
            break;
        }
        let k = draft_len.min(room - 1);
        let (t_start, d_start) = (t.cache.clone(), d.cache.clone());
        // The student drafts, each token from its own distribution.
        let (mut drafts, mut q) = (Vec::with_capacity(k), Vec::with_capacity(k));
        // What the student has not read yet, then each draft as it is drawn.
        let mut feed = seq[d.cache.pos..].to_vec();
        for _ in 0..k {
            let row = d.feed(&feed, 1, device).pop().expect("one row");
            let dist = distribution(&row, s);
            let x = draw(&dist, rng.uniform());
            drafts.push(x);
            q.push(dist);
            feed = vec![x];
        }
        // The teacher scores the pending tokens and every draft in one pass: k + 1 rows.
        let feed: Vec<u32> = seq[t.cache.pos..].iter().chain(&drafts).copied().collect();
        let p: Vec<Vec<(u32, f64)>> = t.feed(&feed, k + 1, device).iter().map(|r| distribution(r, s)).collect();
        stats.teacher_calls += 1;
        stats.drafted += k;
        let mut kept = 0;
        let mut next = None;
        for i in 0..k {
            let x = drafts[i];
            // Accept with probability min(1, p(x) / q(x)); q(x) > 0, x was drawn from q.
            if rng.uniform() * prob(&q[i], x) < prob(&p[i], x) {
                kept += 1;
            } else {
                next = Some(draw(&residual(&p[i], &q[i]), rng.uniform()));
                break;
            }
        }
        stats.accepted += kept;
        let next = next.unwrap_or_else(|| draw(&p[k], rng.uniform()));
        let before = seq.len();
        for &id in drafts[..kept].iter().chain([&next]) {
            stats.tokens += 1;
            if stops.contains(&id) {
                (out.stop, out.ended_by) = (Stop::Eos, Some(id));
                break;
            }
            out.tokens.push(id);
            seq.push(id);
        }
        if out.ended_by.is_some() {
            break;
        }
        // Both caches keep what precedes the last token: the teacher saw the kept drafts and
        // the rest; the student had not been fed its last draft.
        t.rewind(before + kept, &t_start, &seq, device);
        d.rewind((before + kept).min(d.cache.pos), &d_start, &seq, device);
    }
    debug_assert!(prompt_len + out.tokens.len() <= ctx);
    stats.seconds = clock.elapsed().as_secs_f64();
    (out, stats)
}

/// Speculative decoding against the teacher alone on the same prompts, backend and sampling:
/// the drafts' acceptance, tokens per teacher call, and the measured wall-clock speedup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpecReport {
    pub prompts: usize,
    pub draft_len: usize,
    pub temperature: f64,
    /// Accepted over drafted tokens, as vLLM counts it.
    pub acceptance: f64,
    /// Tokens per teacher forward pass, and what independent acceptance at `acceptance` would
    /// give: (1 - a^(k+1)) / (1 - a).
    pub tokens_per_call: f64,
    pub expected_tokens_per_call: f64,
    pub speculative_tok_s: f64,
    pub teacher_tok_s: f64,
    /// `speculative_tok_s / teacher_tok_s`.
    pub speedup: f64,
    pub stats: SpecStats,
    pub teacher_tokens: usize,
    pub teacher_s: f64,
}

/// Decode every prompt both ways, one at a time: the teacher alone (the batched engine at a
/// batch of one) and drafted by the student; prompt `i` draws from [`row_rng`]`(seed, i)`
/// either way. The first prompt runs once untimed on both first (allocation, kernels' first use).
/// Returns the report and the speculative completions.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    teacher: &Decoder,
    student: &Decoder,
    prompts: &[Vec<u32>],
    stops: &[u32],
    s: &Sampling,
    draft_len: usize,
    seed: u64,
    device: &Device,
) -> (SpecReport, Vec<Generated>) {
    use crate::generate::{generate_batch, row_rng};
    if let Some(p) = prompts.first() {
        let _ = generate_batch(teacher, std::slice::from_ref(p), vec![row_rng(seed, 0)], stops, s, device);
        let _ = speculate(teacher, student, p, stops, s, draft_len, &mut row_rng(seed, 0), device);
    }
    let clock = std::time::Instant::now();
    let mut teacher_tokens = 0;
    for (i, p) in prompts.iter().enumerate() {
        let (g, _) = generate_batch(teacher, std::slice::from_ref(p), vec![row_rng(seed, i as u64)], stops, s, device);
        teacher_tokens += g[0].tokens.len() + g[0].ended_by.is_some() as usize;
    }
    let teacher_s = clock.elapsed().as_secs_f64();
    let mut stats = SpecStats::default();
    let mut out = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let (g, st) = speculate(teacher, student, p, stops, s, draft_len, &mut row_rng(seed, i as u64), device);
        stats += st;
        out.push(g);
    }
    let a = stats.acceptance();
    let (spec_rate, teacher_rate) = (stats.tokens as f64 / stats.seconds, teacher_tokens as f64 / teacher_s);
    let report = SpecReport {
        prompts: prompts.len(),
        draft_len,
        temperature: s.temperature,
        acceptance: a,
        tokens_per_call: stats.tokens_per_call(),
        expected_tokens_per_call: expected_tokens_per_call(a, draft_len),
        speculative_tok_s: spec_rate,
        teacher_tok_s: teacher_rate,
        speedup: spec_rate / teacher_rate,
        stats,
        teacher_tokens,
        teacher_s,
    };
    (report, out)
}

#[cfg(test)]
mod tests;
