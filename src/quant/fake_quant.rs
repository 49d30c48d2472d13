//! Fake quantization for quantization-aware training: a weight's forward value is exactly what
//! the export will store (ggml's blocks, or our grouped int4, quantized and dequantized), its
//! gradient passes straight through (the straight-through estimator), so the student learns
//! around the rounding that llama.cpp (or our int4 file) will apply.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ggml::{self, QK};
use crate::error::{Error, Result};
use crate::model::Decoder;
use crate::model::decoder::Mixer;

/// A weight quantizer: one of ggml's block formats (`q8_0`, `q4_0`: what the GGUF export
/// writes) or grouped symmetric int4 with `N` values per scale (`int4-g<N>`: what the int4
/// export writes; [`super::int4`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scheme {
    Q8_0,
    Q4_0,
    Int4 { group: usize },
}

impl Scheme {
    /// Values per scale: the run along each row that must tile the row.
    pub fn block(self) -> usize {
        match self {
            Scheme::Q8_0 | Scheme::Q4_0 => QK,
            Scheme::Int4 { group } => group,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Scheme::Q8_0 => 8,
            _ => 4,
        }
    }

    pub const NAMES: &str = "q8_0, q4_0 or int4-g<N> (N an even group size, e.g. int4-g128)";
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scheme::Q8_0 => write!(f, "q8_0"),
            Scheme::Q4_0 => write!(f, "q4_0"),
            Scheme::Int4 { group } => write!(f, "int4-g{group}"),
        }
    }
}

impl std::str::FromStr for Scheme {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let group = s.strip_prefix("int4-g").map(|n| n.parse::<usize>());
        match (s, group) {
            ("q8_0", _) => Ok(Scheme::Q8_0),
            ("q4_0", _) => Ok(Scheme::Q4_0),
            (_, Some(Ok(group))) if group >= 2 && group.is_multiple_of(2) => Ok(Scheme::Int4 { group }),
            _ => Err(format!("expected {}, got {s:?}", Scheme::NAMES)),
        }
    }
}

impl TryFrom<String> for Scheme {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<Scheme> for String {
    fn from(s: Scheme) -> String {
        s.to_string()
    }
}

/// `values` (whole blocks of `scheme.block()`, each a run along one row) after quantizing and
/// dequantizing.
pub fn round_trip(values: &[f32], scheme: Scheme) -> Vec<f32> {
    if let Scheme::Int4 { group } = scheme {
        return super::int4::round_trip(values, group);
    }
    values
        .chunks_exact(QK)
        .flat_map(|b| {
            let b: &[f32; QK] = b.try_into().expect("whole blocks");
            match scheme {
                Scheme::Q8_0 => ggml::dequantize_q8_0(&ggml::quantize_q8_0(b)),
                _ => ggml::dequantize_q4_0(&ggml::quantize_q4_0(b)),
            }
        })
        .collect()
}

/// The linear weight `w` (burn's `[d_in, d_out]`) as `scheme` stores it, with an identity
/// gradient. ggml's blocks run along `d_in` for each output (the rows of the exported `[d_out,
/// d_in]` matrix), so `d_in` must be a multiple of 32; `name` goes into the errors.
pub fn fake_quant(w: Tensor<2>, scheme: Scheme, name: &str) -> Result<Tensor<2>> {
    let fq = quantized(w.clone().detach(), scheme, name)?;
    // `w.detach() - w` is +0 forward and minus the identity backward; subtracting it keeps
    // every value, -0 included (`fq + 0` would turn a -0 into +0), and passes the gradient.
    Ok(fq - (w.clone().detach() - w))
}

/// `[qat]`: quantization-aware training against one of ggml's block formats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QatSection {
    pub enabled: bool,
    /// The quantizer the student will be exported with: `q8_0` / `q4_0` (GGUF) or
    /// `int4-g<N>` (the int4 export).
    pub scheme: Scheme,
    /// Optional: 8 or 4, checked against the scheme.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    /// Train in full precision until this step, then against the quantizer.
    pub start_step: usize,
    /// Quantize the embedding table too (in training, PTQ and the GGUF export): a quarter of
    /// a small student's bytes at f32, but the rows every token starts from.
    pub embeddings: bool,
    /// Quantize a separate (untied) LM head too.
    pub lm_head: bool,
    /// `false`, or `"int8-dynamic"`: the block linears' inputs fake-quantized to int8 with a
    /// scale per token, for runtimes that compute in int8 (W4A8 / W8A8).
    pub activations: Activations,
}

