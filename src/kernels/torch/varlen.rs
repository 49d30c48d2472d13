//! Packed documents on the GPU (`data.packing = "documents"`): FlashAttention-2's
//! variable-length kernel, forward and backward, as one burn autodiff op. The rows' tokens are
//! laid end to end (`[b * t, heads, hd]`) and cut at each document start (`cu_seqlens`), so
//! each document attends to itself only, causally, with no `[t, t]` mask and no work on the
//! blocks between documents: what the fused CPU kernel does by skipping other documents' keys.

use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_tch::{LibTorch, TchTensor};
use std::ffi::c_void;

use super::flash::{Forward, call, fits};
use super::{Ad, plain_qkv, tracked};

unsafe extern "C" {
    fn distill_flash_varlen_forward(
        q: *const c_void,
        k: *const c_void,
        v: *const c_void,
        cu: *const c_void,
        max_len: i64,
        window_left: i64,
        scale: f64,
        outs: *mut *mut c_void,
        err: *mut *mut std::ffi::c_char,
    ) -> i32;
}

/// The documents of packed rows (`pos`: each token's position in its document, rows end to
/// end) as FlashAttention's variable-length form wants them: the offset of each document start
/// (a row's start is one), the total last, and the longest document.
fn cu_seqlens(pos: &[u32]) -> (Vec<i32>, i64) {
    let mut cu: Vec<i32> = (0..pos.len()).filter(|&i| pos[i] == 0).map(|i| i as i32).collect();
    cu.push(pos.len() as i32);
    let max = cu.windows(2).map(|w| (w[1] - w[0]) as i64).max().unwrap_or(0);
    (cu, max)
}

/// The call's shapes, for the backward.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: i64,
    t: i64,
    max: i64,
    window: Option<usize>,
    scale: f64,
}

impl Dims {
    /// burn's `[b, heads, t, hd]` to `[b * t, heads, hd]` (a copy: the rows' tokens end to end).
    fn pack(&self, x: &tch::Tensor) -> tch::Tensor {
        let s = x.size();
        x.transpose(1, 2).reshape([self.b * self.t, s[1], s[3]])
    }

    /// `[b * t, heads, hd]` back to `[b, heads, t, hd]` (a view).
    fn unpack(&self, x: &tch::Tensor) -> tch::Tensor {
        let s = x.size();
        x.reshape([self.b, self.t, s[1], s[2]]).transpose(1, 2)
    }

    fn left(&self) -> Option<i64> {
        self.window.map(|w| w as i64 - 1)
    }
}

fn forward(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, cu: &tch::Tensor, d: Dims) -> Result<Forward, String> {
    let (q, k, v, cu) = (q.as_ptr().cast(), k.as_ptr().cast(), v.as_ptr().cast(), cu.as_ptr().cast());
    let left = d.left().unwrap_or(-1);
    // SAFETY: the handles are live tch tensors for the duration of the call.
    call(|outs, err| unsafe { distill_flash_varlen_forward(q, k, v, cu, d.max, left, d.scale, outs, err) })
}

#[derive(Debug)]
struct Varlen;

/// What the backward keeps, in the packed layout.
#[derive(Debug)]
struct Saved {
    qkv: [tch::Tensor; 3],
    /// Shares its storage handle with the op's output, so burn never reuses it in place.
    out: TchTensor,
    lse: tch::Tensor,
    rng: [tch::Tensor; 2],
    cu: tch::Tensor,
    dims: Dims,
}

impl Clone for Saved {
    fn clone(&self) -> Self {
        Saved {
            qkv: [self.qkv[0].shallow_clone(), self.qkv[1].shallow_clone(), self.qkv[2].shallow_clone()],
            out: self.out.clone(),
            lse: self.lse.shallow_clone(),
            rng: [self.rng[0].shallow_clone(), self.rng[1].shallow_clone()],
            cu: self.cu.shallow_clone(),
            dims: self.dims,
        }
    }
}

