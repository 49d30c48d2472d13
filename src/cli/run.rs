//! The pipeline's commands: `run`, `cache-teacher`, `resume`, `export`, `data` and `validate`.

use std::path::Path;

use super::flags::flag;
use super::{CacheTeacherArgs, ExportArgs, RecipeArgs, ResumeArgs, RunArgs, load_final, say, stop_flag, which};
use crate::error::{Error, Result};
use crate::export::ExportFormat;
use crate::pipeline::{self, RunOptions, load_run_recipe};
use crate::quant::fake_quant::Scheme;
use crate::recipe::Recipe;
use crate::run_dir::Phase;
use crate::run_dir::RunDir;

pub(super) fn run(a: RunArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe.recipe, &a.recipe.set)?;
    let stop = stop_flag();
    println!("run directory: {}", r.run_dir().display());
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: a.quiet };
    pipeline::run(&r, &opts, &mut say).map_err(|e| with_resume_hint(e, &r.run_dir()))?;
    Ok(())
}

pub(super) fn cache_teacher(a: CacheTeacherArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe.recipe, &a.recipe.set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: a.quiet };
    let m = pipeline::cache_teacher(&r, &opts, &mut say)?;
    println!(
        "teacher cache {}: {} shards, {} tokens, k = {}, {:?} values, {:.1} bytes/token ({:.2} MB)",
        r.cache_dir().display(),
        m.shards.len(),
        m.tokens,
        m.id.k,
        m.id.values,
        m.bytes_per_token(),
        m.bytes as f64 / 1e6
    );
    Ok(())
}

pub(super) fn prune(a: RecipeArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe, &a.set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: false };
    let m = pipeline::prune(&r, &opts, &mut say)?;
    let dir = RunDir(&r.run_dir()).phase(Phase::Student);
    println!("pruned student: {}: {}", dir.join("init").display(), pipeline::init::describe(&m));
    println!(
        "importance: {}, {}",
        dir.join("prune/importance.json").display(),
        dir.join("prune/importance.svg").display()
    );
    Ok(())
}

pub(super) fn resume(a: ResumeArgs) -> Result<()> {
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: a.quiet };
    pipeline::resume(&a.run_dir, &opts, &mut say).map_err(|e| with_resume_hint(e, &a.run_dir))?;
    Ok(())
}

pub(super) fn export(a: ExportArgs) -> Result<()> {
    let format: ExportFormat = flag("--format", &a.format)?;
    let r = load_run_recipe(&a.run_dir)?;
    let device = pipeline::device_for(r.run.backend);
    let m = load_final(&a.run_dir, which(a.teacher), &device)?;
    let out = a.out.unwrap_or_else(|| RunDir(&a.run_dir).export());
    // A file in another quantizer than the one the run trained against is post-training
    // quantization of the trained weights, not what was trained: say so.
    let file_scheme = match format {
        ExportFormat::GgufQ8_0 => Some(Scheme::Q8_0),
        ExportFormat::GgufQ4_0 => Some(Scheme::Q4_0),
        ExportFormat::Int4 if !matches!(r.qat.scheme, Scheme::Int4 { .. }) => Some(Scheme::Q4_0),
        ExportFormat::Int4 => Some(r.qat.scheme),
        _ => None,
    };
    if let Some(f) = file_scheme
        && r.qat.enabled
        && !a.teacher
        && f != r.qat.scheme
    {
        eprintln!(
            "note: the run trained against {}; this file holds the {f} quantization of its weights",
            r.qat.scheme
        );
    }
    let (p, size) = crate::export::export(&m, format, &r.qat.plan(), &out, &RunDir(&a.run_dir).tokenizer())?;
    println!("wrote {} ({size} bytes)", p.display());
    Ok(())
}

pub(super) fn synth(a: RecipeArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe, &a.set)?;
    let stop = stop_flag();
    let opts = RunOptions { stop: &stop, stop_after: None, quiet: false };
    let (out, report) = pipeline::synth::synth(&r, &opts, &mut say)?;
    let files = out.join("shard-*.jsonl");
    let format = match r.data.row_format() {
        crate::data::config::DataFormat::Text => "prompt_completion",
        _ => "chat",
    };
    println!(
        "{} rows in {}; train on them with [data] source = \"jsonl\", paths = [\"{}\"], format = \"{format}\"",
        report.rows,
        out.display(),
        files.display()
    );
    Ok(())
}

pub(super) fn data(a: RecipeArgs) -> Result<()> {
    // Ctrl-C / SIGTERM stop the preparation at the next document (exit 130 / 143).
    let _stop = stop_flag();
    let r = Recipe::load(&a.recipe, &a.set)?;
    let dir = r.run_dir();
    if RunDir(&dir).data_meta().is_file() {
        println!("data already prepared in {}", RunDir(&dir).data().display());
    }
    pipeline::prepare_data_to_disk(&r, &dir, &mut say)?;
    println!("report: {}", RunDir(&dir).filter_report().display());
    Ok(())
}

pub(super) fn validate(a: RecipeArgs) -> Result<()> {
    let r = Recipe::load(&a.recipe, &a.set)?;
    pipeline::preflight(&r)?;
    print!("{}", r.to_toml());
    eprintln!("{}: ok", a.recipe.display());
    Ok(())
}

/// A stopped or failed run can always be continued: say how.
fn with_resume_hint(e: Error, dir: &Path) -> Error {
    match e {
        Error::Interrupted(m) => Error::Interrupted(format!("{m}; continue with `distill resume {}`", dir.display())),
        Error::Runtime(m) => {
            Error::Runtime(format!("{m}\n(the run can be continued with `distill resume {}`)", dir.display()))
        }
        other => other,
    }
}
