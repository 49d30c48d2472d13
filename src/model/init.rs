//! Where a new model's parameters come from: our own seeded generator (not the backend's
//! global RNG, so a model built from a seed is the same whatever else the process draws), or a
//! checkpoint's named tensors (Hugging Face names and `[out, in]` layout).
//!
//! Constructors take the Hugging Face name of each weight; the random source ignores it.
//! A loading error is kept and reported once after the build (see [`Init::finish`]), so that
//! module constructors stay free of `Result` plumbing; after it nothing more is read, and a
//! one-element placeholder stands in for each remaining tensor. Loading first runs the build
//! in checking mode ([`Init::checking`]): every name and shape against the files' headers,
//! nothing read or allocated at the configured sizes.

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::rng::SplitMix;

/// Named tensors to load: `(data, shape)` in f32, row-major, as stored.
pub trait WeightSource {
    /// The stored shape of `name`, from the header alone (no data read); an error if the
    /// tensor is missing or cannot be loaded (its dtype).
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)>;
    /// `name` as flat tensor data in the float dtype it is stored in, so that a half-precision
    /// file loaded in half precision is never widened on the host (for an 8B bf16 teacher: no
    /// 32 GB of f32 and two fewer passes over it). By default, `get`'s f32 values.
    fn get_data(&self, name: &str) -> Result<(TensorData, Vec<usize>)> {
        self.get(name).map(flat_f32)
    }
    /// Once a checking build has asked for every tensor the model needs: an error naming a
    /// stored tensor that was never asked for (it would be silently dropped).
    fn check_all_used(&self) -> Result<()> {
        Ok(())
    }
}

/// [`WeightSource::get`]'s values as flat f32 tensor data, with their shape.
pub fn flat_f32((values, shape): (Vec<f32>, Vec<usize>)) -> (TensorData, Vec<usize>) {
    let n = values.len();
    (TensorData::new(values, [n]), shape)
}

pub struct Init<'a> {
    rng: SplitMix,
    pub device: &'a Device,
    source: Option<&'a dyn WeightSource>,
    /// The dtype loaded tensors are created in: each is converted as it arrives, so a half-
    /// precision teacher never exists in f32 as a whole.
    dtype: DType,
    /// Only compare names and shapes with the source; every tensor is a placeholder.
    check_only: bool,
    error: Option<Error>,
}

impl<'a> Init<'a> {
    pub fn new(seed: u64, device: &'a Device) -> Self {
        Init { rng: SplitMix(seed), device, source: None, dtype: DType::F32, check_only: false, error: None }
    }

    pub fn from_source(source: &'a dyn WeightSource, device: &'a Device, dtype: DType) -> Self {
        Init { rng: SplitMix(0), device, source: Some(source), dtype, check_only: false, error: None }
    }

    /// A build against `source` that reads only shapes: the model it returns is placeholders.
    pub fn checking(source: &'a dyn WeightSource, device: &'a Device) -> Self {
        Init { check_only: true, ..Self::from_source(source, device, DType::F32) }
    }

    /// The first loading error, if any: call once the model is built.
    pub fn finish(self) -> Result<()> {
        self.error.map_or(Ok(()), Err)
    }

    /// Load `name` with `shape` (as stored). On the first error, remember it; from then on
    /// (and when only checking) return a one-element placeholder without reading anything,
    /// so that a config that does not match the weights never allocates its own sizes.
    fn load<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Option<Tensor<D>> {
        let src = self.source?;
        let expect = |got: &[usize]| {
            if got != shape.as_slice() {
                return Err(Error::input(format!("tensor `{name}` has shape {got:?}, expected {shape:?}")));
            }
            Ok(())
        };
        if self.error.is_none() {
            let t = if self.check_only {
                src.shape(name).and_then(|got| expect(&got)).map(|_| None)
            } else {
                src.get_data(name).and_then(|(data, got)| {
                    expect(&got)?;
                    if data.num_elements() != shape.iter().product::<usize>() {
                        return Err(Error::input(format!(
                            "tensor `{name}` holds {} values, its shape {shape:?} needs {}",
                            data.num_elements(),
                            shape.iter().product::<usize>()
                        )));
                    }
                    let flat = Tensor::<1>::from_data(data.convert_dtype(self.dtype), (self.device, self.dtype));
                    Ok(Some(flat.reshape(shape)))
                })
            };
            match t {
                Ok(Some(t)) => return Some(t),
                Ok(None) => {}
                Err(e) => self.error = Some(e),
            }
        }
        Some(Tensor::zeros([1; D], self.device))
    }

