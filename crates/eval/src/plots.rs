//! Pictures of an evaluation, per post-processor, as PNG: the score histograms of the ID test set
//! and each OOD set, and the ROC curve of each OOD set (OpenOOD's orientation: OOD positive, so
//! x = share of ID flagged, y = share of OOD detected). Drawn with plotters' bitmap backend into
//! memory, text in DejaVu Sans (embedded, no system fonts), encoded with `image`.

use crate::metrics::{auc, roc_curve};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

const SIZE: (u32, u32) = (900, 600);
const BINS: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One post-processor's scores (`conf`, higher = ID) on the ID test set and each OOD set.
#[derive(Debug, Clone)]
pub struct Scores {
    pub postprocessor: String,
    pub id: Vec<f64>,
    pub ood: Vec<(String, Vec<f64>)>,
}

fn fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The embedded DejaVu Sans is a valid font; a failure here would be a packaging bug.
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| ())
            .expect("embedded DejaVu Sans parses");
    });
}

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

const ID_COLOR: RGBColor = RGBColor(31, 119, 180);

fn save(path: &Path, buf: Vec<u8>) -> Result<(), PlotError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let img = image::RgbImage::from_raw(SIZE.0, SIZE.1, buf).expect("buffer of SIZE");
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| PlotError::Draw {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    std::fs::rename(&tmp, path).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A chart's axes, text and legend place; `plot` draws the common frame around the series.
struct Frame<'a> {
    title: &'a str,
    x: Range<f64>,
    y: Range<f64>,
    x_desc: String,
    y_desc: &'a str,
    legend: SeriesLabelPosition,
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draw `frame` (caption, mesh, axis descriptions), then the series `draw` adds (with their
/// legend entries), then the legend, and save the PNG.
fn plot(
    path: &Path,
    frame: Frame<'_>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<(), String>,
) -> Result<(), PlotError> {
    fonts();
    let err = |message: String| PlotError::Draw {
        path: path.to_path_buf(),
        message,
    };
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(frame.title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(frame.x, frame.y)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(frame.x_desc)
            .y_desc(frame.y_desc)
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        draw(&mut chart).map_err(err)?;
        chart
            .configure_series_labels()
            .position(frame.legend)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    save(path, buf)
}

/// Densities (each set's histogram sums to 1) of the ID and OOD scores on common bins.
pub fn histogram_png(path: &Path, title: &str, s: &Scores) -> Result<(), PlotError> {
    let all = s.id.iter().chain(s.ood.iter().flat_map(|(_, v)| v.iter()));
    let (lo, hi) = all
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let width = (hi - lo) / BINS as f64;
    let hist = |v: &[f64]| -> Vec<f64> {
        let mut h = vec![0.0; BINS];
        for x in v.iter().filter(|x| x.is_finite()) {
            let b = (((x - lo) / width) as usize).min(BINS - 1);
            h[b] += 1.0 / v.len() as f64;
        }
        h
    };
    let mut sets = vec![("ID test".to_owned(), hist(&s.id), ID_COLOR)];
    for (i, (name, v)) in s.ood.iter().enumerate() {
        sets.push((name.clone(), hist(v), palette(i)));
    }
    let top = sets
        .iter()
        .flat_map(|(_, h, _)| h.iter().copied())
        .fold(0.0, f64::max)
        * 1.1;
    let frame = Frame {
        title,
        x: lo..hi,
        y: 0.0..top.max(1e-9),
        x_desc: format!("{} score (higher = more in-distribution)", s.postprocessor),
        y_desc: "fraction of the set",
        legend: SeriesLabelPosition::MiddleRight,
    };
    plot(path, frame, |chart| {
        for (name, h, color) in &sets {
            // Owned: the legend closure lives as long as the chart.
            let color = *color;
            let bars = h.iter().enumerate().map(|(b, &f)| {
                let x0 = lo + b as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, f)], color.mix(0.35).filled())
            });
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.mix(0.6).filled())
                });
            // The outline keeps overlapping sets readable.
            let outline = h.iter().enumerate().flat_map(|(b, &f)| {
                let x0 = lo + b as f64 * width;
                [(x0, f), (x0 + width, f)]
            });
            chart
                .draw_series(LineSeries::new(outline, color.stroke_width(2)))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// ROC curves (OOD positive, sklearn's points) of every OOD set against the ID test set, with
/// their AUROC in the legend.
pub fn roc_png(path: &Path, title: &str, s: &Scores) -> Result<(), PlotError> {
    let frame = Frame {
        title,
        x: 0.0..1.0,
        y: 0.0..1.0,
        x_desc: "FPR: share of ID test flagged OOD".into(),
        y_desc: "TPR: share of OOD detected",
        legend: SeriesLabelPosition::LowerRight,
    };
    plot(path, frame, |chart| {
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.3)))
            .map_err(|e| e.to_string())?;
        for (i, (name, ood)) in s.ood.iter().enumerate() {
            let mut conf = s.id.clone();
            conf.extend_from_slice(ood);
            let is_ood: Vec<bool> = (0..conf.len()).map(|j| j >= s.id.len()).collect();
            let neg: Vec<f64> = conf.iter().map(|c| -c).collect();
            let roc = roc_curve(&is_ood, &neg, true);
            let area = auc(&roc.fpr, &roc.tpr);
            let color = palette(i);
            chart
                .draw_series(LineSeries::new(
                    roc.fpr.iter().copied().zip(roc.tpr.iter().copied()),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("{name} (AUROC {:.2})", 100.0 * area))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(3))
                });
        }
        Ok(())
    })
}

