//! The decoder stack used for both teacher and student.

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::{DType, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::DocPositions;
use super::approx_attention::{Approx, Linformer, Performer};
use super::attention::{Attention, KvCache};
use super::config::ModelShape;
use super::init::{Init, WeightSource};
use super::mamba::{Mamba2, MambaState};
use super::mlp::SwiGlu;
use super::moe::{Moe, Routing};
use super::norm::rms_norm;
use super::rope;

/// A shape plus the vocabulary size: everything needed to rebuild the model from disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    #[serde(flatten)]
    pub shape: ModelShape,
}

/// The sequence mixer of a layer: `A` or `M` in the layer pattern.
#[derive(Module, Debug)]
pub enum Mixer {
    Attention(Attention),
    Mamba(Mamba2),
}

/// The feed-forward part of a layer: dense SwiGLU, or a sparse mixture of SwiGLU experts.
pub enum Ffn<'a> {
    Dense(&'a SwiGlu),
    Moe(&'a Moe),
}

#[derive(Module, Debug)]
pub struct Block {
    pub mixer_norm: RmsNorm,
    pub mixer: Mixer,
    pub mlp_norm: RmsNorm,
    /// The dense FFN; `None` in a mixture-of-experts layer. (Two options rather than one
    /// enum: an enum's variant name would enter every weight's path in model.bpk, and the
    /// files of dense models written before MoE existed would no longer load.)
    pub mlp: Option<SwiGlu>,
    pub moe: Option<Moe>,
}

/// What generation carries between steps, per layer.
#[derive(Clone, Debug)]
pub enum LayerCache {
    Attention(KvCache),
    Mamba(Option<MambaState>),
}

/// Generation state: one entry per layer and the number of columns already processed.
#[derive(Clone, Debug)]
pub struct Cache {
    pub layers: Vec<LayerCache>,
    pub pos: usize,
    /// Left pads per row of a batch of unequal prompts (empty: none). A row's first `pads`
    /// columns are seen by nothing and change no state: its tokens are at the positions and
    /// in the states they would have alone.
    pub pads: Vec<usize>,
}

impl Cache {
    /// Forget every column from `len` on (speculative decoding's rejected drafts): keys and
    /// values are cut; a Mamba-2 state cannot be taken back, so a cache holding one is left
    /// as it is and `false` returned (the caller restores a copy and feeds the kept tokens).
    pub fn truncate(&mut self, len: usize) -> bool {
        if len >= self.pos {
            return true;
        }
        if self.layers.iter().any(|l| matches!(l, LayerCache::Mamba(_))) {
            return false;
        }
        for layer in &mut self.layers {
            if let LayerCache::Attention(c) = layer {
                let cut = |t: Tensor<4>| {
                    let [b, h, _, d] = t.dims();
                    t.slice([0..b, 0..h, 0..len, 0..d])
                };
                c.k = c.k.take().map(cut);
                c.v = c.v.take().map(cut);
            }
        }
        self.pos = len;
        true
    }
}

impl Block {
    pub fn ffn(&self) -> Ffn<'_> {
        match (&self.mlp, &self.moe) {
            (_, Some(m)) => Ffn::Moe(m),
            (Some(d), None) => Ffn::Dense(d),
            (None, None) => unreachable!("a block has a dense FFN or experts"),
        }
    }

    /// Every SwiGLU of the layer (one, or the experts): what QAT marks.
    pub fn swiglus_mut(&mut self) -> Vec<&mut SwiGlu> {
        self.mlp.iter_mut().chain(self.moe.iter_mut().flat_map(|m| m.experts.iter_mut())).collect()
    }

    /// The block's matrices with their Hugging Face names (Llama attention and MLP, Mamba2
    /// mixer), in a fixed order shared by export and quantization.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let v: Vec<(&'static str, &Linear)> = match &self.mixer {
            Mixer::Attention(a) => vec![
                ("self_attn.q_proj", &a.wq),
                ("self_attn.k_proj", &a.wk),
                ("self_attn.v_proj", &a.wv),
                ("self_attn.o_proj", &a.wo),
            ],
            Mixer::Mamba(m) => vec![("mixer.in_proj", &m.in_proj), ("mixer.out_proj", &m.out_proj)],
        };
        let mut v: Vec<(String, &Linear)> = v.into_iter().map(|(n, l)| (n.to_string(), l)).collect();
        match self.ffn() {
            Ffn::Dense(m) => v.extend([
                ("mlp.gate_proj".to_string(), &m.w_gate),
                ("mlp.up_proj".to_string(), &m.w_up),
                ("mlp.down_proj".to_string(), &m.w_down),
            ]),
            Ffn::Moe(m) => {
                v.push(("mlp.gate".to_string(), &m.router));
                for (e, x) in m.experts.iter().enumerate() {
                    v.extend([
                        (format!("mlp.experts.{e}.gate_proj"), &x.w_gate),
                        (format!("mlp.experts.{e}.up_proj"), &x.w_up),
                        (format!("mlp.experts.{e}.down_proj"), &x.w_down),
                    ]);
                }
            }
        }
        v
    }

    /// A Linformer or Performer layer's own part, if this is one.
    pub fn approx_mut(&mut self) -> Option<&mut Approx> {
        match &mut self.mixer {
            Mixer::Attention(a) => a.approx.as_mut(),
            Mixer::Mamba(_) => None,
        }
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v: Vec<&mut Linear> = match &mut self.mixer {
            Mixer::Attention(a) => vec![&mut a.wq, &mut a.wk, &mut a.wv, &mut a.wo],
            Mixer::Mamba(m) => vec![&mut m.in_proj, &mut m.out_proj],
        };
        // A mixture's router is left out: it stays f32 in QAT and in llama.cpp's files alike.
        let swiglus = self.mlp.iter_mut().chain(self.moe.iter_mut().flat_map(|m| m.experts.iter_mut()));
        for x in swiglus {
            v.extend([&mut x.w_gate, &mut x.w_up, &mut x.w_down]);
        }
        v
    }

    /// `cos`/`sin`: RoPE tables for the positions of `x`; `docs`: packed documents.
    fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        cache: Option<&mut LayerCache>,
        docs: Option<&DocPositions>,
    ) -> (Tensor<3>, Option<Routing>) {
        let h = rms_norm(&self.mixer_norm, x.clone());
        let h = match (&self.mixer, cache) {
            (Mixer::Attention(a), None) => a.forward(h, cos, sin, None, docs),
            (Mixer::Attention(a), Some(LayerCache::Attention(c))) => a.forward(h, cos, sin, Some(c), docs),
            // The recipe refuses packed documents for models with Mamba layers: the scan would
            // carry state across documents.
            (Mixer::Mamba(_), None) if docs.is_some() => panic!("packed documents through a Mamba layer"),
            (Mixer::Mamba(m), None) => m.forward(h),
            (Mixer::Mamba(m), Some(LayerCache::Mamba(state))) => {
                // The recurrence, token by token: exact, and O(1) memory per token. A row's
                // left pads leave its state as it was (zero), as if they were not there.
                let [b, t, d] = h.dims();
                let st = state.get_or_insert_with(|| m.empty_state(b, &h.device()));
                let outs: Vec<Tensor<3>> = (0..t)
                    .map(|i| {
                        let x = h.clone().slice([0..b, i..i + 1, 0..d]);
                        match pad_mask(docs, i, &h.device()) {
                            None => m.step(x, st),
                            Some(pad) => {
                                let before = st.clone();
                                let y = m.step(x, st);
                                st.keep_where(pad, before);
                                y
                            }
                        }
                    })
                    .collect();
                Tensor::cat(outs, 1)
            }
            _ => unreachable!("a cache is built from the same layer pattern"),
        };
        let x = x + h;
        let h = rms_norm(&self.mlp_norm, x.clone());
        match self.ffn() {
            Ffn::Dense(m) => (x + m.forward(h), None),
            Ffn::Moe(m) => {
                let (y, r) = m.forward(h);
                (x + y, Some(r))
            }
        }
    }
}

