use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, TensorData};

use super::*;
use crate::model::{DecoderConfig, MambaShape};
use crate::recipe::PartialShape;

/// Every parameter's gradient, in the model's order (`None` where it got none).
fn per_param(m: &Decoder, grads: &GradientsParams) -> Vec<Option<Vec<f32>>> {
    struct V<'a>(&'a GradientsParams, Vec<Option<Vec<f32>>>);
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.1.push(self.0.get::<D>(p.id).map(|g| g.into_data().iter::<f32>().collect()));
        }
    }
    let mut v = V(grads, Vec::new());
    m.visit(&mut v);
    v.1
}

/// Each weight through one graph node of its own (`x * 1`), as the trainer's bf16 / QAT copy.
struct Fresh;
impl ModuleMapper for Fresh {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| t * 1.0)
    }
}

fn model(pattern: &str, tied: bool) -> DecoderConfig {
    let shape = PartialShape {
        d_model: Some(16),
        n_layers: Some(pattern.len()),
        n_heads: Some(4),
        n_kv_heads: Some(2),
        d_ff: Some(32),
        tie_embeddings: Some(tied),
        layer_pattern: Some(pattern.into()),
        mamba: Some(MambaShape { d_state: 4, head_dim: 8, chunk_size: 4, ..Default::default() }),
        ..Default::default()
    };
    DecoderConfig { vocab_size: 24, shape: shape.to_shape().unwrap() }
}

/// What a hidden-state loss adds: the block outputs' squares, unevenly weighted.
fn layers_loss(outs: &[Tensor<3>]) -> Tensor<1> {
    outs.iter()
        .enumerate()
        .map(|(i, y)| y.clone().powf_scalar(2.0).sum() * (0.3 + i as f64))
        .reduce(|a, b| a + b)
        .unwrap()
}

/// A loss that reads every logit unevenly: sum of (logits * a fixed pattern)^2.
fn loss_of(h: Tensor<3>, m: &Decoder) -> Tensor<1> {
    let logits = m.logits_of(h);
    let [b, t, v] = logits.dims();
    let w: Vec<f32> = (0..b * t * v).map(|i| ((i * 37) % 11) as f32 / 11.0 - 0.4).collect();
    let w = Tensor::<3>::from_data(TensorData::new(w, [b, t, v]), &logits.device());
    (logits * w).powf_scalar(2.0).sum()
}

/// The gradients of one loss through the plain graph (the reference) and through the
/// recomputed pieces, every `every` blocks.
fn grads(cfg: &DecoderConfig, every: Option<usize>, docs: Option<&DocPositions>) -> Vec<Option<Vec<f32>>> {
    grads_with(cfg, every, docs, &[])
}

/// [`grads`] with the outputs of blocks `layers` in the loss too.
fn grads_with(
    cfg: &DecoderConfig,
    every: Option<usize>,
    docs: Option<&DocPositions>,
    layers: &[usize],
) -> Vec<Option<Vec<f32>>> {
    let ad = Device::flex().autodiff();
    let master = cfg.init(5, &ad);
    // The casts of a bf16 copy are graph nodes, which a backward consumes.
    let fwd = master.clone().map(&mut Fresh);
    let ids: Vec<i64> = (0..2 * 9).map(|i| (i * 7 + 3) % 24).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 9]), &ad);
    let Some(every) = every else {
        let (h, outs) = fwd.forward_with_layers(tokens, layers, docs);
        let mut loss = loss_of(h, &fwd);
        if !layers.is_empty() {
            loss = loss + layers_loss(&outs);
        }
        return per_param(&master, &GradientsParams::from_grads(loss.backward(), &master));
    };
    let (h, outs, r) = Recompute::forward(&fwd, tokens, docs, every, layers);
    let mut loss = loss_of(h, &fwd);
    if !layers.is_empty() {
        loss = loss + layers_loss(&outs);
    }
    let top = loss.backward();
    let mut acc = GradientsAccumulator::<Decoder>::new();
    // The embedding block 0 reads: a graph of its own (the tied head's was consumed above).
    let embed = master.embed.clone().map(&mut Fresh);
    r.backward(&top, &embed, |g| acc.accumulate(&master, GradientsParams::from_grads(g, &master)));
    acc.accumulate(&master, GradientsParams::from_grads(top, &master));
    per_param(&master, &acc.grads())
}

/// Recomputing every block, or every second or third, gives the gradients of the plain
/// backward, parameter by parameter: attention and hybrid Mamba-2 stacks, tied and untied
/// embeddings, packed documents.
#[test]
fn recomputed_blocks_give_the_plain_gradients() {
    let docs = DocPositions::new((0..18).map(|i| [0, 1, 2, 3, 0, 1, 2, 3, 4][i % 9]).collect(), 2, 9);
    for (pattern, tied, packed) in
        [("AAAA", true, false), ("AAAAA", false, true), ("AMAM", true, false), ("MAA", false, false)]
    {
        let cfg = model(pattern, tied);
        let docs = packed.then_some(&docs);
        let want = grads(&cfg, None, docs);
        assert!(want.iter().all(|g| g.is_some()), "{pattern}: every parameter has a gradient");
        for every in [1, 2, 3] {
            let got = grads(&cfg, Some(every), docs);
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                let (a, b) =
                    (a.as_ref().unwrap(), b.as_ref().unwrap_or_else(|| panic!("{pattern}/{every}: param {i} lost")));
                let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
                let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(
                    worst <= 1e-5 * scale.max(1.0),
                    "{pattern} every {every}: param {i} differs by {worst} (scale {scale})"
                );
            }
        }
    }
}

/// Block outputs handed to a loss (a hidden-state loss) while every block, or every second or
/// third, is recomputed: their gradients join the pieces', and the parameters' gradients are
/// the plain backward's. The layers fall on recomputed blocks, on kept ones inside a piece
/// and at a piece's end.
#[test]
fn recomputed_blocks_hand_out_their_outputs() {
    for (pattern, tied, layers, every) in [
        ("AAAA", true, vec![1, 3], 1),
        ("AMA", false, vec![0, 1], 1),
        ("AAAAA", true, vec![0, 1, 3], 2),
        ("AAAAAAA", false, vec![1, 2, 4, 6], 3),
        ("AMAMA", false, vec![2, 3], 3),
    ] {
        let cfg = model(pattern, tied);
        let want = grads_with(&cfg, None, None, &layers);
        let got = grads_with(&cfg, Some(every), None, &layers);
        let plain = grads(&cfg, None, None);
        assert_ne!(want, plain, "{pattern}: the layers' loss changes the gradients");
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5 * scale.max(1.0), "{pattern} {layers:?} every {every}: param {i} differs by {worst}");
        }
    }
}
