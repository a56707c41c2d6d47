//! Evaluation of cached outputs and the `results.json` / `results.md` tables.
//!
//! `results.json` is public interface:
//! `{"id_accuracy": f, "postprocessors": {"<name>": {"datasets": {"<ood set>": {"group":
//! "near"|"far", "auroc": f, "fpr95": f, "aupr_in": f, "aupr_out": f}}, "near": {..means},
//! "far": {..means}}}}`, every metric a fraction in [0, 1]. Near/far rows are unweighted means
//! over the sets of the group (OpenOOD v1.5, METHODS §8.6). `"convention"` names the metric
//! rules (`openood` unless `[eval.convention]` picks a paper's, see `conventions.rs`); with
//! repeated draws each set also carries `"std"`, the spread of its metrics over the draws.

use crate::conventions::convention_metrics;
use crate::metrics::{OodMetrics, accuracy};
use crate::plots::Scores;
use crate::postprocess::Logits;
use crate::postprocess::fitted::{Fitted, SetOutputs};
use oodforge_core::Group;
use oodforge_core::config::{MetricConvention, PostprocessorConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One OOD test set's cached outputs.
#[derive(Debug, Clone)]
pub struct OodOutputs {
    pub name: String,
    pub group: Group,
    pub outputs: SetOutputs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetResult {
    pub group: Group,
    #[serde(flatten)]
    pub metrics: OodMetrics,
    /// Standard deviation over the convention's draws (`oe`, `energy`, `mixoe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<OodMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostprocessorResults {
    /// The setting APS chose and every setting it tried (only with `[eval] aps = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aps: Option<crate::aps::ApsRecord>,
    pub datasets: BTreeMap<String, DatasetResult>,
    pub near: Option<OodMetrics>,
    pub far: Option<OodMetrics>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The metric convention (`MetricConvention::label`).
    #[serde(default = "openood")]
    pub convention: String,
    pub id_accuracy: f64,
    pub postprocessors: BTreeMap<String, PostprocessorResults>,
}

fn openood() -> String {
    "openood".into()
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(
        "{dataset}: {count} non-finite logits (NaN or infinity); the model diverged, so no OOD metric is meaningful"
    )]
    NonFinite { dataset: String, count: usize },
    #[error("{dataset}: logits have {got} classes, the ID test set has {expected}")]
    ClassMismatch {
        dataset: String,
        got: usize,
        expected: usize,
    },
    #[error("{dataset}: empty dataset")]
    Empty { dataset: String },
    #[error("ID test set: {labels} labels for {rows} logit rows")]
    LabelCount { labels: usize, rows: usize },
    #[error("eval.postprocessors `{postprocessor}`: {message}")]
    Fit {
        postprocessor: &'static str,
        message: String,
    },
}

fn check(name: &str, logits: &Logits, classes: usize) -> Result<(), EvalError> {
    if logits.is_empty() {
        return Err(EvalError::Empty {
            dataset: name.to_owned(),
        });
    }
    if logits.num_classes != classes {
        return Err(EvalError::ClassMismatch {
            dataset: name.to_owned(),
            got: logits.num_classes,
            expected: classes,
        });
    }
    let bad = logits.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(EvalError::NonFinite {
            dataset: name.to_owned(),
            count: bad,
        });
    }
    Ok(())
}

/// Score the ID test set and every OOD set with every (fitted) post-processor; the metrics of
/// `convention` per set.
pub fn evaluate(
    id: &SetOutputs,
    id_labels: &[usize],
    ood: &[OodOutputs],
    postprocessors: &[(PostprocessorConfig, Fitted)],
    convention: &MetricConvention,
) -> Result<Results, EvalError> {
    evaluate_scored(id, id_labels, ood, postprocessors, convention).map(|(r, _)| r)
}

