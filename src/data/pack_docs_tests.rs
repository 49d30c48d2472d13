//! Packed documents against their definition: documents packed into shared rows with
//! boundaries (`packing = "documents"`) give the same summed loss and the same gradients as
//! the same documents one per row, for the fused CPU kernel and the reference attention, with
//! a sliding window, with GQA, and with chat-style loss flags.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use super::Packed;
use crate::data::config::Packing;
use crate::data::tokens::{DOC_START, LOSS};
use crate::kd_loss::{Divergence, KdConfig, kd_loss};
use crate::model::config::{AttentionImpl, ModelShape};
use crate::model::{Decoder, DecoderConfig};

/// Every parameter's gradient, flattened in visiting order.
fn all_grads(m: &Decoder, grads: &burn::optim::GradientsParams) -> Vec<f32> {
    struct V<'a>(&'a burn::optim::GradientsParams, Vec<f32>);
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(p.id) {
                self.1.extend(g.into_data().iter::<f32>());
            }
        }
    }
    let mut v = V(grads, Vec::new());
    m.visit(&mut v);
    v.1
}

/// The summed CE over all rows of `data` (one batch) and its gradients.
fn loss_and_grads(model: &Decoder, data: &Packed, ad: &Device) -> (f64, usize, Vec<f32>) {
    let rows: Vec<usize> = (0..data.n_rows()).collect();
    let batch = data.batch(&rows, ad);
    let [b, t] = batch.inputs.dims();
    let v = model.config.vocab_size;
    let logits = model.forward_docs(batch.inputs, batch.docs.as_ref()).reshape([b * t, v]);
    let cfg = KdConfig { alpha: 1.0, temperature: 1.0, chunk_tokens: 4096, divergence: Divergence::ForwardKl };
    let mean = kd_loss(logits, None, batch.targets, batch.mask, cfg).ce;
    let sum = mean * batch.real_tokens as f32;
    let value = sum.clone().into_scalar::<f32>() as f64;
    let grads = burn::optim::GradientsParams::from_grads(sum.backward(), model);
    (value, batch.real_tokens, all_grads(model, &grads))
}

#[test]
fn packed_documents_train_like_one_document_per_row() {
    let dev = Device::flex();
    let ad = dev.clone().autodiff();
    // Documents of 5, 9, 3, 7 and 6 tokens (the last token of each is EOS = 0); a loss flag
    // pattern like chat data's (some tokens out of the loss).
    let lens = [5usize, 9, 3, 7, 6];
    let (mut toks, mut flags) = (Vec::new(), Vec::new());
    let mut x = 7u32;
    for (d, &n) in lens.iter().enumerate() {
        for i in 0..n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            toks.push(if i + 1 == n { 0 } else { 1 + (x >> 8) % 31 });
            let loss = if (i + d) % 3 == 1 { 0 } else { LOSS };
            flags.push(loss | if i == 0 { DOC_START } else { 0 });
        }
    }
    for (impl_, window, kv) in [
        (AttentionImpl::Fused, None, 2),
        (AttentionImpl::Reference, None, 2),
        (AttentionImpl::Fused, Some(4), 1),
        (AttentionImpl::Reference, Some(4), 4),
    ] {
        let mut shape = ModelShape::for_tests(16, 2, 4, kv, 32);
        shape.attention_impl = impl_;
        shape.window = window;
        let model = DecoderConfig { vocab_size: 32, shape }.init(11, &ad);
        let case = format!("{impl_:?} window {window:?} kv {kv}");
        // Rows of 16 inputs: documents share rows (and the first three fit in one).
        let packed = Packed::build(toks.clone(), Some(flags.clone().into()), 16, 0, Packing::Documents);
        assert!(packed.n_rows() < lens.len(), "documents share rows");
        // One document per row, each whole (rows of 16 hold the longest).
        let single = Packed::build(toks.clone(), Some(flags.clone().into()), 16, 0, Packing::DocPerRow);
        assert_eq!(single.n_rows(), lens.len());
        let (a, na, ga) = loss_and_grads(&model, &packed, &ad);
        let (b, nb, gb) = loss_and_grads(&model, &single, &ad);
        // Within-document targets flagged LOSS, counted by hand.
        let want: usize = (0..toks.len()).filter(|&i| flags[i] & LOSS != 0 && flags[i] & DOC_START == 0).count();
        assert_eq!((na, nb), (want, want), "{case}: loss tokens");
        assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{case}: loss {a} vs {b}");
        assert_eq!(ga.len(), gb.len());
        let scale = gb.iter().fold(0f32, |m, g| m.max(g.abs()));
        let err = ga.iter().zip(&gb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err < 1e-4 * scale, "{case}: gradient max abs difference {err} (scale {scale})");
        // And attending across documents (concat) is a different function.
        let concat = Packed::build(toks.clone(), Some(flags.clone().into()), 16, 0, Packing::Concat);
        let (c, _, _) = loss_and_grads(&model, &concat, &ad);
        assert!((c - b).abs() > 1e-3, "{case}: concat packing should differ ({c} vs {b})");
    }
}

#[test]
fn positions_restart_at_each_document_and_targets_never_cross() {
    // Documents [1 2 0] [3 4 5 0] [6 0]; rows of 4.
    let toks = vec![1, 2, 0, 3, 4, 5, 0, 6, 0];
    let flags: Vec<u8> =
        [1, 0, 0, 1, 0, 0, 0, 1, 0].iter().map(|&s| LOSS | if s == 1 { DOC_START } else { 0 }).collect();
    let p = Packed::build(toks, Some(flags.into()), 4, 0, Packing::Documents);
    assert_eq!(p.n_rows(), 2);
    assert_eq!(p.positions(0), vec![0, 1, 2, 0]);
    // Row 0: inputs 1 2 0 3, targets 2 0 3 4: the target 3 starts a document.
    assert_eq!(p.row(0).2, vec![1.0, 1.0, 0.0, 1.0]);
    // Row 1 starts inside document 2 (positions restart at the row) and holds document 3.
    assert_eq!(p.positions(1), vec![0, 1, 2, 0]);
    assert_eq!(p.row(1), (vec![4, 5, 0, 6], vec![5, 0, 6, 0], vec![1.0, 1.0, 0.0, 1.0]));
}
