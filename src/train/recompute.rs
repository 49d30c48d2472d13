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

/// One recomputed block and the blocks after it that keep their graph.
struct Piece {
    /// The recomputed block's input (plain); `None` for block 0, whose input the embedding
    /// makes again in the backward (so the embedding's gradient flows too).
    input: Option<Tensor<3>>,
    block: usize,
    /// The kept blocks' first input (a leaf) and last output (with their graph).
    kept: Option<(Tensor<3>, Tensor<3>)>,
    /// The block's output as a leaf handed to the loss (a hidden-state loss reads it).
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
    /// blocks' output) of `model` over `tokens`, recomputing every `every`-th block.
    ///
    /// With `layers` (every block recomputed only: `every` = 1), the outputs of those blocks
    /// too, as leaves whose gradients join the pieces' in the backward (what a hidden-state
    /// loss reads).
    pub fn forward(
        model: &'a Decoder,
        tokens: Tensor<2, Int>,
        docs: Option<&DocPositions>,
        every: usize,
        layers: &[usize],
    ) -> (Tensor<3>, Vec<Tensor<3>>, Recompute<'a>) {
        assert!(layers.is_empty() || every == 1, "block outputs are handed out when every block is recomputed");
        let plain = model.valid();
        let (n, every) = (model.blocks.len(), every.max(1));
        let mut x = plain.embed_tokens(tokens.clone().inner());
        let mut pieces = Vec::new();
        for block in (0..n).step_by(every) {
            let end = (block + every).min(n);
            let input = (block > 0).then(|| x.clone());
            x = plain.blocks_forward(x, block..block + 1, docs);
            let out =
                (block + 1 < n && layers.contains(&block)).then(|| Tensor::<3>::from_inner(x.clone()).require_grad());
            let kept = (end > block + 1).then(|| {
                let leaf = Tensor::<3>::from_inner(x.clone()).require_grad();
                let out = model.blocks_forward(leaf.clone(), block + 1..end, docs);
                x = out.clone().inner();
                (leaf, out)
            });
            pieces.push(Piece { input, block, kept, out });
        }
        let top = Tensor::<3>::from_inner(x).require_grad();
        let h = model.final_norm(top.clone());
        let taken = layers
            .iter()
            .map(|&l| match pieces.iter().find(|p| p.block == l).and_then(|p| p.out.clone()) {
                Some(leaf) => leaf,
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
        for piece in self.pieces.into_iter().rev() {
            // What the loss sends straight to this block's output (a hidden-state loss).
            if let Some(e) = piece.out.and_then(|leaf| leaf.grad(grads)) {
                g = g + e;
            }
            if let Some((leaf, out)) = piece.kept {
                let back = (out * Tensor::from_inner(g)).sum().backward();
                g = leaf.grad(&back).expect("the kept blocks read their leaf");
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
