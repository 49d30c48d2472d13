//! The shape of a decoder: plain serde data, written by the recipe (after merging its
//! `configs/*.toml` files), by the HF loader, and into every checkpoint's `model.json`.

use serde::{Deserialize, Serialize};

/// A fully specified decoder shape (vocabulary size comes from the tokenizer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelShape {
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_ff: usize,
    pub max_seq_len: usize,
    pub rope_theta: f64,
    pub tie_embeddings: bool,
    pub norm_eps: f64,
    /// Layer kinds, repeated to `n_layers`: `A` = GQA attention, `M` = Mamba-2, `L` =
    /// Linformer, `P` = Performer attention, e.g. "AAAM".
    #[serde(default = "default_layer_pattern")]
    pub layer_pattern: String,
    /// Sliding attention window in tokens (each token sees itself and `window - 1` before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Bias on the q/k/v projections (Qwen2).
    #[serde(default)]
    pub qkv_bias: bool,
    /// Bias on the attention output projection too (HF Llama `attention_bias`: q, k, v and o).
    /// Set only by loaded teachers; skipped when false so existing model.json files stay as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub o_bias: bool,
    /// `window` applies to layers `window_from_layer..` only; lower ones attend fully
    /// (Qwen2's `max_window_layers`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_from_layer: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    pub mamba: MambaShape,
    /// How attention is computed in training and scoring (not the model: same weights, same
    /// function). Left out when `fused`, so model.json files stay as they were.
    #[serde(default, skip_serializing_if = "AttentionImpl::is_fused")]
    pub attention_impl: AttentionImpl,
    /// The `L` layers' sequence projection (students only).
    #[serde(default, skip_serializing_if = "LinformerShape::is_default")]
    pub linformer: LinformerShape,
    /// The `P` layers' random features (students only).
    #[serde(default, skip_serializing_if = "PerformerShape::is_default")]
    pub performer: PerformerShape,
    /// A sparse mixture of SwiGLU experts in place of the dense FFN of every `every`-th layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeShape>,
}

/// Linformer (`L`), causal form: the sequence is cut into chunks of `chunk` tokens; a query
/// attends exactly to the tokens of its own chunk up to itself, and to each earlier chunk
/// through `rows` learned mixtures of that chunk's keys and values (`E`, `F`: `[rows, chunk]`,
/// shared by the chunks of a layer). No query sees a later token, and the scores are
/// `t x (t * rows / chunk + chunk)` instead of `t x t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinformerShape {
    pub chunk: usize,
    pub rows: usize,
}

impl Default for LinformerShape {
    fn default() -> Self {
        LinformerShape { chunk: 64, rows: 8 }
    }
}

impl LinformerShape {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Performer (`P`): FAVOR+ positive orthogonal random features, `features` per head, causal
/// by prefix sums. The features are a function of the run's seed, the layer and the training
/// step / `redraw` (0 = drawn once), held with the weights so that a resumed run and the
/// final model compute what training computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerformerShape {
    pub features: usize,
    pub redraw: usize,
    /// Tokens per block of the causal prefix sums in training (the memory is
    /// `t * (chunk + features)` per head instead of `t * t`).
    pub chunk: usize,
}

impl Default for PerformerShape {
    fn default() -> Self {
        PerformerShape { features: 64, redraw: 0, chunk: 64 }
    }
}

impl PerformerShape {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `[model.moe]`: each expert a SwiGLU FFN of `d_ff_expert`; the router's softmax top-`active`
/// gates renormalized to sum to 1 (Mixtral, OLMoE and Qwen3-MoE style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeShape {
    pub experts: usize,
    pub active: usize,
    pub d_ff_expert: usize,
    /// Layer `i` is MoE when `i % every == every - 1` (1: every layer).
    #[serde(default = "one")]
    pub every: usize,
    /// Coefficient of the load-balancing loss `experts * sum_i f_i * P_i` added to the loss.
    #[serde(default = "d_router_aux")]
    pub router_aux_loss: f64,
    /// Upcycling (a dense student's FFN copied into each expert): the relative size of the
    /// noise added to each copy, so that the experts can diverge.
    #[serde(default = "d_upcycle_noise")]
    pub upcycle_noise: f64,
}

fn one() -> usize {
    1
}
fn d_router_aux() -> f64 {
    0.01
}
fn d_upcycle_noise() -> f64 {
    0.01
}

/// `attention_impl`: `fused` runs RoPE and causal or sliding-window GQA attention as one op,
/// forward and backward, in memory linear in the sequence (`kernels::cpu::rope_attention`,
/// where the backend has it: f32 on the CPU); `reference` runs burn's composition, which
/// materializes the scores (for comparison, and what other backends run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionImpl {
    #[default]
    Fused,
    Reference,
}

impl AttentionImpl {
    pub fn is_fused(&self) -> bool {
        *self == AttentionImpl::Fused
    }
}

