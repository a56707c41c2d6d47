//! `report`: our numbers beside a paper's. A table spec (TOML, next to the experiment's configs)
//! names the run folders (seeds), the metric convention the paper used, and per row the paper's
//! numbers with their source; the report is `ours (mean ± std over seeds) | paper | Δ`, and
//! `--check` fails when a difference exceeds the tolerance.
//!
//! ```toml
//! title = "PALM, CIFAR-100, ResNet-34"
//! source = "jeff024/PALM figs/results.png (paper Table 1)"
//! convention = "palm"
//! tolerance = 1.0                      # percentage points, per cell unless a row says otherwise
//! runs = ["runs/palm_cifar100/*/s*"]   # run folders (`*` matches within a path component)
//! [[rows]]
//! label = "SVHN"
//! postprocessor = "palm_mds"
//! set = "svhn"                         # an OOD set, "near" / "far" (group means), or "id"
//! paper = { fpr95 = 3.29, auroc = 99.23 }
//! ```
//!
//! Metrics (percent): `auroc`, `fpr95`, `tnr95` (1 - fpr95), `aupr_in`, `aupr_out`, and
//! `accuracy` (ID accuracy, `set = "id"`); for feature-bag runs `set = "slides"` with
//! `accuracy`, `auroc`, `f1` (the selected epoch's test metrics). A row comparing another method's runs names them
//! with its own `runs = [...]`.

use oodforge_eval::Results;
use oodforge_eval::aggregate::{Aggregate, MeanStd, MetricsMeanStd};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Results { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub title: String,
    /// Where the paper's numbers come from (table, page or file).
    pub source: String,
    /// The metric convention of the paper's numbers (`openood`, `oe`, `energy`, `palm`, `mixoe`).
    #[serde(default = "openood")]
    pub convention: String,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    #[serde(default)]
    pub runs: Vec<String>,
    pub rows: Vec<RowSpec>,
}

fn openood() -> String {
    "openood".into()
}
fn default_tolerance() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    pub label: Option<String>,
    #[serde(default)]
    pub postprocessor: Option<String>,
    pub set: String,
    /// Paper numbers in percent, by metric.
    pub paper: BTreeMap<String, f64>,
    pub tolerance: Option<f64>,
    /// This row's run folders (patterns), when they are not the table's (another method).
    pub runs: Option<Vec<String>>,
}

const METRICS: [&str; 7] = [
    "auroc", "fpr95", "tnr95", "aupr_in", "aupr_out", "accuracy", "f1",
];

/// Mean ± std over feature-bag runs of the selected epoch's test metrics (`results.json` of the
/// MIL loop: `selected.test.{accuracy, auroc, f1}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlideAggregate {
    pub runs: Vec<String>,
    pub accuracy: MeanStd,
    pub auroc: Option<MeanStd>,
    pub f1: MeanStd,
}

/// Our runs, aggregated: OOD evaluations or slide classification.
#[derive(Debug, Clone)]
pub enum Ours {
    Ood(Aggregate),
    Slides(SlideAggregate),
}

impl Ours {
    pub fn runs(&self) -> &[String] {
        match self {
            Self::Ood(a) => &a.runs,
            Self::Slides(s) => &s.runs,
        }
    }
}

/// One cell of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub row: String,
    pub metric: String,
    /// Ours, percent (None: not in the results).
    pub ours: Option<MeanStd>,
    pub paper: f64,
    pub delta: Option<f64>,
    pub tolerance: f64,
}

impl Cell {
    pub fn ok(&self) -> bool {
        self.delta.is_some_and(|d| d.abs() <= self.tolerance)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub title: String,
    pub source: String,
    pub convention: String,
    pub runs: Vec<String>,
    pub cells: Vec<Cell>,
}

/// `a*b?` against one path component.
fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(
        &pattern.chars().collect::<Vec<_>>(),
        &name.chars().collect::<Vec<_>>(),
    )
}

/// Expand `*` / `?` in each component of `pattern` (sorted matches; a plain path as itself).
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for (i, comp) in pattern.split('/').enumerate() {
        if comp.is_empty() && i == 0 {
            found = vec![PathBuf::from("/")];
            continue;
        }
        if !comp.contains(['*', '?']) {
            found = found.into_iter().map(|p| p.join(comp)).collect();
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let list = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir.as_path()
            };
            let Ok(entries) = std::fs::read_dir(list) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| wildcard(comp, n))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found
}

/// The run folders `patterns` match: directories only (a sweep keeps each run's log beside its
/// folder, and `s*` would match it).
pub fn run_dirs(patterns: &[String]) -> Vec<PathBuf> {
    patterns
        .iter()
        .flat_map(|p| expand(p))
        .filter(|p| p.is_dir())
        .collect()
}

