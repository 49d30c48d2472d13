//! Grouped-query causal self-attention. MHA (n_kv_heads = n_heads), GQA and MQA
//! (n_kv_heads = 1) are one module; the kernel is behind [`causal_attention`] so that a fused
//! training kernel can replace it without touching the model.

use super::linear::{act_quant, linear};
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

use super::DocPositions;
use super::approx_attention::Approx;
use super::init::Init;
use super::rope;

#[derive(Module, Debug)]
pub struct Attention {
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window (tokens seen, the current one included); `None` = full causal.
    pub window: Option<usize>,
    /// Fake-quantize the projections' inputs to int8 per token (`[qat] activations`).
    pub act_quant: bool,
    /// `attention_impl = "fused"`: the fused kernel where the backend has one.
    pub fused: bool,
    /// Linformer or Performer scoring in place of softmax attention (`L`, `P` layers).
    pub approx: Option<Approx>,
}

/// Keys and values of the tokens seen so far: (batch, n_kv_heads, seen, head_dim) each.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub k: Option<Tensor<4>>,
    pub v: Option<Tensor<4>>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Attention {
    /// `prefix`: the Hugging Face name of the layer's attention, e.g. `model.layers.0.self_attn`.
    /// `o_bias`: a bias on the output projection too (HF Llama with `attention_bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prefix: &str,
        d_model: usize,
        n_heads: usize,
        n_kv_heads: usize,
        qkv_bias: bool,
        o_bias: bool,
        window: Option<usize>,
        fused: bool,
        init: &mut Init,
    ) -> Self {
        let head_dim = d_model / n_heads;
        let mut lin = |name: &str, i, o, bias| init.named_linear(&format!("{prefix}.{name}"), i, o, bias);
        Attention {
            wq: lin("q_proj", d_model, n_heads * head_dim, qkv_bias),
            wk: lin("k_proj", d_model, n_kv_heads * head_dim, qkv_bias),
            wv: lin("v_proj", d_model, n_kv_heads * head_dim, qkv_bias),
            wo: lin("o_proj", n_heads * head_dim, d_model, o_bias),
            n_heads,
            n_kv_heads,
            head_dim,
            window,
            act_quant: false,
            fused,
            approx: None,
        }
    }

    pub fn with_approx(self, approx: Option<Approx>) -> Self {
        Attention { approx, ..self }
    }

    /// `x`: (batch, seq, d_model) at positions `cache.len()..`; `cos`/`sin`: RoPE tables for
    /// those positions. With a cache, the new keys/values are appended to it. With `docs`
    /// (packed documents, no cache), each token attends to its own document only and the
    /// tables are per token ([`rope::tables_at`]).
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        cache: Option<&mut KvCache>,
        docs: Option<&DocPositions>,
    ) -> Tensor<3> {
        let y = self.context(x, cos, sin, cache, docs);
        linear(&self.wo, act_quant(y, self.act_quant))
    }

    /// The attention output before the output projection: (batch, seq, n_heads * head_dim),
    /// query head h in columns `h * head_dim..(h + 1) * head_dim`. Pruning ranks heads by it;
    /// [`Attention::forward`] is this and `wo`, so the two cannot drift apart.
    pub(crate) fn context(
        &self,
        x: Tensor<3>,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        cache: Option<&mut KvCache>,
        docs: Option<&DocPositions>,
    ) -> Tensor<3> {
        let start = cache.as_ref().map_or(0, |c| c.len());
        assert!(docs.is_none_or(|d| d.start == start), "positions given for the tokens after the cache");
        let [b, t, _] = x.dims();
        let x = act_quant(x, self.act_quant);
        let (q, k, v) = (linear(&self.wq, x.clone()), linear(&self.wk, x.clone()), linear(&self.wv, x));
        // Training and scoring (no cache): on the CPU route, RoPE and attention as one op,
        // forward and backward, from the projections' layout and back to it.
        let (q, k, v) = match cache.is_none() && self.fused && self.approx.is_none() {
            true => {
                let (h, kv, w) = (self.n_heads, self.n_kv_heads, self.window);
                match crate::kernels::cpu::rope_attention(q, k, v, cos, sin, h, kv, w, docs.map(|d| &d.pos)) {
                    Ok(y) => return y,
                    Err([q, k, v]) => (q, k, v),
                }
            }
            false => (q, k, v),
        };
        let split = |y: Tensor<3>, heads: usize| y.reshape([b, t, heads, self.head_dim]).swap_dims(1, 2);
        let q = rope::apply(split(q, self.n_heads), cos, sin);
        let mut k = rope::apply(split(k, self.n_kv_heads), cos, sin);
        let mut v = split(v, self.n_kv_heads);
        if let Some(c) = cache {
            if let (Some(pk), Some(pv)) = (c.k.take(), c.v.take()) {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            c.k = Some(k.clone());
            c.v = Some(v.clone());
        }
        if let Some(a) = &self.approx {
            // The recipe refuses packed documents for these layers, and generation of unequal
            // prompts pads on the left, which their chunking would mix in.
            assert!(docs.is_none(), "packed or left-padded rows through a Linformer or Performer layer");
            let n_rep = self.n_heads / self.n_kv_heads;
            return self.merge(a.attend(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), start), b, t);
        }
        if let Some(d) = docs {
            // Packed documents, or left-padded generation. On a GPU without cached keys,
            // FlashAttention-2's variable-length kernel (sequences cut apart); on the CPU the
            // fused kernel with each query's first key; else the mask spelled out.
            #[cfg(feature = "tch")]
            let (q, k, v) = match start == 0 {
                true => match crate::kernels::torch::flash_documents(q, k, v, self.window, &d.pos) {
                    Ok(y) => return self.merge(y, b, t),
                    Err([q, k, v]) => (q, k, v),
                },
                false => (q, k, v),
            };
            let (q, k, v) = match self.fused {
                true => match crate::kernels::cpu::grouped(q, k, v, start, self.window, Some(&d.pos)) {
                    Ok(y) => return self.merge(y, b, t),
                    Err([q, k, v]) => (q, k, v),
                },
                false => (q, k, v),
            };
            return self.merge(masked_attention(q, k, v, d.hidden(self.window, &cos.device())), b, t);
        }
        // Cached decoding (queries after the cached keys) and anything the fused op above did
        // not take: the fused kernel on rotated heads where there is one, else the reference.
        if !self.fused {
            return self.merge(reference_attention(q, k, v, start, self.window), b, t);
        }
        let y = match crate::kernels::cpu::grouped(q, k, v, start, self.window, None) {
            Ok(y) => y,
            Err([q, k, v]) => grouped_attention(q, k, v, start, self.window),
        };
        self.merge(y, b, t)
    }

    /// Heads `[b, heads, t, hd]` merged back to `[b, t, heads * hd]`, the layout the output
    /// projection reads.
    fn merge(&self, y: Tensor<4>, b: usize, t: usize) -> Tensor<3> {
        y.swap_dims(1, 2).reshape([b, t, self.n_heads * self.head_dim])
    }
}

