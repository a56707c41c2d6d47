//! Mean ± standard deviation over several runs (one folder per seed), as the OpenOOD
//! leaderboard reports CIFAR and ImageNet-200 (three independently trained checkpoints,
//! METHODS §1.1). The standard deviation is the population one (`np.std`, ddof 0).
//!
//! `results.json` of an aggregate: `{"convention", "runs": [folders], "id_accuracy": {"mean",
//! "std"}, "postprocessors": {"<name>": {"datasets": {"<set>": {"group", "auroc": {"mean",
//! "std"}, "fpr95": .., "aupr_in": .., "aupr_out": ..}}, "near": {..}, "far": {..}}}}`.

use crate::metrics::OodMetrics;
use crate::report::Results;
use oodforge_core::Group;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricsMeanStd {
    pub auroc: MeanStd,
    pub fpr95: MeanStd,
    pub aupr_in: MeanStd,
    pub aupr_out: MeanStd,
}

impl MetricsMeanStd {
    /// Mean and population std of each metric over `runs` (seeds, or a convention's draws).
    pub fn of(runs: &[&OodMetrics]) -> Self {
        let field =
            |f: fn(&OodMetrics) -> f64| MeanStd::of(&runs.iter().map(|m| f(m)).collect::<Vec<_>>());
        Self {
            auroc: field(|m| m.auroc),
            fpr95: field(|m| m.fpr95),
            aupr_in: field(|m| m.aupr_in),
            aupr_out: field(|m| m.aupr_out),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetMeanStd {
    pub group: Group,
    #[serde(flatten)]
    pub metrics: MetricsMeanStd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostprocessorMeanStd {
    pub datasets: BTreeMap<String, SetMeanStd>,
    pub near: Option<MetricsMeanStd>,
    pub far: Option<MetricsMeanStd>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    pub convention: String,
    pub runs: Vec<String>,
    pub id_accuracy: MeanStd,
    pub postprocessors: BTreeMap<String, PostprocessorMeanStd>,
}

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("no runs to aggregate")]
    Empty,
    #[error(
        "{run}: {what} differs from {first}'s ({got} vs {want}); every run must be evaluated the same way"
    )]
    Mismatch {
        run: String,
        first: String,
        what: &'static str,
        got: String,
        want: String,
    },
}

impl Aggregate {
    /// Aggregate `(run name, results)` pairs evaluated the same way (convention, post-processors,
    /// OOD sets); the near / far rows are the mean ± std of each run's group mean.
    pub fn of(runs: &[(String, Results)]) -> Result<Self, AggregateError> {
        let (first_name, first) = runs.first().ok_or(AggregateError::Empty)?;
        let keys = |r: &Results| -> Vec<String> {
            r.postprocessors
                .iter()
                .flat_map(|(pp, p)| p.datasets.keys().map(move |s| format!("{pp}/{s}")))
                .collect()
        };
        for (name, r) in &runs[1..] {
            let mismatch = |what, got: String, want: String| AggregateError::Mismatch {
                run: name.clone(),
                first: first_name.clone(),
                what,
                got,
                want,
            };
            if r.convention != first.convention {
                return Err(mismatch(
                    "the metric convention",
                    r.convention.clone(),
                    first.convention.clone(),
                ));
            }
            if keys(r) != keys(first) {
                return Err(mismatch(
                    "the post-processor / OOD set list",
                    keys(r).join(","),
                    keys(first).join(","),
                ));
            }
        }
        let mut postprocessors = BTreeMap::new();
        for (pp, p) in &first.postprocessors {
            let all: Vec<_> = runs.iter().map(|(_, r)| &r.postprocessors[pp]).collect();
            let datasets = p
                .datasets
                .iter()
                .map(|(set, d)| {
                    let m: Vec<&OodMetrics> =
                        all.iter().map(|a| &a.datasets[set].metrics).collect();
                    (
                        set.clone(),
                        SetMeanStd {
                            group: d.group,
                            metrics: MetricsMeanStd::of(&m),
                        },
                    )
                })
                .collect();
            let group = |g: fn(&crate::report::PostprocessorResults) -> Option<&OodMetrics>| {
                let m: Option<Vec<&OodMetrics>> = all.iter().map(|a| g(a)).collect();
                m.map(|m| MetricsMeanStd::of(&m))
            };
            postprocessors.insert(
                pp.clone(),
                PostprocessorMeanStd {
                    datasets,
                    near: group(|a| a.near.as_ref()),
                    far: group(|a| a.far.as_ref()),
                },
            );
        }
        Ok(Self {
            convention: first.convention.clone(),
            runs: runs.iter().map(|(n, _)| n.clone()).collect(),
            id_accuracy: MeanStd::of(&runs.iter().map(|(_, r)| r.id_accuracy).collect::<Vec<_>>()),
            postprocessors,
        })
    }

