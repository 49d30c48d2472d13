//! The Mamba-2 mixer (Dao & Gu, "Transformers are SSMs", 2024).
//!
//! in_proj -> (z, xBC, dt); depthwise causal conv1d + SiLU on xBC; split x, B, C;
//! dt = softplus(dt + dt_bias); A = -exp(A_log); multi-head SSM
//!     h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,   y_t = C_t h_t + D x_t
//! then gated RMSNorm (norm(y * silu(z))) and out_proj.
//!
//! Training runs the chunked SSD algorithm ([`ssd_chunked`]: quadratic inside a chunk, a
//! linear recurrence across chunks); generation runs the per-token recurrence ([`ssd_step`])
//! with the conv and SSM states carried in a [`MambaState`].

use super::linear::{act_quant, linear};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{silu, softplus};
use burn::tensor::{Bool, Device, Tensor};

use super::config::MambaShape;
use super::init::Init;

#[derive(Module, Debug)]
pub struct Mamba2 {
    pub in_proj: Linear,
    /// Depthwise causal convolution over xBC: (conv_dim, d_conv), last column = current token.
    pub conv_w: Param<Tensor<2>>,
    pub conv_b: Param<Tensor<1>>,
    pub dt_bias: Param<Tensor<1>>,
    pub a_log: Param<Tensor<1>>,
    pub d: Param<Tensor<1>>,
    pub norm_w: Param<Tensor<1>>,
    pub out_proj: Linear,
    pub d_inner: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
    pub n_groups: usize,
    pub d_conv: usize,
    pub chunk_size: usize,
    pub eps: f64,
    /// Fake-quantize the projections' inputs to int8 per token (`[qat] activations`).
    pub act_quant: bool,
}

/// Generation state of one Mamba-2 layer.
#[derive(Clone, Debug)]
pub struct MambaState {
    /// The last `d_conv - 1` conv inputs: (batch, d_conv - 1, conv_dim).
    pub conv: Tensor<3>,
    /// (batch, heads, head_dim, d_state).
    pub ssm: Tensor<4>,
}

impl MambaState {
    /// Rows where `mask` (`[batch]`) is true take their state from `other`.
    pub fn keep_where(&mut self, mask: Tensor<1, burn::tensor::Bool>, other: MambaState) {
        let [b] = mask.dims();
        let c = self.conv.dims();
        let s = self.ssm.dims();
        self.conv = self.conv.clone().mask_where(mask.clone().reshape([b, 1, 1]).expand(c), other.conv);
        self.ssm = self.ssm.clone().mask_where(mask.reshape([b, 1, 1, 1]).expand(s), other.ssm);
    }

    /// The states of rows `rows` only, in that order.
    pub fn select(&self, rows: &Tensor<1, burn::tensor::Int>) -> MambaState {
        MambaState { conv: self.conv.clone().select(0, rows.clone()), ssm: self.ssm.clone().select(0, rows.clone()) }
    }
}

impl Mamba2 {
    pub fn new(d_model: usize, s: &MambaShape, eps: f64, init: &mut Init) -> Self {
        let device = init.device;
        let d_inner = s.expand * d_model;
        let n_heads = d_inner / s.head_dim;
        let conv_dim = d_inner + 2 * s.n_groups * s.d_state;
        let bound = 1.0 / (s.d_conv as f64).sqrt();
        // As in mamba_ssm: A in [1, 16], dt in [1e-3, 1e-1] log-uniform, stored through the
        // inverse softplus so that softplus(dt_bias) = dt at initialization.
        let a = init.uniform([n_heads], 1.0, 16.0);
        let dt = init.uniform([n_heads], 0.001f64.ln(), 0.1f64.ln()).exp();
        let dt_bias = dt.clone() + (dt.neg().exp().neg() + 1.0).log();
        Mamba2 {
            in_proj: init.linear(d_model, 2 * d_inner + 2 * s.n_groups * s.d_state + n_heads, false),
            conv_w: Param::from_tensor(init.uniform([conv_dim, s.d_conv], -bound, bound)),
            conv_b: Param::from_tensor(init.uniform([conv_dim], -bound, bound)),
            dt_bias: Param::from_tensor(dt_bias),
            a_log: Param::from_tensor(a.log()),
            d: Param::from_tensor(Tensor::ones([n_heads], device)),
            norm_w: Param::from_tensor(Tensor::ones([d_inner], device)),
            out_proj: init.linear(d_inner, d_model, false),
            d_inner,
            n_heads,
            head_dim: s.head_dim,
            d_state: s.d_state,
            n_groups: s.n_groups,
            d_conv: s.d_conv,
            chunk_size: s.chunk_size,
            eps,
            act_quant: false,
        }
    }