/// Repeat each KV head `n_rep` times: (b, kv, t, d) -> (b, kv * n_rep, t, d), head j of the
/// result reading KV head j / n_rep, as in Llama's `repeat_kv`.
pub fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, n_rep, t, d]).reshape([b, kv * n_rep, t, d])
}

/// Causal scaled-dot-product attention with grouped KV heads.
/// `q`: (b, n_heads, t, d); `k`, `v`: (b, n_kv_heads, t, d); returns (b, n_heads, t, d).
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    grouped_attention(q, k, v, 0, None)
}

/// The attention seam of the model. `q` holds the queries of positions `start..start + t`,
/// `k`/`v` the keys and values of positions `0..start + t`. Query i sees key j when
/// j <= start + i and, with a window w, j > start + i - w.
pub fn grouped_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, start: usize, window: Option<usize>) -> Tensor<4> {
    #[cfg(feature = "tch")]
    let (q, k, v) = match torch_attention(q, k, v, start, window) {
        Ok(y) => return y,
        Err([q, k, v]) => (q, k, v),
    };
    reference_attention(q, k, v, start, window)
}

/// Whether queries after `start` cached keys, each seeing `window` of `keys` keys, are plain
/// causal attention (no cached keys, no window shorter than the keys).
fn full_causal(start: usize, window: Option<usize>, keys: usize) -> bool {
    start == 0 && window.is_none_or(|w| w >= keys)
}

