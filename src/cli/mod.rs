//! Command-line parsing only: the clap definitions of every subcommand, and a dispatch that
//! hands each one to its handler. Handlers ([`run`], [`generate`], [`probes`], [`bench`]) turn
//! flags into library calls and print the results; the work itself lives in the library.

mod bench;
mod eval;
mod flags;
mod generate;
mod probes;
mod run;
mod signals;
mod speculative;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::model::{Decoder, store};
use crate::run_dir::Phase;

#[derive(Parser)]
#[command(
    name = "distill",
    version,
    about = "Distill a large language model into a small one from one TOML recipe",
    after_help = "Exit codes: 0 success, 2 bad input (recipe, data, files), 1 runtime failure, 130 interrupted (resume with `distill resume`)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// The doc comment of each variant is its `--help` text; the argument structs below carry
// none, so that clap does not prefer theirs.
#[derive(Subcommand)]
enum Cmd {
    /// Run a recipe end to end: data, teacher, distillation, evaluation, export.
    Run(RunArgs),
    /// Run the teacher once over the prepared training data and write its top-k logits to an
    /// on-disk cache (`[cache]` in the recipe) for `teacher.logits = "cache"`.
    CacheTeacher(CacheTeacherArgs),
    /// Continue a stopped or crashed run from its latest checkpoint.
    Resume(ResumeArgs),
    /// Held-out perplexity of the teacher, the student and the int8 student of a finished run.
    Eval(EvalArgs),
    /// Export the trained student (or, with --teacher, the teacher) of a run.
    Export(ExportArgs),
    /// Sample text from a run's student (or teacher).
    Generate(GenerateArgs),
    /// Speculative decoding: the run's student drafts tokens and its teacher verifies them
    /// (Leviathan et al.'s rule: the output is distributed as the teacher's own). Prints the
    /// acceptance rate, tokens per teacher call and the speedup over the teacher alone.
    Speculative(SpeculativeArgs),
    /// Write one self-contained HTML page of a run (recipe, data filter table, training curves,
    /// eval table, exports, speculative figures): `<run>/report.html`.
    Report(ReportArgs),
    /// List the runs of a folder (default `runs`): status, step, best held-out loss, exports.
    Runs(RunsArgs),
    /// Print (as JSON) or save (as safetensors) a model's logits for given tokens: the
    /// interface for parity checks against other implementations.
    Logits(LogitsArgs),
    /// Run the attention kernel on q/k/v read from a safetensors file (`q` (b, h, t, d), `k`
    /// and `v` (b, kv, t, d), f32) and write `o`: the interface for attention parity checks
    /// against PyTorch on each backend.
    Attention(AttentionArgs),
    /// Benchmark forward+backward time and peak memory of an attention layer and a Mamba-2
    /// layer against sequence length, and print KV-cache sizes of MHA, GQA and MQA.
    Bench(BenchArgs),
    /// Benchmark the training attention op (forward+backward) in TFLOP/s at FlashAttention's
    /// benchmark shapes, bf16 on a GPU: the figures `scripts/attention_peer.py` sets beside
    /// PyTorch's scaled_dot_product_attention.
    BenchAttention(BenchAttentionArgs),
    /// Benchmark the top-k teacher cache on a finished run: bytes per token, the KL error
    /// against the full teacher for each k and value codec, and the reader's tokens/s against
    /// the student trainer's consumption.
    BenchCache(BenchCacheArgs),
    /// Benchmark batched generation: tokens/s of greedy (or sampled) decoding of a model at a
    /// batch, prompt length and output length, every row running to the limit, with the time
    /// split into prefill, decode and sampling: the figure `scripts/generate_peer.py` sets
    /// beside transformers' `generate`.
    BenchGenerate(BenchGenerateArgs),
    /// Benchmark the distillation loss's forward+backward time and peak memory at large
    /// vocabularies: one chunk (naive), forward-only chunks, and the streamed loss the trainer
    /// uses (one chunk's graph at a time). Each measurement runs in a child process.
    BenchLoss(BenchLossArgs),
    /// Time a recipe's own training loop: steady tokens/s, step time, warm-up, MFU and peak
    /// memory, on whatever backend the recipe (or `--set run.backend=...`) names. Trains a fresh
    /// student in the run directory `<run.name>-bench` (data, teacher and cache are reused).
    BenchTrain(BenchTrainArgs),
    /// Have the recipe's teacher write a dataset (`[synth]`): responses to the user turns of
    /// its chat data, or continuations of its text. Writes JSON Lines shards with provenance to
    /// `<run>/synth` (or `synth.out`); a rerun continues a killed job exactly.
    Synth(RecipeArgs),
    /// Prepare and filter a recipe's data into its run directory and print the filter report.
    Data(RecipeArgs),
    /// Cut a recipe's student from its teacher (`student.init = "prune"`): one calibration pass
    /// ranks layers, heads, FFN and embedding channels; writes the pruned student
    /// (`<run>/student/init/`) and its importance table (`<run>/student/prune/importance.json`
    /// and `.svg`) without training. A later `distill run` of the recipe starts from it.
    Prune(RecipeArgs),
    /// Check a recipe and print it fully resolved (defaults, config files, overrides applied).
    Validate(RecipeArgs),
    /// Rebuild a llama.cpp GGUF file's tokenizer (byte-level BPE) as a Hugging Face
    /// tokenizer.json that gives llama.cpp's token ids.
    Tokenizer(TokenizerArgs),
}