/// `evaluate`, also returning every score (for the plots).
pub fn evaluate_scored(
    id: &SetOutputs,
    id_labels: &[usize],
    ood: &[OodOutputs],
    postprocessors: &[(PostprocessorConfig, Fitted)],
    convention: &MetricConvention,
) -> Result<(Results, Vec<Scores>), EvalError> {
    let id_logits = &id.logits;
    check("ID test", id_logits, id_logits.num_classes)?;
    if id_labels.len() != id_logits.len() {
        return Err(EvalError::LabelCount {
            labels: id_labels.len(),
            rows: id_logits.len(),
        });
    }
    for set in ood {
        check(&set.name, &set.outputs.logits, id_logits.num_classes)?;
    }
    let id_accuracy = accuracy(&id_logits.argmax(), id_labels);
    let mut out = BTreeMap::new();
    let mut all_scores = Vec::with_capacity(postprocessors.len());
    for (pp, fitted) in postprocessors {
        let conf_id = fitted.score(id);
        let mut datasets = BTreeMap::new();
        let mut scores = Scores {
            postprocessor: pp.label().to_owned(),
            id: Vec::new(),
            ood: Vec::new(),
        };
        for set in ood {
            let conf_ood = fitted.score(&set.outputs);
            let m = convention_metrics(convention, &conf_id, &conf_ood);
            scores.ood.push((set.name.clone(), conf_ood));
            datasets.insert(
                set.name.clone(),
                DatasetResult {
                    group: set.group,
                    metrics: m.mean,
                    std: m.std,
                },
            );
        }
        scores.id = conf_id;
        all_scores.push(scores);
        let near = group_mean(&datasets, Group::Near);
        let far = group_mean(&datasets, Group::Far);
        out.insert(
            pp.label().to_owned(),
            PostprocessorResults {
                aps: None,
                datasets,
                near,
                far,
            },
        );
    }
    let results = Results {
        convention: convention.label().to_owned(),
        id_accuracy,
        postprocessors: out,
    };
    Ok((results, all_scores))
}

fn group_mean(datasets: &BTreeMap<String, DatasetResult>, group: Group) -> Option<OodMetrics> {
    let members: Vec<&OodMetrics> = datasets
        .values()
        .filter(|d| d.group == group)
        .map(|d| &d.metrics)
        .collect();
    if members.is_empty() {
        return None;
    }
    let n = members.len() as f64;
    let mean = |f: fn(&OodMetrics) -> f64| members.iter().map(|m| f(m)).sum::<f64>() / n;
    Some(OodMetrics {
        auroc: mean(|m| m.auroc),
        fpr95: mean(|m| m.fpr95),
        aupr_in: mean(|m| m.aupr_in),
        aupr_out: mean(|m| m.aupr_out),
    })
}

/// One line of a results table.
pub struct Row<'a> {
    pub postprocessor: &'a str,
    /// The OOD set, or `near mean` / `far mean`.
    pub set: String,
    pub group: Group,
    pub is_mean: bool,
    pub metrics: &'a OodMetrics,
}

