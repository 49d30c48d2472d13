//! The crash harness: a real `distill run` as a child process, SIGKILLed at random moments
//! (seeded) and started again each time, must end with exactly the metrics, weights and
//! summary of an uninterrupted run: bit for bit on the CPU. Kills land anywhere: data
//! preparation, tokenizer training, teacher training, cache building, checkpoint writes,
//! evaluation, export. `DISTILL_CRASH_KILLS=<n>` sets the kills per variant (default 6),
//! `DISTILL_CRASH_SEED` the seed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{tiny_recipe, tmp};

/// SplitMix64, enough for kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `distill run <recipe> --quiet`, killed after `after` unless it ends first; its exit code
/// when it ended by itself.
fn run_for(recipe: &Path, after: Option<Duration>) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["run", recipe.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let code = status.code().unwrap_or(-1);
            assert!(code == 0, "distill run failed ({code}): {}", String::from_utf8_lossy(&out.stderr));
            return Some(code);
        }
        if after.is_some_and(|a| start.elapsed() >= a) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What must be identical: every metrics row without its timings, the summary without its
/// timings, and the final weights' bytes (parameter ids included: they are seeded).
fn outcome(run: &Path) -> (Vec<Value>, Value, Vec<u8>, Vec<u8>) {
    let rows = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("metrics line {l:?}: {e}"));
            for k in ["tok_per_s", "elapsed_s", "rollout_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect();
    let mut summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    strip_timings(&mut summary);
    // Export paths name the run; their sizes must agree.
    for e in summary["exports"].as_array_mut().into_iter().flatten() {
        e[0] = Value::Null;
    }
    let w = |p: &str| std::fs::read(run.join(p)).unwrap();
    (rows, summary, w("teacher/final/model.bpk"), w("student/final/model.bpk"))
}

fn strip_timings(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.contains("tok_per_s") && !k.contains("wall") && !k.contains("elapsed") && !k.contains("_s"));
        o.values_mut().for_each(strip_timings);
    }
}

