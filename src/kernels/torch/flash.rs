//! Fused attention on the GPU (LibTorch, CUDA, bf16/f16) as one burn autodiff op over the
//! kernels PyTorch ships, their forwards and backwards called directly: cuDNN's fused
//! attention for full causal attention (on Hopper 1.6-1.8x FlashAttention-2, BENCHMARKS.md),
//! FlashAttention-2 for sliding windows (tiles outside the window skipped) and queries after
//! cached keys. Both read grouped KV heads in place where they can (no repeated K and V).
//! Against SDPA under PyTorch's autograd (the route's first attention op, [`super::causal`])
//! the backward needs no probe `sum(out * grad)` (three passes over the output), and SDPA's
//! entry point has no window.
//!
//! Layouts: burn's `[b, heads, t, hd]` is cuDNN's; FlashAttention's `[b, t, heads, hd]` is its
//! transpose, a view the kernel takes as it is (it reads strides), so nothing is copied either
//! way.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_tch::{LibTorch, TchTensor};
use std::ffi::c_void;
use tch::Kind;

use super::{Ad, plain_qkv, tracked};

// Tensors as tch's handles (torch-sys's `C_tensor`, which tch does not re-export: `c_void`
// here, cast at the calls).
unsafe extern "C" {
    fn distill_flash_forward(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        window_left: i64,
        scale: f64,
        outs: *mut *mut c_void,
        err: *mut *mut std::ffi::c_char,
    ) -> i32;
    fn distill_cudnn_forward(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        scale: f64,
        outs: *mut *mut c_void,
        err: *mut *mut std::ffi::c_char,
    ) -> i32;
    fn free(p: *mut c_void);
}

/// The GPU kernel that runs an attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuKernel {
    /// cuDNN's fused attention (PyTorch's `_scaled_dot_product_cudnn_attention`): full causal
    /// attention of queries and keys of one length.
    Cudnn,
    /// FlashAttention-2 (PyTorch's `_flash_attention_forward`): everything else, and where
    /// cuDNN refuses.
    Flash,
}

/// The kernels [`flash`] tries, in order: cuDNN's, then FlashAttention-2 (where cuDNN's
/// refuses); FlashAttention-2 alone with `DISTILL_GPU_ATTENTION=flash` (read once).
fn preferred() -> &'static [GpuKernel] {
    static FLASH_ONLY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    match *FLASH_ONLY.get_or_init(|| std::env::var("DISTILL_GPU_ATTENTION").is_ok_and(|v| v == "flash")) {
        true => &[GpuKernel::Flash],
        false => &[GpuKernel::Cudnn, GpuKernel::Flash],
    }
}

impl GpuKernel {
    /// Whether the kernel computes this call: cuDNN's only full causal attention (`start` 0,
    /// no window shorter than the keys), FlashAttention-2 everything.
    fn takes(self, start: usize, window: Option<usize>) -> bool {
        self == GpuKernel::Flash || (start == 0 && window.is_none())
    }
}

/// The kernel that runs a call with queries after `start` cached keys and `window` (shorter
/// than the keys): cuDNN's for full causal attention unless `DISTILL_GPU_ATTENTION=flash`,
/// FlashAttention-2 for windows and cached keys.
pub fn kernel_for(start: usize, window: Option<usize>) -> GpuKernel {
    *preferred().iter().find(|k| k.takes(start, window)).expect("FlashAttention-2 takes every call")
}

/// A forward's results: the output (in the kernel's layout), the per-row log-sum-exp and the
/// two tensors its backward wants back (RNG state; unused without dropout).
pub(super) struct Forward {
    pub(super) out: tch::Tensor,
    pub(super) lse: tch::Tensor,
    pub(super) rng: [tch::Tensor; 2],
}

/// Calls a forward of flash.cpp; `Err` with PyTorch's message.
pub(super) fn call(f: impl FnOnce(*mut *mut c_void, *mut *mut std::ffi::c_char) -> i32) -> Result<Forward, String> {
    let mut outs = [std::ptr::null_mut(); 4];
    let mut err = std::ptr::null_mut();
    // SAFETY: on success the four outputs are fresh heap tensors whose ownership passes to tch
    // (from_ptr); on failure `err` is a malloc'ed string.
    unsafe {
        if f(outs.as_mut_ptr(), &mut err) != 0 {
            let msg = std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned();
            free(err.cast());
            return Err(msg);
        }
        let [out, lse, a, b] = outs.map(|p| tch::Tensor::from_ptr(p.cast()));
        Ok(Forward { out, lse, rng: [a, b] })
    }
}

