//! Curriculum sample weighting: per-row difficulty scores, computed once and stored with the
//! prepared data, turned into per-row loss weights by a competence schedule.
//!
//! With difficulty percentiles d_i in [0, 1] (rank among all training rows, 0 = easiest) and
//! training progress t in [0, 1], the competence c(t) is the share of the data at full weight:
//!
//! - linear: c(t) = min(1, c0 + (1 - c0) t / ramp)
//! - root:   c(t) = min(1, sqrt(c0^2 + (1 - c0^2) t / ramp))      (Platanios et al., 2019)
//! - step:   c(t) = min(1, c0 + (1 - c0) floor(stages t / ramp) / stages)
//!
//! and w_i(t) = 1 if d_i <= c(t), else `min_weight`. self_paced (Kumar et al., 2010) ranks the
//! rows of each batch by the student's current loss instead of a stored score: the easiest
//! c(t) share gets weight 1, the rest `min_weight`. The loss is sum_i w_i L_i / sum_i w_i over
//! the real tokens of the batch (each token carries its row's weight).

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::pack::Packed;
use crate::error::Result;
use crate::model::Decoder;
use crate::run_dir::RunDir;
use crate::teacher::cache::{CacheReader, TokenTopK};
use crate::teacher::row_nll;
use crate::util::{read_json, write_json_atomic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    None,
    Linear,
    Root,
    Step,
    SelfPaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifficultyScore {
    /// Mean teacher cross-entropy of the row's tokens.
    TeacherCe,
    /// Mean entropy of the teacher's next-token distribution.
    TeacherEntropy,
    /// Token-weighted mean length of the documents in the row.
    Length,
    /// Share of the row's token trigrams seen earlier in the row (the repetition filter's score).
    Repetition,
}

impl DifficultyScore {
    /// Whether the score is computed from the teacher's distribution.
    pub fn needs_teacher(self) -> bool {
        matches!(self, DifficultyScore::TeacherCe | DifficultyScore::TeacherEntropy)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOrder {
    /// A seeded permutation per epoch.
    Random,
    /// The first epoch from easiest to hardest by the difficulty score, then random.
    EasyToHard,
}

/// Curriculum sample weighting (see src/curriculum.rs and the README for the formulas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CurriculumSection {
    pub schedule: Schedule,
    pub score: DifficultyScore,
    /// Competence c0 at the start: the share of the data at full weight.
    pub start: f64,
    /// Fraction of training over which competence grows to 1.
    pub ramp: f64,
    /// Stages of the `step` schedule.
    pub stages: usize,
    /// Weight of the rows beyond the current competence.
    pub min_weight: f64,
    pub order: RowOrder,
}

impl Default for CurriculumSection {
    fn default() -> Self {
        CurriculumSection {
            schedule: Schedule::None,
            score: DifficultyScore::TeacherCe,
            start: 0.2,
            ramp: 0.5,
            stages: 4,
            min_weight: 0.1,
            order: RowOrder::Random,
        }
    }
}

/// Competence c(t) of a schedule (1 for none and outside the ramp).
pub fn competence(cfg: &CurriculumSection, t: f64) -> f64 {
    let c0 = cfg.start;
    let x = (t / cfg.ramp).clamp(0.0, 1.0);
    match cfg.schedule {
        Schedule::None => 1.0,
        Schedule::Linear | Schedule::SelfPaced => (c0 + (1.0 - c0) * x).min(1.0),
        Schedule::Root => (c0 * c0 + (1.0 - c0 * c0) * x).sqrt().min(1.0),
        Schedule::Step => {
            let s = cfg.stages as f64;
            (c0 + (1.0 - c0) * (s * x).floor() / s).min(1.0)
        }
    }
}

/// Ranks of `scores` scaled to [0, 1] (ties broken by row index, so the order is total).
pub fn percentiles(scores: &[f32]) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut p = vec![0f32; scores.len()];
    let denom = (scores.len().max(2) - 1) as f32;
    for (rank, &i) in idx.iter().enumerate() {
        p[i] = rank as f32 / denom;
    }
    p
}

/// Per-row weights at progress `t`. `pct`: difficulty percentile of each training row (stored
/// scores); `batch_loss`: the student's current loss of each row of this batch (self_paced).
pub fn weights(
    cfg: &CurriculumSection,
    rows: &[usize],
    t: f64,
    pct: Option<&[f32]>,
    batch_loss: Option<&[f64]>,
) -> Vec<f64> {
    let c = competence(cfg, t);
    match cfg.schedule {
        Schedule::None => vec![1.0; rows.len()],
        Schedule::SelfPaced => {
            let loss = batch_loss.expect("self_paced needs the batch's losses");
            let keep = ((c * rows.len() as f64 - 1e-9).ceil() as usize).clamp(1, rows.len());
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by(|&a, &b| loss[a].total_cmp(&loss[b]).then(a.cmp(&b)));
            let mut w = vec![cfg.min_weight; rows.len()];
            for &i in &order[..keep] {
                w[i] = 1.0;
            }
            w
        }
        _ => {
            let pct = pct.expect("scheduled curricula need difficulty scores");
            rows.iter().map(|&r| if (pct[r] as f64) <= c + 1e-12 { 1.0 } else { cfg.min_weight }).collect()
        }
    }
}

/// Summary of a step's weights for the metrics: mean, min, max, and the weighted share of rows
/// in the harder half (percentile > 0.5; for self_paced, the harder half of the batch).
pub fn weight_stats(w: &[f64], hard: &[bool]) -> (f64, f64, f64, f64) {
    let sum: f64 = w.iter().sum();
    let mean = sum / w.len().max(1) as f64;
    let min = w.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let hard_w: f64 = w.iter().zip(hard).filter(|(_, h)| **h).map(|(w, _)| w).sum();
    (mean, min, max, if sum > 0.0 { hard_w / sum } else { 0.0 })
}

#[derive(Serialize, Deserialize)]
struct Stored {
    score: DifficultyScore,
    /// The teacher the scores were computed with (empty for data-only scores).
    teacher_hash: String,
    rows: usize,
    scores: Vec<f32>,
}

/// Where teacher-based scores come from: a forward pass of the teacher, or its top-k cache
/// (no teacher pass; what a large teacher's user wants once the cache exists).
pub enum TeacherScores<'a> {
    /// `hash`: the teacher's identity (stored with the scores; unused by data-only scores).
    Online {
        teacher: &'a Decoder,
        hash: String,
        batch: usize,
        device: &'a Device,
    },
    Cache(&'a CacheReader),
}

/// One token's teacher cross-entropy on `target` and entropy, from its full logit row.
pub(crate) fn token_scores_full(z: &[f32], target: usize) -> (f64, f64) {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + z.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    let ent = -z
        .iter()
        .map(|&x| {
            let lp = x as f64 - lse;
            lp.exp() * lp
        })
        .sum::<f64>();
    (lse - z[target] as f64, ent)
}

/// The same from a cache record (temperature 1, always stored first). The mass outside the kept
/// ids counts as one "other" category, as the top-k loss treats it: a target outside them
/// costs -log(tail mass), and the tail adds -tail log tail to the entropy. Both are exact at
/// k = vocabulary and lower bounds below it.
fn token_scores_cached(tok: &TokenTopK, target: usize) -> (f64, f64) {
    let lse = tok.lse[0] as f64;
    let log_tail = tok.log_tail[0] as f64;
    let tail = log_tail.exp();
    let mut ent = if tail > 0.0 { -tail * log_tail } else { 0.0 };
    for &z in &tok.logits {
        let lp = z as f64 - lse;
        ent -= lp.exp() * lp;
    }
    let ce = match tok.ids.binary_search(&(target as u32)) {
        Ok(j) => lse - tok.logits[j] as f64,
        Err(_) => -log_tail,
    };
    (ce, ent)
}

/// The difficulty score of every training row, computed once and stored in
/// `<run>/data/difficulty-<score>.json` (recomputed if the teacher, its cache or the data changed).
pub fn scores(run_dir: &Path, score: DifficultyScore, data: &Packed, teacher: &TeacherScores) -> Result<Vec<f32>> {
    let name = serde_json::to_value(score).expect("serializable");
    let path = RunDir(run_dir).difficulty(name.as_str().unwrap_or("score"));
    let th = match teacher {
        _ if !score.needs_teacher() => String::new(),
        TeacherScores::Online { hash, .. } => hash.clone(),
        TeacherScores::Cache(r) => {
            format!("{} cache k={} {:?}", r.manifest.id.teacher_hash, r.manifest.id.k, r.manifest.id.values)
        }
    };
    if path.is_file() {
        let s: Stored = read_json(&path)?;
        if s.teacher_hash == th && s.rows == data.n_rows() {
            return Ok(s.scores);
        }
    }
    let rows: Vec<usize> = (0..data.n_rows()).collect();
    let mut out = Vec::with_capacity(rows.len());
    let pick = |(ce, ent): (f64, f64)| if score == DifficultyScore::TeacherCe { ce } else { ent };
    match (score, teacher) {
        (DifficultyScore::Length, _) => out.extend(rows.iter().map(|&r| data.mean_doc_len(r) as f32)),
        (DifficultyScore::Repetition, _) => out.extend(rows.iter().map(|&r| data.repeated_trigram_share(r) as f32)),
        (_, TeacherScores::Online { teacher, batch, device, .. }) => {
            let v = teacher.config.vocab_size;
            for chunk in rows.chunks((*batch).max(1)) {
                let b = data.batch(chunk, device);
                let [nb, t] = b.inputs.dims();
                let logits = teacher.forward_docs(b.inputs, b.docs.as_ref());
                if score == DifficultyScore::TeacherCe {
                    // The per-row loss every row scorer shares; the logits stay on the device.
                    let ce = row_nll(logits.reshape([nb * t, v]), b.targets, b.mask, nb, t);
                    out.extend(ce.into_iter().map(|x| x as f32));
                    continue;
                }
                let logits: Vec<f32> = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
                let targets: Vec<i64> = b.targets.into_data().convert::<i64>().try_to_vec::<i64>().expect("i64");
                for j in 0..nb {
                    let n = data.row_len(chunk[j]);
                    let acc: f64 = (0..n)
                        .map(|p| {
                            pick(token_scores_full(
                                &logits[(j * t + p) * v..(j * t + p + 1) * v],
                                targets[j * t + p] as usize,
                            ))
                        })
                        .sum();
                    out.push((acc / n.max(1) as f64) as f32);
                }
            }
        }
        (_, TeacherScores::Cache(reader)) => {
            for &r in &rows {
                let toks = reader.row(r)?;
                let (_, targets, _) = data.row(r);
                let acc: f64 =
                    toks.iter().zip(&targets).map(|(tok, &y)| pick(token_scores_cached(tok, y as usize))).sum();
                out.push((acc / toks.len().max(1) as f64) as f32);
            }
        }
    }
    write_json_atomic(&path, &Stored { score, teacher_hash: th, rows: out.len(), scores: out.clone() })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: Schedule) -> CurriculumSection {
        CurriculumSection { schedule, start: 0.2, ramp: 0.5, stages: 4, min_weight: 0.1, ..Default::default() }
    }

    #[test]
    fn competence_schedules_match_their_formulas() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(competence(&cfg(Schedule::None), 0.0), 1.0));
        assert!(close(competence(&cfg(Schedule::Linear), 0.0), 0.2));
        assert!(close(competence(&cfg(Schedule::Linear), 0.25), 0.6));
        assert!(close(competence(&cfg(Schedule::Linear), 0.9), 1.0));
        assert!(close(competence(&cfg(Schedule::Root), 0.25), (0.04f64 + 0.96 * 0.5).sqrt()));
        assert!(close(competence(&cfg(Schedule::Root), 0.5), 1.0));
        // Four stages over the ramp: 0.2 until t = 1/8, then 0.4, ...
        assert!(close(competence(&cfg(Schedule::Step), 0.1), 0.2));
        assert!(close(competence(&cfg(Schedule::Step), 0.2), 0.4));
        assert!(close(competence(&cfg(Schedule::Step), 0.49), 0.8));
        // Root reaches high competence sooner than linear (its point: hard data early enough).
        assert!(competence(&cfg(Schedule::Root), 0.1) > competence(&cfg(Schedule::Linear), 0.1));
    }

    #[test]
    fn weights_follow_competence_and_percentiles() {
        let pct = percentiles(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(pct, vec![1.0, 0.0, 0.5, 0.25, 0.75]);
        let c = cfg(Schedule::Linear);
        // t = 0: competence 0.2 -> only the easiest row (percentile 0) at full weight.
        assert_eq!(weights(&c, &[0, 1, 2, 3, 4], 0.0, Some(&pct), None), vec![0.1, 1.0, 0.1, 0.1, 0.1]);
        // t = 0.25: competence 0.6 -> percentiles 0, 0.25, 0.5.
        assert_eq!(weights(&c, &[0, 1, 2, 3, 4], 0.25, Some(&pct), None), vec![0.1, 1.0, 1.0, 1.0, 0.1]);
        assert_eq!(weights(&c, &[0, 4], 0.5, Some(&pct), None), vec![1.0, 1.0]);
        // Self-paced: the easiest share of the batch by the student's loss.
        let sp = cfg(Schedule::SelfPaced);
        assert_eq!(
            weights(&sp, &[7, 8, 9, 10, 11], 0.25, None, Some(&[3.0, 0.5, 2.0, 9.0, 1.0])),
            vec![0.1, 1.0, 1.0, 0.1, 1.0]
        );
        let (mean, min, max, hard) = weight_stats(&[1.0, 0.1, 1.0], &[false, true, true]);
        assert!((mean - 0.7).abs() < 1e-12 && min == 0.1 && max == 1.0);
        assert!((hard - 1.1 / 2.1).abs() < 1e-12);
    }
}