    fn conv_dim(&self) -> usize {
        self.d_inner + 2 * self.n_groups * self.d_state
    }

    pub fn empty_state(&self, batch: usize, device: &Device) -> MambaState {
        MambaState {
            conv: Tensor::zeros([batch, self.d_conv - 1, self.conv_dim()], device),
            ssm: Tensor::zeros([batch, self.n_heads, self.head_dim, self.d_state], device),
        }
    }

    /// Split the input projection: z (b,t,d_inner), xBC (b,t,conv_dim), dt (b,t,heads).
    fn project(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let [b, t, _] = x.dims();
        let zxbcdt = linear(&self.in_proj, act_quant(x, self.act_quant));
        let (di, cd) = (self.d_inner, self.conv_dim());
        (
            zxbcdt.clone().slice([0..b, 0..t, 0..di]),
            zxbcdt.clone().slice([0..b, 0..t, di..di + cd]),
            zxbcdt.slice([0..b, 0..t, di + cd..di + cd + self.n_heads]),
        )
    }

    /// After the conv: x (b,t,h,p), B and C (b,t,g,n), dt (b,t,h) after softplus.
    fn split(&self, xbc: Tensor<3>, dt: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<3>) {
        let [b, t, _] = xbc.dims();
        let (di, gn) = (self.d_inner, self.n_groups * self.d_state);
        let x = xbc.clone().slice([0..b, 0..t, 0..di]).reshape([b, t, self.n_heads, self.head_dim]);
        let bm = xbc.clone().slice([0..b, 0..t, di..di + gn]).reshape([b, t, self.n_groups, self.d_state]);
        let cm = xbc.slice([0..b, 0..t, di + gn..di + 2 * gn]).reshape([b, t, self.n_groups, self.d_state]);
        let dt = softplus(dt + self.dt_bias.val().reshape([1, 1, self.n_heads]), 1.0);
        (x, bm, cm, dt)
    }

    fn a(&self) -> Tensor<1> {
        self.a_log.val().exp().neg()
    }

    /// y * silu(z), then RMS-normalized per group of channels and scaled.
    fn gated_norm(&self, y: Tensor<3>, z: Tensor<3>) -> Tensor<3> {
        let [b, t, di] = y.dims();
        let g = self.n_groups;
        let y = (y * silu(z)).reshape([b, t, g, di / g]);
        let rms = (y.clone().square().mean_dim(3) + self.eps).sqrt();
        (y / rms).reshape([b, t, di]) * self.norm_w.val().reshape([1, 1, di])
    }

    fn finish(&self, y: Tensor<4>, x: Tensor<4>, z: Tensor<3>) -> Tensor<3> {
        let [b, t, h, p] = y.dims();
        let y = y + x * self.d.val().reshape([1, 1, h, 1]);
        linear(&self.out_proj, act_quant(self.gated_norm(y.reshape([b, t, h * p]), z), self.act_quant))
    }

