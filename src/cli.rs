//! Command-line parsing only: every subcommand calls into the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use crate::data::{self, pack::Packed};
use crate::error::{Error, Result};
use crate::generate::{Sampling, generate};
use crate::model::store;
use crate::pipeline::{self, RunOptions, load_run_recipe};
use crate::quant::int8::fake_quant_model;
use crate::recipe::{ExportFormat, Recipe};

#[derive(Parser)]
#[command(name = "distill", version, about = "Distill a large language model into a small one from one TOML recipe",
    after_help = "Exit codes: 0 success, 2 bad input (recipe, data, files), 1 runtime failure, 130 interrupted (resume with `distill resume`).")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct RecipeArgs {
    /// The recipe file (TOML).
    recipe: PathBuf,
    /// Override any recipe key, e.g. `--set optim.lr=3e-4 --set run.name=try2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a recipe end to end: data, teacher, distillation, evaluation, export.
    Run {
        #[command(flatten)]
        recipe: RecipeArgs,
        /// No progress bars (log lines only).
        #[arg(long)]
        quiet: bool,
    },
    /// Run the teacher once over the prepared training data and write its top-k logits to an
    /// on-disk cache (`[cache]` in the recipe) for `teacher.logits = "cache"`.
    CacheTeacher {
        #[command(flatten)]
        recipe: RecipeArgs,
        #[arg(long)]
        quiet: bool,
    },
    /// Continue a stopped or crashed run from its latest checkpoint.
    Resume {
        /// The run directory, e.g. runs/quickstart.
        run_dir: PathBuf,
        #[arg(long)]
        quiet: bool,
    },
    /// Held-out perplexity of the teacher, the student and the int8 student of a finished run.
    Eval {
        run_dir: PathBuf,
    },
    /// Export the trained student (or, with --teacher, the teacher) of a run.
    Export {
        run_dir: PathBuf,
        #[arg(long)]
        teacher: bool,
        /// int8 (per-channel symmetric) or f32.
        #[arg(long, value_enum, default_value = "int8")]
        format: FormatArg,
        /// Output directory (default: <run_dir>/export).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sample text from a run's student (or teacher).
    Generate {
        run_dir: PathBuf,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Keep the k most likely tokens (0 = all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Keep the smallest set of tokens holding this probability mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Sample from the teacher instead of the student.
        #[arg(long)]
        teacher: bool,
    },
    /// Print (as JSON) or save (as safetensors) a model's logits for given tokens: the
    /// interface for parity checks against other implementations.
    Logits {
        /// A run directory (its student, or its teacher with --teacher), a model directory
        /// holding model.json, or a Hugging Face folder (config.json + safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids, e.g. "1,2,3".
        #[arg(long, conflicts_with = "text")]
        ids: Option<String>,
        /// Text to tokenize with the run's tokenizer.json.
        #[arg(long)]
        text: Option<String>,
        #[arg(long)]
        teacher: bool,
        /// Use the int8 round-trip of the weights (what the int8 export holds).
        #[arg(long)]
        int8: bool,
        /// Write a safetensors file with `logits` (seq, vocab) f32 instead of printing JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Backend to run on: cpu, or cuda / wgpu when compiled in.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Run the model in f32, bf16 or f16 (what `teacher.dtype` does); logits come out f32.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
    /// Run the attention kernel on q/k/v read from a safetensors file (`q` (b, h, t, d), `k`
    /// and `v` (b, kv, t, d), f32) and write `o`: the interface for attention parity checks
    /// against PyTorch on each backend.
    Attention {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// f32 or bf16 (inputs are cast before the kernel, the output back to f32).
        #[arg(long, default_value = "f32")]
        dtype: String,
        #[arg(long)]
        window: Option<usize>,
    },
    /// Benchmark forward+backward time and peak memory of an attention layer and a Mamba-2
    /// layer against sequence length, and print KV-cache sizes of MHA, GQA and MQA.
    Bench {
        /// Sequence lengths.
        #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048,4096,8192")]
        seq: Vec<usize>,
        #[arg(long, default_value_t = 256)]
        d_model: usize,
        #[arg(long, default_value_t = 4)]
        n_heads: usize,
        #[arg(long, default_value_t = 1)]
        n_kv_heads: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed repetitions after one warm-up (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Append results as JSON lines to this file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
        /// Internal: measure one `kind:seq` in this process.
        #[arg(long, hide = true)]
        one: Option<String>,
    },
    /// Benchmark the top-k teacher cache on a finished run: bytes per token, the KL error
    /// against the full teacher for each k and value codec, and the reader's tokens/s against
    /// the student trainer's consumption.
    BenchCache {
        run_dir: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
        k: Vec<usize>,
        /// Value codecs: f16, bf16, q8, q6, q4.
        #[arg(long, value_delimiter = ',', default_value = "f16,bf16,q8,q6,q4")]
        values: Vec<String>,
        /// Training rows to cache.
        #[arg(long, default_value_t = 64)]
        rows: usize,
        /// Append results as JSON lines to this file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
    },
    /// Benchmark the distillation loss's forward+backward time and peak memory at large
    /// vocabularies: one chunk (naive), forward-only chunks, and the streamed loss the trainer
    /// uses (one chunk's graph at a time). Each measurement runs in a child process.
    BenchLoss {
        #[arg(long, value_delimiter = ',', default_value = "32000,128256")]
        vocab: Vec<usize>,
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        #[arg(long, default_value_t = 128)]
        chunk: usize,
        /// Internal: measure one `mode:vocab` in this process.
        #[arg(long, hide = true)]
        one: Option<String>,
    },
    /// Prepare and filter a recipe's data into its run directory and print the filter report.
    Data {
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    /// Check a recipe and print it fully resolved (defaults, config files, overrides applied).
    Validate {
        #[command(flatten)]
        recipe: RecipeArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Int8,
    F32,
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(cli.cmd) {
        Ok(()) => 0,
        Err(e) => {
            let kind = match e {
                Error::Input(_) => "error",
                Error::Runtime(_) => "runtime error",
                Error::Interrupted(_) => "interrupted",
            };
            eprintln!("{kind}: {e}");
            e.exit_code()
        }
    }
}

fn stop_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // First Ctrl-C: finish the step and checkpoint. Second: leave at once.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit now)...");
    });
    flag
}

fn say(s: String) {
    println!("{s}");
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run { recipe, quiet } => {
            let r = Recipe::load(&recipe.recipe, &recipe.set)?;
            let stop = stop_flag();
            println!("run directory: {}", r.run_dir().display());
            let opts = RunOptions { stop: &stop, stop_after: None, quiet };
            pipeline::run(&r, &opts, &mut say).map_err(|e| with_resume_hint(e, &r.run_dir()))?;
            Ok(())
        }
        Cmd::CacheTeacher { recipe, quiet } => {
            let r = Recipe::load(&recipe.recipe, &recipe.set)?;
            let stop = stop_flag();
            let opts = RunOptions { stop: &stop, stop_after: None, quiet };
            let m = pipeline::cache_teacher(&r, &opts, &mut say)?;
            println!("teacher cache {}: {} shards, {} tokens, k = {}, {:?} values, {:.1} bytes/token ({:.2} MB)",
                r.cache_dir().display(), m.shards.len(), m.tokens, m.id.k, m.id.values, m.bytes_per_token(), m.bytes as f64 / 1e6);
            Ok(())
        }
        Cmd::Resume { run_dir, quiet } => {
            let stop = stop_flag();
            let opts = RunOptions { stop: &stop, stop_after: None, quiet };
            pipeline::resume(&run_dir, &opts, &mut say).map_err(|e| with_resume_hint(e, &run_dir))?;
            Ok(())
        }
        Cmd::Eval { run_dir } => {
            let r = load_run_recipe(&run_dir)?;
            let prepared = data::load_prepared(&run_dir)?;
            let device = pipeline::device_for(r.run.backend);
            let valid = Packed::build(prepared.valid, r.data.seq_len, prepared.tokenizer.eos_id, r.data.packing);
            let teacher = load_final(&run_dir, "teacher", &device)?;
            let student = load_final(&run_dir, "student", &device)?;
            let [te, se, q8] = pipeline::evaluate_models(&teacher, &student, &valid, r.optim.batch_size, &device);
            println!("{:<16} {:>10} {:>12}", "model", "loss", "perplexity");
            for (name, e) in [("teacher", te), ("student f32", se), ("student int8", q8)] {
                println!("{name:<16} {:>10.4} {:>12.3}", e.loss, e.ppl);
            }
            Ok(())
        }
        Cmd::Export { run_dir, teacher, format, out } => {
            let r = load_run_recipe(&run_dir)?;
            let device = pipeline::device_for(r.run.backend);
            let m = load_final(&run_dir, if teacher { "teacher" } else { "student" }, &device)?;
            let f = match format {
                FormatArg::Int8 => ExportFormat::Int8,
                FormatArg::F32 => ExportFormat::F32,
            };
            let out = out.unwrap_or_else(|| run_dir.join("export"));
            let (p, size) = crate::export::native::export(&m, f, &out, &run_dir.join("tokenizer.json"))?;
            println!("wrote {} ({size} bytes)", p.display());
            Ok(())
        }
        Cmd::Generate { run_dir, prompt, max_tokens, temperature, top_k, top_p, seed, teacher } => {
            let r = load_run_recipe(&run_dir)?;
            let device = pipeline::device_for(r.run.backend);
            if !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
                return Err(Error::input(format!("--top-p: expected a value in (0, 1], got {top_p}")));
            }
            let m = load_final(&run_dir, if teacher { "teacher" } else { "student" }, &device)?;
            let tok = crate::data::tokenizer::Tokenizer::load(&run_dir.join("tokenizer.json"))?;
            let ids = tok.encode_prompt(&prompt)?;
            let s = Sampling { temperature, top_k, top_p, seed, max_tokens };
            print!("{prompt}");
            let mut shown = String::new();
            let mut so_far = Vec::new();
            generate(&m, &ids, tok.eos_id, &s, &device, |id| {
                // Decode the whole continuation and print what is new, so multi-token
                // characters appear whole.
                so_far.push(id);
                if let Ok(text) = tok.decode(&so_far) {
                    if text.len() > shown.len() && text.starts_with(&shown) {
                        print!("{}", &text[shown.len()..]);
                        let _ = std::io::stdout().flush();
                        shown = text;
                    }
                }
            });
            println!();
            Ok(())
        }
        Cmd::Attention { input, out, backend, dtype, window } => {
            let device = backend_device(&backend)?;
            let bytes = std::fs::read(&input).map_err(|e| Error::input(format!("{}: {e}", input.display())))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| Error::input(format!("{}: {e}", input.display())))?;
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
                .map_err(|e| Error::input(format!("{}: {e}", input.display())))?;
            let meta = meta.metadata().clone().unwrap_or_default();
            let get = |n: &str| -> Result<burn::tensor::Tensor<4>> {
                let v = st.tensor(n).map_err(|e| Error::input(format!("{}: `{n}`: {e}", input.display())))?;
                let s = v.shape();
                if v.dtype() != safetensors::Dtype::F32 || s.len() != 4 {
                    return Err(Error::input(format!("{}: `{n}` must be a 4-d f32 tensor", input.display())));
                }
                let data: Vec<f32> = crate::util::f32s_from_le(v.data());
                Ok(burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(data, [s[0], s[1], s[2], s[3]]), &device))
            };
            // Cases `q`/`k`/`v`, or `q0`/`k0`/`v0`, `q1`/... in one process, so that a GPU
            // backend compiles and tunes its kernels once; metadata `window<i>` per case.
            let suffixes: Vec<String> = if st.names().iter().any(|n| *n == "q") {
                vec![String::new()]
            } else {
                (0..).map(|i: usize| i.to_string()).take_while(|i| st.names().iter().any(|n| **n == format!("q{i}"))).collect()
            };
            let mut outputs: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
            for sfx in &suffixes {
                let (mut q, mut k, mut v) = (get(&format!("q{sfx}"))?, get(&format!("k{sfx}"))?, get(&format!("v{sfx}"))?);
                match dtype.as_str() {
                    "f32" => {}
                    "bf16" => {
                        let bf = burn::tensor::DType::BF16;
                        (q, k, v) = (q.cast(bf), k.cast(bf), v.cast(bf));
                    }
                    other => return Err(Error::input(format!("--dtype: expected f32 or bf16, got {other:?}"))),
                }
                let w = meta.get(&format!("window{sfx}")).and_then(|w| w.parse().ok()).or(window);
                let o = crate::model::attention::grouped_attention(q, k, v, 0, w).cast(burn::tensor::DType::F32);
                let shape = o.dims().to_vec();
                let data: Vec<f32> = o.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
                outputs.push((format!("o{sfx}"), shape, data));
            }
            crate::util::write_f32_safetensors(&out, outputs)?;
            Ok(())
        }
        Cmd::Logits { model, ids, text, teacher, int8, out, backend, dtype } => {
            let device = backend_device(&backend)?;
            let dtype = serde_json::from_value::<crate::recipe::TeacherDtype>(dtype.as_str().into())
                .map_err(|_| Error::input(format!("--dtype: expected f32, bf16 or f16, got {dtype:?}")))?
                .dtype();
            let (m, tok_dir) = if model.join("model.json").is_file() {
                (store::load(&model, &device)?.0, model.clone())
            } else if model.join("config.json").is_file() && !model.join(pipeline::RESOLVED).is_file() {
                (crate::teacher::hf::load(&model, &device, dtype)?.0, model.clone())
            } else {
                (load_final(&model, if teacher { "teacher" } else { "student" }, &device)?, model.clone())
            };
            let m = if int8 { fake_quant_model(&m) } else { m };
            let m = m.cast(dtype);
            let ids: Vec<u32> = match (ids, text) {
                (Some(s), _) => s
                    .split(',')
                    .map(|t| t.trim().parse::<u32>().map_err(|_| Error::input(format!("--ids: `{t}` is not a token id"))))
                    .collect::<Result<_>>()?,
                (None, Some(t)) => crate::data::tokenizer::Tokenizer::load(&tok_dir.join("tokenizer.json"))?.encode_prompt(&t)?,
                (None, None) => return Err(Error::input("give --ids or --text")),
            };
            let v = m.config.vocab_size;
            if ids.is_empty() {
                return Err(Error::input("no tokens to run"));
            }
            if let Some(bad) = ids.iter().find(|&&i| i as usize >= v) {
                return Err(Error::input(format!("--ids: token id {bad} is outside the model's vocabulary ({v})")));
            }
            let t = ids.len();
            let logits: Vec<f32> = m.forward(crate::model::token_tensor(&ids, &device)).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
            match out {
                Some(p) => {
                    crate::util::write_f32_safetensors(&p, vec![("logits".into(), vec![t, v], logits)])?;
                    println!("wrote {} ({t} x {v})", p.display());
                }
                None => {
                    let rows: Vec<&[f32]> = logits.chunks(v).collect();
                    println!("{}", serde_json::json!({"ids": ids, "logits": rows}));
                }
            }
            Ok(())
        }
        Cmd::Bench { seq, d_model, n_heads, n_kv_heads, batch, reps, jsonl, one } => {
            if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || d_model % n_heads != 0 {
                return Err(Error::input(format!(
                    "--n-heads ({n_heads}) must divide --d-model ({d_model}) and be a multiple of --n-kv-heads ({n_kv_heads})")));
            }
            let cfg = crate::bench::layers::LayerBench { d_model, n_heads, n_kv_heads, batch, reps: reps.max(1) };
            if let Some(one) = one {
                let (kind, t) = one.split_once(':').ok_or_else(|| Error::input("--one kind:seq"))?;
                let t: usize = t.parse().map_err(|_| Error::input("--one kind:seq"))?;
                let ms = crate::bench::layers::time_layer(kind, t, cfg)?;
                println!("{ms} {}", crate::bench::peak_rss_mib().unwrap_or(0.0));
                return Ok(());
            }
            let exe = std::env::current_exe().map_err(|e| Error::runtime(e.to_string()))?;
            println!("forward+backward of one layer, batch {batch}, d_model {d_model}, burn flex f32 (median of {reps})");
            println!("{:<10} {:>7} {:>12} {:>12}", "layer", "seq", "ms", "peak MiB");
            let mut lines = String::new();
            crate::bench::layers::sweep(&exe, &["attention", "mamba"], &seq, cfg, |kind, t, r| {
                match r {
                    Some((ms, mib)) => {
                        println!("{kind:<10} {t:>7} {ms:>12.1} {mib:>12.0}");
                        lines += &format!("{}\n", serde_json::json!({"layer": kind, "seq": t, "ms": ms, "peak_mib": mib,
                            "d_model": d_model, "n_heads": n_heads, "n_kv_heads": n_kv_heads, "batch": batch}));
                    }
                    None => println!("{kind:<10} {t:>7} {:>12} {:>12}", "failed", "-"),
                }
            });
            let shape = |kv: usize| crate::model::DecoderConfig {
                vocab_size: 32000,
                shape: crate::recipe::PartialShape {
                    d_model: Some(4096), n_layers: Some(32), n_heads: Some(32), n_kv_heads: Some(kv), d_ff: Some(14336),
                    ..Default::default()
                }.to_shape().expect("complete shape"),
            };
            println!("\nKV cache per token, f32, a 32-layer d_model 4096 model with 32 query heads:");
            for (name, kv) in [("MHA (32 KV heads)", 32), ("GQA (8 KV heads)", 8), ("MQA (1 KV head)", 1)] {
                println!("  {name:<18} {:>8} KiB", shape(kv).kv_bytes_per_token() / 1024);
            }
            if let Some(p) = jsonl {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p)
                    .map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
                f.write_all(lines.as_bytes()).map_err(|e| Error::runtime(format!("{}: {e}", p.display())))?;
            }
            Ok(())
        }
        Cmd::BenchCache { run_dir, k, values, rows, jsonl } => {
            let codecs = values.iter().map(|v| toml::Value::String(v.clone()).try_into()
                .map_err(|_| Error::input(format!("--values: expected f16, bf16, q8, q6 or q4, got {v:?}"))))
                .collect::<Result<Vec<crate::recipe::ValueCodec>>>()?;
            if k.contains(&0) || rows == 0 {
                return Err(Error::input("--k and --rows must be positive"));
            }
            let trainer = crate::train::metrics::read(&run_dir.join("metrics.jsonl")).into_iter()
                .filter(|v| v["phase"] == "student").filter_map(|v| v["tok_per_s"].as_f64()).collect::<Vec<_>>();
            let trainer = trainer.iter().sum::<f64>() / trainer.len().max(1) as f64;
            println!("top-k teacher cache on {} ({rows} training rows): forward KL(teacher || student) error vs the full teacher", run_dir.display());
            println!("{:>5} {:>6} {:>11} {:>10} {:>14} {:>14} {:>12}", "k", "values", "bytes/tok", "KL", "err (other)", "err (renorm)", "read tok/s");
            let mut lines = String::new();
            crate::bench::cache::cache_sweep(&run_dir, &k, &codecs, rows, |r| {
                println!("{:>5} {:>6} {:>11.1} {:>10.4} {:>13.3}% {:>13.3}% {:>12.0}", r.k, format!("{:?}", r.values).to_lowercase(),
                    r.bytes_per_token, r.kl_online, 100.0 * r.rel_err_other, 100.0 * r.rel_err_renormalize, r.read_tok_per_s);
                lines += &format!("{}\n", serde_json::json!(r));
            })?;
            println!("student trainer consumption in this run: {trainer:.0} tok/s (one reader thread decodes ahead of it)");
            println!("\nrecord size at large vocabularies (synthetic logits, k = 128, one temperature):");
            for v in [32_000usize, 128_256] {
                let sizes: Vec<String> = codecs.iter()
                    .map(|&c| format!("{:?} {:.1}", c, crate::bench::cache::cache_record_bytes(v, 128, c, 200)).to_lowercase())
                    .collect();
                println!("  vocab {v:>7}: {} bytes/token", sizes.join(", "));
            }
            if let Some(p) = jsonl {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p)
                    .map_err(|e| Error::input(format!("{}: {e}", p.display())))?;
                f.write_all(lines.as_bytes()).map_err(|e| Error::runtime(format!("{}: {e}", p.display())))?;
            }
            Ok(())
        }
        Cmd::BenchLoss { vocab, tokens, chunk, one } => {
            if tokens == 0 || chunk == 0 || vocab.contains(&0) {
                return Err(Error::input("--tokens, --chunk and --vocab must be positive"));
            }
            if let Some(one) = one {
                let (mode, v) = one.split_once(':').ok_or_else(|| Error::input("--one mode:vocab"))?;
                let v: usize = v.parse().map_err(|_| Error::input("--one mode:vocab"))?;
                let (ms, mib) = crate::bench::loss::time_loss(mode, v, tokens, chunk)?;
                println!("{ms} {mib}");
                return Ok(());
            }
            let exe = std::env::current_exe().map_err(|e| Error::runtime(e.to_string()))?;
            println!("distillation loss forward+backward, {tokens} tokens, forward KL, chunks of {chunk} (burn flex f32, one run each)");
            println!("{:>8} {:>10} {:>10} {:>16} {:>14}", "vocab", "mode", "ms", "peak MiB (+)", "[tokens,vocab]");
            for &v in &vocab {
                for mode in ["naive", "chunked", "streamed"] {
                    let out = std::process::Command::new(&exe)
                        .args(["bench-loss", "--one", &format!("{mode}:{v}"), "--tokens", &tokens.to_string(), "--chunk", &chunk.to_string()])
                        .output();
                    let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
                        let s = String::from_utf8_lossy(&o.stdout).to_string();
                        let mut it = s.split_whitespace().map(|x| x.parse::<f64>());
                        Some((it.next()?.ok()?, it.next()?.ok()?))
                    });
                    let one = (tokens * v * 4) as f64 / (1 << 20) as f64;
                    match parsed {
                        Some((ms, mib)) => println!("{v:>8} {mode:>10} {ms:>10.0} {mib:>16.0} {one:>13.0}M"),
                        None => println!("{v:>8} {mode:>10} {:>10} {:>16}", "failed", "-"),
                    }
                }
            }
            Ok(())
        }
        Cmd::Data { recipe } => {
            let r = Recipe::load(&recipe.recipe, &recipe.set)?;
            let dir = r.run_dir();
            if dir.join("data/meta.json").is_file() {
                println!("data already prepared in {}", dir.join("data").display());
            }
            data::prepare_to_disk(&r, &dir, &mut say)?;
            println!("report: {}", dir.join("data/filter_report.json").display());
            Ok(())
        }
        Cmd::Validate { recipe } => {
            let r = Recipe::load(&recipe.recipe, &recipe.set)?;
            print!("{}", r.to_toml());
            eprintln!("{}: ok", recipe.recipe.display());
            Ok(())
        }
    }
}