    fn rows(&self) -> Vec<(&str, String, Group, &MetricsMeanStd)> {
        let mut out = Vec::new();
        for (pp, p) in &self.postprocessors {
            for group in [Group::Near, Group::Far] {
                for (set, d) in p.datasets.iter().filter(|(_, d)| d.group == group) {
                    out.push((pp.as_str(), set.clone(), group, &d.metrics));
                }
                let mean = if group == Group::Near {
                    &p.near
                } else {
                    &p.far
                };
                if let Some(m) = mean {
                    out.push((
                        pp.as_str(),
                        format!("**{} mean**", group.as_str()),
                        group,
                        m,
                    ));
                }
            }
        }
        out
    }

    /// Markdown, percent, `mean ± std`.
    pub fn to_markdown(&self, title: &str) -> String {
        let pm = |m: &MeanStd| format!("{:.2} ± {:.2}", 100.0 * m.mean, 100.0 * m.std);
        let mut s = format!(
            "# {title}\n\n{} runs: {}\n\nID accuracy: {}%\n\n",
            self.runs.len(),
            self.runs.join(", "),
            pm(&self.id_accuracy)
        );
        s.push_str(
            "| postprocessor | OOD set | group | AUROC ↑ | FPR@95 ↓ | AUPR-In ↑ | AUPR-Out ↑ |\n",
        );
        s.push_str("|---|---|---|---:|---:|---:|---:|\n");
        for (pp, set, group, m) in self.rows() {
            s.push_str(&format!(
                "| {pp} | {set} | {} | {} | {} | {} | {} |\n",
                group.as_str(),
                pm(&m.auroc),
                pm(&m.fpr95),
                pm(&m.aupr_in),
                pm(&m.aupr_out)
            ));
        }
        s.push_str(&format!(
            "\nMean ± standard deviation (population) over the runs; metric convention `{}`.\n",
            self.convention
        ));
        s
    }