    /// Training / prompt path over a whole sequence: (b, t, d_model) -> (b, t, d_model).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (z, xbc, dt) = self.project(x);
        let xbc = silu(causal_conv(xbc, self.conv_w.val(), self.conv_b.val()));
        let (x, bm, cm, dt) = self.split(xbc, dt);
        let (y, _) = ssd_chunked(x.clone(), dt, self.a(), bm, cm, self.chunk_size);
        self.finish(y, x, z)
    }

    /// Generation path: one token (b, 1, d_model), updating `state`.
    pub fn step(&self, x: Tensor<3>, state: &mut MambaState) -> Tensor<3> {
        let (z, xbc, dt) = self.project(x);
        let [b, _, cd] = xbc.dims();
        let k = self.d_conv;
        let window = Tensor::cat(vec![state.conv.clone(), xbc], 1); // (b, k, cd)
        state.conv = window.clone().slice([0..b, 1..k, 0..cd]);
        let w = self.conv_w.val().transpose().unsqueeze::<3>(); // (1, k, cd)
        let conv = (window * w).sum_dim(1) + self.conv_b.val().reshape([1, 1, cd]);
        let (x, bm, cm, dt) = self.split(silu(conv), dt);
        let [_, _, h, p] = x.dims();
        let y = ssd_step(
            x.clone().reshape([b, h, p]),
            dt.reshape([b, h]),
            self.a(),
            bm.reshape([b, self.n_groups, self.d_state]),
            cm.reshape([b, self.n_groups, self.d_state]),
            &mut state.ssm,
        );
        self.finish(y.reshape([b, 1, h, p]), x, z)
    }
}

/// Depthwise causal convolution: `x` (b, t, c), `w` (c, k), `bias` (c). Output t depends on
/// inputs t-k+1..=t (zeros before the start).
pub fn causal_conv(x: Tensor<3>, w: Tensor<2>, bias: Tensor<1>) -> Tensor<3> {
    let [b, t, c] = x.dims();
    let [_, k] = w.dims();
    let device = x.device();
    let xpad = Tensor::cat(vec![Tensor::zeros([b, k - 1, c], &device), x], 1);
    let mut out = bias.reshape([1, 1, c]).expand([b, t, c]);
    for j in 0..k {
        let wj = w.clone().slice([0..c, j..j + 1]).reshape([1, 1, c]);
        out = out + xpad.clone().slice([0..b, j..j + t, 0..c]) * wj;
    }
    out
}

/// (b, t, g, n) -> (b, t, h, n): head i reads group i / (h / g), as KV heads in GQA.
fn heads_from_groups(x: Tensor<4>, h: usize) -> Tensor<4> {
    let [b, t, g, n] = x.dims();
    if g == h {
        return x;
    }
    x.unsqueeze_dim::<5>(3).expand([b, t, g, h / g, n]).reshape([b, t, h, n])
}