/// Which rows' token `i` (of the call) is a left pad, `[b]`, when any is.
fn pad_mask(docs: Option<&DocPositions>, i: usize, device: &Device) -> Option<Tensor<1, burn::tensor::Bool>> {
    let d = docs?;
    let pads: Vec<bool> = (0..d.b).map(|r| d.is_pad(r, i)).collect();
    pads.iter().any(|p| *p).then(|| Tensor::from_data(burn::tensor::TensorData::new(pads, [d.b]), device))
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub embed: Embedding,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Linear>,
    /// Training only, with a hidden-state loss: the learned maps from this student's widths to
    /// its teacher's. Trained, decayed and checkpointed with the weights (the optimizer and
    /// checkpoints see one module); dropped from the final model and never exported.
    pub hidden_proj: Option<super::hidden_proj::HiddenProjection>,
    #[module(skip)]
    pub config: DecoderConfig,
}

/// Give the parameters ids that are a function of `seed` and their order, instead of burn's
/// random ones: the ids are written into model.bpk, so without this two runs of one recipe
/// (or a run and its resumed self) wrote different bytes for the same weights.
pub fn number_params(m: Decoder, seed: u64) -> Decoder {
    struct Number(u64);
    impl ModuleMapper for Number {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (_, value, mapper) = p.consume();
            self.0 = self.0.wrapping_add(1);
            Param::from_mapped_value(burn::module::ParamId::from(self.0), value, mapper)
        }
    }
    // Spread seeds apart so that two models' ranges (a teacher's and a student's) never meet.
    m.map(&mut Number(crate::rng::SplitMix(seed).next_u64() & !0xFFFF_FFFF))
}

