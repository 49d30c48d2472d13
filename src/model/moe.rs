//! Sparse mixture of experts (seed 001: "the total parameter count grows while only a few
//! experts run per token"): `y = sum_{i in topk} g_i E_i(x)`, each expert a SwiGLU FFN, the
//! gates the router's softmax over the chosen `active` experts renormalized to sum to 1
//! (Mixtral, OLMoE, Qwen3-MoE). Dropless: every token reaches all its experts.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::config::MoeShape;
use super::init::Init;
use super::linear::linear;
use super::mlp::SwiGlu;

#[derive(Module, Debug)]
pub struct Moe {
    /// `[d_model, experts]` (HF `mlp.gate`).
    pub router: Linear,
    pub experts: Vec<SwiGlu>,
    pub active: usize,
}

/// What a layer's routing adds to the step: the load-balancing loss (differentiable, `[1]`)
/// and each expert's share of the assignments (host values, summing to 1).
#[derive(Debug, Clone)]
pub struct Routing {
    pub aux: Tensor<1>,
    pub load: Vec<f64>,
}

impl Moe {
    /// `prefix`: the layer's FFN name, e.g. `model.layers.0.mlp`.
    pub fn new(prefix: &str, d_model: usize, s: &MoeShape, init: &mut Init) -> Self {
        Moe {
            router: init.named_linear(&format!("{prefix}.gate"), d_model, s.experts, false),
            experts: (0..s.experts)
                .map(|e| SwiGlu::new(&format!("{prefix}.experts.{e}"), d_model, s.d_ff_expert, init))
                .collect(),
            active: s.active,
        }
    }

    /// `x`: `[b, t, d]`. The tokens are sorted by expert on the host (the router's top-k is a
    /// host decision: no gradient flows through a choice), each expert runs once on its rows,
    /// and the rows are put back in token order and weighted by their gates.
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Routing) {
        let [b, t, d] = x.dims();
        let (n, e, k) = (b * t, self.experts.len(), self.active);
        let x2 = x.reshape([n, d]);
        let logits = linear(&self.router, x2.clone());
        let logits = if logits.dtype() == DType::F32 { logits } else { logits.cast(DType::F32) };
        let probs = softmax(logits, 1);
        let host: Vec<f32> =
            probs.clone().detach().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 probabilities");
        let chosen = top_k(&host, e, k);
        let device = x2.device();
        let idx =
            Tensor::<2, Int>::from_data(TensorData::new(chosen.iter().map(|&c| c as i64).collect(), [n, k]), &device);
        let gates = probs.clone().gather(1, idx);
        let gates = gates.clone() / gates.sum_dim(1);
        // Assignment a = token * k + slot, grouped by expert.
        let mut order: Vec<usize> = (0..n * k).collect();
        order.sort_by_key(|&a| chosen[a]);
        let mut counts = vec![0usize; e];
        chosen.iter().for_each(|&c| counts[c] += 1);
        let mut outs = Vec::with_capacity(e);
        let mut at = 0;
        for (expert, &m) in self.experts.iter().zip(&counts) {
            if m == 0 {
                continue;
            }
            let rows: Vec<i64> = order[at..at + m].iter().map(|&a| (a / k) as i64).collect();
            let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [m]), &device);
            let xe = x2.clone().select(0, rows).reshape([1, m, d]);
            outs.push(expert.forward(xe).reshape([m, d]));
            at += m;
        }
        // Back to assignment order: position p of the sorted list holds assignment order[p].
        let mut inverse = vec![0i64; n * k];
        order.iter().enumerate().for_each(|(p, &a)| inverse[a] = p as i64);
        let inverse = Tensor::<1, Int>::from_data(TensorData::new(inverse, [n * k]), &device);
        let y = Tensor::cat(outs, 0).select(0, inverse);
        let g = gates.reshape([n * k, 1]);
        let g = if y.dtype() == DType::F32 { g } else { g.cast(y.dtype()) };
        let y = (y * g).reshape([n, k, d]).sum_dim(1).reshape([b, t, d]);
        // Load balancing (Switch, Mixtral): f_i the share of assignments expert i got (a
        // count, no gradient), P_i its mean router probability; e * sum_i f_i P_i is 1 when
        // both are uniform and grows as the load concentrates.
        let load: Vec<f64> = counts.iter().map(|&c| c as f64 / (n * k) as f64).collect();
        let f = Tensor::<2>::from_data(TensorData::new(load.iter().map(|&x| x as f32).collect(), [1, e]), &device);
        let aux = (probs.mean_dim(0) * f).sum().mul_scalar(e as f64);
        (y, Routing { aux, load })
    }
}