/// The forward of `kernel` on q, k, v in its layout: `[b, t, heads, hd]` for FlashAttention,
/// burn's `[b, heads, t, hd]` for cuDNN.
fn forward(kernel: GpuKernel, q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, d: Dims) -> Result<Forward, String> {
    let (q, k, v) = (q.as_ptr().cast(), k.as_ptr().cast(), v.as_ptr().cast());
    let left = d.window.map_or(-1, |w| w as i64 - 1);
    // SAFETY: the handles are live tch tensors for the duration of the call.
    match kernel {
        GpuKernel::Flash => call(|outs, err| unsafe { distill_flash_forward(q, k, v, left, d.scale, outs, err) }),
        GpuKernel::Cudnn => call(|outs, err| unsafe { distill_cudnn_forward(q, k, v, d.scale, outs, err) }),
    }
}

/// The call's shapes, window and kernel, for the backward.
#[derive(Debug, Clone, Copy)]
struct Dims {
    t: i64,
    s: i64,
    window: Option<usize>,
    scale: f64,
    kernel: GpuKernel,
}

impl Dims {
    /// burn's `[b, heads, t, hd]` to the kernel's layout, and back (a view either way).
    fn layout(&self, x: &tch::Tensor) -> tch::Tensor {
        match self.kernel {
            GpuKernel::Flash => x.transpose(1, 2),
            GpuKernel::Cudnn => x.shallow_clone(),
        }
    }
}

#[derive(Debug)]
struct Fused;

/// What the backward keeps: q, k, v and the output in the kernel's layout, the log-sum-exp
/// and the RNG tensors.
#[derive(Debug)]
struct Saved {
    q: TchTensor,
    k: TchTensor,
    v: TchTensor,
    out: TchTensor,
    lse: tch::Tensor,
    rng: [tch::Tensor; 2],
    dims: Dims,
}

// tch tensors are reference-counted handles: a clone is another handle.
impl Clone for Saved {
    fn clone(&self) -> Self {
        Saved {
            q: self.q.clone(),
            k: self.k.clone(),
            v: self.v.clone(),
            out: self.out.clone(),
            lse: self.lse.shallow_clone(),
            rng: [self.rng[0].shallow_clone(), self.rng[1].shallow_clone()],
            dims: self.dims,
        }
    }
}

impl Backward<LibTorch, 3> for Fused {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let up = grads.consume::<LibTorch>(&ops.node);
        let st = ops.state;
        let d = st.dims;
        // The incoming gradient in the kernel's layout (a view; its last dimension is
        // contiguous, which is what the kernels ask).
        let dout = d.layout(&up.tensor);
        let undefined = tch::Tensor::new;
        let (q, k, v, out) = (&st.q.tensor, &st.k.tensor, &st.v.tensor, &st.out.tensor);
        let [r0, r1] = &st.rng;
        let (dq, dk, dv) = match d.kernel {
            GpuKernel::Flash => tch::Tensor::internal_flash_attention_backward(
                &dout,
                q,
                k,
                v,
                out,
                &st.lse,
                &undefined(),
                &undefined(),
                d.t,
                d.s,
                0.0,
                true,
                r0,
                r1,
                d.scale,
                d.window.map(|w| w as i64 - 1),
                d.window.map(|_| 0i64),
            ),
            GpuKernel::Cudnn => tch::Tensor::internal_scaled_dot_product_cudnn_attention_backward(
                &dout,
                q,
                k,
                v,
                out,
                &st.lse,
                r0,
                r1,
                &undefined(),
                &undefined(),
                &undefined(),
                d.t,
                d.s,
                0.0,
                true,
                d.scale,
            ),
        };
        for (node, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = node {
                grads.register::<LibTorch>(node.id, TchTensor::new(d.layout(&g)));
            }
        }
    }
}

