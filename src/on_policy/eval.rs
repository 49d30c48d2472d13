//! How the student does on its own text: on held-out prompts it writes greedy completions, and
//! the teacher grades them. The teacher's mean per-token log-probability of the student's
//! tokens is a Monte Carlo estimate of `-H(student) - KL(student || teacher)` at the greedy
//! policy (higher is better), what on-policy distillation optimizes; the agreement is the
//! share of the student's tokens that are also the teacher's greedy choice there.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::pack::Packed;
use crate::generate::{Sampling, generate_batch, row_rng};
use crate::model::Decoder;

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PolicyEval {
    pub prompts: usize,
    /// Tokens the student wrote (the graded ones; a drawn stop id included).
    pub tokens: usize,
    /// Mean over those tokens of the teacher's log-probability.
    pub teacher_logprob: f64,
    /// Share of those tokens that are the teacher's argmax.
    pub agreement: f64,
}

/// Grade the student's greedy completions of the prompts of the first `n` rows of `valid`
/// (rows with a prompt, see [`super::prompt_of`]), `max_new` tokens at most, `batch` at a time.
#[allow(clippy::too_many_arguments)]
pub fn policy_eval(
    student: &Decoder,
    teacher: &Decoder,
    valid: &Packed,
    n: usize,
    max_new: usize,
    stops: &[u32],
    batch: usize,
    device: &Device,
) -> PolicyEval {
    let prompts: Vec<Vec<u32>> = (0..valid.n_rows())
        .filter_map(|r| {
            let (i, _, m) = valid.row(r);
            super::prompt_of(&i, &m)
        })
        .take(n)
        .collect();
    let s = Sampling::greedy(max_new);
    let (mut sum, mut agree, mut tokens) = (0.0f64, 0usize, 0usize);
    for (b, chunk) in prompts.chunks(batch.max(1)).enumerate() {
        let rngs = (0..chunk.len()).map(|i| row_rng(0, (b * batch + i) as u64)).collect();
        let (written, _) = generate_batch(student, chunk, rngs, stops, &s, device);
        // Prompt and completion (and the stop id drawn) per row, right-padded: the teacher reads
        // each row causally, the padding after it changes nothing.
        let seqs: Vec<(usize, Vec<u32>)> = chunk.iter().zip(&written).map(|(p, w)| (p.len(), w.sequence(p))).collect();
        let t = seqs.iter().map(|(_, s)| s.len()).max().unwrap_or(1);
        let ids: Vec<i64> = seqs
            .iter()
            .flat_map(|(_, s)| s.iter().map(|&x| x as i64).chain(std::iter::repeat_n(0, t - s.len())))
            .collect();
        let rows = seqs.len();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [rows, t]), device);
        let logp = log_softmax(teacher.forward(input), 2);
        // The next token's log-probability and the teacher's argmax at every position.
        let next: Vec<i64> = (0..rows * t).map(|i| if i % t + 1 < t { ids[i + 1] } else { 0 }).collect();
        let next = Tensor::<3, Int>::from_data(TensorData::new(next, [rows, t, 1]), device);
        let lp: Vec<f32> = logp.clone().gather(2, next).into_data().convert::<f32>().try_to_vec().expect("f32");
        let top: Vec<i64> = logp.argmax(2).into_data().convert::<i64>().try_to_vec().expect("ids");
        for (r, (p, seq)) in seqs.iter().enumerate() {
            for pos in p - 1..seq.len() - 1 {
                sum += lp[r * t + pos] as f64;
                agree += (top[r * t + pos] == seq[pos + 1] as i64) as usize;
                tokens += 1;
            }
        }
    }
    PolicyEval {
        prompts: prompts.len(),
        tokens,
        teacher_logprob: sum / tokens.max(1) as f64,
        agreement: agree as f64 / tokens.max(1) as f64,
    }
}