impl Backward<LibTorch, 3> for Varlen {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let up = grads.consume::<LibTorch>(&ops.node);
        let st = ops.state;
        let d = st.dims;
        let dout = d.pack(&up.tensor);
        let [q, k, v] = &st.qkv;
        let [r0, r1] = &st.rng;
        let (dq, dk, dv) = tch::Tensor::internal_flash_attention_backward(
            &dout,
            q,
            k,
            v,
            &st.out.tensor,
            &st.lse,
            &st.cu,
            &st.cu,
            d.max,
            d.max,
            0.0,
            true,
            r0,
            r1,
            d.scale,
            d.left(),
            d.window.map(|_| 0i64),
        );
        for (node, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = node {
                grads.register::<LibTorch>(node.id, TchTensor::new(d.unpack(&g)));
            }
        }
    }
}

/// Block-diagonal causal (sliding-window) grouped-query attention of packed rows: `q` `[b,
/// heads, t, hd]` (rotated), `k`, `v` `[b, kv_heads, t, hd]`; token `i` of a row sees the keys
/// of its own document up to itself (and, with a window `w`, `j > i - w`), as
/// [`crate::model::attention::masked_attention`] with `DocPositions::hidden` defines it; `pos`
/// holds each token's position in its document (`[b, t]`, a row starting at 0). LibTorch
/// tensors on a GPU in bf16 or f16, tracked or plain; anything else comes back.
pub fn flash_documents(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    window: Option<usize>,
    pos: &[u32],
) -> Result<Tensor<4>, [Tensor<4>; 3]> {
    let [b, _, t, hd] = q.dims();
    if pos.len() != b * t || (0..b).any(|r| pos[r * t] != 0) {
        return Err([q, k, v]);
    }
    let (cu, max) = cu_seqlens(pos);
    let d = Dims { b: b as i64, t: t as i64, max, window: window.filter(|&w| w < t), scale: 1.0 / (hd as f64).sqrt() };
    if let (Some(tq), Some(tk), Some(tv)) = (tracked(&q), tracked(&k), tracked(&v)) {
        let (pq, pk, pv) = (&tq.prim.tensor, &tk.prim.tensor, &tv.prim.tensor);
        if !fits(pq, pk, pv, 0) {
            return Err([q, k, v]);
        }
        let cu = tch::Tensor::from_slice(&cu).to_device(pq.device());
        let qkv = [d.pack(pq), d.pack(pk), d.pack(pv)];
        let Ok(f) = forward(&qkv[0], &qkv[1], &qkv[2], &cu, d) else {
            return Err([q, k, v]);
        };
        let out = TchTensor::new(f.out);
        let value = TchTensor { tensor: d.unpack(&out.tensor), storage: out.storage.clone() };
        let prim = match Varlen.prepare::<NoCheckpointing>([tq.node, tk.node, tv.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(Saved { qkv, out, lse: f.lse, rng: f.rng, cu, dims: d }, value),
            OpsKind::UnTracked(prep) => prep.finish(value),
        };
        return Ok(Tensor::from_primitive::<Ad>(prim));
    }
    let Some([pq, pk, pv]) = plain_qkv(&q, &k, &v) else {
        return Err([q, k, v]);
    };
    if !fits(&pq.tensor, &pk.tensor, &pv.tensor, 0) {
        return Err([q, k, v]);
    }
    let cu = tch::Tensor::from_slice(&cu).to_device(pq.tensor.device());
    match forward(&d.pack(&pq.tensor), &d.pack(&pk.tensor), &d.pack(&pv.tensor), &cu, d) {
        Ok(f) => Ok(Tensor::from_primitive::<LibTorch>(TchTensor::new(d.unpack(&f.out)))),
        Err(_) => Err([q, k, v]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents start at position 0 of each row and wherever a position restarts.
    #[test]
    fn document_offsets_cover_the_rows() {
        assert_eq!(cu_seqlens(&[0, 1, 2, 0, 1, 0, 1, 2, 3, 0]), (vec![0, 3, 5, 9, 10], 4));
    }
}