    /// A linear layer named `name` (`name.weight` stored `[out, in]`, `name.bias`), held in
    /// burn's `[in, out]` layout.
    pub fn named_linear(&mut self, name: &str, d_in: usize, d_out: usize, bias: bool) -> Linear {
        if self.source.is_some() {
            let w = self.load(&format!("{name}.weight"), [d_out, d_in]).expect("source set").transpose();
            let b = bias.then(|| Param::from_tensor(self.load(&format!("{name}.bias"), [d_out]).expect("source set")));
            return Linear { weight: Param::from_tensor(w), bias: b };
        }
        self.linear(d_in, d_out, bias)
    }

    pub fn named_embedding(&mut self, name: &str, vocab: usize, d: usize, std: f64) -> Embedding {
        match self.load(&format!("{name}.weight"), [vocab, d]) {
            Some(w) => Embedding { weight: Param::from_tensor(w) },
            None => self.embedding(vocab, d, std),
        }
    }

    /// RMSNorm with weight `name.weight` (ones when random).
    pub fn named_norm(&mut self, name: &str, d: usize, eps: f64) -> RmsNorm {
        match self.load(&format!("{name}.weight"), [d]) {
            // Built directly: RmsNormConfig::init would first allocate `d` ones.
            Some(w) => RmsNorm { gamma: Param::from_tensor(w), epsilon: eps },
            None => RmsNormConfig::new(d).with_epsilon(eps).init(self.device),
        }
    }

    /// A seed for a module's own draws (random features), from this build's stream.
    pub fn seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn draw_uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        self.draw(n, 1, |r| (lo + (hi - lo) * r.uniform()) as f32)
    }

    /// `n` values of `one`, which takes `per` draws of the stream each: the values the
    /// sequential loop gives, made in parallel. SplitMix's state after k draws is the seed plus
    /// k times its increment, so each chunk starts its own generator where the loop would be
    /// (a 1.2B-parameter student took 20 s on one core).
    fn draw(&mut self, n: usize, per: u64, one: impl Fn(&mut SplitMix) -> f32 + Sync) -> Vec<f32> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let start = self.rng.0;
        let mut out = vec![0f32; n];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, part)| {
            let mut r = SplitMix(start.wrapping_add(GAMMA.wrapping_mul((c * CHUNK) as u64).wrapping_mul(per)));
            part.iter_mut().for_each(|x| *x = one(&mut r));
        });
        self.rng.0 = start.wrapping_add(GAMMA.wrapping_mul(n as u64).wrapping_mul(per));
        out
    }

    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], lo: f64, hi: f64) -> Tensor<D> {
        let v = self.draw_uniform(shape.iter().product(), lo, hi);
        Tensor::from_data(TensorData::new(v, shape), self.device)
    }

    pub fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Tensor<D> {
        let n: usize = shape.iter().product();
        // Box-Muller: two uniforms to one standard normal (the second value is dropped, so
        // the stream stays simple to reason about).
        let v = self.draw(n, 2, |r| {
            let u1 = r.uniform().max(1e-300);
            let u2 = r.uniform();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        });
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

    /// The parallel draws are the sequential stream's, value for value, across chunk
    /// boundaries, and leave the generator where the loop would (the next draw agrees too).
    #[test]
    fn parallel_draws_are_the_sequential_stream() {
        let dev = Device::flex();
        let n = (1 << 16) * 2 + 123;
        let mut init = Init::new(5, &dev);
        let got: Vec<f32> = init.normal([n], 0.7).into_data().try_to_vec::<f32>().unwrap();
        let next = init.seed();
        let mut r = SplitMix(5);
        let want: Vec<f32> = (0..n)
            .map(|_| {
                let u1 = r.uniform().max(1e-300);
                let u2 = r.uniform();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.7) as f32
            })
            .collect();
        assert!(got == want, "parallel normals differ from the sequential stream");
        assert_eq!(next, r.next_u64());
        let u: Vec<f32> = Init::new(6, &dev).uniform([n], -0.5, 0.5).into_data().try_to_vec::<f32>().unwrap();
        let mut r = SplitMix(6);
        assert!(u == (0..n).map(|_| (-0.5 + r.uniform()) as f32).collect::<Vec<_>>());
    }

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