/// Whether the kernel takes these: CUDA, bf16 or f16, head dims PyTorch's flash build has
/// (multiples of 8 up to 256), whole KV groups, the keys covering the queries.
pub(super) fn fits(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, start: usize) -> bool {
    let (qs, ks) = (q.size(), k.size());
    q.device().is_cuda()
        && matches!(q.kind(), Kind::BFloat16 | Kind::Half)
        && k.kind() == q.kind()
        && v.kind() == q.kind()
        && qs.len() == 4
        && ks.len() == 4
        && v.size() == ks
        && qs[0] == ks[0]
        && qs[3] == ks[3]
        && qs[3] % 8 == 0
        && qs[3] <= 256
        && ks[1] > 0
        && qs[1] % ks[1] == 0
        && ks[2] == qs[2] + start as i64
}

/// Causal (sliding-window) grouped-query attention through cuDNN's or FlashAttention-2's
/// kernel ([`kernel_for`]): `q` `[b, heads, t, hd]` at positions `start..start + t`, `k`, `v`
/// `[b, kv_heads, start + t, hd]` (query `i` sees keys `j <= start + i`, and `j > start + i -
/// w` with a window `w`), as [`crate::model::attention::grouped_attention`] defines. LibTorch
/// tensors on a GPU in bf16 or f16, tracked (one autodiff op) or plain; anything else, or a
/// call both kernels refuse, comes back unchanged for the other paths.
pub fn flash(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    start: usize,
    window: Option<usize>,
) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    with_kernels(preferred(), q, k, v, start, window)
}

/// [`flash`] through the first of `kernels` that takes the call ([`GpuKernel::takes`]) and
/// does not refuse it.
pub fn with_kernels(
    kernels: &[GpuKernel],
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    start: usize,
    window: Option<usize>,
) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let [_, _, t, hd] = q.dims();
    // Windows at least as long as the keys are full causal attention.
    let window = window.filter(|&w| w < start + t);
    let dims = |kernel| Dims { t: t as i64, s: (start + t) as i64, window, scale: 1.0 / (hd as f64).sqrt(), kernel };
    let kernels: Vec<GpuKernel> = kernels.iter().copied().filter(|k| k.takes(start, window)).collect();
    if let (Some(tq), Some(tk), Some(tv)) = (tracked(&q), tracked(&k), tracked(&v)) {
        if !fits(&tq.prim.tensor, &tk.prim.tensor, &tv.prim.tensor, start) {
            return Err([q, k, v]);
        }
        let found = kernels.iter().find_map(|&kernel| {
            let d = dims(kernel);
            // The kernel's views keep burn's storage handles: while saved for the backward,
            // burn sees the storage shared and never writes to it in place.
            let [pq, pk, pv] = [&tq.prim, &tk.prim, &tv.prim]
                .map(|p| TchTensor { tensor: d.layout(&p.tensor), storage: p.storage.clone() });
            let f = forward(kernel, &pq.tensor, &pk.tensor, &pv.tensor, d).ok()?;
            Some((d, [pq, pk, pv], f))
        });
        if let Some((d, [pq, pk, pv], f)) = found {
            let out = TchTensor::new(f.out);
            let value = TchTensor { tensor: d.layout(&out.tensor), storage: out.storage.clone() };
            let prim = match Fused.prepare::<NoCheckpointing>([tq.node, tk.node, tv.node]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    prep.finish(Saved { q: pq, k: pk, v: pv, out, lse: f.lse, rng: f.rng, dims: d }, value)
                }
                OpsKind::UnTracked(prep) => prep.finish(value),
            };
            return Ok(Tensor::from_primitive::<Ad>(prim));
        }
        return Err([q, k, v]);
    }
    let Some([pq, pk, pv]) = plain_qkv(&q, &k, &v) else {
        return Err([q, k, v]);
    };
    if !fits(&pq.tensor, &pk.tensor, &pv.tensor, start) {
        return Err([q, k, v]);
    }
    for kernel in kernels {
        let d = dims(kernel);
        if let Ok(f) = forward(kernel, &d.layout(&pq.tensor), &d.layout(&pk.tensor), &d.layout(&pv.tensor), d) {
            return Ok(Tensor::from_primitive::<LibTorch>(TchTensor::new(d.layout(&f.out))));
        }
    }
    Err([q, k, v])
}