/// The LibTorch route's kernels, where they apply; the inputs back otherwise (three tensor
/// handles, a few words each: nothing worth boxing).
#[cfg(feature = "tch")]
#[allow(clippy::result_large_err)]
fn torch_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    start: usize,
    window: Option<usize>,
) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    use crate::kernels::torch;
    // On a GPU in half precision, cuDNN's or FlashAttention-2's kernel: windows, GQA and
    // cached keys included, tracked or not.
    let [q, k, v] = match torch::flash(q, k, v, start, window) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    if !full_causal(start, window, k.dims()[2]) {
        return Err([q, k, v]);
    }
    // Without autodiff (the frozen teacher), PyTorch's SDPA reads the shared KV heads itself:
    // no repeated copies of K and V.
    let [q, k, v] = match torch::causal_gqa_untracked(q, k, v) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    // Under autodiff (f32), PyTorch's fused forward and backward (no [t, t] scores).
    if !torch::is_tracked(&q) {
        return Err([q, k, v]);
    }
    let n_rep = q.dims()[1] / k.dims()[1];
    torch::causal(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep))
}

/// `softmax(Q K^T / sqrt(d) + mask) V` with grouped KV heads; `hidden` (`[b, 1, t, s]`, true =
/// not seen) broadcast over the heads. The query heads sharing a KV head are stacked as rows
/// of one matmul against it (`[b, kv, n_rep * t, d]`), so K and V are read in place, never
/// repeated: generation calls this on the whole cache every step.
pub fn masked_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, hidden: Tensor<4, Bool>) -> Tensor<4> {
    let [b, h, t, d] = q.dims();
    let [_, kv, s, _] = k.dims();
    let n_rep = h / kv;
    let q = q.reshape([b, kv, n_rep * t, d]);
    let scale = 1.0 / (d as f64).sqrt();
    let hidden = hidden.unsqueeze_dim::<5>(2).expand([b, 1, n_rep, t, s]).reshape([b, 1, n_rep * t, s]);
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(scale)
        .mask_fill(hidden.expand([b, kv, n_rep * t, s]), f32::NEG_INFINITY);
    burn::tensor::activation::softmax(scores, 3).matmul(v).reshape([b, h, t, d])
}