/// One variant (`edit` turns the tiny recipe into it): the uninterrupted reference, then the
/// same recipe killed `kills` times.
fn variant(name: &str, edit: impl Fn(String) -> String, kills: u64, rng: &mut Rng) {
    let dir = tmp(&format!("crash-{name}"));
    let recipe = |run: &str| {
        let p = dir.join(format!("{run}.toml"));
        std::fs::write(&p, edit(tiny_recipe(&dir, run, 24))).unwrap();
        p
    };
    let t0 = Instant::now();
    run_for(&recipe("reference"), None);
    let full = t0.elapsed();
    let reference = outcome(&dir.join("reference"));
    // Kill, restart, kill...: a run that finishes between kills is checked, and the next
    // kills go to a fresh run, until `kills` kills have landed.
    let (mut killed, mut runs) = (0, 0);
    while killed < kills {
        let name = format!("killed-{runs}");
        let cut = recipe(&name);
        let mut kills_here = 0;
        loop {
            if killed == kills {
                run_for(&cut, None);
                break;
            }
            // Anywhere in the first 60% of a whole run's time: a restart resumes where the
            // last one left off, so later kills land in the late stages (evaluation, export,
            // the last checkpoints) and the early ones in data preparation and the tokenizer.
            let after = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 6 / 10 + 1));
            match run_for(&cut, Some(after)) {
                None => (killed, kills_here) = (killed + 1, kills_here + 1),
                Some(_) => break,
            }
        }
        let got = outcome(&dir.join(&name));
        let what = format!("{name}: after {kills_here} kills");
        assert_eq!(reference.0.len(), got.0.len(), "{what}: metrics rows");
        for (x, y) in reference.0.iter().zip(&got.0) {
            assert_eq!(x, y, "{what}: metrics");
        }
        assert_eq!(reference.1, got.1, "{what}: summary");
        assert!(reference.2 == got.2, "{what}: teacher weights differ");
        assert!(reference.3 == got.3, "{what}: student weights differ");
        runs += 1;
    }
    eprintln!(
        "crash harness {name}: {killed} kills over {runs} runs, every run exact ({:.1} s per clean run)",
        full.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigkill_at_random_moments_then_resume_is_exact() {
    let kills = env_num("DISTILL_CRASH_KILLS", 6);
    let mut rng = Rng(env_num("DISTILL_CRASH_SEED", 2026));
    variant("online", |r| r, kills, &mut rng);
    // The cached teacher (built inside the run, so kills land in the cache build too), one
    // document per row, and a curriculum scored from the cache.
    let cached = |r: String| {
        r.replace("[data]\n", "[data]\npacking = \"doc_per_row\"\n")
            + "\n[teacher]\nlogits = \"cache\"\n\n[cache]\nk = 16\nrows_per_shard = 16\n\n[curriculum]\nschedule = \"linear\"\n"
    };
    variant("cache-docrow-curriculum", cached, kills, &mut rng);
}

/// The tiny recipe as on-policy distillation on chat rows: half the batches the student writes.
fn on_policy(r: String) -> String {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/templates/smollm2.jinja");
    let data = format!(
        "[data]\nsynthetic_format = \"chat\"\nchat_template = \"{}\"\npacking = \"doc_per_row\"\n",
        template.display()
    );
    r.replace("[data]\n", &data)
        .replace("seq_len = 32", "seq_len = 64")
        .replace("[tokenizer]\n", "[tokenizer]\nspecial_tokens = [\"<|im_start|>\", \"<|im_end|>\"]\n")
        + "\n[distill.on_policy]\nfraction = 0.5\nmax_new_tokens = 16\n"
}

/// On-policy runs SIGKILLed in the middle of the student's training (random kills mostly land
/// in the longer stages before it): the resumed process draws the same batches and samples
/// from (seed, step, micro-batch, row) alone, so metrics and weights equal the uninterrupted
/// run's (fails when a draw depends on anything the process carried).
#[test]
fn on_policy_killed_while_the_student_trains_resumes_exactly() {
    let dir = tmp("crash-on-policy-student");
    let recipe = |run: &str| {
        let p = dir.join(format!("{run}.toml"));
        std::fs::write(&p, on_policy(tiny_recipe(&dir, run, 24))).unwrap();
        p
    };
    run_for(&recipe("reference"), None);
    let reference = outcome(&dir.join("reference"));
    for at_step in [6, 15] {
        let name = format!("killed-at-{at_step}");
        let cut = recipe(&name);
        let metrics = dir.join(&name).join("metrics.jsonl");
        let mut child = Command::new(env!("CARGO_BIN_EXE_distill"))
            .args(["run", cut.to_str().unwrap(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let student_at = |step: usize| {
            std::fs::read_to_string(&metrics)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("\"phase\":\"student\"") && l.contains(&format!("\"step\":{step},")))
        };
        while !student_at(at_step) && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(child.try_wait().unwrap().is_none(), "{name}: the run ended before the kill");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let rows = std::fs::read_to_string(&metrics).unwrap().lines().filter(|l| l.contains("\"student\"")).count();
        eprintln!("{name}: killed after {rows} student rows");
        run_for(&cut, None);
        let got = outcome(&dir.join(&name));
        assert_eq!(reference.0, got.0, "{name}: metrics");
        assert!(reference.3 == got.3, "{name}: student weights differ");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A second `distill` on a run that a live process holds is refused (exit 2, naming the
/// process); once that process is SIGKILLed, its stale lock is taken over.
#[test]
fn a_second_process_on_a_live_run_is_refused() {
    let dir = tmp("lock");
    let p = dir.join("held.toml");
    std::fs::write(&p, tiny_recipe(&dir, "held", 400)).unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["run", p.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.join("held/LOCK");
    let t0 = Instant::now();
    while !lock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no LOCK appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["resume", dir.join("held").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("in use by process {}", first.id())), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(lock.exists(), "SIGKILL leaves the lock behind");
    // The dead holder's lock is taken over: a resume holds it (its own pid) and runs.
    let mut second = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["resume", dir.join("held").to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != second.id().to_string() {
        assert!(second.try_wait().unwrap().is_none(), "the resume ended instead of taking the lock over");
        assert!(t0.elapsed() < Duration::from_secs(30), "the stale lock was not taken over");
        std::thread::sleep(Duration::from_millis(5));
    }
    second.kill().unwrap();
    second.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM (a scheduler's preemption) and SIGINT stop at the next safe point with a
/// checkpoint, print the resume command and exit 143 / 130; the resumed run completes with
/// one metrics row per step.
#[test]
fn sigterm_and_sigint_checkpoint_and_exit_with_their_codes() {
    let dir = tmp("signals");
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let name = format!("sig{sig}");
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, tiny_recipe(&dir, &name, 300)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_distill"))
            .args(["run", p.to_str().unwrap(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Mid-training: once the teacher has logged a few steps.
        let metrics = dir.join(&name).join("metrics.jsonl");
        let t0 = Instant::now();
        while std::fs::read_to_string(&metrics).unwrap_or_default().lines().count() < 3 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no training progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        let sent = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{sig}: {err}");
        assert!(err.contains("checkpoint saved") && err.contains("continue with `distill resume"), "SIG{sig}: {err}");
        let out = Command::new(env!("CARGO_BIN_EXE_distill"))
            .args(["resume", dir.join(&name).to_str().unwrap(), "--quiet"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let rows = std::fs::read_to_string(&metrics).unwrap();
        let steps: Vec<(String, u64)> = rows
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| (v["phase"].as_str().unwrap().to_string(), v["step"].as_u64().unwrap()))
            .collect();
        for phase in ["teacher", "student"] {
            let s: Vec<u64> = steps.iter().filter(|(p, _)| p == phase).map(|(_, s)| *s).collect();
            assert_eq!(s, (1..=300).collect::<Vec<_>>(), "SIG{sig}: {phase} steps");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A full disk, simulated with a file-size limit (`ulimit -f`): the run stops with an error
/// naming the file it could not write (no SIGXFSZ death), leaves no damaged checkpoint
/// behind, and once space is back the same command finishes exactly as an unhindered run.
#[test]
fn a_full_disk_stops_cleanly_and_the_run_finishes_later() {
    let dir = tmp("full");
    let recipe = |name: &str| {
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, tiny_recipe(&dir, name, 24)).unwrap();
        p
    };
    run_for(&recipe("reference"), None);
    let p = recipe("limited");
    // 400 KiB: enough for the data (train.u32: 355 KiB) and the tokenizer, not for the
    // teacher checkpoint's model.bpk (451 KiB).
    let cmd = format!("ulimit -f 400; exec {} run {} --quiet", env!("CARGO_BIN_EXE_distill"), p.display());
    let out = Command::new("bash").args(["-c", &cmd]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large") && err.contains("limited/teacher/checkpoints"), "{err}");
    let ck = dir.join("limited/teacher/checkpoints");
    let names: Vec<String> = std::fs::read_dir(&ck)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(names.iter().all(|n| !n.starts_with("step-")), "no checkpoint may claim to be complete: {names:?}");
    run_for(&p, None);
    let (a, b) = (outcome(&dir.join("reference")), outcome(&dir.join("limited")));
    assert_eq!((a.0, a.1), (b.0, b.1));
    assert!(a.2 == b.2 && a.3 == b.3, "weights differ after the full-disk stop");
    std::fs::remove_dir_all(&dir).ok();
}

/// Ctrl-C during a long data preparation stops it at the next document (not at the end of
/// the stage): exit 130 within a second, no data marked prepared, and the same command
/// prepares it from the start afterwards.
#[test]
fn ctrl_c_stops_data_preparation_promptly() {
    let dir = tmp("data-stop");
    let p = dir.join("big.toml");
    std::fs::write(&p, tiny_recipe(&dir, "big", 8).replace("synthetic_docs = 400", "synthetic_docs = 400000")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["data", p.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let sent = Instant::now();
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped during data preparation"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    assert!(!dir.join("big/data/meta.json").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `distill synth` SIGKILLed after its first shard (and again later), then rerun: the shards
/// are byte for byte those of an uninterrupted job (rows draw from their own generators, and
/// a shard appears whole or not at all).
#[test]
fn synth_killed_between_shards_resumes_to_the_same_bytes() {
    let dir = tmp("crash-synth");
    // A teacher to write with: the tiny run's, trained on chat rows.
    let base = dir.join("base.toml");
    std::fs::write(&base, on_policy(tiny_recipe(&dir, "base", 8))).unwrap();
    run_for(&base, None);
    let synth = |name: &str| {
        let p = dir.join(format!("{name}.toml"));
        let recipe = on_policy(tiny_recipe(&dir, name, 8))
            + &format!(
                "\n[teacher]\nkind = \"checkpoint\"\npath = \"{}\"\n\n[synth]\nsamples_per_prompt = 3\nmax_new_tokens = 24\nshard_rows = 40\nbatch_size = 16\nmax_prompts = 120\n",
                dir.join("base/teacher/final").display()
            );
        let tokenizer = "[tokenizer]\nspecial_tokens = [\"<|im_start|>\", \"<|im_end|>\"]\nvocab_size = 320\n";
        assert!(recipe.contains(tokenizer));
        std::fs::write(&p, recipe.replace(tokenizer, "[tokenizer]\nkind = \"teacher\"\n")).unwrap();
        p
    };
    let spawn = |recipe: &Path| {
        Command::new(env!("CARGO_BIN_EXE_distill"))
            .args(["synth", recipe.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let finish = |recipe: &Path| {
        let out = spawn(recipe).wait_with_output().unwrap();
        assert!(out.status.success(), "synth failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    let shards = |name: &str| -> Vec<Vec<u8>> {
        (0..9).map(|k| std::fs::read(dir.join(name).join(format!("synth/shard-{k:05}.jsonl"))).unwrap()).collect()
    };
    finish(&synth("reference"));
    let reference = shards("reference");
    let cut = synth("killed");
    for wait_for in [0, 4] {
        let mut child = spawn(&cut);
        let shard = dir.join(format!("killed/synth/shard-{wait_for:05}.jsonl"));
        while !shard.is_file() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(child.try_wait().unwrap().is_none(), "synth ended before the kill after shard {wait_for}");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(!dir.join("killed/synth/shard-00008.jsonl").is_file());
    }
    finish(&cut);
    assert!(shards("killed") == reference, "the resumed job's shards differ from the uninterrupted job's");
    std::fs::remove_dir_all(&dir).ok();
}
