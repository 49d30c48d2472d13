//! The one way the CLI parses an enum-valued flag: `FromStr` on the recipe's serde enum, so
//! that `--backend cuda` and `run.backend = "cuda"` accept the same words, spelled once (by
//! serde). The impls live here rather than beside the enums only because `recipe.rs` is being
//! split in parallel; they can move next to the types afterwards.

use std::str::FromStr;

use serde::de::{DeserializeOwned, IntoDeserializer, value};

use crate::data::config::Packing;
use crate::device::Backend;
use crate::error::{Error, Result};
use crate::export::ExportFormat;
use crate::model::config::AttentionImpl;
use crate::recipe::TeacherDtype;
use crate::teacher::codec::ValueCodec;

/// `FromStr` for unit-variant serde enums; `$names` is the list an error message offers (a
/// test checks that it matches what serde accepts).
macro_rules! from_serde_name {
    ($($ty:ty => [$($name:literal),+];)+) => {$(
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                by_serde_name(s).ok_or_else(|| expected(&[$($name),+], s))
            }
        }
    )+};
}

from_serde_name! {
    Backend => ["cpu", "cuda", "wgpu", "libtorch", "libtorch-cpu"];
    TeacherDtype => ["f32", "bf16", "f16"];
    ValueCodec => ["f16", "bf16", "q8", "q6", "q4"];
    ExportFormat => ["int8", "int4", "hf", "gguf-f16", "gguf-q8_0", "gguf-q4_0"];
    AttentionImpl => ["fused", "reference"];
    Packing => ["concat", "doc_per_row", "documents"];
}

fn by_serde_name<T: DeserializeOwned>(s: &str) -> Option<T> {
    T::deserialize(IntoDeserializer::<value::Error>::into_deserializer(s)).ok()
}

/// `expected a, b or c, got "x"`.
pub(super) fn expected(names: &[&str], got: &str) -> String {
    let list = match names {
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => String::new(),
    };
    format!("expected {list}, got {got:?}")
}

/// Parse the value of `--<name>`: a bad one is an input error naming the flag.
pub(super) fn flag<T: FromStr<Err = String>>(name: &str, value: &str) -> Result<T> {
    value.parse().map_err(|e| Error::input(format!("{name}: {e}")))
}

/// `--top-p`: a share of the probability mass, in (0, 1].
pub(super) fn top_p(p: f64) -> Result<f64> {
    match p > 0.0 && p <= 1.0 {
        true => Ok(p),
        false => Err(Error::input(format!("--top-p: expected a value in (0, 1], got {p}"))),
    }
}

/// `--temperature`: 0 (greedy) or a finite positive value.
pub(super) fn temperature(t: f64) -> Result<f64> {
    match t >= 0.0 && t.is_finite() {
        true => Ok(t),
        false => Err(Error::input(format!("--temperature: expected a finite value >= 0 (0 = greedy), got {t}"))),
    }
}

/// `--draft-len`: speculative decoding's draft tokens per teacher call, 1 to 64.
pub(super) fn draft_len(k: usize) -> Result<usize> {
    match (1..=64).contains(&k) {
        true => Ok(k),
        false => Err(Error::input(format!("--draft-len: expected 1 to 64 tokens, got {k}"))),
    }
}

/// `--backend cpu|cuda|wgpu`, refusing a backend this binary was built without.
pub(super) fn backend_device(backend: &str) -> Result<burn::tensor::Device> {
    let b: Backend = flag("--backend", backend)?;
    if !b.compiled_in() {
        return Err(Error::input(format!(
            "--backend {backend}: not compiled into this binary; rebuild with `--features {}`",
            b.cargo_feature()
        )));
    }
    Ok(crate::pipeline::device_for(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::fake_quant::Scheme;

    /// Every name offered parses, and serializes back to itself; one that is not offered fails.
    fn round_trip<T: FromStr<Err = String> + serde::Serialize>(names: &[&str]) {
        for n in names {
            let v: T = n.parse().unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(serde_json::to_value(&v).unwrap(), *n);
        }
        assert_eq!(T::from_str("nope").err().unwrap(), expected(names, "nope"));
    }

    #[test]
    fn flag_names_are_the_serde_names() {
        round_trip::<Backend>(&["cpu", "cuda", "wgpu", "libtorch", "libtorch-cpu"]);
        round_trip::<TeacherDtype>(&["f32", "bf16", "f16"]);
        round_trip::<ValueCodec>(&["f16", "bf16", "q8", "q6", "q4"]);
        round_trip::<ExportFormat>(&["int8", "int4", "hf", "gguf-f16", "gguf-q8_0", "gguf-q4_0"]);
        round_trip::<AttentionImpl>(&["fused", "reference"]);
        round_trip::<Packing>(&["concat", "doc_per_row", "documents"]);
        // The earlier name of the transformers checkpoint still parses.
        assert_eq!("f32".parse::<ExportFormat>().unwrap(), ExportFormat::F32);
        // Scheme parses itself (int4-g<N> is a family): the same words as the recipe.
        for n in ["q8_0", "q4_0", "int4-g128", "int4-g32"] {
            let v: Scheme = n.parse().unwrap();
            assert_eq!(serde_json::to_value(v).unwrap(), n);
            assert_eq!(serde_json::from_value::<Scheme>(serde_json::json!(n)).unwrap(), v);
        }
        for bad in ["int4-g", "int4-g7", "int4-g0", "q5_1"] {
            assert!(bad.parse::<Scheme>().unwrap_err().contains("expected q8_0, q4_0 or int4-g<N>"), "{bad}");
        }
        assert_eq!(expected(&["f32", "bf16"], "x"), "expected f32 or bf16, got \"x\"");
    }
}
