//! Weight quantization shared by export and evaluation, so the perplexity we report for int8
//! is the perplexity of exactly the weights we write.

pub mod fake_quant;
pub mod ggml;
pub mod ggml_dequant;
pub mod int4;
pub mod int8;

use crate::error::{Error, Result};

/// Every quantizer's precondition: finite weights (NaN has no block). `w` is `[outputs,
/// inputs]` row-major; the error names the weight and where the first bad value is.
pub fn check_finite(w: &[f32], inputs: usize, name: &str) -> Result<()> {
    match w.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::runtime(format!(
            "{name}: non-finite weight {} at output {}, input {}: nothing to quantize",
            w[i],
            i / inputs,
            i % inputs
        ))),
    }
}
