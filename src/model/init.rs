//! Parameter initialization from our own seeded generator instead of the backend's global
//! RNG: a model built from a seed is the same whatever else the process draws at the same
//! time (parallel tests, a second model), which is what makes runs reproducible.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use crate::rng::SplitMix;

pub struct Init<'a> {
    rng: SplitMix,
    pub device: &'a Device,
}

impl<'a> Init<'a> {
    pub fn new(seed: u64, device: &'a Device) -> Self {
        Init { rng: SplitMix(seed), device }
    }

    fn draw_uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| (lo + (hi - lo) * self.rng.uniform()) as f32).collect()
    }

    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], lo: f64, hi: f64) -> Tensor<D> {
        let v = self.draw_uniform(shape.iter().product(), lo, hi);
        Tensor::from_data(TensorData::new(v, shape), self.device)
    }

    pub fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Tensor<D> {
        let n: usize = shape.iter().product();
        // Box-Muller: two uniforms to one standard normal (the second value is dropped, so
        // the stream stays simple to reason about).
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let u1 = self.rng.uniform().max(1e-300);
                let u2 = self.rng.uniform();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect();
        Tensor::from_data(TensorData::new(v, shape), self.device)
    }

    /// U(-1/sqrt(d_in), 1/sqrt(d_in)) for weight and bias, as torch's and burn's default.
    /// Weight layout `[d_in, d_out]` (burn's row layout).
    pub fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let k = 1.0 / (d_in as f64).sqrt();
        Linear {
            weight: Param::from_tensor(self.uniform([d_in, d_out], -k, k)),
            bias: bias.then(|| Param::from_tensor(self.uniform([d_out], -k, k))),
        }
    }

    pub fn embedding(&mut self, vocab: usize, d: usize, std: f64) -> Embedding {
        Embedding { weight: Param::from_tensor(self.normal([vocab, d], std)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_seeded_and_has_the_requested_moments() {
        let dev = Device::flex();
        let a: Vec<f32> = Init::new(9, &dev).normal([20000], 0.5).into_data().try_to_vec::<f32>().unwrap();
        let b: Vec<f32> = Init::new(9, &dev).normal([20000], 0.5).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        let mean = a.iter().map(|x| *x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.02 && (var.sqrt() - 0.5).abs() < 0.02, "mean {mean}, std {}", var.sqrt());
        let l = Init::new(1, &dev).linear(100, 3, true);
        let w: Vec<f32> = l.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w.iter().all(|x| x.abs() <= 0.1) && w.iter().any(|x| x.abs() > 0.08));
    }
}
