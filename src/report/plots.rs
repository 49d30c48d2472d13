//! The run's curves from `metrics.jsonl`, as SVG: loss parts, learning rate, tokens/s,
//! curriculum weights, held-out loss and gradient norm. The trainer refreshes them at each
//! evaluation (`plots/*.svg` beside the metrics); the report inlines them.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::train::metrics::{self, MetricsRow};

/// One named line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart of the run: its file stem, title and SVG text.
pub struct Chart {
    pub stem: &'static str,
    pub title: &'static str,
    pub svg: String,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Lines against step as SVG text; `None` when every series is empty.
pub fn line_chart(title: &str, y_desc: &str, series: &[Series]) -> Option<String> {
    let pts: Vec<&(f64, f64)> = series.iter().flat_map(|s| &s.points).filter(|p| p.1.is_finite()).collect();
    if pts.is_empty() {
        return None;
    }
    let xmax = pts.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
    let (ylo, yhi) = (if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad }, hi + pad);
    let mut svg = String::new();
    let draw = |svg: &mut String| -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(svg, (640, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, ylo..yhi)?;
        chart.configure_mesh().x_desc("step").y_desc(y_desc).draw()?;
        for (s, color) in series.iter().zip(COLORS.iter().cycle()) {
            if s.points.is_empty() {
                continue;
            }
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied().filter(|p| p.1.is_finite()), style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw(&mut svg).ok()?;
    Some(svg)
}

/// The charts of a run's metrics rows (charts without data are left out). `teacher_held_out`:
/// the teacher's held-out loss where its phase is not in the rows (a loaded teacher), drawn flat.
pub fn charts(rows: &[MetricsRow], teacher_held_out: Option<f64>) -> Vec<Chart> {
    let student: Vec<&MetricsRow> = rows.iter().filter(|r| r.phase == "student").collect();
    let of = |name: &str, rows: &[&MetricsRow], f: fn(&MetricsRow) -> Option<f64>| Series {
        name: name.to_string(),
        points: rows.iter().filter_map(|r| Some((r.step as f64, f(r)?))).collect(),
    };
    let teacher: Vec<&MetricsRow> = rows.iter().filter(|r| r.phase == "teacher").collect();
    let mut held_out = vec![of("student", &student, |r| r.eval_loss)];
    match teacher_held_out {
        Some(t) if teacher.iter().all(|r| r.eval_loss.is_none()) => {
            let last = student.last().map_or(1.0, |r| r.step as f64);
            held_out.push(Series { name: "teacher".into(), points: vec![(0.0, t), (last, t)] });
        }
        _ => held_out.push(of("teacher", &teacher, |r| r.eval_loss)),
    }
    let specs: Vec<(&'static str, &'static str, &str, Vec<Series>)> = vec![
        (
            "loss_parts",
            "student loss and its parts",
            "nats/token",
            vec![
                of("loss", &student, |r| Some(r.loss)),
                of("CE", &student, |r| Some(r.ce)),
                of("KL", &student, |r| r.kl),
                of("hidden", &student, |r| r.hidden),
            ],
        ),
        ("held_out", "held-out loss", "nats/token", held_out),
        (
            "lr",
            "learning rate",
            "lr",
            vec![of("student", &student, |r| Some(r.lr)), of("teacher", &teacher, |r| Some(r.lr))],
        ),
        (
            "tokens_per_s",
            "throughput",
            "tokens/s",
            vec![of("student", &student, |r| Some(r.tok_per_s)), of("teacher", &teacher, |r| Some(r.tok_per_s))],
        ),
        (
            "curriculum",
            "curriculum weights",
            "row weight",
            vec![
                of("mean", &student, |r| r.w_mean),
                of("min", &student, |r| r.w_min),
                of("max", &student, |r| r.w_max),
                of("competence", &student, |r| r.competence),
                of("hard share", &student, |r| r.hard_share),
            ],
        ),
        (
            "router",
            "MoE load balancing (1 = balanced)",
            "experts * sum f P",
            vec![of("router aux loss", &student, |r| r.router_aux)],
        ),
        (
            "grad_norm",
            "gradient norm (before clipping)",
            "L2 norm",
            vec![of("student", &student, |r| Some(r.grad_norm)), of("teacher", &teacher, |r| Some(r.grad_norm))],
        ),
    ];
    specs
        .into_iter()
        .filter_map(|(stem, title, y, series)| Some(Chart { stem, title, svg: line_chart(title, y, &series)? }))
        .collect()
}

/// `loss.svg`: train and held-out loss of both phases against step, in one chart (the run's
/// first picture, beside the metrics).
pub fn loss_svg(metrics_path: &Path, out: &Path) -> Result<()> {
    let rows = metrics::read(metrics_path);
    let of = |name: &str, phase: &str, f: fn(&MetricsRow) -> Option<f64>| Series {
        name: name.to_string(),
        points: rows.iter().filter(|r| r.phase == phase).filter_map(|r| Some((r.step as f64, f(r)?))).collect(),
    };
    let series = [
        of("teacher train", "teacher", |r| Some(r.loss)),
        of("teacher held-out", "teacher", |r| r.eval_loss),
        of("student train", "student", |r| Some(r.loss)),
        of("student held-out", "student", |r| r.eval_loss),
    ];
    match line_chart("distill: loss", "loss (nats/token)", &series) {
        Some(svg) => crate::util::write_atomic(out, svg.as_bytes()),
        None => Ok(()),
    }
}

/// Redraw `plots/*.svg` beside `metrics` from its rows.
pub fn refresh(metrics_path: &Path, teacher_held_out: Option<f64>) -> Result<()> {
    let dir = metrics_path.parent().unwrap_or(Path::new(".")).join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    for c in charts(&metrics::read(metrics_path), teacher_held_out) {
        crate::util::write_atomic(&dir.join(format!("{}.svg", c.stem)), c.svg.as_bytes())?;
    }
    Ok(())
}
