//! The plan (which units to keep) and the student built from the teacher's sliced tensors.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::importance::refuse_mamba;
use super::{DepthMethod, Importance, PrunePlan, WidthMethod, top_k};
use crate::error::{Error, Result};
use crate::model::config::ModelShape;
use crate::model::init::WeightSource;
use crate::model::{Decoder, DecoderConfig};
use crate::quant::int8::linear_out_in;

/// The student of shape `target` cut from `model`: the layers `depth` picks, then in each kept
/// layer the top FFN channels, the top KV groups and their top query heads, and the top
/// d_model channels, by `imp` (from [`super::importance`] on this model). Only sizes may
/// shrink; head_dim and every other field of the shape must be the teacher's. The student is
/// loaded in the teacher's dtype, on its device.
pub fn prune(
    model: &Decoder,
    imp: &Importance,
    target: &ModelShape,
    depth: DepthMethod,
) -> Result<(Decoder, PrunePlan)> {
    refuse_mamba(model)?;
    let teacher = &model.config.shape;
    check_target(teacher, target)?;
    check_importance(imp, teacher)?;
    let layers = match depth {
        DepthMethod::BlockInfluence => top_k(&imp.block_influence, target.n_layers),
        DepthMethod::Last => (0..target.n_layers).collect(),
    };
    // Kept layers keep their attention: a window that starts at a layer index would move.
    for (i, &l) in layers.iter().enumerate() {
        if teacher.window_of(l) != target.window_of(i) {
            return Err(Error::input(format!(
                "pruning: key `window_from_layer` = {}: teacher layer {l} (window {:?}) would become layer {i} \
                 (window {:?}); keep the layers below window_from_layer",
                teacher.window_from_layer,
                teacher.window_of(l),
                target.window_of(i)
            )));
        }
    }
    let rep = target.n_heads / target.n_kv_heads;
    let teacher_rep = teacher.n_heads / teacher.n_kv_heads;
    let (mut kv_groups, mut heads) = (Vec::new(), Vec::new());
    for &l in &layers {
        let h = &imp.heads[l];
        let group_score: Vec<f64> =
            (0..teacher.n_kv_heads).map(|g| h[g * teacher_rep..(g + 1) * teacher_rep].iter().sum()).collect();
        let groups = top_k(&group_score, target.n_kv_heads);
        // Ascending groups, each with its ascending heads: the student's query head j reads KV
        // head j / rep, as the teacher's did.
        let kept: Vec<usize> = groups
            .iter()
            .flat_map(|&g| {
                top_k(&h[g * teacher_rep..(g + 1) * teacher_rep], rep).into_iter().map(move |j| g * teacher_rep + j)
            })
            .collect();
        kv_groups.push(groups);
        heads.push(kept);
    }
    let plan = PrunePlan {
        depth,
        width: WidthMethod::Activation,
        shape: target.clone(),
        ffn: layers.iter().map(|&l| top_k(&imp.ffn[l], target.d_ff)).collect(),
        layers,
        kv_groups,
        heads,
        embed: top_k(&imp.embed, target.d_model),
    };
    let config = DecoderConfig { vocab_size: model.config.vocab_size, shape: target.clone() };
    let source = sliced(model, &plan);
    let weight = model.embed.weight.val();
    let student = config.load(&source, &weight.device(), weight.dtype())?;
    Ok((student, plan))
}

