//! Weight quantization shared by export and evaluation, so the perplexity we report for int8
//! is the perplexity of exactly the weights we write.

pub mod fake_quant;
pub mod ggml;
pub mod int4;
pub mod int8;