impl Results {
    /// Every line of the table: per post-processor, each group's sets then the group mean.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let mut out = Vec::new();
        for (pp, r) in &self.postprocessors {
            for group in [Group::Near, Group::Far] {
                for (name, d) in r.datasets.iter().filter(|(_, d)| d.group == group) {
                    out.push(Row {
                        postprocessor: pp,
                        set: name.clone(),
                        group,
                        is_mean: false,
                        metrics: &d.metrics,
                    });
                }
                let mean = if group == Group::Near {
                    &r.near
                } else {
                    &r.far
                };
                if let Some(m) = mean {
                    out.push(Row {
                        postprocessor: pp,
                        set: format!("{} mean", group.as_str()),
                        group,
                        is_mean: true,
                        metrics: m,
                    });
                }
            }
        }
        out
    }

    /// The table as Markdown, numbers in percent (as OpenOOD prints them).
    pub fn to_markdown(&self, title: &str) -> String {
        let mut s = format!(
            "# {title}\n\nID accuracy: {:.2}%\n\n",
            100.0 * self.id_accuracy
        );
        let (rate, rate_of) = self.rate_column();
        s.push_str(&format!(
            "| postprocessor | OOD set | group | AUROC ↑ | {rate} | AUPR-In ↑ | AUPR-Out ↑ |\n"
        ));
        s.push_str("|---|---|---|---:|---:|---:|---:|\n");
        for r in self.rows() {
            let m = r.metrics;
            let set = if r.is_mean {
                format!("**{}**", r.set)
            } else {
                r.set.clone()
            };
            s.push_str(&format!(
                "| {} | {set} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                r.postprocessor,
                r.group.as_str(),
                100.0 * m.auroc,
                100.0 * rate_of(m),
                100.0 * m.aupr_in,
                100.0 * m.aupr_out
            ));
        }
        s.push_str(&format!("\nMetrics: {}.\n", self.convention_note()));
        s
    }

    /// The FPR column's header and value: MixOE's papers print TNR@95 = 1 - FPR.
    fn rate_column(&self) -> (&'static str, fn(&OodMetrics) -> f64) {
        if self.convention == "mixoe" {
            ("TNR@95 ↑", |m| 1.0 - m.fpr95)
        } else {
            ("FPR@95 ↓", |m| m.fpr95)
        }
    }

    /// One sentence on how the numbers were computed, under every table.
    pub fn convention_note(&self) -> &'static str {
        match self.convention.as_str() {
            "oe" => {
                "Outlier Exposure's `display_results.py` (OOD positive; FPR at the OOD recall closest to 95%; average-precision AUPR; ID test / 5 OOD images per draw, mean of the draws)"
            }
            "energy" => {
                "the energy repo's `test.py` (ID positive; FPR = share of OOD accepted at the ID recall closest to 95%; average-precision AUPR; ID test / 5 OOD images per draw, mean of the draws)"
            }
            "palm" => {
                "PALM's `cal_metric` (ID positive; FPR = share of OOD above the 5th percentile of ID scores; AUROC as sklearn; AUPR as OpenOOD)"
            }
            "mixoe" => {
                "MixOE's `calculate_log.py` (ID positive; TNR at the TPR closest to 95%; its own AUROC / AUIN / AUOUT; min(|ID|, |OOD|) samples of each side per draw, mean of the draws)"
            }
            _ => {
                "OpenOOD v1.5 conventions (OOD positive; FPR@95 = share of ID flagged OOD at 95% OOD recall; trapezoid AUPR)"
            }
        }
    }

    /// `results.csv`: one line per set and group mean, metrics in percent (full precision in
    /// `results.json`).
    pub fn to_csv(&self) -> String {
        let mut s =
            String::from("postprocessor,dataset,group,auroc,fpr95,aupr_in,aupr_out,id_accuracy\n");
        for r in self.rows() {
            let m = r.metrics;
            s.push_str(&format!(
                "{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                r.postprocessor,
                r.set,
                r.group.as_str(),
                100.0 * m.auroc,
                100.0 * m.fpr95,
                100.0 * m.aupr_in,
                100.0 * m.aupr_out,
                100.0 * self.id_accuracy
            ));
        }
        s
    }

    /// `results.tex`: the paper-style summary (booktabs), one row per post-processor with the
    /// near and far means (FPR@95 and AUROC, percent) and the ID accuracy.
    pub fn to_latex(&self, caption: &str) -> String {
        let esc = |t: &str| {
            t.replace('_', "\\_")
                .replace('%', "\\%")
                .replace('&', "\\&")
        };
        let (_, rate_of) = self.rate_column();
        let rate = if self.convention == "mixoe" {
            "TNR@95 $\\uparrow$"
        } else {
            "FPR@95 $\\downarrow$"
        };
        let cell = |m: &Option<OodMetrics>| {
            m.as_ref().map_or("-- & --".to_owned(), |m| {
                format!("{:.2} & {:.2}", 100.0 * rate_of(m), 100.0 * m.auroc)
            })
        };
        let mut s =
            String::from("% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n");
        s.push_str(&format!("\\caption{{{}}}\n", esc(caption)));
        s.push_str("\\begin{tabular}{lccccc}\n\\toprule\n");
        s.push_str(" & \\multicolumn{2}{c}{near-OOD} & \\multicolumn{2}{c}{far-OOD} & \\\\\n");
        s.push_str(&format!(
            "Method & {rate} & AUROC $\\uparrow$ & {rate} & AUROC $\\uparrow$ & ID Acc. \\\\\n\\midrule\n"
        ));
        for (pp, r) in &self.postprocessors {
            s.push_str(&format!(
                "{} & {} & {} & {:.2} \\\\\n",
                esc(pp),
                cell(&r.near),
                cell(&r.far),
                100.0 * self.id_accuracy
            ));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n\\end{table}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(rows: &[[f32; 3]]) -> SetOutputs {
        SetOutputs::from_logits(Logits::new(rows.iter().flatten().copied().collect(), 3))
    }

    fn plain(pp: PostprocessorConfig) -> (PostprocessorConfig, Fitted) {
        let f = Fitted::fit(&pp, None).unwrap();
        (pp, f)
    }

    #[test]
    fn evaluate_reports_accuracy_sets_and_group_means() {
        let id = logits(&[
            [5.0, 0.0, 0.0],
            [0.0, 4.0, 0.0],
            [0.0, 0.0, 6.0],
            [3.0, 0.0, 0.0],
        ]);
        let labels = [0, 1, 2, 1];
        let near = OodOutputs {
            name: "a".into(),
            group: Group::Near,
            outputs: logits(&[[1.0, 1.0, 1.0], [4.5, 0.0, 0.0]]),
        };
        let far = OodOutputs {
            name: "b".into(),
            group: Group::Far,
            outputs: logits(&[[0.0, 0.0, 0.0]]),
        };
        let pps = [plain(PostprocessorConfig::MaxLogit {})];
        let r = evaluate(
            &id,
            &labels,
            &[near, far],
            &pps,
            &MetricConvention::default(),
        )
        .unwrap();
        assert_eq!(r.id_accuracy, 0.75);
        let ml = &r.postprocessors["maxlogit"];
        // ID max logits 5,4,6,3; set a: 1 and 4.5 -> pairs won: 1 beats all 4, 4.5 beats 2 of 4.
        assert_eq!(ml.datasets["a"].metrics.auroc, 6.0 / 8.0);
        assert_eq!(ml.datasets["b"].metrics.auroc, 1.0);
        assert_eq!(ml.near.unwrap().auroc, 0.75);
        assert_eq!(ml.far.unwrap().auroc, 1.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["postprocessors"]["maxlogit"]["datasets"]["a"]["group"],
            "near"
        );
        assert_eq!(json["postprocessors"]["maxlogit"]["near"]["auroc"], 0.75);
        let md = r.to_markdown("t");
        assert!(md.contains("| maxlogit | a | near | 75.00 |"), "{md}");
        assert!(
            md.contains("| maxlogit | **near mean** | near | 75.00 |"),
            "{md}"
        );
        let csv = r.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "postprocessor,dataset,group,auroc,fpr95,aupr_in,aupr_out,id_accuracy"
        );
        assert!(lines[1].starts_with("maxlogit,a,near,75.0000,"), "{csv}");
        assert!(lines[1].ends_with(",75.0000"), "{csv}");
        assert_eq!(lines.len(), 5, "a, near mean, b, far mean: {csv}");
        let tex = r.to_latex("tiny_run");
        assert!(tex.contains("\\caption{tiny\\_run}"), "{tex}");
        // near: FPR@95 then AUROC; far: AUROC 100.
        assert!(tex.contains("maxlogit & "), "{tex}");
        assert!(
            tex.contains(" & 75.00 & ") && tex.contains(" & 100.00 & 75.00 \\\\"),
            "{tex}"
        );
    }

    #[test]
    fn a_paper_convention_is_recorded_with_its_spread_and_its_column() {
        let rows: Vec<[f32; 3]> = (0..12).map(|i| [i as f32, 0.0, 0.0]).collect();
        let id = logits(&rows);
        let labels = vec![0; 12];
        let ood = OodOutputs {
            name: "a".into(),
            group: Group::Far,
            outputs: logits(&[[1.5, 0.0, 0.0], [4.5, 0.0, 0.0], [0.5, 0.0, 0.0]]),
        };
        let pps = [plain(PostprocessorConfig::MaxLogit {})];
        let mixoe = MetricConvention::from_name("mixoe").unwrap();
        let r = evaluate(&id, &labels, std::slice::from_ref(&ood), &pps, &mixoe).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["convention"], "mixoe");
        let set = &json["postprocessors"]["maxlogit"]["datasets"]["a"];
        assert!(set["std"]["auroc"].as_f64().unwrap() > 0.0, "{set}");
        let md = r.to_markdown("t");
        assert!(
            md.contains("TNR@95 ↑") && md.contains("calculate_log.py"),
            "{md}"
        );
        assert!(r.to_latex("t").contains("TNR@95"));
        // The default records `openood` and no spread; an old results.json without the key
        // reads back as OpenOOD.
        let r = evaluate(&id, &labels, &[ood], &pps, &MetricConvention::default()).unwrap();
        let mut json = serde_json::to_value(&r).unwrap();
        assert!(json["postprocessors"]["maxlogit"]["datasets"]["a"]["std"].is_null());
        json.as_object_mut().unwrap().remove("convention");
        let back: Results = serde_json::from_value(json).unwrap();
        assert_eq!(back.convention, "openood");
    }

    #[test]
    fn non_finite_logits_are_an_error_not_a_number() {
        let id = logits(&[[f32::NAN, 0.0, 0.0]]);
        let e = evaluate(
            &id,
            &[0],
            &[],
            &[plain(PostprocessorConfig::Msp {})],
            &MetricConvention::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
    }
}