/// Chunked SSD (state space duality). `x` (b, t, h, p), `dt` (b, t, h) positive, `a` (h)
/// negative, `bm`/`cm` (b, t, g, n). Returns y = sum_s C_t M_ts dt_s x_s B_s (without the D
/// skip) as (b, t, h, p), and the final state (b, h, p, n). Any t: the tail is padded with
/// dt = 0 and x = B = C = 0, which neither decays nor feeds the state, so nothing leaks.
pub fn ssd_chunked(
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    bm: Tensor<4>,
    cm: Tensor<4>,
    chunk: usize,
) -> (Tensor<4>, Tensor<4>) {
    let [b, t, h, p] = x.dims();
    let n = bm.dims()[3];
    let device = x.device();
    let l = chunk.min(t).max(1);
    let c = t.div_ceil(l);
    let tp = c * l;
    let pad4 = |v: Tensor<4>| {
        let [b, _, u, w] = v.dims();
        if tp == t { v } else { Tensor::cat(vec![v, Tensor::zeros([b, tp - t, u, w], &device)], 1) }
    };
    let dt = if tp == t { dt } else { Tensor::cat(vec![dt, Tensor::zeros([b, tp - t, h], &device)], 1) };
    let xdt = pad4(x) * dt.clone().unsqueeze_dim(3);
    let adt = dt * a.reshape([1, 1, h]);
    let bh = heads_from_groups(pad4(bm), h);
    let ch = heads_from_groups(pad4(cm), h);
    // Layout (b, h, chunk, pos, ...).
    let xs = xdt.reshape([b, c, l, h, p]).permute([0, 3, 1, 2, 4]);
    let bs = bh.reshape([b, c, l, h, n]).permute([0, 3, 1, 2, 4]);
    let cs = ch.reshape([b, c, l, h, n]).permute([0, 3, 1, 2, 4]);
    let acum = adt.reshape([b, c, l, h]).permute([0, 3, 1, 2]).cumsum(3); // (b, h, c, l)

    // 1. Within each chunk: y_i = sum_{j<=i} (C_i . B_j) exp(acum_i - acum_j) x_j.
    let future = Tensor::<2, Bool>::tril_mask([l, l], 0, &device).reshape([1, 1, 1, l, l]).expand([b, h, c, l, l]);
    let seg = acum.clone().unsqueeze_dim::<5>(4) - acum.clone().unsqueeze_dim::<5>(3);
    let decay = seg.mask_fill(future, f32::NEG_INFINITY).exp();
    let y_diag = (cs.clone().matmul(bs.clone().swap_dims(3, 4)) * decay).matmul(xs.clone());

    // 2. The state each chunk leaves behind, from its own inputs only: (b, h, c, n, p).
    let a_last = acum.clone().slice([0..b, 0..h, 0..c, l - 1..l]); // (b, h, c, 1)
    let to_end = (a_last.clone() - acum.clone()).exp();
    let states = (bs * to_end.unsqueeze_dim(4)).swap_dims(3, 4).matmul(xs);

    // 3. Across chunks: the state entering chunk z is sum_{k<z} exp(a_{k+1} + .. + a_{z-1}) states_k.
    let chunk_a = Tensor::cat(vec![Tensor::zeros([b, h, 1], &device), a_last.reshape([b, h, c])], 2).cumsum(2);
    let future_c = Tensor::<2, Bool>::tril_mask([c + 1, c + 1], 0, &device).reshape([1, 1, c + 1, c + 1]).expand([
        b,
        h,
        c + 1,
        c + 1,
    ]);
    let decay_c = (chunk_a.clone().unsqueeze_dim::<4>(3) - chunk_a.unsqueeze_dim::<4>(2))
        .mask_fill(future_c, f32::NEG_INFINITY)
        .exp();
    let all = Tensor::cat(vec![Tensor::zeros([b, h, 1, n, p], &device), states], 2).reshape([b, h, c + 1, n * p]);
    let carried = decay_c.matmul(all).reshape([b, h, c + 1, n, p]);
    let entering = carried.clone().slice([0..b, 0..h, 0..c, 0..n, 0..p]);
    let final_state = carried.slice([0..b, 0..h, c..c + 1, 0..n, 0..p]).reshape([b, h, n, p]).swap_dims(2, 3);

    // 4. What the entering state contributes inside each chunk.
    let y_off = cs.matmul(entering) * acum.exp().unsqueeze_dim(4);
    let y = (y_diag + y_off).permute([0, 2, 3, 1, 4]).reshape([b, tp, h, p]);
    let y = if tp == t { y } else { y.slice([0..b, 0..t, 0..h, 0..p]) };
    (y, final_state)
}