    /// CSV, percent: a mean and a std column per metric.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "postprocessor,dataset,group,auroc_mean,auroc_std,fpr95_mean,fpr95_std,aupr_in_mean,aupr_in_std,aupr_out_mean,aupr_out_std,runs\n",
        );
        for (pp, set, group, m) in self.rows() {
            let set = set.trim_matches('*');
            s.push_str(&format!("{pp},{set},{}", group.as_str()));
            for v in [&m.auroc, &m.fpr95, &m.aupr_in, &m.aupr_out] {
                s.push_str(&format!(",{:.4},{:.4}", 100.0 * v.mean, 100.0 * v.std));
            }
            s.push_str(&format!(",{}\n", self.runs.len()));
        }
        s
    }

    /// The booktabs summary with `mean$\pm$std` cells.
    pub fn to_latex(&self, caption: &str) -> String {
        let esc = |t: &str| {
            t.replace('_', "\\_")
                .replace('%', "\\%")
                .replace('&', "\\&")
        };
        let pm = |m: &MeanStd| format!("{:.2}$\\pm${:.2}", 100.0 * m.mean, 100.0 * m.std);
        let cell = |m: &Option<MetricsMeanStd>| {
            m.as_ref().map_or("-- & --".to_owned(), |m| {
                format!("{} & {}", pm(&m.fpr95), pm(&m.auroc))
            })
        };
        let mut s =
            String::from("% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n");
        s.push_str(&format!(
            "\\caption{{{} (mean$\\pm$std over {} runs)}}\n",
            esc(caption),
            self.runs.len()
        ));
        s.push_str("\\begin{tabular}{lccccc}\n\\toprule\n");
        s.push_str(" & \\multicolumn{2}{c}{near-OOD} & \\multicolumn{2}{c}{far-OOD} & \\\\\n");
        s.push_str("Method & FPR@95 $\\downarrow$ & AUROC $\\uparrow$ & FPR@95 $\\downarrow$ & AUROC $\\uparrow$ & ID Acc. \\\\\n\\midrule\n");
        for (pp, p) in &self.postprocessors {
            s.push_str(&format!(
                "{} & {} & {} & {} \\\\\n",
                esc(pp),
                cell(&p.near),
                cell(&p.far),
                pm(&self.id_accuracy)
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DatasetResult, PostprocessorResults};

    fn results(convention: &str, acc: f64, auroc: f64) -> Results {
        let m = OodMetrics {
            auroc,
            fpr95: 1.0 - auroc,
            aupr_in: 0.5,
            aupr_out: 0.5,
        };
        let mut datasets = BTreeMap::new();
        datasets.insert(
            "svhn".to_owned(),
            DatasetResult {
                group: Group::Far,
                metrics: m,
                std: None,
            },
        );
        let mut postprocessors = BTreeMap::new();
        postprocessors.insert(
            "msp".to_owned(),
            PostprocessorResults {
                aps: None,
                datasets,
                near: None,
                far: Some(m),
            },
        );
        Results {
            convention: convention.into(),
            id_accuracy: acc,
            postprocessors,
        }
    }

    #[test]
    fn mean_and_population_std_over_runs() {
        let runs = vec![
            ("s0".to_owned(), results("openood", 0.90, 0.80)),
            ("s1".to_owned(), results("openood", 0.94, 0.84)),
            ("s2".to_owned(), results("openood", 0.92, 0.88)),
        ];
        let a = Aggregate::of(&runs).unwrap();
        assert!((a.id_accuracy.mean - 0.92).abs() < 1e-12);
        // Deviations -0.02, 0.02, 0 -> variance 8e-4 / 3.
        assert!((a.id_accuracy.std - (8e-4f64 / 3.0).sqrt()).abs() < 1e-12);
        let far = a.postprocessors["msp"].far.unwrap();
        assert!((far.auroc.mean - 0.84).abs() < 1e-12);
        assert!((far.auroc.std - (3.2e-3f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(a.postprocessors["msp"].near.is_none());
        let md = a.to_markdown("t");
        assert!(md.contains("| msp | svhn | far | 84.00 ± 3.27 |"), "{md}");
        assert!(md.contains("92.00 ± 1.63%"), "{md}");
        let csv = a.to_csv();
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("msp,svhn,far,84.0000,3.2660,"),
            "{csv}"
        );
        assert!(a.to_latex("x").contains("84.00$\\pm$3.27"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json["postprocessors"]["msp"]["datasets"]["svhn"]["auroc"]["mean"],
            0.84
        );
    }

    #[test]
    fn runs_evaluated_differently_are_refused() {
        let e = Aggregate::of(&[
            ("a".into(), results("openood", 0.9, 0.8)),
            ("b".into(), results("oe", 0.9, 0.8)),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("b: the metric convention") && e.contains("a's"),
            "{e}"
        );
        assert!(matches!(Aggregate::of(&[]), Err(AggregateError::Empty)));
    }
}