impl DecoderConfig {
    /// Random initialization, a function of `seed` alone.
    pub fn init(&self, seed: u64, device: &Device) -> Decoder {
        number_params(self.build(&mut Init::new(seed, device)), seed)
    }

    /// The model with its weights read from `source` (Hugging Face names), held in `dtype`.
    pub fn load(&self, source: &dyn WeightSource, device: &Device, dtype: DType) -> crate::Result<Decoder> {
        if self.shape.layer_pattern.contains('M') {
            return Err(crate::Error::input("loading Mamba-2 layers from Hugging Face weights is not supported"));
        }
        self.validate().map_err(crate::Error::input)?;
        // The depth first, from one header: the build below holds a block per layer, and a
        // config.json claiming 1e8 of them must not reach it.
        let last = format!("model.layers.{}.input_layernorm.weight", self.shape.n_layers - 1);
        let other = format!("model.layers.{}.post_attention_layernorm.weight", self.shape.n_layers - 1);
        if source.shape(&last).is_err() && source.shape(&other).is_err() {
            return Err(crate::Error::input(format!(
                "missing tensor `{last}`: the config says {} layers (n_layers / num_hidden_layers / block_count), and the weights hold no layer {}",
                self.shape.n_layers,
                self.shape.n_layers - 1
            )));
        }
        // Names and shapes first, from the files' headers: the first mismatch (a config.json
        // that does not describe these weights) stops before any tensor of its sizes exists,
        // and a stored tensor the model would not use is refused rather than dropped.
        let mut check = Init::checking(source, device);
        self.build(&mut check);
        check.finish()?;
        source.check_all_used()?;
        let mut init = Init::from_source(source, device, dtype);
        let m = self.build(&mut init);
        init.finish()?;
        // Loaded models (frozen teachers) get ids of their own, apart from any seed's.
        Ok(number_params(m, 0x7EAC_4E55))
    }

