//! The PNG plot of a run's training and validation loss (bits per character).
//!
//! Text needs a TrueType font, which plotters (without system font libraries) takes from
//! memory: the first of a few common system fonts that exists is used; without one the
//! plot is drawn without labels.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::{ensure, err, Result};
use plotters::prelude::*;

use super::charlm::History;

const FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for path in FONTS {
            if let Ok(bytes) = std::fs::read(path) {
                // Registered once for the process; plotters keeps a 'static reference.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws the training curve (a moving average over 10 steps) and the validation points
/// into a PNG of 900 x 500 pixels, written atomically.
pub fn loss_png(history: &History, title: &str, path: &Path) -> Result<()> {
    ensure!(
        !history.train.is_empty(),
        Invalid,
        "nothing to plot: no training steps"
    );
    let (w, h) = (900u32, 500u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    let text = font_available();
    draw(history, title, text, &mut pixels, (w, h))
        .map_err(|e| err!(Format, "drawing the loss plot: {e}"))?;
    let img = image_png(&pixels, w, h)?;
    crate::io::write_atomic(path, &img)
}

fn smoothed(train: &[(u64, f32)]) -> Vec<(f64, f64)> {
    let k = 10usize;
    train
        .iter()
        .enumerate()
        .map(|(i, &(s, _))| {
            let from = i.saturating_sub(k - 1);
            let window = &train[from..=i];
            let mean = window.iter().map(|&(_, v)| v as f64).sum::<f64>() / window.len() as f64;
            (s as f64, mean)
        })
        .collect()
}

fn draw(
    history: &History,
    title: &str,
    text: bool,
    pixels: &mut [u8],
    size: (u32, u32),
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE)?;
    let train = smoothed(&history.train);
    let last = history.train.last().map_or(1, |&(s, _)| s) as f64;
    let all = train
        .iter()
        .map(|&(_, v)| v)
        .chain(history.valid.iter().map(|&(_, v)| v as f64));
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(0.01);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(1.0..last.max(2.0), (lo - pad)..(hi + pad))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("bits per character")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .label_style(("sans-serif", 14))
            .draw()?;
    } else {
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()?;
    }
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(230, 110, 20);
    let series = chart.draw_series(LineSeries::new(train, blue.stroke_width(2)))?;
    if text {
        series
            .label("training (10-step mean)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
    }
    if !history.valid.is_empty() {
        let pts: Vec<(f64, f64)> = history
            .valid
            .iter()
            .map(|&(s, v)| (s as f64, v as f64))
            .collect();
        chart.draw_series(LineSeries::new(pts.clone(), orange.stroke_width(2)))?;
        let dots =
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, orange.filled())))?;
        if text {
            dots.label("validation")
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, orange.filled()));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Encodes RGB pixels as a PNG in memory.
fn image_png(pixels: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let encoding = |e: png::EncodingError| err!(Format, "encoding the loss plot as PNG: {e}");
        let mut writer = enc.write_header().map_err(encoding)?;
        writer.write_image_data(pixels).map_err(encoding)?;
    }
    Ok(out)
}