#[cfg(test)]
mod curriculum_scores {
    use super::*;
    use crate::teacher::cache::test_fixture::*;
    use crate::teacher::codec::ValueCodec;

    /// Per-row mean teacher CE and entropy from the full logits: the reference.
    fn reference(f: &Fixture) -> (Vec<f64>, Vec<f64>) {
        let (mut ce, mut ent) = (vec![], vec![]);
        for &r in &f.rows {
            let (_, targets, _) = f.data.row(r);
            let n = f.data.row_len(r);
            let s: Vec<(f64, f64)> = (0..n)
                .map(|p| token_scores_full(&f.teacher[(r * T + p) * V..(r * T + p + 1) * V], targets[p] as usize))
                .collect();
            ce.push(s.iter().map(|x| x.0).sum::<f64>() / n as f64);
            ent.push(s.iter().map(|x| x.1).sum::<f64>() / n as f64);
        }
        (ce, ent)
    }

    /// Curriculum scores read from the cache equal the teacher's at k = vocabulary (to f16
    /// rounding) and are lower bounds below it (the tail counted as one category).
    #[test]
    fn cache_scores_match_the_teacher_at_full_k_and_bound_it_below() {
        let f = fixture();
        let (ce, ent) = reference(&f);
        for (k, exact) in [(V, true), (8, false)] {
            let dir = tmp(&format!("scores-{k}"));
            let m = build_cache(&f, &dir, k, ValueCodec::F16);
            let reader = CacheReader::open(&dir, &expect(&m.id)).unwrap();
            let run = dir.join("run");
            std::fs::create_dir_all(run.join("data")).unwrap();
            let src = TeacherScores::Cache(&reader);
            let got_ce = scores(&run, DifficultyScore::TeacherCe, &f.data, &src).unwrap();
            let got_ent = scores(&run, DifficultyScore::TeacherEntropy, &f.data, &src).unwrap();
            for r in 0..ce.len() {
                let (c, e) = (got_ce[r] as f64, got_ent[r] as f64);
                if exact {
                    assert!(
                        (c - ce[r]).abs() < 1e-2 && (e - ent[r]).abs() < 1e-2,
                        "row {r}: cache ({c}, {e}) vs teacher ({}, {})",
                        ce[r],
                        ent[r]
                    );
                } else {
                    assert!(
                        c <= ce[r] + 1e-2 && e <= ent[r] + 1e-2,
                        "row {r}: cache ({c}, {e}) above teacher ({}, {})",
                        ce[r],
                        ent[r]
                    );
                }
            }
            if !exact {
                // Random targets mostly fall outside the top 8: the bound is far from tight.
                assert!(got_ce.iter().zip(&ce).any(|(&c, &t)| (c as f64) < t - 0.5));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
