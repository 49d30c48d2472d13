// The two fused attention forwards PyTorch ships for CUDA in half precision, which the `tch`
// crate does not bind (their SymInt arguments and results); their backwards it binds.
// - FlashAttention-2 (`at::_flash_attention_forward`): causal with a sliding window, grouped
//   KV heads read in place, queries after cached keys (bottom-right causal alignment);
// - cuDNN's (`at::_scaled_dot_product_cudnn_attention`): causal, queries and keys of one
//   length; on Hopper its kernels run at 1.6-1.8x FlashAttention-2's (BENCHMARKS.md).
// Tensors cross the boundary as `tch`'s handles (heap `at::Tensor`s, freed by `tch`).
#include <ATen/core/Tensor.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <ATen/ops/_scaled_dot_product_cudnn_attention.h>

#include <cstring>
#include <exception>

// FlashAttention-2's forward results (out, logsumexp, rng_state, unused) to `outs`.
template <typename R> static int flash_outs(const R &r, at::Tensor **outs) {
  outs[0] = new at::Tensor(std::get<0>(r));
  outs[1] = new at::Tensor(std::get<1>(r));
  outs[2] = new at::Tensor(std::get<2>(r));
  outs[3] = new at::Tensor(std::get<3>(r));
  return 0;
}

extern "C" {

// q: [b, t, h, d], k and v: [b, s, kv, d] (last dimension contiguous). `window_left` < 0: no
// window (otherwise keys i - window_left ..= i). Writes out, logsumexp, rng_state and unused
// to `outs`; returns 0, or 1 with a malloc'ed message in `*err`.
int distill_flash_forward(const at::Tensor *q, const at::Tensor *k, const at::Tensor *v, int64_t window_left,
                          double scale, at::Tensor **outs, char **err) {
  try {
    std::optional<int64_t> left, right;
    if (window_left >= 0) {
      left = window_left;
      right = 0;
    }
    auto r = at::_flash_attention_forward(*q, *k, *v, std::nullopt, std::nullopt, q->size(1), k->size(1), 0.0,
                                          /*is_causal=*/true, /*return_debug_mask=*/false, scale, left, right);
    return flash_outs(r, outs);
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return 1;
  }
}

// q: [b, h, t, d], k and v: [b, kv, t, d]; causal. Writes out, logsumexp, philox_seed and
// philox_offset to `outs`; returns 0, or 1 with a malloc'ed message in `*err`.
int distill_cudnn_forward(const at::Tensor *q, const at::Tensor *k, const at::Tensor *v, double scale,
                          at::Tensor **outs, char **err) {
  try {
    auto r = at::_scaled_dot_product_cudnn_attention(*q, *k, *v, std::nullopt, /*compute_log_sumexp=*/true, 0.0,
                                                     /*is_causal=*/true, /*return_debug_mask=*/false, scale);
    outs[0] = new at::Tensor(std::get<0>(r));
    outs[1] = new at::Tensor(std::get<1>(r));
    outs[2] = new at::Tensor(std::get<6>(r));
    outs[3] = new at::Tensor(std::get<7>(r));
    return 0;
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return 1;
  }
}

// Packed documents (FlashAttention-2's variable-length form): q: [total, h, d], k and v:
// [total, kv, d]; `cu` (int32, [documents + 1]) the offsets where each document starts (the
// same for queries and keys), `max_len` the longest; causal within each document, with a
// window as above. Writes out, logsumexp, rng_state and unused to `outs`.
int distill_flash_varlen_forward(const at::Tensor *q, const at::Tensor *k, const at::Tensor *v, const at::Tensor *cu,
                                 int64_t max_len, int64_t window_left, double scale, at::Tensor **outs, char **err) {
  try {
    std::optional<int64_t> left, right;
    if (window_left >= 0) {
      left = window_left;
      right = 0;
    }
    auto r = at::_flash_attention_forward(*q, *k, *v, *cu, *cu, max_len, max_len, 0.0, /*is_causal=*/true,
                                          /*return_debug_mask=*/false, scale, left, right);
    return flash_outs(r, outs);
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return 1;
  }
}
}