/// `plots/<postprocessor>_hist.png` and `plots/<postprocessor>_roc.png` for every entry.
pub fn write_all(dir: &Path, title: &str, scores: &[Scores]) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    for s in scores {
        let hist = dir.join(format!("{}_hist.png", s.postprocessor));
        histogram_png(&hist, &format!("{title}: {} scores", s.postprocessor), s)?;
        let roc = dir.join(format!("{}_roc.png", s.postprocessor));
        roc_png(&roc, &format!("{title}: {} ROC", s.postprocessor), s)?;
        written.extend([hist, roc]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_roc_curves_are_real_pngs_with_the_sets_drawn() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scores {
            postprocessor: "msp".into(),
            id: (0..200).map(|i| 0.5 + f64::from(i) / 400.0).collect(),
            ood: vec![
                (
                    "near".into(),
                    (0..100).map(|i| 0.3 + f64::from(i) / 250.0).collect(),
                ),
                (
                    "far".into(),
                    (0..100).map(|i| f64::from(i) / 400.0).collect(),
                ),
            ],
        };
        let files = write_all(dir.path(), "run", &s_vec(s)).unwrap();
        assert_eq!(files.len(), 2);
        for f in &files {
            let img = image::open(f).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), SIZE);
            // Something beside white was drawn, including the ID colour (bars or curve) and, for
            // the ROC, the first OOD colour.
            let has = |c: RGBColor, tol: i32| {
                img.pixels().any(|p| {
                    (i32::from(p[0]) - i32::from(c.0)).abs() <= tol
                        && (i32::from(p[1]) - i32::from(c.1)).abs() <= tol
                        && (i32::from(p[2]) - i32::from(c.2)).abs() <= tol
                })
            };
            assert!(has(palette(0), 0), "{}: first OOD set drawn", f.display());
            // Text: dark anti-aliased glyph pixels exist (captions, axes).
            assert!(has(BLACK, 40), "{}: text drawn", f.display());
        }
        let hist = image::open(&files[0]).unwrap().to_rgb8();
        assert!(
            hist.pixels()
                .any(|p| p.0 == [ID_COLOR.0, ID_COLOR.1, ID_COLOR.2]),
            "ID outline drawn"
        );
    }

    fn s_vec(s: Scores) -> Vec<Scores> {
        vec![s]
    }
}