/// burn's own attention (`attention_impl = "reference"`, and every backend without a fused
/// kernel): K and V repeated per query head, then `softmax(Q K^T / sqrt(d) + mask) V` with the
/// mask of [`grouped_attention`]; under autodiff the `[b, heads, t, s]` scores are kept.
pub fn reference_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, start: usize, window: Option<usize>) -> Tensor<4> {
    let [b, h, t, _] = q.dims();
    let s = k.dims()[2];
    let n_rep = h / k.dims()[1];
    let full = full_causal(start, window, s);
    let (k, v) = (repeat_kv(k, n_rep), repeat_kv(v, n_rep));
    if full {
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        return attention(q, k, v, None, None, options);
    }
    let device = q.device();
    // Bottom-right aligned causal mask: row i is position start + i.
    let mut mask = Tensor::<2, Bool>::tril_mask([t, s], start as i64, &device);
    if let Some(w) = window {
        // Also hide keys at or before position start + i - w.
        let too_old = Tensor::<2, Bool>::tril_mask([t, s], start as i64 - w as i64, &device).bool_not();
        mask = mask.bool_or(too_old);
    }
    // Spelled out rather than through burn's `attention` with a mask: burn-tch 0.22 hands that
    // mask to PyTorch, whose boolean masks mean the opposite (true = attend), and attends to
    // exactly the hidden keys (seen in scripts/attention_parity.py on LibTorch in f32).
    let mask = mask.reshape([1, 1, t, s]).expand([b, h, t, s]);
    let scale = 1.0 / (q.dims()[3] as f64).sqrt();
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale).mask_fill(mask, f32::NEG_INFINITY);
    burn::tensor::activation::softmax(scores, 3).matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// softmax(q k^T / sqrt(d) + causal mask) v with KV head h / (H / KV), in plain f64 loops.
    #[allow(clippy::too_many_arguments)] // the reference spells out every dimension
    fn naive(q: &[f32], k: &[f32], v: &[f32], b: usize, h: usize, kv: usize, t: usize, d: usize) -> Vec<f32> {
        naive_window(q, k, v, b, h, kv, t, d, usize::MAX)
    }

    /// The same, with query i seeing only keys i - window < j <= i.
    #[allow(clippy::too_many_arguments)]
    fn naive_window(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        b: usize,
        h: usize,
        kv: usize,
        t: usize,
        d: usize,
        window: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; b * h * t * d];
        let scale = 1.0 / (d as f64).sqrt();
        for bi in 0..b {
            for hi in 0..h {
                let ki = hi / (h / kv);
                for i in 0..t {
                    let qrow = &q[((bi * h + hi) * t + i) * d..][..d];
                    let first = (i + 1).saturating_sub(window);
                    let scores: Vec<(usize, f64)> = (first..=i)
                        .map(|j| {
                            let krow = &k[((bi * kv + ki) * t + j) * d..][..d];
                            (j, qrow.iter().zip(krow).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale)
                        })
                        .collect();
                    let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
                    for &(j, s) in &scores {
                        let p = (s - m).exp() / z;
                        let vrow = &v[((bi * kv + ki) * t + j) * d..][..d];
                        for c in 0..d {
                            out[((bi * h + hi) * t + i) * d + c] += (p * vrow[c] as f64) as f32;
                        }
                    }
                }
            }
        }
        out
    }

    fn check(h: usize, kv: usize) {
        let dev = Device::flex();
        let (b, t, d) = (2, 7, 8);
        let q = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<4>::random([b, kv, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<4>::random([b, kv, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let data = |x: &Tensor<4>| -> Vec<f32> { x.clone().into_data().try_to_vec::<f32>().unwrap() };
        let want = naive(&data(&q), &data(&k), &data(&v), b, h, kv, t, d);
        let got = data(&causal_attention(q, k, v));
        let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "h={h} kv={kv}: max abs error {err}");
    }

    #[test]
    fn attention_matches_naive_mha() {
        check(4, 4);
    }
    #[test]
    fn attention_matches_naive_gqa() {
        check(4, 2);
    }
    #[test]
    fn attention_matches_naive_mqa() {
        check(4, 1);
    }

    /// The same check through the autodiff device, which takes burn's non-fused path.
    #[test]
    fn attention_matches_under_autodiff() {
        let dev = Device::flex().autodiff();
        let q = Tensor::<4>::random([1, 4, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<4>::random([1, 2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<4>::random([1, 2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let data = |x: &Tensor<4>| -> Vec<f32> { x.clone().into_data().try_to_vec::<f32>().unwrap() };
        let want = naive(&data(&q), &data(&k), &data(&v), 1, 4, 2, 5, 8);
        let got = data(&causal_attention(q, k, v));
        let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-5, "max abs error {err}");
    }

    /// Sliding window, and queries that start after cached keys (generation).
    #[test]
    fn windowed_and_offset_attention_match_naive() {
        let dev = Device::flex();
        let (b, h, kv, t, d) = (1, 4, 2, 9, 8);
        let q = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<4>::random([b, kv, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<4>::random([b, kv, t, d], Distribution::Normal(0.0, 1.0), &dev);
        let data = |x: &Tensor<4>| -> Vec<f32> { x.clone().into_data().try_to_vec::<f32>().unwrap() };
        for w in [1, 3, 9] {
            let want = naive_window(&data(&q), &data(&k), &data(&v), b, h, kv, t, d, w);
            let got = data(&grouped_attention(q.clone(), k.clone(), v.clone(), 0, Some(w)));
            let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "window {w}: {err}");
            // The last 4 queries against all keys, as when decoding after a 5-token prompt.
            let q_tail = q.clone().slice([0..b, 0..h, 5..t, 0..d]);
            let got = data(&grouped_attention(q_tail, k.clone(), v.clone(), 5, Some(w)));
            let want_tail: Vec<f32> = (0..h).flat_map(|hi| want[(hi * t + 5) * d..(hi * t + t) * d].to_vec()).collect();
            let err = want_tail.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err < 1e-5, "offset queries, window {w}: {err}");
        }
    }
}
