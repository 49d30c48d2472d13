//! Activation checkpointing (`run.activation_checkpointing`): the student's decoder blocks
//! keep only their inputs through the forward pass and are run again, with a graph, in the
//! backward. At a 1B student over 16k tokens the blocks' saved activations are tens of GB; a
//! block's input is `tokens x d_model`.
//!
//! burn's autodiff has no user-level checkpoint op (its `BalancedCheckpointing` recomputes
//! cheap element-wise ops, not blocks) and no `retain_graph`, so the backward is taken in
//! pieces: the loss's backward first, down to a leaf standing for the last blocks' output;
//! then, piece by piece downwards, each piece's forward is redone from its stored input (or,
//! for blocks whose activations are kept, its graph from the forward is used) and its
//! gradient carried in by the surrogate `sum(output * G)`, whose gradient with respect to the
//! output is `G`. Each backward's parameter gradients go to the caller, who adds them up.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::Gradients;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::{Decoder, DocPositions};

/// `run.activation_checkpointing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpointing {
    /// Every activation the backward needs is kept.
    #[default]
    None,
    /// Every block is recomputed: one extra forward of the blocks, and memory for their
    /// inputs plus one block's activations.
    Layers,
    /// Every `run.checkpoint_every`-th block (the 1st, the n+1-th, ...) is recomputed and the
    /// others keep their activations: less recomputation for more memory, as torchtune's
    /// selective checkpointing.
    EveryN,
}

impl Checkpointing {
    pub fn is_none(&self) -> bool {
        *self == Checkpointing::None
    }

    /// Every how many blocks one is recomputed; `None` without checkpointing.
    pub fn every(self, n: usize) -> Option<usize> {
        match self {
            Checkpointing::None => None,
            Checkpointing::Layers => Some(1),
            Checkpointing::EveryN => Some(n.max(1)),
        }
    }
}

/// A run of blocks that keep their graph from the forward.
struct Segment {
    /// Its input as a leaf, and its output with the graph from it.
    leaf: Tensor<3>,
    out: Tensor<3>,
    /// The loss's own leaf for the same input, when a hidden-state loss reads it (a separate
    /// node, so that the loss's backward and this segment's never share one).
    handed: Option<Tensor<3>>,
}

/// One recomputed block and the blocks after it that keep their graph (split into segments
/// where a hidden-state loss reads a block's output).
struct Piece {
    /// The recomputed block's input (plain); `None` for block 0, whose input the embedding
    /// makes again in the backward (so the embedding's gradient flows too).
    input: Option<Tensor<3>>,
    block: usize,
    kept: Vec<Segment>,
    /// The piece's last output as a leaf handed to the loss (a hidden-state loss reads it).
    out: Option<Tensor<3>>,
}

/// The forward pass's state between the loss and the pieces' backward.
pub struct Recompute<'a> {
    model: &'a Decoder,
    tokens: Tensor<2, Int>,
    docs: Option<DocPositions>,
    pieces: Vec<Piece>,
    /// The last blocks' output as a leaf: where the loss's backward stops.
    top: Tensor<3>,
}

impl<'a> Recompute<'a> {
    /// The final hidden states (after the final norm, with graph from a leaf standing for the
    /// blocks' output) of `model` over `tokens`, recomputing every `every`-th block, and the
    /// outputs of blocks `layers` as leaves whose gradients join the pieces' in the backward
    /// (what a hidden-state loss reads).
    pub fn forward(
        model: &'a Decoder,
        tokens: Tensor<2, Int>,
        docs: Option<&DocPositions>,
        every: usize,
        layers: &[usize],
    ) -> (Tensor<3>, Vec<Tensor<3>>, Recompute<'a>) {
        let plain = model.valid();
        let (n, every) = (model.blocks.len(), every.max(1));
        let leaf = |x: &Tensor<3>| Tensor::<3>::from_inner(x.clone()).require_grad();
        let mut handed_out = std::collections::HashMap::new();
        // The loss's leaf for block `l`'s output, where it asks for it (the last block's is `top`).
        let mut hand = |l: usize, x: &Tensor<3>| {
            (l + 1 < n && layers.contains(&l)).then(|| {
                let h = leaf(x);
                handed_out.insert(l, h.clone());
                h
            })
        };
        let mut x = plain.embed_tokens(tokens.clone().inner());
        let mut pieces = Vec::new();
        for block in (0..n).step_by(every) {
            let end = (block + every).min(n);
            let input = (block > 0).then(|| x.clone());
            x = plain.blocks_forward(x, block..block + 1, docs);
            let mut kept = Vec::new();
            let mut s = block + 1;
            while s < end {
                // A segment ends after a block whose output the loss reads.
                let e = (s..end - 1).find(|l| layers.contains(l)).map_or(end, |l| l + 1);
                let handed = hand(s - 1, &x);
                let leaf = leaf(&x);
                let out = model.blocks_forward(leaf.clone(), s..e, docs);
                x = out.clone().inner();
                kept.push(Segment { leaf, out, handed });
                s = e;
            }
            let out = hand(end - 1, &x);
            pieces.push(Piece { input, block, kept, out });
        }
        let top = Tensor::<3>::from_inner(x).require_grad();
        let h = model.final_norm(top.clone());
        let taken = layers
            .iter()
            .map(|&l| match handed_out.get(&l) {
                Some(leaf) => leaf.clone(),
                None => {
                    assert_eq!(l, n - 1, "block output {l} asked for, but the model has {n} blocks");
                    top.clone()
                }
            })
            .collect();
        (h, taken, Recompute { model, tokens, docs: docs.cloned(), pieces, top })
    }

    /// The blocks' and the embedding's gradients, given the gradients of the loss's backward
    /// (`grads`, which hold the leaf's): each piece's backward goes to `sink`, from the top
    /// down. `embed`: the embedding block 0 reads, with a graph to the weights of its own (a
    /// tied embedding's graph node is consumed by the head's backward; see the trainer).
    pub fn backward(self, grads: &Gradients, embed: &Embedding, mut sink: impl FnMut(Gradients)) {
        let Some(mut g) = self.top.grad(grads) else {
            return;
        };
        let docs = self.docs.as_ref();
        // What the loss sends straight to a block's output (a hidden-state loss).
        let from_loss = |g, handed: Option<Tensor<3>>| match handed.and_then(|leaf| leaf.grad(grads)) {
            Some(e) => g + e,
            None => g,
        };
        for piece in self.pieces.into_iter().rev() {
            g = from_loss(g, piece.out);
            for seg in piece.kept.into_iter().rev() {
                let back = (seg.out * Tensor::from_inner(g)).sum().backward();
                g = from_loss(seg.leaf.grad(&back).expect("the kept blocks read their leaf"), seg.handed);
                sink(back);
            }
            let x = match piece.input {
                Some(input) => Tensor::<3>::from_inner(input).require_grad(),
                None => embed.forward(self.tokens.clone()),
            };
            let y = self.model.blocks_forward(x.clone(), piece.block..piece.block + 1, docs);
            let back = (y * Tensor::from_inner(g.clone())).sum().backward();
            if piece.block > 0 {
                g = x.grad(&back).expect("a block reads its input");
            }
            sink(back);
        }
    }
}

#[cfg(test)]
mod tests;
