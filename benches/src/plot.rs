//! Throughput against latency (p50 and p99), one point per offered rate, as SVG.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::Point;

pub fn throughput_latency(path: &Path, title: &str, points: &[Point]) -> anyhow::Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let max_x = points.iter().map(|p| p.throughput_tps).fold(1.0, f64::max) * 1.1;
    let max_y = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, (0.5f64..max_y).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("committed transactions per second")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (label, color, pick) in [
        ("p50", BLUE, (|p: &Point| p.p50_ms) as fn(&Point) -> f64),
        ("p99", RED, |p: &Point| p.p99_ms),
    ] {
        let series: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.throughput_tps, pick(p).max(0.5)))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(series.into_iter().map(|xy| Circle::new(xy, 4, color.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