/// `--backend cpu|cuda|wgpu`, refusing a backend this binary was built without.
fn backend_device(backend: &str) -> Result<burn::tensor::Device> {
    let b: crate::recipe::Backend = toml::Value::String(backend.to_string())
        .try_into()
        .map_err(|_| Error::input(format!("--backend: expected cpu, cuda or wgpu, got {backend:?}")))?;
    if !b.compiled_in() {
        return Err(Error::input(format!("--backend {backend}: not compiled into this binary; rebuild with `--features {backend}`")));
    }
    Ok(pipeline::device_for(b))
}

fn load_final(run_dir: &Path, which: &str, device: &burn::tensor::Device) -> Result<crate::model::Decoder> {
    let dir = run_dir.join(which).join("final");
    if !dir.join("model.json").is_file() {
        return Err(Error::input(format!(
            "{}: the {which} has not finished training in this run; finish it with `distill resume {}`",
            dir.display(), run_dir.display())));
    }
    Ok(store::load(&dir, device)?.0)
}

fn with_resume_hint(e: Error, dir: &Path) -> Error {
    match e {
        Error::Interrupted(m) => Error::Interrupted(format!("{m}; continue with `distill resume {}`", dir.display())),
        Error::Runtime(m) => Error::Runtime(format!("{m}\n(the run can be continued with `distill resume {}`)", dir.display())),
        other => other,
    }
}