/// All-attention: the pattern of a shape that does not name one.
pub fn default_layer_pattern() -> String {
    "A".into()
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ModelShape {
    /// The kind of layer `i`: the pattern repeated.
    pub fn layer_kind(&self, i: usize) -> char {
        let p = self.layer_pattern.as_bytes();
        p[i % p.len()] as char
    }

    /// Why this shape cannot be exported in a format at all: linear-time attention layers,
    /// which no other runtime computes.
    pub fn export_gap(&self) -> Option<String> {
        self.approx_attention()
    }

    /// Why llama.cpp's `llama` architecture cannot hold this shape's mixture of experts, if it
    /// has one: llama.cpp's llama MoE (Mixtral's) routes every layer, with biases nowhere.
    pub fn gguf_moe_gap(&self) -> Option<String> {
        let m = self.moe.as_ref()?;
        if m.every != 1 {
            return Some(format!(
                "its experts are in one layer in every {}; llama.cpp's llama MoE has them in every layer",
                m.every
            ));
        }
        if self.qkv_bias || self.o_bias {
            return Some("llama.cpp's MoE llama has no attention biases".into());
        }
        None
    }

    /// Whether layer `i`'s FFN is a mixture of experts.
    pub fn is_moe(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| i % m.every == m.every - 1)
    }

    /// Why no outside runtime (transformers, llama.cpp) computes this shape's linear-time
    /// attention layers, if it has any.
    pub fn approx_attention(&self) -> Option<String> {
        let kinds: Vec<&str> = [('L', "Linformer"), ('P', "Performer")]
            .iter()
            .filter(|(c, _)| self.layer_pattern.contains(*c))
            .map(|(_, n)| *n)
            .collect();
        (!kinds.is_empty()).then(|| {
            format!(
                "its layer pattern {:?} has {} layers, which neither transformers nor llama.cpp computes \
                 (the trained model is student/final, which distill's eval, generate and speculative read)",
                self.layer_pattern,
                kinds.join(" and ")
            )
        })
    }

    /// The attention window of layer `i`, if it has one.
    pub fn window_of(&self, i: usize) -> Option<usize> {
        self.window.filter(|_| i >= self.window_from_layer)
    }
}

/// Llama-3 RoPE frequency scaling (`rope_scaling` with `rope_type = "llama3"` in HF configs):
/// long wavelengths are divided by `factor`, short ones kept, a smooth ramp in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub factor: f64,
    #[serde(default = "d_low_freq")]
    pub low_freq_factor: f64,
    #[serde(default = "d_high_freq")]
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

// Per-field defaults because `factor` and `original_max_position_embeddings` have none.
fn d_low_freq() -> f64 {
    1.0
}
fn d_high_freq() -> f64 {
    4.0
}

/// The Mamba-2 mixer of `M` layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MambaShape {
    /// SSM state size N per head.
    pub d_state: usize,
    /// Channels P per SSM head; heads = expand * d_model / head_dim.
    pub head_dim: usize,
    pub expand: usize,
    /// Width of the depthwise causal convolution.
    pub d_conv: usize,
    /// Groups of heads sharing B and C (like KV groups in GQA).
    pub n_groups: usize,
    /// Chunk length of the SSD training algorithm.
    pub chunk_size: usize,
}

impl Default for MambaShape {
    fn default() -> Self {
        MambaShape { d_state: 16, head_dim: 16, expand: 2, d_conv: 4, n_groups: 1, chunk_size: 32 }
    }
}

/// A broken shape rule: the key (relative to the model section, e.g. `mamba.head_dim`) and
/// what was expected.
pub type ShapeError = (String, String);