    fn build(&self, init: &mut Init) -> Decoder {
        let s = &self.shape;
        let blocks = (0..s.n_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Block {
                    mixer_norm: init.named_norm(&format!("{p}.input_layernorm"), s.d_model, s.norm_eps),
                    mixer: match s.layer_kind(i) {
                        'M' => Mixer::Mamba(Mamba2::new(s.d_model, &s.mamba, s.norm_eps, init)),
                        kind => Mixer::Attention(
                            Attention::new(
                                &format!("{p}.self_attn"),
                                s.d_model,
                                s.n_heads,
                                s.n_kv_heads,
                                s.qkv_bias,
                                s.o_bias,
                                s.window_of(i),
                                s.attention_impl.is_fused(),
                                init,
                            )
                            .with_approx(match kind {
                                'L' => Some(Approx::Linformer(Linformer::new(&s.linformer, init))),
                                'P' => Some(Approx::Performer(Performer::new(&s.performer, self.head_dim(), i, init))),
                                _ => None,
                            }),
                        ),
                    },
                    mlp_norm: init.named_norm(&format!("{p}.post_attention_layernorm"), s.d_model, s.norm_eps),
                    mlp: (!s.is_moe(i)).then(|| SwiGlu::new(&format!("{p}.mlp"), s.d_model, s.d_ff, init)),
                    moe: s
                        .moe
                        .as_ref()
                        .filter(|_| s.is_moe(i))
                        .map(|m| Moe::new(&format!("{p}.mlp"), s.d_model, m, init)),
                }
            })
            .collect();
        // A tied embedding is also the output projection: N(0, 1) would give initial logits
        // of standard deviation sqrt(d_model), so scale it to 1 there.
        let std = if s.tie_embeddings { (s.d_model as f64).powf(-0.5) } else { 1.0 };
        let embed = init.named_embedding("model.embed_tokens", self.vocab_size, s.d_model, std);
        let lm_head = (!s.tie_embeddings).then(|| init.named_linear("lm_head", s.d_model, self.vocab_size, false));
        Decoder {
            embed,
            blocks,
            norm: init.named_norm("model.norm", s.d_model, s.norm_eps),
            lm_head,
            hidden_proj: None,
            config: self.clone(),
        }
    }

    /// The rules a model must satisfy to be built ([`ModelShape::check`] and a vocabulary), for
    /// models that come from files: model.json, a converted config.json. `Err` names the key
    /// and what was expected, instead of a division by zero or a shape panic in the build.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.vocab_size == 0 {
            return Err("key `vocab_size`: expected a positive integer, got 0".into());
        }
        self.shape.check().map_err(|(key, msg)| format!("key `{key}`: {msg}"))
    }

    /// The number of stored parameters this config describes (saturating: a hostile config's
    /// sizes may multiply past any integer), to hold against the bytes of the file that should
    /// contain them before anything of that size is allocated.
    pub fn param_count(&self) -> u128 {
        let s = &self.shape;
        let u = |x: usize| x as u128;
        let mul = |xs: &[u128]| xs.iter().fold(1u128, |a, &b| a.saturating_mul(b));
        let (d, hd) = (u(s.d_model), u(s.d_model / s.n_heads.max(1)));
        let attn = mul(&[d, hd, u(2 * s.n_heads) + u(2 * s.n_kv_heads)]);
        let ffn = match &s.moe {
            Some(m) => mul(&[u(m.experts), 3, d, u(m.d_ff_expert)]).saturating_add(mul(&[d, u(m.experts)])),
            None => mul(&[3, d, u(s.d_ff)]),
        };
        let layer = attn.saturating_add(ffn).saturating_add(2 * d);
        let table = mul(&[u(self.vocab_size), d]);
        mul(&[u(s.n_layers), layer]).saturating_add(table).saturating_add(if s.tie_embeddings { 0 } else { table })
    }

    pub fn head_dim(&self) -> usize {
        self.shape.d_model / self.shape.n_heads
    }

    /// Parameters of the matmuls per token (embedding lookup excluded, LM head included),
    /// the `N` in the usual 6N FLOPs/token training estimate.
    pub fn matmul_params(&self) -> usize {
        let s = &self.shape;
        let hd = self.head_dim();
        let attn = s.d_model * hd * (2 * s.n_heads + 2 * s.n_kv_heads);
        let m = &s.mamba;
        let di = m.expand * s.d_model;
        let mamba = s.d_model * (2 * di + 2 * m.n_groups * m.d_state + di / m.head_dim) + di * s.d_model;
        let mlp = 3 * s.d_model * s.d_ff;
        let mixers: usize = (0..s.n_layers).map(|i| if s.layer_kind(i) == 'M' { mamba } else { attn }).sum();
        mixers + s.n_layers * mlp + s.d_model * self.vocab_size
    }

    fn n_attention_layers(&self) -> usize {
        (0..self.shape.n_layers).filter(|&i| self.shape.layer_kind(i) == 'A').count()
    }

    /// KV-cache bytes per generated token in f32 (attention layers only; a Mamba layer's
    /// state does not grow with the sequence).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_attention_layers() * self.shape.n_kv_heads * self.head_dim() * 4
    }

    /// Fixed-size generation state of the Mamba layers, in f32 bytes per sequence.
    pub fn ssm_state_bytes(&self) -> usize {
        let s = &self.shape;
        let m = &s.mamba;
        let di = m.expand * s.d_model;
        let per_layer = di * m.d_state + (m.d_conv - 1) * (di + 2 * m.n_groups * m.d_state);
        (s.n_layers - self.n_attention_layers()) * per_layer * 4
    }
}