/// `[qat] activations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    #[default]
    Off,
    Int8Dynamic,
}

impl Serialize for Activations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Activations::Off => s.serialize_bool(false),
            Activations::Int8Dynamic => s.serialize_str("int8-dynamic"),
        }
    }
}

impl<'de> Deserialize<'de> for Activations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Activations;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("false or \"int8-dynamic\"")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> std::result::Result<Activations, E> {
                match b {
                    false => Ok(Activations::Off),
                    true => Err(E::invalid_value(serde::de::Unexpected::Bool(true), &self)),
                }
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Activations, E> {
                match s {
                    "int8-dynamic" => Ok(Activations::Int8Dynamic),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for QatSection {
    fn default() -> Self {
        QatSection {
            enabled: false,
            scheme: Scheme::Q4_0,
            bits: None,
            start_step: 0,
            embeddings: false,
            lm_head: false,
            activations: Activations::Off,
        }
    }
}

impl QatSection {
    /// What the quantized student holds, whether or not training sees it.
    pub fn plan(&self) -> Plan {
        Plan {
            scheme: self.scheme,
            embeddings: self.embeddings,
            lm_head: self.lm_head,
            activations: self.activations == Activations::Int8Dynamic,
        }
    }
}

/// Which weights a quantized student stores in `scheme`: always the block linears (attention
/// or Mamba-2 projections, SwiGLU); the embedding table and a separate LM head when asked.
/// Norms and biases stay as they are. `activations`: the block linears' inputs are int8 per
/// token too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub scheme: Scheme,
    pub embeddings: bool,
    pub lm_head: bool,
    pub activations: bool,
}

impl Plan {
    /// The block linears only.
    pub const fn linears(scheme: Scheme) -> Plan {
        Plan { scheme, embeddings: false, lm_head: false, activations: false }
    }

    /// Whether the embedding table is quantized (see [`embedding_quantized`]).
    pub fn quantizes_embedding(&self, tied: bool) -> bool {
        embedding_quantized(self.embeddings, self.lm_head, tied)
    }
}

/// Whether the embedding table is quantized: when asked (`embeddings`), or when it is also the
/// (tied) LM head and the head is asked for. One rule for QAT, PTQ and every export.
pub fn embedding_quantized(embeddings: bool, lm_head: bool, tied: bool) -> bool {
    embeddings || (tied && lm_head)
}

/// The model the QAT forward runs: each weight of the plan replaced by its [`fake_quant`]
/// (same parameter ids; the gradients reach the original weights straight through). The value
/// is [`round_trip_model`]'s.
pub fn qat_view(model: &Decoder, plan: &Plan) -> Result<Decoder> {
    with_planned(model, plan, false, |w, name| fake_quant(w, plan.scheme, name))
}

/// Post-training quantization: the model whose planned weights hold their round trip.
pub fn round_trip_model(model: &Decoder, plan: &Plan) -> Result<Decoder> {
    with_planned(model, plan, true, |w, name| quantized(w.detach(), plan.scheme, name))
}

/// A copy of `model` with `f` applied to each weight the plan quantizes (as a burn `[d_in,
/// d_out]` linear weight: blocks run along `d_in`), named for errors. `fresh`: the results
/// become new parameters (a model of its own) rather than views of the originals.
fn with_planned(
    model: &Decoder,
    plan: &Plan,
    fresh: bool,
    mut f: impl FnMut(Tensor<2>, &str) -> Result<Tensor<2>>,
) -> Result<Decoder> {
    let mut m = model.clone();
    let put = |p: &mut Param<Tensor<2>>, w: Tensor<2>| {
        *p = if fresh { Param::from_tensor(w) } else { p.clone().map(|_| w) };
    };
    let mut linear = |l: &mut Linear, name: &str| -> Result<()> {
        let w = f(l.weight.val(), name)?;
        put(&mut l.weight, w);
        Ok(())
    };
    for (i, b) in m.blocks.iter_mut().enumerate() {
        for (j, l) in b.linears_mut().into_iter().enumerate() {
            linear(l, &format!("layer {i}, linear {j}"))?;
        }
        b.swiglus_mut().into_iter().for_each(|m| m.act_quant = plan.activations);
        match &mut b.mixer {
            Mixer::Attention(a) => a.act_quant = plan.activations,
            Mixer::Mamba(mb) => mb.act_quant = plan.activations,
        }
    }
    if let (true, Some(h)) = (plan.lm_head, m.lm_head.as_mut()) {
        linear(h, "lm_head")?;
    }
    if plan.quantizes_embedding(m.lm_head.is_none()) {
        // The table is `[vocab, d_model]`: each token's row is quantized along d_model, as
        // the transpose of a linear weight.
        let w = f(m.embed.weight.val().transpose(), "embedding")?.transpose();
        put(&mut m.embed.weight, w);
    }
    Ok(m)
}

/// The value of [`fake_quant`] without its gradient.
fn quantized(w: Tensor<2>, scheme: Scheme, name: &str) -> Result<Tensor<2>> {
    let [d_in, d_out] = w.dims();
    if !d_in.is_multiple_of(scheme.block()) {
        return Err(Error::input(format!(
            "{name}: {scheme} quantizes blocks of {} inputs, but the weight has {d_in} inputs per output",
            scheme.block()
        )));
    }
    let rows: Vec<f32> = w.clone().transpose().into_data().convert::<f32>().iter::<f32>().collect();
    super::check_finite(&rows, d_in, name)?;
    let q = TensorData::new(round_trip(&rows, scheme), [d_out, d_in]).convert_dtype(w.dtype());
    Ok(Tensor::<2>::from_data(q, &w.device()).transpose())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// The gguf package's blocks (the ggml fixture) laid out as the columns of a `[32, n]`
    /// burn weight: the forward value of each column is the package's dequantized block, bit
    /// for bit (so the layout, not only the quantizer, is ggml's), and the gradient is the
    /// upstream one unchanged.
    #[test]
    fn forward_is_the_reference_blocks_and_gradient_passes_through() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml/blocks.bin")).unwrap();
        let n = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let f32s = |at: usize| -> Vec<f32> {
            bytes[at..at + 4 * QK * n].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        };
        let x = f32s(4);
        let after_blocks = 4 + 4 * QK * n + 34 * n + 18 * n;
        let (d8, d4) = (f32s(after_blocks), f32s(after_blocks + 4 * QK * n));
        // Weight [32, n]: column j is block j, i.e. the transpose of the blocks' [n, 32].
        let column_major = |v: &[f32]| -> Vec<f32> { (0..QK * n).map(|i| v[(i % n) * QK + i / n]).collect() };
        let dev = Device::flex().autodiff();
        for (scheme, want) in [(Scheme::Q8_0, &d8), (Scheme::Q4_0, &d4)] {
            let w = Tensor::<2>::from_data(TensorData::new(column_major(&x), [QK, n]), &dev).require_grad();
            let fq = fake_quant(w.clone(), scheme, "w").unwrap();
            let got: Vec<u32> = fq.clone().into_data().iter::<f32>().map(f32::to_bits).collect();
            let want: Vec<u32> = column_major(want).iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{scheme:?}");
            let up: Vec<f32> = (0..QK * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let g = (fq * Tensor::<2>::from_data(TensorData::new(up.clone(), [QK, n]), &dev)).sum().backward();
            let dw: Vec<f32> = w.grad(&g).unwrap().into_data().iter::<f32>().collect();
            assert_eq!(dw, up, "{scheme:?}: straight-through gradient");
        }
    }

    /// PTQ replaces every block linear by the ggml round trip of its `[out, in]` rows and
    /// leaves the embedding alone.
    #[test]
    fn round_trip_model_quantizes_each_block_linear_along_its_inputs() {
        use crate::model::{DecoderConfig, ModelShape};
        use crate::quant::int8::linear_out_in;
        let c = DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(64, 2, 4, 2, 96) };
        let model = c.init(3, &Device::flex());
        for scheme in [Scheme::Q8_0, Scheme::Q4_0, Scheme::Int4 { group: 16 }] {
            let mut q = round_trip_model(&model, &Plan::linears(scheme)).unwrap();
            let mut orig = model.clone();
            for (bq, bo) in q.blocks.iter_mut().zip(orig.blocks.iter_mut()) {
                for (lq, lo) in bq.linears_mut().into_iter().zip(bo.linears_mut()) {
                    let ((wq, ..), (wo, dout, din)) = (linear_out_in(lq), linear_out_in(lo));
                    let want: Vec<f32> = wo
                        .chunks(scheme.block())
                        .flat_map(|b| match scheme {
                            Scheme::Q8_0 => ggml::dequantize_q8_0(&ggml::quantize_q8_0(b.try_into().unwrap())).to_vec(),
                            Scheme::Q4_0 => ggml::dequantize_q4_0(&ggml::quantize_q4_0(b.try_into().unwrap())).to_vec(),
                            // Rows of 16: scale from the row's largest magnitude / 7.
                            Scheme::Int4 { .. } => {
                                let d = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 7.0;
                                b.iter().map(|v| (v / d).round() * d).collect()
                            }
                        })
                        .collect();
                    assert_eq!(wq, want, "{scheme:?} {dout}x{din}");
                    assert_ne!(wq, wo, "{scheme:?}: the weights changed");
                }
            }
            let emb = |m: &Decoder| m.embed.weight.val().into_data().iter::<f32>().collect::<Vec<_>>();
            assert_eq!(emb(&q), emb(&model));
        }
    }

    /// The QAT forward is the PTQ model's forward bit for bit, and the gradient that reaches
    /// each original weight is the one the round-tripped weight gets (straight through).
    #[test]
    fn qat_forward_is_the_quantized_models_and_its_gradient_passes_through() {
        use crate::model::{DecoderConfig, ModelShape};
        use burn::optim::GradientsParams;
        let c = DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(64, 2, 4, 2, 96) };
        let ad = Device::flex().autodiff();
        let model = c.init(5, &ad);
        let tokens = Tensor::<2, burn::tensor::Int>::from_data([[1, 7, 3, 9, 2, 5], [4, 4, 8, 0, 1, 3]], &ad);
        let probe = |y: Tensor<3>| (y.clone() * y.clone().sin()).sum();
        let bits = |y: &Tensor<3>| y.clone().into_data().iter::<f32>().map(f32::to_bits).collect::<Vec<_>>();
        // With the (tied) embedding table quantized too: the forward still agrees, and the
        // table is not the original any more.
        for scheme in [Scheme::Q8_0, Scheme::Q4_0, Scheme::Int4 { group: 32 }] {
            let all = Plan { scheme, embeddings: true, lm_head: true, activations: false };
            let (view, ptq) = (qat_view(&model, &all).unwrap(), round_trip_model(&model, &all).unwrap());
            assert_eq!(bits(&view.forward(tokens.clone())), bits(&ptq.forward(tokens.clone())), "{scheme:?}");
            assert_ne!(
                bits(&ptq.forward(tokens.clone())),
                bits(&round_trip_model(&model, &Plan::linears(scheme)).unwrap().forward(tokens.clone()))
            );
        }
        for scheme in [Scheme::Q8_0, Scheme::Q4_0, Scheme::Int4 { group: 32 }] {
            let view = qat_view(&model, &Plan::linears(scheme)).unwrap();
            let ptq = round_trip_model(&model, &Plan::linears(scheme)).unwrap();
            let (yv, yp) = (view.forward(tokens.clone()), ptq.forward(tokens.clone()));
            assert_eq!(bits(&yv), bits(&yp), "{scheme:?}: forward");
            let gv = GradientsParams::from_grads(probe(yv).backward(), &model);
            let gp = GradientsParams::from_grads(probe(ptq.forward(tokens.clone())).backward(), &ptq);
            let mut orig = model.clone();
            let mut quant = ptq.clone();
            for (bo, bq) in orig.blocks.iter_mut().zip(quant.blocks.iter_mut()) {
                for (lo, lq) in bo.linears_mut().into_iter().zip(bq.linears_mut()) {
                    let a = gv.get::<2>(lo.weight.id).expect("a gradient for the original weight");
                    let b = gp.get::<2>(lq.weight.id).expect("a gradient for the quantized weight");
                    let (a, b): (Vec<f32>, Vec<f32>) = (a.into_data().iter().collect(), b.into_data().iter().collect());
                    assert_eq!(a, b, "{scheme:?}: straight-through gradient");
                }
            }
        }
    }

