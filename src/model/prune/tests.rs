use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::importance::Sums;
use super::*;
use crate::error::Error;
use crate::model::DecoderConfig;
use crate::model::decoder::{Decoder, Mixer};
use crate::model::norm::rms_norm;
use crate::quant::int8::linear_out_in;

/// `b` sequences of `t` pseudo-random token ids below `vocab`.
fn ids(b: usize, t: usize, vocab: usize, seed: u64) -> (Tensor<2, Int>, Vec<Vec<usize>>) {
    let mut rng = crate::rng::SplitMix(seed);
    let seqs: Vec<Vec<usize>> =
        (0..b).map(|_| (0..t).map(|_| (rng.next_u64() % vocab as u64) as usize).collect()).collect();
    let flat = seqs.iter().flatten().map(|&i| i as i64).collect();
    (Tensor::from_data(TensorData::new(flat, [b, t]), &Device::flex()), seqs)
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().iter::<f32>().collect()
}

fn attn(m: &mut Decoder, l: usize) -> &mut crate::model::attention::Attention {
    match &mut m.blocks[l].mixer {
        Mixer::Attention(a) => a,
        Mixer::Mamba(_) => panic!("attention only"),
    }
}

/// Rewrite a linear layer's weight entry by entry, indexed (out, in) as Hugging Face stores it.
fn edit(l: &mut Linear, f: impl Fn(usize, usize, f32) -> f32) {
    let (mut w, rows, cols) = linear_out_in(l);
    for r in 0..rows {
        for c in 0..cols {
            w[r * cols + c] = f(r, c, w[r * cols + c]);
        }
    }
    let t = Tensor::<2>::from_data(TensorData::new(w, [rows, cols]), &Device::flex());
    l.weight = Param::from_tensor(t.transpose());
}

fn edit_vec(p: &mut Param<Tensor<1>>, f: impl Fn(usize, f32) -> f32) {
    let v: Vec<f32> = vals(p.val()).into_iter().enumerate().map(|(i, x)| f(i, x)).collect();
    let n = v.len();
    *p = Param::from_tensor(Tensor::from_data(TensorData::new(v, [n]), &Device::flex()));
}

fn zero_gamma(n: &mut RmsNorm, channels: &[usize]) {
    edit_vec(&mut n.gamma, |i, x| if channels.contains(&i) { 0.0 } else { x });
}

/// The `k` best indices by a selection loop (not a sort): repeatedly the highest remaining
/// score, the lower index on ties; returned ascending.
fn rank(scores: &[f64], k: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..scores.len()).collect();
    let mut kept = Vec::new();
    for _ in 0..k {
        let best = (0..left.len()).fold(0, |b, i| if scores[left[i]] > scores[left[b]] { i } else { b });
        kept.push(left.remove(best));
    }
    kept.sort();
    kept
}

fn head_rows(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| (0..hd).map(move |c| h * hd + c)).collect()
}

/// A matrix as `(row-major values, rows, cols)`.
type Mat = (Vec<f32>, usize, usize);

/// `student` [rows, cols] equals `teacher` at (rows[i], cols[j]) for every (i, j), to the bit.
fn assert_slice(what: &str, student: Mat, teacher: Mat, rows: &[usize], cols: &[usize]) {
    let ((s, sr, sc), (t, _, tc)) = (student, teacher);
    assert_eq!((sr, sc), (rows.len(), cols.len()), "{what}: shape");
    for (i, &r) in rows.iter().enumerate() {
        for (j, &c) in cols.iter().enumerate() {
            assert_eq!(s[i * sc + j].to_bits(), t[r * tc + c].to_bits(), "{what}: ({i}, {j}) <- ({r}, {c})");
        }
    }
}

fn as_row(v: Vec<f32>) -> Mat {
    let n = v.len();
    (v, 1, n)
}

fn config(d: usize, layers: usize, heads: usize, kv: usize, ff: usize, tie: bool, bias: bool) -> DecoderConfig {
    let mut shape = ModelShape::for_tests(d, layers, heads, kv, ff);
    (shape.tie_embeddings, shape.qkv_bias, shape.o_bias) = (tie, bias, bias);
    DecoderConfig { vocab_size: 30, shape }
}

/// Pruning to the teacher's own shape keeps every index in order, and the student computes
/// the teacher's logits to the bit (tied or not, with biases or not, either depth method).
#[test]
fn nothing_pruned_is_the_teacher_to_the_bit() {
    for (tie, bias) in [(false, false), (true, true)] {
        let c = config(16, 3, 4, 2, 24, tie, bias);
        let m = c.init(3, &Device::flex());
        let (x, _) = ids(2, 9, 30, 1);
        let imp = importance(&m, std::slice::from_ref(&x)).unwrap();
        for depth in [DepthMethod::BlockInfluence, DepthMethod::Last] {
            let (s, plan) = prune(&m, &imp, &c.shape, depth).unwrap();
            assert_eq!(plan.layers, [0, 1, 2]);
            assert_eq!(plan.embed, (0..16).collect::<Vec<_>>());
            assert!(plan.ffn.iter().all(|f| *f == (0..24).collect::<Vec<_>>()));
            assert!(plan.heads.iter().all(|h| *h == [0, 1, 2, 3]) && plan.kv_groups.iter().all(|g| *g == [0, 1]));
            let bits = |d: &Decoder| vals(d.forward(x.clone())).into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(&m), bits(&s));
        }
    }
}

