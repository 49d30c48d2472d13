//! `metrics.jsonl` (one JSON object per line) and the loss curves drawn from it (`loss.svg`).

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;
use serde_json::Value;

use crate::error::{Result, io_ctx};

pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Open for appending, first dropping the lines of `phase` after `keep_through_step` (a
    /// resumed run recomputes them) and every line of a later phase.
    pub fn open(path: &Path, phase: &str, keep_through_step: usize) -> Result<Self> {
        let lines = read(path);
        let mut kept = String::new();
        let mut seen_phase = false;
        for v in &lines {
            let p = v["phase"].as_str().unwrap_or("");
            if p == phase {
                seen_phase = true;
                if v["step"].as_u64().unwrap_or(0) as usize > keep_through_step {
                    continue;
                }
            } else if seen_phase {
                continue;
            }
            kept += &format!("{v}\n");
        }
        crate::util::write_atomic(path, kept.as_bytes())?;
        let file = io_ctx(
            std::fs::OpenOptions::new().append(true).create(true).open(path),
            || format!("{}", path.display()),
        )?;
        Ok(MetricsLog { file })
    }

    pub fn write(&mut self, v: Value) -> Result<()> {
        io_ctx(writeln!(self.file, "{v}").and_then(|_| self.file.flush()), || "metrics.jsonl".into())
    }
}

pub fn read(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Train and held-out loss against step, one colour per phase.
pub fn plot(metrics: &Path, out: &Path) -> Result<()> {
    let rows = read(metrics);
    let series = |phase: &str, key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|v| v["phase"] == phase)
            .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
            .collect()
    };
    let all: Vec<Vec<(f64, f64)>> = ["teacher", "student"]
        .iter()
        .flat_map(|p| [series(p, "loss"), series(p, "eval_loss")])
        .collect();
    let pts: Vec<&(f64, f64)> = all.iter().flatten().collect();
    if pts.is_empty() {
        return Ok(());
    }
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymax = pts.iter().map(|p| p.1).fold(0.1, f64::max) * 1.05;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(out, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("distill: loss", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart.configure_mesh().x_desc("step").y_desc("loss (nats/token)").draw()?;
        let names = ["teacher train", "teacher held-out", "student train", "student held-out"];
        let colors = [BLUE.mix(0.5), BLUE.mix(1.0), RED.mix(0.5), RED.mix(1.0)];
        for ((s, name), color) in all.iter().zip(names).zip(colors) {
            if s.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(s.iter().cloned(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| crate::error::Error::runtime(format!("{}: cannot draw: {e}", out.display())))
}