    /// `[qat]` as a recipe spells it: scheme names, `bits` checked elsewhere, `activations`
    /// false or "int8-dynamic" and nothing else.
    #[test]
    fn qat_section_parses_as_documented() {
        let q: QatSection =
            toml::from_str("enabled = true\nscheme = \"int4-g64\"\nactivations = \"int8-dynamic\"").unwrap();
        assert_eq!((q.scheme, q.activations), (Scheme::Int4 { group: 64 }, Activations::Int8Dynamic));
        assert!(q.plan().activations);
        let q: QatSection = toml::from_str("activations = false").unwrap();
        assert_eq!(q.activations, Activations::Off);
        for bad in ["activations = true", "activations = \"int4\"", "scheme = \"int4-g\""] {
            let e = toml::from_str::<QatSection>(bad).unwrap_err().to_string();
            assert!(e.contains("int8-dynamic") || e.contains("int4-g<N>"), "{bad}: {e}");
        }
        // Serialized back as written (the resolved recipe).
        let q = QatSection { activations: Activations::Int8Dynamic, ..Default::default() };
        let text = toml::to_string(&q).unwrap();
        assert!(text.contains("activations = \"int8-dynamic\"") && text.contains("scheme = \"q4_0\""), "{text}");
        assert_eq!(toml::from_str::<QatSection>(&text).unwrap(), q);
    }