/// The instrumented pass runs the model's own computation: its final residual stream, through
/// the final norm, is the model's last hidden state to the bit.
#[test]
fn calibration_pass_is_the_models_forward() {
    let m = config(16, 2, 4, 2, 24, false, true).init(5, &Device::flex());
    let (x, _) = ids(2, 7, 30, 2);
    let last = Sums::new(&m).add(&m, x.clone());
    assert_eq!(vals(rms_norm(&m.norm, last)), vals(m.forward_hidden(x)));
}

/// Every statistic against plain f64 loops over the weights, over two batches of different
/// shapes (means over all 19 tokens, not per batch).
#[test]
fn importance_matches_a_naive_reference() {
    let m = config(16, 3, 4, 2, 24, false, true).init(8, &Device::flex());
    let ((a, sa), (b, sb)) = (ids(2, 7, 30, 3), ids(1, 5, 30, 4));
    let got = importance(&m, &[a.clone(), b]).unwrap();
    let (want, finals) = naive::importance(&m, &[sa, sb].concat());
    assert_eq!(got.tokens, 19);
    let close = |what: &str, g: &[f64], w: &[f64]| {
        assert_eq!(g.len(), w.len(), "{what}");
        for (i, (g, w)) in g.iter().zip(w).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{what}[{i}]: got {g}, naive {w}");
        }
    };
    close("block_influence", &got.block_influence, &want.block_influence);
    close("embed", &got.embed, &want.embed);
    for l in 0..3 {
        close(&format!("ffn[{l}]"), &got.ffn[l], &want.ffn[l]);
        close(&format!("heads[{l}]"), &got.heads[l], &want.heads[l]);
    }
    // The reference itself is the model: its residual stream is the pass's.
    let last = vals(Sums::new(&m).add(&m, a));
    let naive_last: Vec<f64> = finals[..2].iter().flatten().flatten().copied().collect();
    let err = last.iter().zip(&naive_last).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(err < 1e-4, "residual stream differs by {err}");
    assert!(got.block_influence.iter().all(|b| *b > 1e-3), "random blocks all turn the stream");
}

