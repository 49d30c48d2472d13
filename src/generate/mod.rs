//! Generation: batched sampling with a KV cache (attention) and carried state (Mamba-2),
//! greedy, temperature, top-k and top-p, seeded per row.
//!
//! A batch of prompts of unequal lengths is left-padded to the longest; the pads are each their
//! own one-token sequence (seen by no real token, leaving Mamba states at zero) and every real
//! token is at the position it would have alone ([`crate::model::DocPositions::left_padded`]),
//! so a row generates what it would generate alone. The prompts run as one forward pass, then
//! every row's next token as one `[b, 1]` step against the cache. A row stops at one of the
//! stop ids, after `max_tokens`, or at the model's context; finished rows are dropped from the
//! batch (and the cache) once a quarter of it has finished.

pub mod prompts;
pub mod sample;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

pub use sample::{Sampling, row_rng, sample};

use crate::model::Decoder;
use crate::model::decoder::Cache;
use crate::rng::SplitMix;

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// A stop id was drawn (not included in the tokens).
    Eos,
    /// `max_tokens` were generated.
    Limit,
    /// The prompt and the tokens fill the model's context.
    Context,
}

/// One row's continuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub stop: Stop,
    /// The stop id drawn ([`Stop::Eos`]), which `tokens` leaves out.
    pub ended_by: Option<u32>,
}

impl Generated {
    /// What the model wrote after `prompt`, as it wrote it: the prompt, the tokens and the
    /// stop id it drew (what on-policy training and grading read).
    pub fn sequence(&self, prompt: &[u32]) -> Vec<u32> {
        prompt.iter().chain(&self.tokens).chain(&self.ended_by).copied().collect()
    }
}

/// Where a batch's time went, in seconds: the prompts' forward pass, the one-token steps, and
/// picking tokens on the host (inside `decode`).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timing {
    pub prefill_s: f64,
    pub decode_s: f64,
    pub sample_s: f64,
    pub steps: usize,
}

impl std::ops::AddAssign for Timing {
    fn add_assign(&mut self, o: Timing) {
        self.prefill_s += o.prefill_s;
        self.decode_s += o.decode_s;
        self.sample_s += o.sample_s;
        self.steps += o.steps;
    }
}

/// Continuations of `prompts`, row `i` drawing from `rngs[i]` (see [`row_rng`]); `stops` are
/// the ids that end a row (the tokenizer's EOS, a chat template's end-of-turn; none: rows run
/// to their limit). An empty prompt starts from `stops[0]` (else id 0); a prompt longer than the context keeps its tail.
pub fn generate_batch(
    model: &Decoder,
    prompts: &[Vec<u32>],
    rngs: Vec<SplitMix>,
    stops: &[u32],
    s: &Sampling,
    device: &Device,
) -> (Vec<Generated>, Timing) {
    assert_eq!(prompts.len(), rngs.len(), "one generator per prompt");
    let ctx = model.config.shape.max_seq_len;
    let mut timing = Timing::default();
    let prompts: Vec<&[u32]> = prompts.iter().map(|p| fit_prompt(p, stops, ctx)).collect();
    let n = prompts.len();
    let mut out: Vec<Generated> =
        (0..n).map(|_| Generated { tokens: Vec::new(), stop: Stop::Limit, ended_by: None }).collect();
    if n == 0 || s.max_tokens == 0 {
        return (out, timing);
    }
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(1);
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let ids: Vec<i64> = prompts
        .iter()
        .zip(&pads)
        .flat_map(|(p, &pad)| std::iter::repeat_n(0, pad).chain(p.iter().map(|&t| t as i64)))
        .collect();
    let clock = std::time::Instant::now();
    let mut cache = model.new_padded_cache(pads);
    let mut logits = model.forward_cached_last(Tensor::from_data(TensorData::new(ids, [n, width]), device), &mut cache);
    // Rows still generating, as indices into `out`, in the batch's order.
    let mut live: Vec<usize> = (0..n).collect();
    let mut rngs: Vec<Option<SplitMix>> = rngs.into_iter().map(Some).collect();
    let mut finished = vec![false; n];
    let mut first = true;
    loop {
        let picked = pick(logits, &live, &mut rngs, s, &mut timing);
        match std::mem::take(&mut first) {
            true => timing.prefill_s += clock.elapsed().as_secs_f64(),
            false => timing.steps += 1,
        }
        let mut still = Vec::with_capacity(live.len());
        for (&row, &id) in live.iter().zip(&picked) {
            if finished[row] {
                continue; // still in the batch, its draws discarded
            }
            let g = &mut out[row];
            if stops.contains(&id) {
                (g.stop, g.ended_by) = (Stop::Eos, Some(id));
            } else {
                g.tokens.push(id);
                if prompts[row].len() + g.tokens.len() >= ctx {
                    g.stop = Stop::Context;
                } else if g.tokens.len() >= s.max_tokens {
                    g.stop = Stop::Limit;
                } else {
                    still.push(row);
                    continue;
                }
            }
            finished[row] = true;
        }
        if still.is_empty() {
            break;
        }
        let step = std::time::Instant::now();
        // Drop finished rows once they are a quarter of the batch: a smaller batch is faster,
        // but dropping copies the whole cache.
        let mut feed: Vec<i64> = live.iter().map(|&r| out[r].tokens.last().map_or(0, |&t| t as i64)).collect();
        if (live.len() - still.len()) * 4 >= live.len() {
            // `still` is in `live`'s order.
            let keep: Vec<i64> =
                live.iter().enumerate().filter(|(_, r)| still.contains(r)).map(|(i, _)| i as i64).collect();
            feed = keep.iter().map(|&i| feed[i as usize]).collect();
            cache = select_rows(cache, &keep, device);
            live = still;
        }
        let b = live.len();
        logits = model.forward_cached_last(Tensor::from_data(TensorData::new(feed, [b, 1]), device), &mut cache);
        timing.decode_s += step.elapsed().as_secs_f64();
    }
    (out, timing)
}