/// One recurrence step. `x` (b, h, p), `dt` (b, h), `a` (h), `bm`/`cm` (b, g, n); `state`
/// (b, h, p, n) is updated in place. Returns y (b, h, p) without the D skip.
pub fn ssd_step(
    x: Tensor<3>,
    dt: Tensor<2>,
    a: Tensor<1>,
    bm: Tensor<3>,
    cm: Tensor<3>,
    state: &mut Tensor<4>,
) -> Tensor<3> {
    let [b, h, p] = x.dims();
    let [_, g, n] = bm.dims();
    let expand = |v: Tensor<3>| -> Tensor<3> {
        if g == h { v } else { v.unsqueeze_dim::<4>(2).expand([b, g, h / g, n]).reshape([b, h, n]) }
    };
    let (bh, chh) = (expand(bm), expand(cm));
    let da = (dt.clone() * a.reshape([1, h])).exp().reshape([b, h, 1, 1]);
    let xdt = (x * dt.unsqueeze_dim(2)).unsqueeze_dim::<4>(3); // (b, h, p, 1)
    *state = state.clone() * da + xdt * bh.unsqueeze_dim::<4>(2);
    (state.clone() * chh.unsqueeze_dim::<4>(2)).sum_dim(3).reshape([b, h, p])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    struct Inputs {
        x: Vec<f32>,
        dt: Vec<f32>,
        a: Vec<f32>,
        bm: Vec<f32>,
        cm: Vec<f32>,
    }

    fn inputs(b: usize, t: usize, h: usize, p: usize, g: usize, n: usize, seed: u64) -> Inputs {
        let mut rng = crate::rng::SplitMix(seed);
        let mut v = |k: usize, lo: f64, hi: f64| -> Vec<f32> {
            (0..k).map(|_| (lo + (hi - lo) * rng.uniform()) as f32).collect()
        };
        Inputs {
            x: v(b * t * h * p, -1.0, 1.0),
            dt: v(b * t * h, 0.01, 0.3),
            a: v(h, -2.0, -0.2),
            bm: v(b * t * g * n, -1.0, 1.0),
            cm: v(b * t * g * n, -1.0, 1.0),
        }
    }

    /// h_t = exp(dt_t a) h_{t-1} + dt_t x_t B_t^T; y_t = C_t h_t, in f64 loops.
    fn naive(i: &Inputs, b: usize, t: usize, h: usize, p: usize, g: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut y = vec![0f32; b * t * h * p];
        let mut fin = vec![0f32; b * h * p * n];
        for bi in 0..b {
            for hi in 0..h {
                let gi = hi / (h / g);
                let mut st = vec![0f64; p * n];
                for ti in 0..t {
                    let dt = i.dt[(bi * t + ti) * h + hi] as f64;
                    let da = (dt * i.a[hi] as f64).exp();
                    for pi in 0..p {
                        let xv = i.x[((bi * t + ti) * h + hi) * p + pi] as f64;
                        let mut acc = 0.0;
                        for ni in 0..n {
                            let bv = i.bm[((bi * t + ti) * g + gi) * n + ni] as f64;
                            let cv = i.cm[((bi * t + ti) * g + gi) * n + ni] as f64;
                            let s = &mut st[pi * n + ni];
                            *s = da * *s + dt * xv * bv;
                            acc += cv * *s;
                        }
                        y[((bi * t + ti) * h + hi) * p + pi] = acc as f32;
                    }
                }
                for k in 0..p * n {
                    fin[(bi * h + hi) * p * n + k] = st[k] as f32;
                }
            }
        }
        (y, fin)
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn chunked_and_recurrent_ssd_match_naive_recurrence() {
        let dev = Device::flex();
        let (b, h, p, g, n, chunk) = (2, 4, 3, 2, 5, 8);
        for t in [1, 5, 8, 13, 16, 29, 40] {
            let i = inputs(b, t, h, p, g, n, t as u64);
            let (want, want_state) = naive(&i, b, t, h, p, g, n);
            let x = Tensor::<4>::from_data(TensorData::new(i.x.clone(), [b, t, h, p]), &dev);
            let dt = Tensor::<3>::from_data(TensorData::new(i.dt.clone(), [b, t, h]), &dev);
            let a = Tensor::<1>::from_data(TensorData::new(i.a.clone(), [h]), &dev);
            let bm = Tensor::<4>::from_data(TensorData::new(i.bm.clone(), [b, t, g, n]), &dev);
            let cm = Tensor::<4>::from_data(TensorData::new(i.cm.clone(), [b, t, g, n]), &dev);
            let (y, st) = ssd_chunked(x.clone(), dt.clone(), a.clone(), bm.clone(), cm.clone(), chunk);
            assert!(max_err(&vec_of(y), &want) < 1e-4, "chunked, t = {t}");
            assert!(max_err(&vec_of(st), &want_state) < 1e-4, "chunked final state, t = {t}");
            let mut state = Tensor::<4>::zeros([b, h, p, n], &dev);
            let mut ys = Vec::new();
            for ti in 0..t {
                let xt = x.clone().slice([0..b, ti..ti + 1, 0..h, 0..p]).reshape([b, h, p]);
                let dtt = dt.clone().slice([0..b, ti..ti + 1, 0..h]).reshape([b, h]);
                let bt = bm.clone().slice([0..b, ti..ti + 1, 0..g, 0..n]).reshape([b, g, n]);
                let ct = cm.clone().slice([0..b, ti..ti + 1, 0..g, 0..n]).reshape([b, g, n]);
                ys.push(ssd_step(xt, dtt, a.clone(), bt, ct, &mut state).unsqueeze_dim::<4>(1));
            }
            let y_rec = vec_of(Tensor::cat(ys, 1));
            assert!(max_err(&y_rec, &want) < 1e-4, "recurrent, t = {t}");
            assert!(max_err(&vec_of(state), &want_state) < 1e-4, "recurrent final state, t = {t}");
        }
    }

    #[test]
    fn causal_conv_matches_definition() {
        let dev = Device::flex();
        let (t, c, k) = (6, 3, 4);
        let x: Vec<f32> = (0..t * c).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..c * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let bias = vec![0.1f32, -0.2, 0.3];
        let out = vec_of(causal_conv(
            Tensor::from_data(TensorData::new(x.clone(), [1, t, c]), &dev),
            Tensor::from_data(TensorData::new(w.clone(), [c, k]), &dev),
            Tensor::from_data(TensorData::new(bias.clone(), [c]), &dev),
        ));
        for ti in 0..t {
            for ci in 0..c {
                let mut want = bias[ci];
                for j in 0..k {
                    // Column k-1 weighs the current token, column k-1-d the token d back.
                    let src = ti as isize - (k - 1 - j) as isize;
                    if src >= 0 {
                        want += w[ci * k + j] * x[src as usize * c + ci];
                    }
                }
                assert!((out[ti * c + ci] - want).abs() < 1e-5);
            }
        }
    }

    fn tiny_block(dev: &Device) -> Mamba2 {
        let s = MambaShape { d_state: 4, head_dim: 4, expand: 2, d_conv: 3, n_groups: 2, chunk_size: 4 };
        Mamba2::new(8, &s, 1e-5, &mut Init::new(3, dev))
    }

    /// The block's training path (chunked) and generation path (steps) agree.
    #[test]
    fn block_forward_equals_stepping() {
        let dev = Device::flex();
        let m = tiny_block(&dev);
        let t = 11;
        let x = Tensor::<3>::random([2, t, 8], Distribution::Normal(0.0, 1.0), &dev);
        let full = vec_of(m.forward(x.clone()));
        let mut st = m.empty_state(2, &dev);
        let steps: Vec<Tensor<3>> = (0..t).map(|i| m.step(x.clone().slice([0..2, i..i + 1, 0..8]), &mut st)).collect();
        let stepped = vec_of(Tensor::cat(steps, 1));
        assert!(max_err(&full, &stepped) < 1e-4);
    }

    /// Gradient of a scalar of the block's output with respect to its input, against central
    /// finite differences.
    #[test]
    fn block_gradient_matches_finite_differences() {
        let dev = Device::flex().autodiff();
        let m = tiny_block(&dev);
        let (b, t, d) = (1, 6, 8);
        let x0: Vec<f32> = (0..b * t * d).map(|i| ((i * 7 % 13) as f32 / 13.0) - 0.5).collect();
        let probe: Vec<f32> = (0..b * t * d).map(|i| ((i * 5 % 11) as f32 / 11.0) - 0.5).collect();
        let f = |xv: Vec<f32>| -> Tensor<1> {
            let x = Tensor::<3>::from_data(TensorData::new(xv, [b, t, d]), &dev);
            let w = Tensor::<3>::from_data(TensorData::new(probe.clone(), [b, t, d]), &dev);
            (m.forward(x) * w).sum()
        };
        let x = Tensor::<3>::from_data(TensorData::new(x0.clone(), [b, t, d]), &dev).require_grad();
        let w = Tensor::<3>::from_data(TensorData::new(probe.clone(), [b, t, d]), &dev);
        let grads = (m.forward(x.clone()) * w).sum().backward();
        let g = vec_of(x.grad(&grads).unwrap());
        let h = 1e-2f32;
        for k in [0, 5, 17, 30, 47] {
            let (mut up, mut dn) = (x0.clone(), x0.clone());
            up[k] += h;
            dn[k] -= h;
            let fd = (f(up).into_scalar::<f32>() - f(dn).into_scalar::<f32>()) / (2.0 * h);
            assert!((g[k] - fd).abs() < 2e-3 * (1.0 + fd.abs()), "input {k}: {} vs {fd}", g[k]);
        }
    }

    /// Against PyTorch (scripts/ssd_reference.py, run on an H100 and saved): its float64
    /// sequential recurrence and its float32 chunked SSD, at a length (45) that is not a
    /// multiple of the chunk (16).
    #[test]
    fn ssd_matches_pytorch_fixture() {
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ssd_reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let dev = Device::flex();
        let get = |name: &str| -> (Vec<f32>, Vec<usize>) {
            let v = st.tensor(name).unwrap();
            let data = crate::util::f32s_from_le(v.data());
            (data, v.shape().to_vec())
        };
        let t4 = |name: &str| {
            let (d, s) = get(name);
            Tensor::<4>::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), &dev)
        };
        let (dt, ds) = get("dt");
        let (a, _) = get("a");
        let x = t4("x");
        let [b, t, h, p] = x.dims();
        let dt = Tensor::<3>::from_data(TensorData::new(dt, [ds[0], ds[1], ds[2]]), &dev);
        let a = Tensor::<1>::from_data(TensorData::new(a, [h]), &dev);
        let (bm, cm) = (t4("b"), t4("c"));
        let (y, state) = ssd_chunked(x.clone(), dt.clone(), a.clone(), bm.clone(), cm.clone(), 16);
        let y = vec_of(y);
        assert!(max_err(&y, &get("y_naive").0) < 1e-4, "vs torch recurrence");
        assert!(max_err(&y, &get("y_chunked").0) < 1e-4, "vs torch chunked SSD");
        assert!(max_err(&vec_of(state), &get("state_naive").0) < 1e-4, "final state");
        let [_, _, g, n] = bm.dims();
        let mut st_rec = Tensor::<4>::zeros([b, h, p, n], &dev);
        let ys: Vec<Tensor<4>> = (0..t)
            .map(|i| {
                let xt = x.clone().slice([0..b, i..i + 1, 0..h, 0..p]).reshape([b, h, p]);
                let dtt = dt.clone().slice([0..b, i..i + 1, 0..h]).reshape([b, h]);
                let bt = bm.clone().slice([0..b, i..i + 1, 0..g, 0..n]).reshape([b, g, n]);
                let ct = cm.clone().slice([0..b, i..i + 1, 0..g, 0..n]).reshape([b, g, n]);
                ssd_step(xt, dtt, a.clone(), bt, ct, &mut st_rec).unsqueeze_dim::<4>(1)
            })
            .collect();
        assert!(max_err(&vec_of(Tensor::cat(ys, 1)), &get("y_naive").0) < 1e-4, "recurrent vs torch");
    }
}