impl TableSpec {
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let spec: Self = toml::from_str(&text).map_err(|e| ReportError::Spec {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let bad = |message: String| ReportError::Spec {
            path: path.to_path_buf(),
            message,
        };
        if !oodforge_core::config::MetricConvention::NAMES.contains(&spec.convention.as_str()) {
            return Err(bad(format!(
                "convention `{}` is unknown, expected one of {}",
                spec.convention,
                oodforge_core::config::MetricConvention::NAMES.join(", ")
            )));
        }
        for (i, row) in spec.rows.iter().enumerate() {
            if row.paper.is_empty() {
                return Err(bad(format!("rows[{i}].paper is empty")));
            }
            for m in row.paper.keys() {
                if !METRICS.contains(&m.as_str()) {
                    return Err(bad(format!(
                        "rows[{i}].paper.{m} is not a metric, expected one of {}",
                        METRICS.join(", ")
                    )));
                }
                let fits = match row.set.as_str() {
                    "id" => m == "accuracy",
                    "slides" => ["accuracy", "auroc", "f1"].contains(&m.as_str()),
                    _ => !["accuracy", "f1"].contains(&m.as_str()),
                };
                if !fits {
                    return Err(bad(format!(
                        "rows[{i}]: `{m}` does not go with set = \"{}\" (set = \"id\": accuracy; \"slides\": accuracy, auroc, f1; an OOD set or \"near\" / \"far\": auroc, fpr95, tnr95, aupr_in, aupr_out)",
                        row.set
                    )));
                }
            }
            if row.set != "id" && row.set != "slides" && row.postprocessor.is_none() {
                return Err(bad(format!("rows[{i}]: an OOD row needs `postprocessor`")));
            }
        }
        Ok(spec)
    }
}

/// Read the runs' `results.json` and aggregate them (mean ± std over the seeds): OOD
/// evaluations, or feature-bag runs (slide classification).
pub fn load_runs(dirs: &[PathBuf]) -> Result<Ours, ReportError> {
    let mut ood = Vec::new();
    let mut slides: Vec<(String, [Option<f64>; 3])> = Vec::new();
    for dir in dirs {
        let path = dir.join("results.json");
        let bytes = std::fs::read(&path).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |message: String| ReportError::Results {
            path: path.clone(),
            message,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        if let Some(test) = v.get("selected").and_then(|s| s.get("test")) {
            let m = |k: &str| test.get(k).and_then(serde_json::Value::as_f64);
            slides.push((
                dir.display().to_string(),
                [m("accuracy"), m("auroc"), m("f1")],
            ));
        } else {
            let r: Results = serde_json::from_value(v)
                .map_err(|e| bad(format!("not an OOD evaluation's results.json ({e})")))?;
            ood.push((dir.display().to_string(), r));
        }
    }
    let first = dirs.first().cloned().unwrap_or_default();
    match (ood.is_empty(), slides.is_empty()) {
        (false, true) => Aggregate::of(&ood)
            .map(Ours::Ood)
            .map_err(|e| ReportError::Results {
                path: first,
                message: e.to_string(),
            }),
        (true, false) => {
            let col = |k: usize| -> Option<MeanStd> {
                let v: Option<Vec<f64>> = slides.iter().map(|(_, m)| m[k]).collect();
                v.map(|v| MeanStd::of(&v))
            };
            let (Some(accuracy), Some(f1)) = (col(0), col(2)) else {
                return Err(ReportError::Results {
                    path: first,
                    message: "a feature-bag results.json without selected.test accuracy / f1"
                        .into(),
                });
            };
            Ok(Ours::Slides(SlideAggregate {
                runs: slides.iter().map(|(r, _)| r.clone()).collect(),
                accuracy,
                auroc: col(1),
                f1,
            }))
        }
        (true, true) => Err(ReportError::Results {
            path: first,
            message: "no runs".into(),
        }),
        (false, false) => Err(ReportError::Results {
            path: first,
            message: "these runs mix OOD evaluations and feature-bag runs".into(),
        }),
    }
}

impl Report {
    /// Compare our runs with the spec: `ours` for the rows without runs of their own,
    /// `row_runs` (by the row's patterns) for the others. The convention must be the paper's.
    pub fn build(
        spec: &TableSpec,
        ours: &Ours,
        row_runs: &BTreeMap<Vec<String>, Ours>,
    ) -> Result<Self, ReportError> {
        let check = |o: &Ours| {
            let Ours::Ood(a) = o else {
                return Ok(());
            };
            if a.convention == spec.convention {
                return Ok(());
            }
            Err(ReportError::Results {
                path: PathBuf::from(a.runs.first().cloned().unwrap_or_default()),
                message: format!(
                    "the runs were evaluated with the `{}` metric convention but the paper's numbers use `{}`; re-evaluate them alike: eval --runs ... --convention {} --out DIR, then report --aggregate DIR/results.json",
                    a.convention, spec.convention, spec.convention
                ),
            })
        };
        check(ours)?;
        let mut runs = ours.runs().to_vec();
        let mut cells = Vec::new();
        for row in &spec.rows {
            // A row whose own runs do not exist (yet) reports its cells as missing.
            let ours: Option<&Ours> = match &row.runs {
                Some(patterns) => match row_runs.get(patterns) {
                    Some(a) => {
                        check(a)?;
                        for r in a.runs() {
                            if !runs.contains(r) {
                                runs.push(r.clone());
                            }
                        }
                        Some(a)
                    }
                    None => None,
                },
                None => Some(ours),
            };
            let label = row.label.clone().unwrap_or_else(|| {
                format!(
                    "{} / {}",
                    row.postprocessor.as_deref().unwrap_or("-"),
                    row.set
                )
            });
            let ood = match ours {
                Some(Ours::Ood(a)) => Some(a),
                _ => None,
            };
            let bags = match ours {
                Some(Ours::Slides(s)) => Some(s),
                _ => None,
            };
            let metrics: Option<&MetricsMeanStd> = row.postprocessor.as_ref().and_then(|pp| {
                let p = ood?.postprocessors.get(pp)?;
                match row.set.as_str() {
                    "near" => p.near.as_ref(),
                    "far" => p.far.as_ref(),
                    set => p.datasets.get(set).map(|d| &d.metrics),
                }
            });
            for (metric, &paper) in &row.paper {
                let slides = row.set == "slides";
                let value = match metric.as_str() {
                    "accuracy" if slides => bags.map(|b| b.accuracy),
                    "auroc" if slides => bags.and_then(|b| b.auroc),
                    "f1" => bags.map(|b| b.f1),
                    "accuracy" => ood.map(|o| o.id_accuracy),
                    "auroc" => metrics.map(|m| m.auroc),
                    "fpr95" => metrics.map(|m| m.fpr95),
                    "tnr95" => metrics.map(|m| MeanStd {
                        mean: 1.0 - m.fpr95.mean,
                        std: m.fpr95.std,
                    }),
                    "aupr_in" => metrics.map(|m| m.aupr_in),
                    "aupr_out" => metrics.map(|m| m.aupr_out),
                    _ => unreachable!("checked by TableSpec::load"),
                };
                let ours = value.map(|v| MeanStd {
                    mean: 100.0 * v.mean,
                    std: 100.0 * v.std,
                });
                cells.push(Cell {
                    row: label.clone(),
                    metric: metric.clone(),
                    delta: ours.map(|o| o.mean - paper),
                    ours,
                    paper,
                    tolerance: row.tolerance.unwrap_or(spec.tolerance),
                });
            }
        }
        Ok(Self {
            title: spec.title.clone(),
            source: spec.source.clone(),
            convention: spec.convention.clone(),
            runs,
            cells,
        })
    }

    /// Cells outside their tolerance or missing from our results.
    pub fn failures(&self) -> Vec<&Cell> {
        self.cells.iter().filter(|c| !c.ok()).collect()
    }

    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# {}\n\nPaper numbers: {}. Metric convention: `{}`. Ours: mean ± std over {} run(s): {}.\n\n",
            self.title,
            self.source,
            self.convention,
            self.runs.len(),
            self.runs.join(", ")
        );
        s.push_str("| row | metric | ours | paper | Δ | within tolerance |\n|---|---|---:|---:|---:|---|\n");
        for c in &self.cells {
            let ours = c.ours.map_or("missing".to_owned(), |o| {
                format!("{:.2} ± {:.2}", o.mean, o.std)
            });
            let delta = c.delta.map_or("—".to_owned(), |d| format!("{d:+.2}"));
            let ok = if c.ok() {
                "yes".to_owned()
            } else {
                format!("**no** (±{})", c.tolerance)
            };
            s.push_str(&format!(
                "| {} | {} | {ours} | {:.2} | {delta} | {ok} |\n",
                c.row, c.metric, c.paper
            ));
        }
        s
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::from("row,metric,ours_mean,ours_std,paper,delta,tolerance,ok\n");
        for c in &self.cells {
            let (m, sd) = c.ours.map_or((String::new(), String::new()), |o| {
                (format!("{:.4}", o.mean), format!("{:.4}", o.std))
            });
            s.push_str(&format!(
                "\"{}\",{},{m},{sd},{:.4},{},{},{}\n",
                c.row.replace('"', "\"\""),
                c.metric,
                c.paper,
                c.delta.map_or(String::new(), |d| format!("{d:.4}")),
                c.tolerance,
                c.ok()
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_component() {
        assert!(wildcard("s*", "s0") && wildcard("s*", "s") && !wildcard("s*", "x0"));
        assert!(wildcard("a?c", "abc") && !wildcard("a?c", "ac"));
        let dir = tempfile::tempdir().unwrap();
        for d in ["run/aa/s0", "run/aa/s1", "run/bb/s0", "run/bb/t0"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let root = dir.path().display().to_string();
        let got = expand(&format!("{root}/run/*/s*"));
        let want: Vec<PathBuf> = ["run/aa/s0", "run/aa/s1", "run/bb/s0"]
            .iter()
            .map(|d| dir.path().join(d))
            .collect();
        assert_eq!(got, want);
    }
}