#[derive(clap::Args)]
struct RecipeArgs {
    /// The recipe file (TOML).
    recipe: PathBuf,
    /// Override any recipe key, e.g. `--set optim.lr=3e-4 --set run.name=try2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(clap::Args)]
struct TokenizerArgs {
    /// The .gguf file.
    gguf: PathBuf,
    /// Where to write the tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// No progress bars (log lines only).
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct CacheTeacherArgs {
    #[command(flatten)]
    recipe: RecipeArgs,
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ResumeArgs {
    /// The run directory, e.g. runs/quickstart.
    run_dir: PathBuf,
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    run_dir: PathBuf,
    /// Evaluate the student of a checkpoint instead of its final weights: `latest` or `step-N`
    /// (a run still training, or an earlier point of a finished one).
    #[arg(long)]
    checkpoint: Option<String>,
    /// Also evaluate the student after post-training quantization of its block linears with
    /// ggml's block quantizers, bit-exact, or grouped int4 (comma-separated: q8_0,q4_0,int4-g128).
    #[arg(long, value_delimiter = ',')]
    ptq: Vec<String>,
    /// With --ptq: quantize the embedding table and a separate LM head too (as `[qat]
    /// embeddings` / `lm_head`; default: as the run's recipe says).
    #[arg(long)]
    ptq_embeddings: bool,
    /// Also evaluate exports of this run's student, from the files themselves: `.gguf` files or
    /// export folders (hf, int8, int4), comma-separated.
    #[arg(long, value_delimiter = ',')]
    exported: Vec<PathBuf>,
    /// Pack the held-out split this way instead of as the run did (concat, doc_per_row,
    /// documents): runs trained with different packings compared on one layout.
    #[arg(long)]
    packing: Option<String>,
    /// Also grade the student on its own text: greedy completions of the prompts of this many
    /// held-out chat rows, scored by the teacher (mean log-probability, top-1 agreement).
    #[arg(long, default_value_t = 0)]
    policy: usize,
    /// Tokens per completion with --policy.
    #[arg(long, default_value_t = 64)]
    policy_tokens: usize,
    /// Also measure speculative decoding with the student drafting for the teacher on the
    /// prompts of this file (as `distill speculative`, greedy, 64 tokens each).
    #[arg(long)]
    speculative: Option<PathBuf>,
    /// Draft tokens per teacher call with --speculative.
    #[arg(long, default_value_t = 4)]
    draft_len: usize,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

// Enum-valued flags are `String`s parsed by the handler through the enum's `FromStr` (see
// `flags`), so that a bad value gets the same `error: --flag: expected ...` as `--set` does.
#[derive(clap::Args)]
struct ExportArgs {
    run_dir: PathBuf,
    #[arg(long)]
    teacher: bool,
    /// int8 (per-channel symmetric), hf (a transformers checkpoint, f32; also `f32`), or GGUF
    /// for llama.cpp: gguf-f16, gguf-q8_0, gguf-q4_0.
    #[arg(long, default_value = "int8")]
    format: String,
    /// Output directory (default: <run_dir>/export).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GenerateArgs {
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
    /// Run the model as its round trip, q8_0 or q4_0 (what a GGUF export holds) or int4-g<N>.
    #[arg(long)]
    quant: Option<String>,
    /// Print the prompt's and the generated token ids as JSON instead of text.
    #[arg(long)]
    ids: bool,
    /// Generate from an export of the run's student instead: a `.gguf` file or an export
    /// folder (hf, int8, int4).
    #[arg(long, conflicts_with_all = ["quant", "teacher"])]
    exported: Option<PathBuf>,
    /// Generate for every prompt of this file, in batches: JSON Lines (a string, or an object
    /// with a `prompt` string or a `messages` list, rendered with the run's chat template) or
    /// plain text (one prompt per line). Writes one JSON line per prompt.
    #[arg(long, conflicts_with = "prompt")]
    prompts: Option<PathBuf>,
    /// Prompts per batch with --prompts.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Where --prompts writes its JSON lines (default: stdout).
    #[arg(long, requires = "prompts")]
    out: Option<PathBuf>,
    /// Do not stop at EOS: every row generates --max-tokens (benchmarks).
    #[arg(long)]
    ignore_eos: bool,
    /// Print the time split (prefill, decode, sampling) and tokens/s to stderr.
    #[arg(long)]
    stats: bool,
}

#[derive(clap::Args)]
struct SpeculativeArgs {
    run_dir: PathBuf,
    /// The prompts: JSON Lines (a string, or an object with a `prompt` string or a `messages`
    /// list, rendered with the run's chat template) or plain text, one prompt per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Tokens the student drafts per teacher call.
    #[arg(long, default_value_t = 4)]
    draft_len: usize,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy (the output is then the teacher's greedy output).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ReportArgs {
    run_dir: PathBuf,
    /// Where to write the page (default `<run>/report.html`).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunsArgs {
    /// The folder holding run directories.
    #[arg(default_value = "runs")]
    dir: PathBuf,
    /// One JSON line per run instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct LogitsArgs {
    /// A run directory (its student, or its teacher with --teacher), a model directory
    /// holding model.json, a Hugging Face folder (config.json + safetensors, e.g. an `hf`
    /// export), or a `.gguf` file we exported.
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
}

#[derive(clap::Args)]
struct AttentionArgs {
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
}

#[derive(clap::Args)]
struct BenchArgs {
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
    /// Layers to sweep: attention (the fused kernel), attention-ref (burn's materialized
    /// composition), linformer, performer, mamba; ffn (dense SwiGLU, 4 d_model) and moe (8
    /// experts of 2 d_model, top-2).
    #[arg(long, value_delimiter = ',', default_value = "attention,attention-ref,linformer,performer,mamba,ffn,moe")]
    kinds: Vec<String>,
    /// Internal: measure one `kind:seq` in this process.
    #[arg(long, hide = true)]
    one: Option<String>,
}

#[derive(clap::Args)]
struct BenchGenerateArgs {
    /// A run directory, model directory, Hugging Face folder or .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// cpu or libtorch (the first CUDA GPU) when compiled in.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// The model's weights in f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Prompt tokens per row (random ids, seeded).
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Tokens generated per row.
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Timed repetitions after one warm-up; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also check N rows of prompts of unequal lengths (a quarter to all of --prompt-len):
    /// greedy batched generation against each prompt alone, --check-tokens tokens each.
    #[arg(long, default_value_t = 0)]
    check: usize,
    #[arg(long, default_value_t = 32)]
    check_tokens: usize,
}

#[derive(clap::Args)]
struct BenchAttentionArgs {
    /// Sequence lengths [GPU: 512,1024,...,16384; CPU: 256,512,1024,2048].
    #[arg(long, value_delimiter = ',')]
    seq: Vec<usize>,
    /// Head dimensions.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    head_dim: Vec<usize>,
    /// Tokens per batch: the batch is tokens / seq, at least 1 [GPU: 16384; CPU: 2048].
    #[arg(long)]
    tokens: Option<usize>,
    /// Query heads are d_model / head_dim [GPU: 2048, FlashAttention's benchmark; CPU: 256].
    #[arg(long)]
    d_model: Option<usize>,
    /// Query heads per key/value head (1: MHA).
    #[arg(long, default_value_t = 1)]
    group: usize,
    /// Sliding window: keys each query sees, itself included.
    #[arg(long)]
    window: Option<usize>,
    /// cpu (burn flex; f32 only) or libtorch (the first CUDA GPU) when compiled in.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// fused (the model's attention op) or reference (burn's materialized softmax(QK^T)V).
    #[arg(long, default_value = "fused")]
    r#impl: String,
    #[arg(long, default_value_t = 3)]
    warm: usize,
    /// Timed repetitions (their mean is reported).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Append results as JSON lines to this file.
    #[arg(long)]
    jsonl: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BenchCacheArgs {
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
}

#[derive(clap::Args)]
struct BenchTrainArgs {
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Optimizer steps to run (the first `--warm` are left out of the steady figures).
    #[arg(long, default_value_t = 12)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warm: usize,
    /// Peak TFLOP/s for the MFU column (default: 989, H100/H200 dense bf16, on GPU backends;
    /// none on the CPU).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    jsonl: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BenchLossArgs {
    #[arg(long, value_delimiter = ',', default_value = "32000,128256")]
    vocab: Vec<usize>,
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    #[arg(long, default_value_t = 128)]
    chunk: usize,
    /// Student hidden size: with it, the logits are `H W^T` inside the measurement and the
    /// LM head fused into the loss (`fused`) is compared too. 0: the logits are given.
    #[arg(long, default_value_t = 0)]
    hidden: usize,
    /// Backend: cpu (burn flex, peak RSS), or libtorch (the GPU; memory held by the caching
    /// allocator, from nvidia-smi) when compiled in.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Internal: measure one `mode:vocab` in this process.
    #[arg(long, hide = true)]
    one: Option<String>,
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
            match e {
                Error::Interrupted(_) => signals::interrupted_exit_code(),
                _ => e.exit_code(),
            }
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::CacheTeacher(a) => run::cache_teacher(a),
        Cmd::Resume(a) => run::resume(a),
        Cmd::Eval(a) => eval::eval(a),
        Cmd::Export(a) => run::export(a),
        Cmd::Generate(a) => generate::generate(a),
        Cmd::Speculative(a) => speculative::speculative(a),
        Cmd::Report(a) => speculative::report(a),
        Cmd::Runs(a) => speculative::runs(a),
        Cmd::Logits(a) => probes::logits(a),
        Cmd::Attention(a) => probes::attention(a),
        Cmd::Bench(a) => bench::layers(a),
        Cmd::BenchAttention(a) => bench::attention(a),
        Cmd::BenchGenerate(a) => bench::generate(a),
        Cmd::BenchCache(a) => bench::cache(a),
        Cmd::BenchLoss(a) => bench::loss(a),
        Cmd::BenchTrain(a) => bench::train(a),
        Cmd::Data(a) => run::data(a),
        Cmd::Synth(a) => run::synth(a),
        Cmd::Prune(a) => run::prune(a),
        Cmd::Validate(a) => run::validate(a),
        Cmd::Tokenizer(a) => crate::teacher::gguf_tokenizer::write(&a.gguf, &a.out).map(say),
    }
}

/// Progress lines of a long command go to stdout, one per line.
fn say(s: String) {
    println!("{s}");
}

use signals::stop_flag;

/// The finished teacher or student (`which`) of a run, or an input error that says how to
/// finish it.
fn load_final(run_dir: &Path, which: Phase, device: &burn::tensor::Device) -> Result<Decoder> {
    let rd = crate::run_dir::RunDir(run_dir);
    let dir = rd.final_model(which);
    if !rd.is_trained(which) {
        return Err(Error::input(format!(
            "{}: the {} has not finished training in this run; finish it with `distill resume {}`",
            dir.display(),
            which.name(),
            run_dir.display()
        )));
    }
    Ok(store::load(&dir, device)?.0)
}

/// Which model of a run a command works on.
fn which(teacher: bool) -> Phase {
    if teacher { Phase::Teacher } else { Phase::Student }
}