impl Decoder {
    /// The same model with every float parameter in `dtype`. A frozen teacher in bf16/f16
    /// needs half the memory (and on GPUs runs its matmuls at half-precision speed); RMSNorm
    /// statistics are still taken in f32 (burn's RmsNorm, as transformers), logits come out f32.
    pub fn cast(self, dtype: DType) -> Decoder {
        struct Cast(DType);
        impl ModuleMapper for Cast {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let dtype = self.0;
                p.map(|t| if t.dtype() == dtype { t } else { t.cast(dtype) })
            }
        }
        self.map(&mut Cast(dtype))
    }

    /// `tokens`: (batch, seq) -> logits (batch, seq, vocab).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.run(tokens, None)
    }

    /// [`Decoder::forward`] of packed rows: with `docs`, each token sees only its document.
    pub fn forward_docs(&self, tokens: Tensor<2, Int>, docs: Option<&DocPositions>) -> Tensor<3> {
        let (x, _, _) = self.hidden(tokens, None, &[], docs);
        self.logits_of(x)
    }

    pub fn new_cache(&self) -> Cache {
        self.new_padded_cache(Vec::new())
    }

    /// A cache for a batch of prompts left-padded by `pads` tokens each (see [`Cache::pads`]).
    pub fn new_padded_cache(&self, pads: Vec<usize>) -> Cache {
        let layers = self
            .blocks
            .iter()
            .map(|b| match b.mixer {
                Mixer::Attention(_) => LayerCache::Attention(KvCache::default()),
                Mixer::Mamba(_) => LayerCache::Mamba(None),
            })
            .collect();
        Cache { layers, pos: 0, pads }
    }

    /// Logits of `tokens`, which follow the `cache.pos` tokens already in `cache`; the cache
    /// is extended with them. Feeding a sequence in pieces gives the logits of one full pass.
    pub fn forward_cached(&self, tokens: Tensor<2, Int>, cache: &mut Cache) -> Tensor<3> {
        let t = tokens.dims()[1];
        let out = self.run(tokens, Some(cache));
        cache.pos += t;
        out
    }

    /// The last column's logits `[b, vocab]` of `tokens` after `cache` (extended with them):
    /// the LM head runs on that column only, never on a prompt's every position.
    pub fn forward_cached_last(&self, tokens: Tensor<2, Int>, cache: &mut Cache) -> Tensor<2> {
        let b = tokens.dims()[0];
        self.forward_cached_tail(tokens, cache, 1).reshape([b, self.config.vocab_size])
    }

    /// The last `n` columns' logits `[b, n, vocab]` of `tokens` after `cache` (extended with
    /// them): speculative decoding's verification reads the drafts' columns only.
    pub fn forward_cached_tail(&self, tokens: Tensor<2, Int>, cache: &mut Cache, n: usize) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let (x, _, _) = self.hidden(tokens, Some(cache), &[], None);
        cache.pos += t;
        let d = x.dims()[2];
        self.logits_of(x.slice([0..b, t - n..t, 0..d]))
    }

    fn run(&self, tokens: Tensor<2, Int>, cache: Option<&mut Cache>) -> Tensor<3> {
        let (x, _, _) = self.hidden(tokens, cache, &[], None);
        self.logits_of(x)
    }

    /// The logits (f32) of final hidden states (what [`Decoder::forward_hidden`] returns).
    pub fn logits_of(&self, x: Tensor<3>) -> Tensor<3> {
        let logits = super::linear::lm_head(x, self.lm_head.as_ref(), &self.embed.weight.val());
        if logits.dtype() == DType::F32 { logits } else { logits.cast(DType::F32) }
    }

    /// The last hidden states `(batch, seq, d_model)`, after the final norm: what the LM head
    /// reads. With [`Decoder::head_weight`], the loss can fuse the head into its chunks.
    pub fn forward_hidden(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.hidden(tokens, None, &[], None).0
    }

    /// [`Decoder::forward_hidden`]'s result, and the residual stream at the output of each block
    /// in `layers` (0-based; block `i`'s output is block `i + 1`'s input, before any norm), in the
    /// order asked: what hidden-state distillation compares. Panics on an index past the last block.
    /// With `docs`, packed rows (see [`Decoder::forward_docs`]).
    pub fn forward_with_layers(
        &self,
        tokens: Tensor<2, Int>,
        layers: &[usize],
        docs: Option<&DocPositions>,
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        let (x, taken, _) = self.hidden(tokens, None, layers, docs);
        (x, taken)
    }

    /// [`Decoder::forward_with_layers`] and the routing of each MoE layer (in block order):
    /// what training adds the load-balancing loss from.
    pub fn forward_routed(
        &self,
        tokens: Tensor<2, Int>,
        layers: &[usize],
        docs: Option<&DocPositions>,
    ) -> (Tensor<3>, Vec<Tensor<3>>, Vec<Routing>) {
        self.hidden(tokens, None, layers, docs)
    }

    /// The LM head as `(vocab, d_model)`: the tied embedding, or the head's weight transposed
    /// (burn stores a linear layer's weight as `(d_in, d_out)`).
    pub fn head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.weight.val().transpose(),
            None => self.embed.weight.val(),
        }
    }

    /// RoPE's tables for `t` positions after `start`, or for packed rows' positions.
    fn rope_tables(
        &self,
        t: usize,
        start: usize,
        docs: Option<&DocPositions>,
        device: &Device,
        dtype: DType,
    ) -> (Tensor<2>, Tensor<2>) {
        let c = &self.config;
        let scaling = c.shape.rope_scaling.as_ref();
        let (cos, sin) = match docs {
            Some(d) => rope::tables_at(&d.pos, c.head_dim(), c.shape.rope_theta, scaling, device),
            None => rope::tables(t, start, c.head_dim(), c.shape.rope_theta, scaling, device),
        };
        (cos.cast(dtype), sin.cast(dtype))
    }

    /// The token embeddings `(batch, seq, d_model)`: the first block's input.
    pub fn embed_tokens(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.embed.forward(tokens)
    }

    /// The blocks `range` applied to `x`, the first one's input, as in a training pass (no
    /// cache; packed rows with `docs`): the pieces of [`Decoder::forward_hidden`] that
    /// activation checkpointing recomputes. `forward_hidden` is `final_norm` of all of them.
    pub fn blocks_forward(
        &self,
        mut x: Tensor<3>,
        range: std::ops::Range<usize>,
        docs: Option<&DocPositions>,
    ) -> Tensor<3> {
        let t = x.dims()[1];
        let (cos, sin) = self.rope_tables(t, 0, docs, &x.device(), x.dtype());
        for block in &self.blocks[range] {
            x = block.forward(x, &cos, &sin, None, docs).0;
        }
        x
    }

    /// The final norm: the last blocks' output to what the LM head reads.
    pub fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        rms_norm(&self.norm, x)
    }

    /// The final hidden states (after the final norm) and the outputs of the blocks `layers`:
    /// one loop for every caller, so the layers handed out are those of the plain forward pass.
    fn hidden(
        &self,
        tokens: Tensor<2, Int>,
        mut cache: Option<&mut Cache>,
        layers: &[usize],
        docs: Option<&DocPositions>,
    ) -> (Tensor<3>, Vec<Tensor<3>>, Vec<Routing>) {
        let n = self.blocks.len();
        if let Some(l) = layers.iter().find(|&&l| l >= n) {
            panic!("block output {l} asked for, but the model has {n} blocks (0..{n})");
        }
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let start = cache.as_ref().map_or(0, |c| c.pos);
        let padded = cache
            .as_ref()
            .filter(|c| c.pads.iter().any(|&p| p > 0))
            .map(|c| DocPositions::left_padded(&c.pads, start, t));
        let docs = docs.or(padded.as_ref());
        let mut x = self.embed.forward(tokens);
        let (cos, sin) = self.rope_tables(t, start, docs, &device, x.dtype());
        let mut taken: Vec<Option<Tensor<3>>> = vec![None; layers.len()];
        let mut routing = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c.layers[i]);
            let r;
            (x, r) = block.forward(x, &cos, &sin, layer_cache, docs);
            routing.extend(r);
            for (slot, _) in taken.iter_mut().zip(layers).filter(|(_, l)| **l == i) {
                *slot = Some(x.clone());
            }
        }
        let taken = taken.into_iter().map(|o| o.expect("every index is below the block count")).collect();
        (rms_norm(&self.norm, x), taken, routing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// `attention_impl` switches the computation, not the function: the fused kernel and
    /// burn's composition agree to float rounding (windowed too) but are different code.
    #[test]
    fn attention_impl_switches_the_kernel_not_the_model() {
        let dev = Device::flex();
        for window in [None, Some(5)] {
            let mut c = DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(32, 2, 4, 2, 64) };
            c.shape.window = window;
            let fused = c.init(7, &dev);
            c.shape.attention_impl = super::super::config::AttentionImpl::Reference;
            let reference = c.init(7, &dev);
            let ids =
                Tensor::<2, Int>::from_data(TensorData::new((0..24i64).map(|i| (i * 7) % 40).collect(), [2, 12]), &dev);
            let (a, b) = (fused.forward(ids.clone()), reference.forward(ids));
            let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().iter().collect(), b.into_data().iter().collect());
            let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(err < 1e-4 && a != b, "window {window:?}: max diff {err}");
        }
    }

    /// A dense model's weights keep the paths its files have always had (`blocks.0.mlp.w_gate`):
    /// models written before mixtures of experts existed still load. An MoE layer's live under
    /// `moe`. (With one `Ffn` enum the variant name entered the paths and old files failed.)
    #[test]
    fn dense_weight_paths_are_unchanged_by_moe() {
        let dev = Device::flex();
        let dir = std::env::temp_dir().join(format!("distill-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(16, 2, 4, 2, 32) };
        let bytes = |c: &DecoderConfig| {
            let p = dir.join("m.bpk");
            c.init(3, &dev).save_file(&p).unwrap();
            String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned()
        };
        let dense = bytes(&c);
        assert!(dense.contains("blocks.1.mlp.w_gate.weight") && !dense.contains("Dense"), "dense paths moved");
        c.shape.moe = Some(super::super::config::MoeShape {
            experts: 2,
            active: 1,
            d_ff_expert: 8,
            every: 2,
            router_aux_loss: 0.01,
            upcycle_noise: 0.01,
        });
        let moe = bytes(&c);
        assert!(moe.contains("blocks.0.mlp.w_gate.weight") && moe.contains("blocks.1.moe.experts.1.w_up.weight"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Parameter ids are part of model.bpk: the same seed gives the same file, byte for byte
    /// (burn's ids are random per process), and two seeds give disjoint ids.
    #[test]
    fn same_seed_same_file_bytes() {
        let c = DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(16, 2, 4, 2, 32) };
        let dev = Device::flex();
        let dir = std::env::temp_dir().join(format!("distill-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |seed: u64, tag: &str| {
            let p = dir.join(format!("{tag}.bpk"));
            c.init(seed, &dev).save_file(&p).unwrap();
            std::fs::read(p).unwrap()
        };
        assert_eq!(file(3, "a"), file(3, "b"));
        let ids = |seed: u64| {
            let mut v = Vec::new();
            struct Ids<'a>(&'a mut Vec<u64>);
            impl burn::module::ModuleVisitor for Ids<'_> {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                    self.0.push(p.id.val());
                }
            }
            c.init(seed, &dev).visit(&mut Ids(&mut v));
            v
        };
        let (a, b) = (ids(3), ids(4));
        assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tiny(tie: bool) -> DecoderConfig {
        DecoderConfig {
            vocab_size: 50,
            shape: ModelShape { tie_embeddings: tie, ..ModelShape::for_tests(16, 2, 4, 2, 32) },
        }
    }

    /// Causality of the whole stack: changing a later token never changes earlier logits.
    #[test]
    fn decoder_is_causal() {
        let dev = Device::flex();
        for tie in [false, true] {
            let m = tiny(tie).init(1, &dev);
            let a = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6], [1, 6]), &dev);
            let b = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 9, 7], [1, 6]), &dev);
            let la: Vec<f32> = m.forward(a).into_data().try_to_vec::<f32>().unwrap();
            let lb: Vec<f32> = m.forward(b).into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(la.len(), 6 * 50);
            for i in 0..4 * 50 {
                assert!((la[i] - lb[i]).abs() < 1e-5, "position {} changed", i / 50);
            }
            assert!((4 * 50..6 * 50).any(|i| (la[i] - lb[i]).abs() > 1e-4));
        }
    }

    /// Decoding in pieces through the cache (a prompt, then one token at a time) gives the
    /// logits of one full forward pass, for attention, sliding-window, QKV-bias, Llama-3 RoPE
    /// and Mamba-2 layers in one hybrid stack.
    #[test]
    fn cached_decoding_equals_full_forward() {
        let dev = Device::flex();
        let mut cfg = tiny(true);
        cfg.shape.n_layers = 4;
        cfg.shape.layer_pattern = "AMAM".into();
        cfg.shape.window = Some(5);
        cfg.shape.qkv_bias = true;
        cfg.shape.rope_scaling = Some(crate::model::config::RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16,
        });
        cfg.shape.mamba = crate::model::config::MambaShape {
            d_state: 4,
            head_dim: 8,
            expand: 2,
            d_conv: 4,
            n_groups: 1,
            chunk_size: 4,
        };
        let m = cfg.init(5, &dev);
        let ids: Vec<i64> = (0..13).map(|i| (i * 7 % 50) as i64).collect();
        let t = ids.len();
        let full: Vec<f32> = m
            .forward(Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, t]), &dev))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let mut cache = m.new_cache();
        let mut got: Vec<f32> = Vec::new();
        let prompt = 6;
        let first = Tensor::<2, Int>::from_data(TensorData::new(ids[..prompt].to_vec(), [1, prompt]), &dev);
        got.extend(m.forward_cached(first, &mut cache).into_data().try_to_vec::<f32>().unwrap());
        for &id in &ids[prompt..t] {
            let tok = Tensor::<2, Int>::from_data(TensorData::new(vec![id], [1, 1]), &dev);
            got.extend(m.forward_cached(tok, &mut cache).into_data().try_to_vec::<f32>().unwrap());
        }
        assert_eq!(cache.pos, t);
        let err = full.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-4, "max abs logit difference {err}");
    }

    /// `forward_with_layers` hands out the blocks' outputs of the plain forward pass: its final
    /// states are forward_hidden's, the last block's output after the final norm is too, and
    /// each requested output (in the order asked, repeats included) is what running the blocks
    /// by hand gives, bit for bit, in a hybrid attention / Mamba-2 stack.
    #[test]
    fn forward_with_layers_returns_the_block_outputs() {
        let dev = Device::flex();
        let mut cfg = tiny(false);
        cfg.shape.n_layers = 3;
        cfg.shape.layer_pattern = "AMA".into();
        cfg.shape.mamba = crate::model::config::MambaShape {
            d_state: 4,
            head_dim: 8,
            expand: 2,
            d_conv: 4,
            n_groups: 1,
            chunk_size: 4,
        };
        let m = cfg.init(3, &dev);
        let ids = Tensor::<2, Int>::from_data(TensorData::new((0..14i64).map(|i| i * 11 % 50).collect(), [2, 7]), &dev);
        let bits = |x: Tensor<3>| -> Vec<u32> { x.into_data().iter::<f32>().map(f32::to_bits).collect() };
        let want = bits(m.forward_hidden(ids.clone()));
        let (h, outs) = m.forward_with_layers(ids.clone(), &[2, 0, 1, 2], None);
        assert_eq!(outs.len(), 4);
        assert_eq!(bits(h), want);
        assert_eq!(bits(rms_norm(&m.norm, outs[0].clone())), want);
        let (cos, sin) = rope::tables(7, 0, cfg.head_dim(), cfg.shape.rope_theta, None, &dev);
        let mut x = m.embed.forward(ids);
        let mut by_hand = Vec::new();
        for block in &m.blocks {
            x = block.forward(x, &cos, &sin, None, None).0;
            by_hand.push(bits(x.clone()));
        }
        for (got, i) in outs.into_iter().zip([2, 0, 1, 2]) {
            assert_eq!(bits(got), by_hand[i], "block {i}");
        }
        assert_ne!(by_hand[0], by_hand[1]);
    }

    #[test]
    #[should_panic(expected = "block output 2 asked for, but the model has 2 blocks")]
    fn forward_with_layers_refuses_a_missing_block() {
        let dev = Device::flex();
        let m = tiny(true).init(1, &dev);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3], [1, 3]), &dev);
        let _ = m.forward_with_layers(ids, &[0, 2], None);
    }

    #[test]
    fn kv_cache_bytes_scale_with_kv_heads() {
        let mut c = tiny(false);
        c.shape.n_heads = 4;
        let per = |kv: usize| {
            let mut c = c.clone();
            c.shape.n_kv_heads = kv;
            c.kv_bytes_per_token()
        };
        // 2 (K and V) * 2 layers * kv heads * head_dim 4 * 4 bytes.
        assert_eq!((per(4), per(2), per(1)), (256, 128, 64));
        c.shape.layer_pattern = "AM".into();
        assert_eq!(c.kv_bytes_per_token(), 2 * 2 * 4 * 4, "Mamba layers hold no KV cache");
    }
}
