//! The attention seam's parity file (`distill attention`, scripts/attention_parity.py): q/k/v
//! read from safetensors, run through [`grouped_attention`], `o` written back. One file may
//! hold several cases so that a GPU backend compiles and tunes its kernels once.
//!
//! Layout: `q` (b, h, t, d), `k` and `v` (b, kv, t, d), f32; or the same with suffixes `q0`/
//! `k0`/`v0`, `q1`/... and metadata `window<i>` per case. Outputs are `o`, or `o0`, `o1`, ...

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::attention::grouped_attention;
use crate::error::{Error, Result};

/// A q/k/v file whose header and metadata have been read.
pub struct QkvFile {
    path: PathBuf,
    bytes: Vec<u8>,
    meta: HashMap<String, String>,
}

/// A named f32 tensor to write: (name, shape, values).
pub type Output = (String, Vec<usize>, Vec<f32>);

impl QkvFile {
    pub fn open(path: &Path) -> Result<QkvFile> {
        let bad = |e: &dyn std::fmt::Display| Error::input(format!("{}: {e}", path.display()));
        crate::error::regular_file(path)?;
        let bytes = std::fs::read(path).map_err(|e| bad(&e))?;
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        Ok(QkvFile { path: path.to_path_buf(), bytes, meta })
    }

    /// Run every case on `device`, inputs cast to `dtype` before the kernel and the output back
    /// to f32. A case's `window<i>` metadata wins over `window`.
    pub fn run(&self, device: &Device, dtype: DType, window: Option<usize>) -> Result<Vec<Output>> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::input(format!("{}: {e}", self.path.display())))?;
        let get = |n: &str| -> Result<Tensor<4>> {
            let v = st.tensor(n).map_err(|e| Error::input(format!("{}: `{n}`: {e}", self.path.display())))?;
            let s = v.shape();
            if v.dtype() != safetensors::Dtype::F32 || s.len() != 4 {
                return Err(Error::input(format!("{}: `{n}` must be a 4-d f32 tensor", self.path.display())));
            }
            let data: Vec<f32> = crate::util::f32s_from_le(v.data());
            Ok(Tensor::from_data(TensorData::new(data, [s[0], s[1], s[2], s[3]]), device))
        };
        let has = |n: &str| st.names().contains(&n);
        let suffixes: Vec<String> = if has("q") {
            vec![String::new()]
        } else {
            (0..).map(|i: usize| i.to_string()).take_while(|i| has(&format!("q{i}"))).collect()
        };
        let mut outputs = Vec::new();
        for sfx in &suffixes {
            let (mut q, mut k, mut v) = (get(&format!("q{sfx}"))?, get(&format!("k{sfx}"))?, get(&format!("v{sfx}"))?);
            if dtype != DType::F32 {
                (q, k, v) = (q.cast(dtype), k.cast(dtype), v.cast(dtype));
            }
            let w = self.meta.get(&format!("window{sfx}")).and_then(|w| w.parse().ok()).or(window);
            let o = grouped_attention(q, k, v, 0, w).cast(DType::F32);
            let shape = o.dims().to_vec();
            let data: Vec<f32> = o.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
            outputs.push((format!("o{sfx}"), shape, data));
        }
        Ok(outputs)
    }
}