impl ModelShape {
    /// The rules a shape must satisfy to be built. One list for every source of a shape: the
    /// recipe (which prefixes the key with `teacher.model.` / `student.model.` and adds where
    /// it is set), our model.json and a converted Hugging Face config.json.
    pub fn check(&self) -> std::result::Result<(), ShapeError> {
        let s = self;
        let fail = |key: &str, msg: String| Err((key.to_string(), msg));
        for (name, v) in [
            ("d_model", s.d_model),
            ("n_layers", s.n_layers),
            ("n_heads", s.n_heads),
            ("n_kv_heads", s.n_kv_heads),
            ("d_ff", s.d_ff),
            ("max_seq_len", s.max_seq_len),
        ] {
            if v == 0 {
                return fail(name, "expected a positive integer, got 0".into());
            }
        }
        if !s.n_heads.is_multiple_of(s.n_kv_heads) {
            return fail(
                "n_kv_heads",
                format!("n_heads ({}) must be divisible by n_kv_heads ({})", s.n_heads, s.n_kv_heads),
            );
        }
        if !s.d_model.is_multiple_of(s.n_heads) || !(s.d_model / s.n_heads).is_multiple_of(2) {
            return fail(
                "n_heads",
                format!(
                    "d_model ({}) must split into n_heads ({}) heads of even size (RoPE rotates pairs)",
                    s.d_model, s.n_heads
                ),
            );
        }
        if s.rope_theta.is_nan() || s.rope_theta <= 0.0 || s.rope_theta.is_infinite() {
            return fail("rope_theta", format!("expected a finite value > 0, got {}", s.rope_theta));
        }
        if s.norm_eps.is_nan() || s.norm_eps <= 0.0 || s.norm_eps >= 1.0 {
            return fail("norm_eps", format!("expected a value in (0, 1), got {}", s.norm_eps));
        }
        if s.layer_pattern.is_empty() || !s.layer_pattern.chars().all(|c| "AMLP".contains(c)) {
            return fail(
                "layer_pattern",
                format!(
                    "expected a non-empty string of A (attention), M (Mamba-2), L (Linformer) and P (Performer), got {:?}",
                    s.layer_pattern
                ),
            );
        }
        if s.layer_pattern.contains('L') {
            let l = &s.linformer;
            if l.chunk == 0 || l.chunk > s.max_seq_len {
                return fail(
                    "linformer.chunk",
                    format!("expected 1..={} (max_seq_len), got {}", s.max_seq_len, l.chunk),
                );
            }
            if l.rows == 0 || l.rows > l.chunk {
                return fail("linformer.rows", format!("expected 1..={} (chunk), got {}", l.chunk, l.rows));
            }
        }
        if s.layer_pattern.contains('P') {
            let p = &s.performer;
            if p.features == 0 || p.features > 65_536 || p.chunk == 0 {
                return fail(
                    "performer.features",
                    format!("expected 1..=65536 features and a chunk >= 1, got {} and {}", p.features, p.chunk),
                );
            }
        }
        if let Some(m) = &s.moe {
            if m.experts == 0 || m.experts > 1024 {
                return fail("moe.experts", format!("expected 1..=1024 experts, got {}", m.experts));
            }
            if m.active == 0 || m.active > m.experts {
                return fail("moe.active", format!("expected 1..={} (experts), got {}", m.experts, m.active));
            }
            if m.d_ff_expert == 0 {
                return fail("moe.d_ff_expert", "expected a positive integer, got 0".into());
            }
            if m.every == 0 {
                return fail("moe.every", "expected a positive integer, got 0".into());
            }
            if !(m.router_aux_loss.is_finite() && m.router_aux_loss >= 0.0) {
                return fail("moe.router_aux_loss", format!("expected a finite value >= 0, got {}", m.router_aux_loss));
            }
            if !(m.upcycle_noise.is_finite() && (0.0..=1.0).contains(&m.upcycle_noise)) {
                return fail("moe.upcycle_noise", format!("expected a value in [0, 1], got {}", m.upcycle_noise));
            }
        }
        if s.window == Some(0) {
            return fail("window", "expected a window of at least 1 token".into());
        }
        if let Some(rs) = &s.rope_scaling {
            if rs.factor.is_nan() || rs.factor < 1.0 {
                return fail("rope_scaling.factor", format!("expected >= 1, got {}", rs.factor));
            }
            if !(rs.low_freq_factor > 0.0 && rs.low_freq_factor < rs.high_freq_factor) {
                return fail(
                    "rope_scaling.low_freq_factor",
                    format!(
                        "expected 0 < low_freq_factor < high_freq_factor ({}), got {}",
                        rs.high_freq_factor, rs.low_freq_factor
                    ),
                );
            }
            if rs.original_max_position_embeddings == 0 {
                return fail(
                    "rope_scaling.original_max_position_embeddings",
                    "expected a positive integer, got 0".into(),
                );
            }
        }
        if s.layer_pattern.contains('M') {
            let m = &s.mamba;
            for (name, v) in [
                ("d_state", m.d_state),
                ("head_dim", m.head_dim),
                ("expand", m.expand),
                ("d_conv", m.d_conv),
                ("n_groups", m.n_groups),
                ("chunk_size", m.chunk_size),
            ] {
                if v == 0 {
                    return fail(&format!("mamba.{name}"), "expected a positive integer, got 0".into());
                }
            }
            let d_inner = m.expand * s.d_model;
            if !d_inner.is_multiple_of(m.head_dim) {
                return fail(
                    "mamba.head_dim",
                    format!("expand * d_model ({d_inner}) must be divisible by head_dim ({})", m.head_dim),
                );
            }
            if !(d_inner / m.head_dim).is_multiple_of(m.n_groups) {
                return fail(
                    "mamba.n_groups",
                    format!("the {} SSM heads must split evenly into n_groups ({})", d_inner / m.head_dim, m.n_groups),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl ModelShape {
    /// An attention-only shape for tests, every other field at its recipe default but a short
    /// context (so a new field is added here once, not in each test module).
    pub fn for_tests(d_model: usize, n_layers: usize, n_heads: usize, n_kv_heads: usize, d_ff: usize) -> ModelShape {
        ModelShape {
            d_model,
            n_layers,
            n_heads,
            n_kv_heads,
            d_ff,
            max_seq_len: 64,
            rope_theta: 10_000.0,
            tie_embeddings: false,
            norm_eps: 1e-5,
            layer_pattern: "A".into(),
            window: None,
            qkv_bias: false,
            o_bias: false,
            window_from_layer: 0,
            rope_scaling: None,
            mamba: Default::default(),
            attention_impl: AttentionImpl::Fused,
            linformer: Default::default(),
            performer: Default::default(),
            moe: None,
        }
    }
}