/// A teacher with planted structure: FFN channels 1, 4, 6 of layer 0 dead (zero gate rows),
/// layer 0's KV group 1 values scaled by 3 (so the group kept is not the first one), layer 1
/// an identity (zero o_proj and down), d_model channels 3, 9, 12 zero after every
/// norm, and in layer 2 KV group 1's values zeroed and group 0's scaled by 10 (8 heads of 4
/// channels in 2 groups). The scores find exactly that, and the student is exactly the slices
/// the scores rank highest.
#[test]
fn planted_structure_is_found_and_cut() {
    let c = config(32, 3, 8, 2, 8, false, true);
    let mut m = c.init(11, &Device::flex());
    let (x, _) = ids(2, 8, 30, 5);
    edit(&mut m.blocks[0].mlp.as_mut().unwrap().w_gate, |r, _, w| if [1, 4, 6].contains(&r) { 0.0 } else { w });
    let a0 = attn(&mut m, 0);
    let triple = |r: usize, w: f32| if r >= 4 { 3.0 * w } else { w };
    edit(&mut a0.wv, |r, _, w| triple(r, w));
    edit_vec(a0.wv.bias.as_mut().unwrap(), triple);
    let a1 = attn(&mut m, 1);
    edit(&mut a1.wo, |_, _, _| 0.0);
    edit_vec(a1.wo.bias.as_mut().unwrap(), |_, _| 0.0);
    edit(&mut m.blocks[1].mlp.as_mut().unwrap().w_down, |_, _, _| 0.0);
    for b in &mut m.blocks {
        zero_gamma(&mut b.mixer_norm, &[3, 9, 12]);
        zero_gamma(&mut b.mlp_norm, &[3, 9, 12]);
    }
    let before = importance(&m, std::slice::from_ref(&x)).unwrap();
    let a2 = attn(&mut m, 2);
    let v_scale = |r: usize, w: f32| if r < 4 { w * 10.0 } else { 0.0 };
    edit(&mut a2.wv, |r, _, w| v_scale(r, w));
    edit_vec(a2.wv.bias.as_mut().unwrap(), v_scale);
    let imp = importance(&m, std::slice::from_ref(&x)).unwrap();

    assert!(imp.block_influence[1].abs() < 1e-6, "identity block: {:?}", imp.block_influence);
    assert!(imp.block_influence[0] > 1e-3 && imp.block_influence[2] > 1e-3);
    for (ch, v) in imp.ffn[0].iter().enumerate() {
        assert_eq!(*v == 0.0, [1, 4, 6].contains(&ch), "ffn[0][{ch}] = {v}");
    }
    for (ch, v) in imp.embed.iter().enumerate() {
        assert_eq!(*v == 0.0, [3, 9, 12].contains(&ch), "embed[{ch}] = {v}");
    }
    // Layer 2's heads read layer 2's input, which its own v does not change.
    let h = &imp.heads[2];
    assert_eq!(h[4..], [0.0; 4]);
    for (j, (now, was)) in h.iter().zip(&before.heads[2]).take(4).enumerate() {
        assert!((now - 10.0 * was).abs() <= 1e-5 * now, "head {j}: {now} vs {was}");
    }
    assert_eq!(imp.heads[..2], before.heads[..2]);

    let mut target = c.shape.clone();
    (target.d_model, target.n_layers, target.n_heads, target.n_kv_heads, target.d_ff) = (8, 2, 2, 1, 5);
    let (s, plan) = prune(&m, &imp, &target, DepthMethod::BlockInfluence).unwrap();
    assert_eq!(plan.layers, [0, 2]);
    assert_eq!(plan.ffn[0], [0, 2, 3, 5, 7]);
    assert_eq!(plan.ffn[1], rank(&imp.ffn[2], 5));
    assert_eq!(plan.kv_groups[1], [0]);
    assert_eq!(plan.heads[1], rank(&h[..4], 2));
    let group = |l: usize| -> Vec<f64> { (0..2).map(|g| imp.heads[l][4 * g..4 * g + 4].iter().sum()).collect() };
    assert_eq!(plan.kv_groups[0], [1]);
    assert_eq!(plan.kv_groups[0], rank(&group(0), 1));
    let g0 = plan.kv_groups[0][0];
    assert_eq!(
        plan.heads[0],
        rank(&imp.heads[0][4 * g0..4 * g0 + 4], 2).iter().map(|j| 4 * g0 + j).collect::<Vec<_>>()
    );
    assert_eq!(plan.embed, rank(&imp.embed, 8));
    assert!(plan.embed.iter().all(|c| ![3, 9, 12].contains(c)));
    assert_eq!(plan.shape, target);

    // The student's tensors are the planned slices of the teacher's.
    let e = &plan.embed;
    let vocab: Vec<usize> = (0..30).collect();
    let embed = |d: &Decoder| (vals(d.embed.weight.val()), 30, d.embed.weight.dims()[1]);
    assert_slice("embed", embed(&s), embed(&m), &vocab, e);
    assert_slice(
        "lm_head",
        linear_out_in(s.lm_head.as_ref().unwrap()),
        linear_out_in(m.lm_head.as_ref().unwrap()),
        &vocab,
        e,
    );
    assert_slice("norm", as_row(vals(s.norm.gamma.val())), as_row(vals(m.norm.gamma.val())), &[0], e);
    for (i, &l) in plan.layers.iter().enumerate() {
        let (sb, tb) = (&s.blocks[i], &m.blocks[l]);
        let (q, kv, ffn) = (head_rows(&plan.heads[i], 4), head_rows(&plan.kv_groups[i], 4), &plan.ffn[i]);
        for (norm, sn, tn) in [("in", &sb.mixer_norm, &tb.mixer_norm), ("post", &sb.mlp_norm, &tb.mlp_norm)] {
            assert_slice(norm, as_row(vals(sn.gamma.val())), as_row(vals(tn.gamma.val())), &[0], e);
        }
        for ((name, sl), (_, tl)) in sb.linears().into_iter().zip(tb.linears()) {
            let (rows, cols) = match name.as_str() {
                "self_attn.q_proj" => (&q, e),
                "self_attn.k_proj" | "self_attn.v_proj" => (&kv, e),
                "self_attn.o_proj" => (e, &q),
                "mlp.down_proj" => (e, ffn),
                _ => (ffn, e),
            };
            assert_slice(&format!("{l}.{name}"), linear_out_in(sl), linear_out_in(tl), rows, cols);
            let bias = |l: &Linear| l.bias.as_ref().map(|b| as_row(vals(b.val())));
            if let (Some(sbias), Some(tbias)) = (bias(sl), bias(tl)) {
                assert_slice(&format!("{l}.{name}.bias"), sbias, tbias, &[0], rows);
            } else {
                assert!(bias(sl).is_none() && name.starts_with("mlp"), "{name}: bias");
            }
        }
    }
    let out = vals(s.forward(x));
    assert!(out.len() == 2 * 8 * 30 && out.iter().all(|v| v.is_finite()));

    // `last` keeps the first layers, whatever the scores.
    let (_, last) = prune(&m, &imp, &target, DepthMethod::Last).unwrap();
    assert_eq!(last.layers, [0, 1]);

    let json = serde_json::to_string(&imp).unwrap();
    // serde_json's default float parsing may miss the last bit: equal to 1e-15.
    let back = serde_json::from_str::<Importance>(&json).unwrap();
    let flat = |i: &Importance| -> Vec<f64> {
        [&i.block_influence, &i.embed].into_iter().chain(&i.ffn).chain(&i.heads).flatten().copied().collect()
    };
    assert_eq!(back.tokens, imp.tokens);
    assert!(flat(&back).iter().zip(flat(&imp)).all(|(a, b)| (a - b).abs() <= 1e-15 * b.abs()));
    assert_eq!(flat(&back).len(), 3 + 32 + 3 * 8 + 3 * 8);
    let plan_json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        (plan_json["depth"].as_str(), plan_json["width"].as_str()),
        (Some("block_influence"), Some("activation"))
    );
    assert_eq!(serde_json::to_value(DepthMethod::Last).unwrap(), "last");
    let svg = std::env::temp_dir().join(format!("distill-prune-{}.svg", std::process::id()));
    plot(&imp, &plan, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("block influence"));
    std::fs::remove_file(&svg).ok();
}

