//! Every case of every `*_openood_metrics.json` golden fixture (OpenOOD
//! `openood/evaluators/metrics.py` at 3c35632, run with scikit-learn 1.9.1; see the fixture's
//! `sources`). The Python that produced each number is the fixture's `how_run`:
//! `compute_all_metrics(conf, label, pred)` and `fpr_recall(conf, label, 0.95)` on the stored
//! inputs, plus `roc_curve(ood, -conf)` itself.

use oodforge_eval::conventions::average_precision;
use oodforge_eval::metrics::{accuracy, fpr_at_id_recall, ood_metrics_labeled, roc_curve};
use oodforge_testutil::{array, assert_close, golden_files, num};

#[test]
fn openood_metrics_match_every_golden_case() {
    let mut checked = 0;
    for (file, fixture) in golden_files("_openood_metrics.json") {
        let cases = fixture["cases"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no `cases` array"));
        assert!(!cases.is_empty(), "{file}: empty `cases`");
        for case in cases {
            let name = format!("{file}/{}", case["name"].as_str().expect("case name"));
            let (_, conf) = array(&case["inputs"]["conf"]);
            let (_, label) = array(&case["inputs"]["label"]);
            let (_, pred) = array(&case["inputs"]["pred"]);
            let rtol = num(&case["tolerance"]["rtol"]);
            let atol = num(&case["tolerance"]["atol"]);
            let out = &case["outputs"];
            let is_ood: Vec<bool> = label.iter().map(|l| *l == -1.0).collect();

            let m = ood_metrics_labeled(&conf, &is_ood);
            for (key, got) in [
                ("fpr95", m.fpr95),
                ("auroc", m.auroc),
                ("aupr_in", m.aupr_in),
                ("aupr_out", m.aupr_out),
            ] {
                assert_close(
                    &format!("{name}.{key}"),
                    &[got],
                    &[num(&out[key])],
                    rtol,
                    atol,
                );
            }

            let id: Vec<usize> = (0..label.len()).filter(|&i| !is_ood[i]).collect();
            let acc = accuracy(
                &id.iter().map(|&i| pred[i] as usize).collect::<Vec<_>>(),
                &id.iter().map(|&i| label[i] as usize).collect::<Vec<_>>(),
            );
            assert_close(
                &format!("{name}.accuracy"),
                &[acc],
                &[num(&out["accuracy"])],
                rtol,
                atol,
            );

            let neg: Vec<f64> = conf.iter().map(|c| -c).collect();
            let roc = roc_curve(&is_ood, &neg, true);
            let want = &out["roc_curve_ood_vs_negconf"];
            assert_close(
                &format!("{name}.roc.fpr"),
                &roc.fpr,
                &array(&want["fpr"]).1,
                rtol,
                atol,
            );
            assert_close(
                &format!("{name}.roc.tpr"),
                &roc.tpr,
                &array(&want["tpr"]).1,
                rtol,
                atol,
            );
            assert_close(
                &format!("{name}.roc.thresholds"),
                &roc.thresholds,
                &array(&want["thresholds"]).1,
                rtol,
                atol,
            );

            let full = roc_curve(&is_ood, &neg, false);
            let i = full.tpr.iter().position(|t| *t >= 0.95).unwrap_or(0);
            assert_close(
                &format!("{name}.fpr95_without_drop_intermediate"),
                &[full.fpr[i]],
                &[num(&out["fpr95_without_drop_intermediate"])],
                rtol,
                atol,
            );

            let (fpr, threshold) = fpr_at_id_recall(&conf, &is_ood, 0.95);
            let want = &out["fpr_recall_id_positive"];
            assert_close(
                &format!("{name}.fpr_recall.fpr"),
                &[fpr],
                &[num(&want["fpr"])],
                rtol,
                atol,
            );
            assert_close(
                &format!("{name}.fpr_recall.threshold"),
                &[threshold],
                &[num(&want["threshold"])],
                rtol,
                atol,
            );
            // OE / energy's AUPR (`sklearn.metrics.average_precision_score`, the step rule), both
            // directions, as the fixture's `sklearn_crosscheck` records them.
            let cross = &case["sklearn_crosscheck"];
            let is_id: Vec<bool> = is_ood.iter().map(|o| !o).collect();
            assert_close(
                &format!("{name}.average_precision(1-ood, conf)"),
                &[average_precision(&is_id, &conf)],
                &[num(&cross["average_precision_score(1-ood, conf)"])],
                rtol,
                atol,
            );
            assert_close(
                &format!("{name}.average_precision(ood, -conf)"),
                &[average_precision(&is_ood, &neg)],
                &[num(&cross["average_precision_score(ood, -conf)"])],
                rtol,
                atol,
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "expected the 15 recorded cases, checked {checked}"
    );
}