/// What a model reads of `prompt` within a context of `ctx`: its last `ctx - 1` tokens (one
/// place left to generate), or for an empty prompt the first stop id (else id 0).
pub fn fit_prompt<'a>(prompt: &'a [u32], stops: &'a [u32], ctx: usize) -> &'a [u32] {
    match (prompt.is_empty(), stops.is_empty()) {
        (true, false) => &stops[..1],
        (true, true) => &[0],
        (false, _) => &prompt[prompt.len().saturating_sub(ctx - 1)..],
    }
}

/// The next token of each of `live`'s rows from their logits `[b, vocab]`, each row with its own
/// generator (a row's draws depend on its own logits only): on the device when greedy or on a
/// GPU (b ids cross to the host, not b x vocab logits), else drawn by the host, rows in parallel.
fn pick(
    logits: Tensor<2>,
    live: &[usize],
    rngs: &mut [Option<SplitMix>],
    s: &Sampling,
    timing: &mut Timing,
) -> Vec<u32> {
    let clock = std::time::Instant::now();
    let [b, v] = logits.dims();
    let picked = if s.temperature <= 0.0 || on_accelerator(&logits.device()) {
        // Each live row's uniform from its own generator, as `sample` takes it (greedy takes none).
        let u: Vec<f64> = match s.temperature <= 0.0 {
            true => vec![0.0; b],
            false => live.iter().map(|&r| rngs[r].as_mut().expect("a live row's generator").uniform()).collect(),
        };
        sample::sample_on_device(logits, &u, s)
    } else {
        let rows: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        let mut taken: Vec<SplitMix> = live.iter().map(|&r| rngs[r].take().expect("a live row's generator")).collect();
        let ids: Vec<u32> =
            rows.par_chunks(v).zip(taken.par_iter_mut()).map(|(row, rng)| sample(row, s, rng)).collect();
        for (&r, rng) in live.iter().zip(taken) {
            rngs[r] = Some(rng);
        }
        ids
    };
    timing.sample_s += clock.elapsed().as_secs_f64();
    picked
}

/// Whether tensors on `device` live apart from the host's memory (a GPU): there, rows are
/// drawn on the device ([`sample::sample_on_device`]); on the CPU, by the host in parallel.
fn on_accelerator(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    if *device == Device::libtorch() {
        return false;
    }
    *device != Device::flex()
}

/// The cache of rows `keep` (indices into the batch) only.
fn select_rows(mut cache: Cache, keep: &[i64], device: &Device) -> Cache {
    use crate::model::decoder::LayerCache;
    let idx = Tensor::<1, Int>::from_data(TensorData::new(keep.to_vec(), [keep.len()]), device);
    for layer in &mut cache.layers {
        match layer {
            LayerCache::Attention(c) => {
                c.k = c.k.take().map(|k| k.select(0, idx.clone()));
                c.v = c.v.take().map(|v| v.select(0, idx.clone()));
            }
            LayerCache::Mamba(st) => *st = st.take().map(|st| st.select(&idx)),
        }
    }
    if !cache.pads.is_empty() {
        cache.pads = keep.iter().map(|&i| cache.pads[i as usize]).collect();
    }
    cache
}

/// One prompt alone, seeded with `s.seed`, stopping at `eos`: no padding, its own cache, the
/// logits of every step crossing to the host. `on_token` sees each new id as it is produced
/// (streaming to a terminal). Kept apart from [`generate_batch`] as the plain loop the batched
/// one is tested against.
pub fn generate(
    model: &Decoder,
    prompt: &[u32],
    eos: u32,
    s: &Sampling,
    device: &Device,
    mut on_token: impl FnMut(u32),
) -> Vec<u32> {
    let mut rng = SplitMix(s.seed);
    let ctx = model.config.shape.max_seq_len;
    let mut next_input: Vec<u32> = if prompt.is_empty() { vec![eos] } else { prompt.to_vec() };
    if next_input.len() > ctx - 1 {
        next_input.drain(..next_input.len() - (ctx - 1));
    }
    let total = next_input.len();
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    while out.len() < s.max_tokens && total + out.len() < ctx {
        let logits = model.forward_cached_last(crate::model::token_tensor(&next_input, device), &mut cache);
        let row: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 logits");
        let next = sample(&row, s, &mut rng);
        if next == eos {
            break;
        }
        out.push(next);
        on_token(next);
        next_input = vec![next];
    }
    out
}

#[cfg(test)]
mod tests;
