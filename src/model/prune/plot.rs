//! prune.svg: where the scores put the cuts.

use std::path::Path;

use plotters::prelude::*;

use super::{Importance, PrunePlan};
use crate::error::{Error, Result};

/// Two panels: block influence per teacher layer (kept layers filled, dropped ones hollow);
/// below, the embedding and per-layer FFN scores sorted in descending order, each divided by
/// its largest score, against rank / width, with the kept fractions as vertical lines.
pub fn plot(imp: &Importance, plan: &PrunePlan, path: &Path) -> Result<()> {
    let n = imp.block_influence.len();
    let bmax = imp.block_influence.iter().copied().fold(1e-9, f64::max) * 1.1;
    let sorted = |v: &[f64]| -> Vec<(f64, f64)> {
        let mut s = v.to_vec();
        s.sort_by(|a, b| b.total_cmp(a));
        let top = s.first().copied().filter(|m| *m > 0.0).unwrap_or(1.0);
        s.iter().enumerate().map(|(i, x)| (i as f64 / s.len().max(1) as f64, x / top)).collect()
    };
    let kept_frac = |kept: usize, of: usize| kept as f64 / of.max(1) as f64;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(400);
        let mut chart = ChartBuilder::on(&top)
            .caption("block influence (1 - mean cos(in, out))", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5).max(0.5), 0f64..bmax)?;
        chart.configure_mesh().x_desc("teacher layer").y_desc("influence").draw()?;
        let pts: Vec<(f64, f64)> = imp.block_influence.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect();
        chart.draw_series(LineSeries::new(pts.iter().copied(), BLUE.stroke_width(1)))?;
        chart.draw_series(pts.iter().enumerate().map(|(i, p)| {
            let kept = plan.layers.contains(&i);
            let style = if kept { GREEN.filled() } else { RED.stroke_width(2) };
            Circle::new(*p, 5, style)
        }))?;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("sorted scores / max (green: embedding, blue: FFN per layer)", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1.05f64)?;
        chart.configure_mesh().x_desc("rank / width").y_desc("score / max").draw()?;
        for v in &imp.ffn {
            chart.draw_series(LineSeries::new(sorted(v), BLUE.mix(0.3).stroke_width(1)))?;
        }
        chart.draw_series(LineSeries::new(sorted(&imp.embed), GREEN.stroke_width(2)))?;
        let d_ff = imp.ffn.first().map_or(0, Vec::len);
        for (x, color) in [
            (kept_frac(plan.shape.d_ff, d_ff), BLUE.mix(0.8)),
            (kept_frac(plan.shape.d_model, imp.embed.len()), GREEN.mix(0.8)),
        ] {
            chart.draw_series(LineSeries::new([(x, 0.0), (x, 1.05)], color.stroke_width(1)))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| Error::runtime(format!("{}: cannot draw: {e}", path.display())))
}
