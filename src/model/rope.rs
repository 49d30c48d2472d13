//! Rotary position embedding in the "rotate half" layout used by Llama/Qwen2 checkpoints in
//! Hugging Face format (dimension i pairs with i + head_dim/2), so imported weights need no
//! permutation.

use burn::tensor::{Device, Tensor, TensorData};

use super::config::RopeScaling;

/// The `head_dim / 2` rotation frequencies, with Llama-3 scaling when given (as in
/// transformers' `_compute_llama3_parameters`).
pub fn inv_freqs(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| {
            let f = theta.powf(-((2 * i) as f64) / head_dim as f64);
            let Some(s) = scaling else { return f };
            let old = s.original_max_position_embeddings as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < old / s.high_freq_factor {
                f
            } else if wavelen > old / s.low_freq_factor {
                f / s.factor
            } else {
                let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}

/// cos/sin tables `[seq_len, head_dim]` for positions `start..start+seq_len`.
pub fn tables(
    seq_len: usize,
    start: usize,
    head_dim: usize,
    theta: f64,
    scaling: Option<&RopeScaling>,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let (cos, sin) = host_tables(seq_len, start, head_dim, theta, scaling);
    let shape = [seq_len, head_dim];
    (Tensor::from_data(TensorData::new(cos, shape), device), Tensor::from_data(TensorData::new(sin, shape), device))
}

/// cos/sin tables `[pos.len(), head_dim]`, one row per token at position `pos[i]`.
pub fn tables_at(
    pos: &[u32],
    head_dim: usize,
    theta: f64,
    scaling: Option<&RopeScaling>,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let n = pos.iter().max().map_or(0, |m| *m as usize + 1);
    let (cos, sin) = host_tables(n, 0, head_dim, theta, scaling);
    let gather = |tab: &[f32]| -> Vec<f32> {
        pos.iter().flat_map(|&p| tab[p as usize * head_dim..(p as usize + 1) * head_dim].iter().copied()).collect()
    };
    let shape = [pos.len(), head_dim];
    (
        Tensor::from_data(TensorData::new(gather(&cos), shape), device),
        Tensor::from_data(TensorData::new(gather(&sin), shape), device),
    )
}

type TableKey = (usize, usize, usize, u64, Option<[u64; 4]>);
type Tables = Option<(TableKey, Vec<f32>, Vec<f32>)>;

thread_local! {
    /// The last tables computed on this thread: training asks for the same ones every forward
    /// pass (teacher and student alike), and 2 * seq_len * head_dim f64 sines and cosines on
    /// the host are milliseconds a GPU would wait for.
    static LAST: std::cell::RefCell<Tables> = const { std::cell::RefCell::new(None) };
}

fn host_tables(
    seq_len: usize,
    start: usize,
    head_dim: usize,
    theta: f64,
    scaling: Option<&RopeScaling>,
) -> (Vec<f32>, Vec<f32>) {
    let key: TableKey = (
        seq_len,
        start,
        head_dim,
        theta.to_bits(),
        scaling.map(|s| {
            [
                s.factor.to_bits(),
                s.low_freq_factor.to_bits(),
                s.high_freq_factor.to_bits(),
                s.original_max_position_embeddings as u64,
            ]
        }),
    );
    if let Some(hit) =
        LAST.with_borrow(|l| l.as_ref().filter(|(k, _, _)| *k == key).map(|(_, c, s)| (c.clone(), s.clone())))
    {
        return hit;
    }
    let half = head_dim / 2;
    let freqs = inv_freqs(head_dim, theta, scaling);
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for pos in start..start + seq_len {
        // Computed in f64 so long positions keep their precision before the cast.
        for i in 0..head_dim {
            let angle = pos as f64 * freqs[i % half];
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    LAST.set(Some((key, cos.clone(), sin.clone())));
    (cos, sin)
}

/// Rotate `x` `[batch, heads, seq, head_dim]` by the tables from [`tables`] (`[seq,
/// head_dim]`) or [`tables_at`] (`[batch * seq, head_dim]`, one row per token).
pub fn apply(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let shape = |c: &Tensor<2>| match c.dims()[0] == t {
        true => c.clone().unsqueeze::<4>(),
        false => c.clone().reshape([b, 1, t, d]),
    };
    x * shape(cos) + rotated * shape(sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotation preserves the norm of each (i, i + d/2) pair and position 0 is the identity.
    #[test]
    fn rope_is_a_rotation() {
        let dev = Device::flex();
        let x = Tensor::<4>::random([1, 2, 5, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
        let (c, s) = tables(5, 0, 8, 10_000.0, None, &dev);
        let y = apply(x.clone(), &c, &s);
        let xs: Vec<f32> = x.into_data().try_to_vec::<f32>().unwrap();
        let ys: Vec<f32> = y.into_data().try_to_vec::<f32>().unwrap();
        for row in 0..10 {
            let (xr, yr) = (&xs[row * 8..row * 8 + 8], &ys[row * 8..row * 8 + 8]);
            for i in 0..4 {
                let nx = xr[i].hypot(xr[i + 4]);
                let ny = yr[i].hypot(yr[i + 4]);
                assert!((nx - ny).abs() < 1e-5);
            }
            if row % 5 == 0 {
                for i in 0..8 {
                    assert!((xr[i] - yr[i]).abs() < 1e-6, "position 0 must be unchanged");
                }
            }
        }
        // Position 1, pair 0 rotates by exactly 1 radian (inv_freq = 1).
        let (a, b) = (xs[8], xs[12]);
        assert!((ys[8] - (a * 1f32.cos() - b * 1f32.sin())).abs() < 1e-5);
        assert!((ys[12] - (b * 1f32.cos() + a * 1f32.sin())).abs() < 1e-5);
    }

    /// Llama-3 scaling keeps short wavelengths, divides long ones by `factor`, and ramps
    /// linearly in 1 / wavelength between them.
    #[test]
    fn llama3_scaling_bands() {
        let s = RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let base = inv_freqs(16, 10_000.0, None);
        let scaled = inv_freqs(16, 10_000.0, Some(&s));
        let mut seen = [false; 3];
        for (f, g) in base.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < 16.0 {
                assert_eq!(f, g);
                seen[0] = true;
            } else if wavelen > 64.0 {
                assert!((g - f / 8.0).abs() < 1e-15);
                seen[1] = true;
            } else {
                let smooth = (64.0 / wavelen - 1.0) / 3.0;
                assert!(g < f && *g > f / 8.0);
                assert!((g - (f / 8.0 + smooth * (f - f / 8.0))).abs() < 1e-12);
                seen[2] = true;
            }
        }
        assert_eq!(seen, [true; 3], "the test frequencies cover all three bands");
    }
}