fn refused(r: crate::error::Result<impl Sized>, words: &[&str]) {
    match r {
        Err(Error::Input(msg)) => assert!(words.iter().all(|w| msg.contains(w)), "{words:?} not all in: {msg}"),
        Err(e) => panic!("expected an input error, got {e}"),
        Ok(_) => panic!("expected a refusal naming {words:?}"),
    }
}

/// Only sizes shrink; everything else is refused with the key and both values.
#[test]
fn refusals_name_the_key_and_both_values() {
    let c = config(16, 2, 4, 2, 32, false, false);
    let m = c.init(1, &Device::flex());
    let (x, _) = ids(1, 6, 30, 6);
    let imp = importance(&m, std::slice::from_ref(&x)).unwrap();
    let with = |f: &dyn Fn(&mut ModelShape)| {
        let mut t = c.shape.clone();
        f(&mut t);
        prune(&m, &imp, &t, DepthMethod::BlockInfluence)
    };
    refused(with(&|t| t.n_layers = 3), &["`n_layers`", "3", "2"]);
    refused(with(&|t| t.d_ff = 33), &["`d_ff`", "33", "32"]);
    refused(with(&|t| t.n_kv_heads = 4), &["`n_kv_heads`", "4", "2"]);
    refused(with(&|t| (t.d_model, t.n_heads) = (32, 8)), &["`d_model`", "32", "16"]);
    // head_dim 16 / 2 = 8, the teacher's 16 / 4 = 4.
    refused(with(&|t| t.n_heads = 2), &["`n_heads`", "head_dim", "= 8", "= 4"]);
    refused(with(&|t| (t.n_heads, t.n_kv_heads) = (3, 2)), &["n_kv_heads"]);
    refused(with(&|t| t.rope_theta = 500_000.0), &["`rope_theta`", "500000", "10000"]);
    refused(with(&|t| t.tie_embeddings = true), &["`tie_embeddings`", "true", "false"]);
    refused(with(&|t| t.qkv_bias = true), &["`qkv_bias`"]);
    // Scores of another model.
    let mut short = imp.clone();
    short.ffn[1].pop();
    refused(prune(&m, &short, &c.shape, DepthMethod::Last), &["`ffn[1]`", "31", "32"]);
    refused(importance(&m, &[]), &["calibration"]);

    let mut hybrid = config(16, 2, 4, 2, 32, false, false);
    hybrid.shape.layer_pattern = "AM".into();
    hybrid.shape.mamba.head_dim = 8;
    let h = hybrid.init(1, &Device::flex());
    refused(importance(&h, std::slice::from_ref(&x)), &["layer 1", "Mamba"]);
    refused(prune(&h, &imp, &hybrid.shape, DepthMethod::Last), &["layer 1", "Mamba"]);
}

/// Ranking: highest scores first, the lower index on ties, kept indices ascending.
#[test]
fn top_k_breaks_ties_by_the_lower_index() {
    assert_eq!(top_k(&[1.0, 2.0, 2.0, 0.0, 2.0], 2), [1, 2]);
    assert_eq!(top_k(&[0.5, 0.0, 0.0, 0.0, 3.0], 3), [0, 1, 4]);
    assert_eq!(top_k(&[3.0, 1.0, 2.0], 3), [0, 1, 2]);
    assert_eq!(top_k(&[3.0, 1.0, 2.0], 0), Vec::<usize>::new());
}