/// The step's load-balancing term from a micro-batch's MoE layers: their mean (`None`
/// without MoE layers); each layer's loads, divided by the `micro_batches` of the step, are
/// added into `loads` (one row per layer).
pub fn aux_loss(routing: &[Routing], micro_batches: usize, loads: &mut Vec<Vec<f64>>) -> Option<Tensor<1>> {
    if routing.is_empty() {
        return None;
    }
    loads.resize(routing.len(), vec![0.0; routing[0].load.len()]);
    for (acc, r) in loads.iter_mut().zip(routing) {
        acc.iter_mut().zip(&r.load).for_each(|(a, x)| *a += x / micro_batches as f64);
    }
    let n = routing.len() as f64;
    Some(Tensor::cat(routing.iter().map(|r| r.aux.clone()).collect(), 0).sum().div_scalar(n))
}

/// Each row's `k` largest of `e` probabilities (row-major `[n, e]`), largest first; ties go to
/// the lower index. Returns `[n * k]` expert ids.
pub fn top_k(probs: &[f32], e: usize, k: usize) -> Vec<usize> {
    probs
        .chunks(e)
        .flat_map(|row| {
            let mut ids: Vec<usize> = (0..e).collect();
            ids.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            ids.truncate(k);
            ids
        })
        .collect()
}

/// Upcycling (Komatsuzaki et al. 2023): every expert a copy of the dense FFN `dense`, each
/// weight plus Gaussian noise of `noise` times that matrix's RMS (seeded), so that the experts
/// can diverge; the router from `init`.
pub fn upcycle(prefix: &str, dense: &SwiGlu, d_model: usize, s: &MoeShape, init: &mut Init) -> Moe {
    let mut m = Moe::new(prefix, d_model, s, init);
    for expert in &mut m.experts {
        for (to, from) in
            [(&mut expert.w_gate, &dense.w_gate), (&mut expert.w_up, &dense.w_up), (&mut expert.w_down, &dense.w_down)]
        {
            let w = from.weight.val();
            let rms = w.clone().powf_scalar(2.0).mean().sqrt().into_scalar::<f32>() as f64;
            let jitter = init.normal(w.dims(), noise_std(rms, s.upcycle_noise)).to_device(&w.device());
            to.weight = burn::module::Param::from_tensor(w + jitter);
        }
    }
    m
}

/// A dense model's FFNs turned into `s`'s experts in the layers `s.every` names (the rest
/// stay dense): the start of an MoE student from a pretrained or pruned dense one. With no
/// noise it computes exactly what the dense model does (every expert is the same FFN and the
/// gates sum to 1).
pub fn upcycle_decoder(mut m: super::Decoder, s: &MoeShape, seed: u64) -> super::Decoder {
    let d = m.config.shape.d_model;
    let device = m.embed.weight.device();
    let mut init = Init::new(seed, &device);
    m.config.shape.moe = Some(s.clone());
    for (i, b) in m.blocks.iter_mut().enumerate() {
        if let Some(dense) = &b.mlp
            && m.config.shape.is_moe(i)
        {
            b.moe = Some(upcycle(&format!("model.layers.{i}.mlp"), dense, d, s, &mut init));
            b.mlp = None;
        }
    }
    m
}

fn noise_std(rms: f64, rel: f64) -> f64 {
    (rms * rel).max(f64::MIN_POSITIVE)
}

#[cfg(test)]
#[path = "moe_tests.rs"]
mod tests;
