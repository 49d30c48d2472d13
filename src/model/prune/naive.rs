//! A reference for the tests: the decoder's forward pass and every [`Importance`] statistic
//! in plain f64 loops over the weights, sharing no code with the model or the pass.

use burn::nn::Linear;
use burn::tensor::Tensor;

use super::Importance;
use crate::model::Decoder;
use crate::model::decoder::Mixer;
use crate::quant::int8::linear_out_in;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f32>().iter::<f32>().map(f64::from).collect()
}

/// `W x + b` with W stored [out, in] row-major.
fn mat_vec(l: &Linear, x: &[f64]) -> Vec<f64> {
    let (w, rows, cols) = linear_out_in(l);
    let b = l.bias.as_ref().map(|b| host(b.val()));
    (0..rows)
        .map(|r| {
            let dot: f64 = (0..cols).map(|c| w[r * cols + c] as f64 * x[c]).sum();
            dot + b.as_ref().map_or(0.0, |b| b[r])
        })
        .collect()
}

fn rms(x: &[f64], gamma: &[f64], eps: f64) -> Vec<f64> {
    let r = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().zip(gamma).map(|(v, g)| v / r * g).collect()
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// "Rotate half" RoPE of one head vector at position `pos`.
fn rope(x: &[f64], pos: usize, freqs: &[f64]) -> Vec<f64> {
    let half = x.len() / 2;
    let mut y = x.to_vec();
    for i in 0..half {
        let (c, s) = ((pos as f64 * freqs[i]).cos(), (pos as f64 * freqs[i]).sin());
        y[i] = x[i] * c - x[i + half] * s;
        y[i + half] = x[i + half] * c + x[i] * s;
    }
    y
}

/// The statistics of [`Importance`] over `seqs` (token id sequences), and the residual
/// stream after the last block of each sequence, `[seq][pos][d_model]`.
pub(super) fn importance(m: &Decoder, seqs: &[Vec<usize>]) -> (Importance, Vec<Vec<Vec<f64>>>) {
    let s = &m.config.shape;
    let hd = m.config.head_dim();
    let freqs = crate::model::rope::inv_freqs(hd, s.rope_theta, s.rope_scaling.as_ref());
    let embed = host(m.embed.weight.val());
    let mut imp = Importance {
        block_influence: vec![0.0; s.n_layers],
        ffn: vec![vec![0.0; s.d_ff]; s.n_layers],
        heads: vec![vec![0.0; s.n_heads]; s.n_layers],
        embed: vec![0.0; s.d_model],
        tokens: 0,
    };
    let mut finals = Vec::new();
    for ids in seqs {
        let mut x: Vec<Vec<f64>> = ids.iter().map(|&id| embed[id * s.d_model..(id + 1) * s.d_model].to_vec()).collect();
        for (l, b) in m.blocks.iter().enumerate() {
            let Mixer::Attention(a) = &b.mixer else { panic!("attention only") };
            let (g1, g2) = (host(b.mixer_norm.gamma.val()), host(b.mlp_norm.gamma.val()));
            let h: Vec<Vec<f64>> = x.iter().map(|v| rms(v, &g1, s.norm_eps)).collect();
            let split = |lin: &Linear, n: usize| -> Vec<Vec<Vec<f64>>> {
                h.iter()
                    .enumerate()
                    .map(|(p, v)| {
                        let y = mat_vec(lin, v);
                        (0..n).map(|j| rope(&y[j * hd..(j + 1) * hd], p, &freqs)).collect()
                    })
                    .collect()
            };
            let (q, k) = (split(&a.wq, s.n_heads), split(&a.wk, s.n_kv_heads));
            let v: Vec<Vec<f64>> = h.iter().map(|v| mat_vec(&a.wv, v)).collect();
            let rep = s.n_heads / s.n_kv_heads;
            let mut out = Vec::new();
            for (i, xi) in x.iter().enumerate() {
                let mut ctx = vec![0.0; s.n_heads * hd];
                for j in 0..s.n_heads {
                    let g = j / rep;
                    let scores: Vec<f64> = (0..=i)
                        .map(|p| q[i][j].iter().zip(&k[p][g]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|e| (e - top).exp()).sum();
                    for (p, e) in scores.iter().enumerate() {
                        for c in 0..hd {
                            ctx[j * hd + c] += (e - top).exp() / z * v[p][g * hd + c];
                        }
                    }
                    imp.heads[l][j] += norm(&ctx[j * hd..(j + 1) * hd]);
                }
                let mid: Vec<f64> = xi.iter().zip(mat_vec(&a.wo, &ctx)).map(|(a, b)| a + b).collect();
                let h2 = rms(&mid, &g2, s.norm_eps);
                let m = b.mlp.as_ref().expect("dense FFN");
                let (gate, up) = (mat_vec(&m.w_gate, &h2), mat_vec(&m.w_up, &h2));
                let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
                let o: Vec<f64> = mid.iter().zip(mat_vec(&m.w_down, &act)).map(|(a, b)| a + b).collect();
                imp.ffn[l].iter_mut().zip(&act).for_each(|(f, a)| *f += a.abs());
                imp.embed.iter_mut().zip(h[i].iter().zip(&h2)).for_each(|(e, (a, b))| *e += a.abs() + b.abs());
                let dot: f64 = xi.iter().zip(&o).map(|(a, b)| a * b).sum();
                imp.block_influence[l] += dot / (norm(xi) * norm(&o));
                out.push(o);
            }
            x = out;
        }
        imp.tokens += ids.len();
        finals.push(x);
    }
    let n = imp.tokens as f64;
    imp.block_influence.iter_mut().for_each(|c| *c = 1.0 - *c / n);
    imp.ffn.iter_mut().chain(imp.heads.iter_mut()).flatten().chain(imp.embed.iter_mut()).for_each(|v| *v /= n);
    (imp, finals)
}
