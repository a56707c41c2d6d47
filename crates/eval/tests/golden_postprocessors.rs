//! OpenOOD post-processor scores against `*_openood_postprocessors.json` (OpenOOD 3c35632,
//! official classes run in float64 on a linear net: logits = features @ W.T + b). Every result
//! entry must be one this test checks or one listed as not yet implemented, so a fixture that
//! gains a post-processor fails here until it is handled.

use oodforge_core::config::PostprocessorConfig;
use oodforge_eval::postprocess::score_row;
use oodforge_testutil::{array, assert_close, golden_files, num};

/// Recorded in the fixture, implemented in a later issue (#6): GEN, ODIN, MDS, KNN, ViM, ReAct.
const NOT_YET: [&str; 6] = ["gen", "odin", "mds", "knn", "vim", "react"];

#[test]
fn msp_maxlogit_energy_match_openood_float64() {
    let mut checked = 0;
    for (file, fx) in golden_files("_openood_postprocessors.json") {
        let (wshape, w) = array(&fx["inputs"]["W"]);
        let (_, b) = array(&fx["inputs"]["b"]);
        let (fshape, x) = array(&fx["inputs"]["test_features"]);
        let (k, d) = (wshape[0], wshape[1]);
        assert_eq!(fshape[1], d, "{file}: feature dim");
        let logits: Vec<Vec<f64>> = x
            .chunks_exact(d)
            .map(|row| {
                (0..k)
                    .map(|c| b[c] + (0..d).map(|j| row[j] * w[c * d + j]).sum::<f64>())
                    .collect()
            })
            .collect();
        let tol = &fx["tolerance"]["official_float64"]["default"];
        let (rtol, atol) = (num(&tol["rtol"]), num(&tol["atol"]));
        for (name, result) in fx["results"].as_object().expect("results object") {
            let pp = match name.as_str() {
                "msp" => PostprocessorConfig::Msp {},
                "mls" => PostprocessorConfig::MaxLogit {},
                "ebo" => {
                    let t =
                        &result["official_float64"]["config"]["postprocessor_args"]["temperature"];
                    PostprocessorConfig::Energy {
                        temperature: num(t),
                    }
                }
                other if NOT_YET.contains(&other) => continue,
                other => panic!(
                    "{file}: post-processor `{other}` is neither checked nor listed as pending"
                ),
            };
            let want = &result["official_float64"];
            let conf: Vec<f64> = logits.iter().map(|z| score_row(&pp, z)).collect();
            assert_close(
                &format!("{file}/{name}.conf"),
                &conf,
                &array(&want["conf"]).1,
                rtol,
                atol,
            );
            let pred: Vec<f64> = logits
                .iter()
                .map(|z| {
                    z.iter()
                        .enumerate()
                        .fold(0, |best, (i, v)| if *v > z[best] { i } else { best })
                        as f64
                })
                .collect();
            assert_eq!(pred, array(&want["pred"]).1, "{file}/{name}.pred");
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "msp, mls and ebo are all recorded and checked");
}