/// Only widths and depth may change, never into something the teacher does not have.
fn check_target(teacher: &ModelShape, target: &ModelShape) -> Result<()> {
    target.check().map_err(|(key, msg)| Error::input(format!("pruning target: key `{key}`: {msg}")))?;
    for (key, t, s) in [
        ("n_layers", target.n_layers, teacher.n_layers),
        ("d_model", target.d_model, teacher.d_model),
        ("d_ff", target.d_ff, teacher.d_ff),
        ("n_heads", target.n_heads, teacher.n_heads),
        ("n_kv_heads", target.n_kv_heads, teacher.n_kv_heads),
    ] {
        if t > s {
            return Err(Error::input(format!(
                "pruning target: key `{key}` = {t} exceeds the teacher's {s}: pruning only removes units"
            )));
        }
    }
    let (hd, teacher_hd) = (target.d_model / target.n_heads, teacher.d_model / teacher.n_heads);
    if hd != teacher_hd {
        return Err(Error::input(format!(
            "pruning target: key `n_heads`: head_dim = d_model / n_heads = {} / {} = {hd}, but the teacher's is {} / {} \
             = {teacher_hd}; heads are kept whole (RoPE rotates within a head), so head_dim must stay",
            target.d_model, target.n_heads, teacher.d_model, teacher.n_heads
        )));
    }
    // Destructured without `..`: a new shape field must be sorted into "may shrink", "must
    // match" or "free" here before this compiles.
    let ModelShape {
        d_model: _,
        n_layers: _,
        n_heads: _,
        n_kv_heads: _,
        d_ff: _,
        // Neither changes the weights or the function: how far the student is trained and
        // how its attention is computed are the target's to choose.
        max_seq_len: _,
        attention_impl: _,
        // The dense pruned student is upcycled into the target's experts afterwards.
        moe: _,
        rope_theta,
        tie_embeddings,
        norm_eps,
        layer_pattern,
        window,
        qkv_bias,
        o_bias,
        window_from_layer,
        rope_scaling,
        mamba,
        linformer,
        performer,
    } = target;
    let t = teacher;
    differ("rope_theta", rope_theta, &t.rope_theta)?;
    differ("tie_embeddings", tie_embeddings, &t.tie_embeddings)?;
    differ("norm_eps", norm_eps, &t.norm_eps)?;
    differ("layer_pattern", layer_pattern, &t.layer_pattern)?;
    differ("window", window, &t.window)?;
    differ("qkv_bias", qkv_bias, &t.qkv_bias)?;
    differ("o_bias", o_bias, &t.o_bias)?;
    differ("window_from_layer", window_from_layer, &t.window_from_layer)?;
    differ("rope_scaling", rope_scaling, &t.rope_scaling)?;
    differ("mamba", mamba, &t.mamba)?;
    differ("linformer", linformer, &t.linformer)?;
    differ("performer", performer, &t.performer)
}

fn differ<T: PartialEq + std::fmt::Debug>(key: &str, target: &T, teacher: &T) -> Result<()> {
    if target == teacher {
        return Ok(());
    }
    Err(Error::input(format!(
        "pruning target: key `{key}` = {target:?}, but the teacher's is {teacher:?}: pruning changes only sizes, \
         so it must be equal"
    )))
}

/// The importance must describe this teacher: one score per unit, all finite.
fn check_importance(imp: &Importance, s: &ModelShape) -> Result<()> {
    let mut lists: Vec<(String, &[f64], usize)> =
        vec![("block_influence".into(), &imp.block_influence, s.n_layers), ("embed".into(), &imp.embed, s.d_model)];
    for (key, per_layer, width) in [("ffn", &imp.ffn, s.d_ff), ("heads", &imp.heads, s.n_heads)] {
        if per_layer.len() != s.n_layers {
            return Err(Error::input(format!(
                "pruning: importance key `{key}` has {} layers, but the teacher has {}: scores of another model?",
                per_layer.len(),
                s.n_layers
            )));
        }
        lists.extend(per_layer.iter().enumerate().map(|(i, v)| (format!("{key}[{i}]"), &v[..], width)));
    }
    for (key, v, want) in lists {
        if v.len() != want {
            return Err(Error::input(format!(
                "pruning: importance key `{key}` has {} entries, but the teacher has {want}: scores of another model?",
                v.len()
            )));
        }
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "pruning: importance key `{key}` holds a non-finite score ({}) at index {j}: it cannot rank",
                v[j]
            )));
        }
    }
    Ok(())
}