    /// With `activations`, the QAT view quantizes the block linears' inputs as the PTQ model
    /// does (same forward bits), and differently from the weights-only plan.
    #[test]
    fn activation_fake_quant_reaches_every_block() {
        use crate::model::{DecoderConfig, ModelShape};
        let mut c = DecoderConfig { vocab_size: 40, shape: ModelShape::for_tests(64, 2, 4, 2, 96) };
        c.shape.layer_pattern = "AM".into();
        let dev = Device::flex();
        let model = c.init(5, &dev);
        let tokens = Tensor::<2, burn::tensor::Int>::from_data([[1, 7, 3, 9, 2, 5]], &dev);
        let bits =
            |m: &Decoder| m.forward(tokens.clone()).into_data().iter::<f32>().map(f32::to_bits).collect::<Vec<_>>();
        let w8a8 = Plan { activations: true, ..Plan::linears(Scheme::Q8_0) };
        let view = qat_view(&model, &w8a8).unwrap();
        assert_eq!(bits(&view), bits(&round_trip_model(&model, &w8a8).unwrap()));
        assert_ne!(bits(&view), bits(&round_trip_model(&model, &Plan::linears(Scheme::Q8_0)).unwrap()));
        for b in &view.blocks {
            let mixer = match &b.mixer {
                Mixer::Attention(a) => a.act_quant,
                Mixer::Mamba(m) => m.act_quant,
            };
            assert!(b.mlp.as_ref().unwrap().act_quant && mixer);
        }
    }

    #[test]
    fn shapes_and_values_it_cannot_quantize_are_named() {
        let dev = Device::flex();
        let e = fake_quant(Tensor::<2>::zeros([48, 4], &dev), Scheme::Q4_0, "layers.0.mlp.w_up").unwrap_err();
        assert!(e.to_string().contains("layers.0.mlp.w_up") && e.to_string().contains("48 inputs"), "{e}");
        let w = Tensor::<2>::zeros([32, 2], &dev).slice_assign([5..6, 1..2], Tensor::full([1, 1], f32::NAN, &dev));
        let e = fake_quant(w, Scheme::Q8_0, "wq").unwrap_err();
        assert!(e.to_string().contains("wq") && e.to_string().contains("output 1, input 5"), "{e}");
    }
}