/// Named tensors in memory: what the student is loaded from. Remembers the names asked for, so
/// that a tensor it holds but the student never reads is an error (as for checkpoints).
struct Sliced {
    tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    asked: RefCell<BTreeSet<String>>,
}

impl WeightSource for Sliced {
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.asked.borrow_mut().insert(name.to_string());
        self.get(name).map(|t| t.1)
    }

    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.tensors.get(name).cloned().ok_or_else(|| Error::runtime(format!("pruning: no sliced tensor `{name}`")))
    }

    fn check_all_used(&self) -> Result<()> {
        let asked = self.asked.borrow();
        match self.tensors.keys().find(|k| !asked.contains(*k)) {
            Some(k) => Err(Error::runtime(format!("pruning: sliced tensor `{k}` is not part of the student"))),
            None => Ok(()),
        }
    }
}

/// `m` (row-major, `cols` wide) restricted to `rows` x `cols_kept`.
fn pick(m: &[f32], cols: usize, rows: &[usize], cols_kept: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let data = rows.iter().flat_map(|&r| cols_kept.iter().map(move |&c| m[r * cols + c])).collect();
    (data, vec![rows.len(), cols_kept.len()])
}

fn pick_vec(v: &[f32], idx: &[usize]) -> (Vec<f32>, Vec<usize>) {
    (idx.iter().map(|&i| v[i]).collect(), vec![idx.len()])
}

fn host<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().iter::<f32>().collect()
}

/// Rows of whole heads: head h is rows `h * hd..(h + 1) * hd` of q (and of k/v for KV heads).
fn head_rows(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()
}

/// The teacher's tensors that `plan` keeps, under the student's Hugging Face names.
fn sliced(model: &Decoder, plan: &PrunePlan) -> Sliced {
    let hd = model.config.head_dim();
    let emb = &plan.embed;
    let mut out = BTreeMap::new();
    let e = model.embed.weight.val();
    let d = e.dims()[1];
    let all_vocab: Vec<usize> = (0..model.config.vocab_size).collect();
    out.insert("model.embed_tokens.weight".to_string(), pick(&host(e), d, &all_vocab, emb));
    for (i, &l) in plan.layers.iter().enumerate() {
        let b = &model.blocks[l];
        let p = format!("model.layers.{i}");
        out.insert(format!("{p}.input_layernorm.weight"), pick_vec(&host(b.mixer_norm.gamma.val()), emb));
        out.insert(format!("{p}.post_attention_layernorm.weight"), pick_vec(&host(b.mlp_norm.gamma.val()), emb));
        let (q, kv) = (head_rows(&plan.heads[i], hd), head_rows(&plan.kv_groups[i], hd));
        let ffn = &plan.ffn[i];
        // Export's names and order, so the student reads what a saved teacher would hold.
        for (name, lin) in b.linears() {
            // (output channels kept, input channels kept), in the Hugging Face [out, in] layout.
            let (rows, cols): (&[usize], &[usize]) = match name.as_str() {
                "self_attn.q_proj" => (&q, emb),
                "self_attn.k_proj" | "self_attn.v_proj" => (&kv, emb),
                "self_attn.o_proj" => (emb, &q),
                "mlp.gate_proj" | "mlp.up_proj" => (ffn, emb),
                "mlp.down_proj" => (emb, ffn),
                _ => unreachable!("Mamba-2 layers are refused before slicing"),
            };
            let (w, _, c) = linear_out_in(lin);
            out.insert(format!("{p}.{name}.weight"), pick(&w, c, rows, cols));
            if let Some(bias) = &lin.bias {
                out.insert(format!("{p}.{name}.bias"), pick_vec(&host(bias.val()), rows));
            }
        }
    }
    out.insert("model.norm.weight".to_string(), pick_vec(&host(model.norm.gamma.val()), emb));
    if let Some(head) = &model.lm_head {
        let (w, _, c) = linear_out_in(head);
        out.insert("lm_head.weight".to_string(), pick(&w, c, &all_vocab, emb));
    }
    Sliced { tensors: out, asked: RefCell::new(BTreeSet::new()) }
}
