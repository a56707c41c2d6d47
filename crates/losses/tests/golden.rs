//! Every case of the golden fixtures 01-05 (`../shared/fixtures/golden`, or
//! `$OODFORGE_GOLDEN_DIR`): losses, their pieces, prototype updates, synthesised outliers and
//! the recorded gradients, computed in float64 and compared within each case's tolerance. Files
//! are found by suffix, so a new fixture file of the same layout is checked without code changes;
//! a file or case that cannot be parsed fails.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, FloatDType, Int, Tensor, TensorData};
use oodforge_core::config::{A2dDistance, MixOp};
use oodforge_losses::npmix::{self, FeatureBank, NpMixDraw};
use oodforge_losses::palm::{self, PalmParams};
use oodforge_losses::{aem, energy_oe, mixoe, oe};
use oodforge_models::{Abmil, MilModel, import::load_mil_weights};
use oodforge_testutil::{array, assert_close, golden_files, named_arrays, num, write_safetensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The float64 autodiff device every test here uses (module parameters included).
fn dev() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut d = Device::flex();
            d.configure(burn::tensor::DeviceConfig::default().float_dtype(FloatDType::F64))
                .expect("configure the flex device for float64 before any tensor exists");
            d.autodiff()
        })
        .clone()
}

fn t<const D: usize>(v: &Value) -> Tensor<D> {
    let (shape, data) = array(v);
    let shape: [usize; D] = shape.try_into().expect("rank");
    Tensor::from_data(TensorData::new(data, shape), (&dev(), DType::F64))
}

fn leaf<const D: usize>(v: &Value) -> Tensor<D> {
    t::<D>(v).require_grad()
}

fn ints(v: &Value) -> Vec<i64> {
    array(v).1.iter().map(|&x| x as i64).collect()
}

fn labels(values: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), &dev())
}

fn vals<const D: usize>(x: Tensor<D>) -> Vec<f64> {
    x.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

fn scalar(x: Tensor<1>) -> f64 {
    vals(x)[0]
}

fn grad<const D: usize>(x: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f64> {
    vals(x.grad(grads).expect("a gradient"))
}

/// `(rtol, atol)` of a case (`{"rtol", "atol"}`).
fn tol(case: &Value) -> (f64, f64) {
    (
        num(&case["tolerance"]["rtol"]),
        num(&case["tolerance"]["atol"]),
    )
}

struct Check<'a> {
    case: String,
    outputs: &'a Value,
    rtol: f64,
    atol: f64,
}

impl Check<'_> {
    fn scalar(&self, key: &str, got: f64) {
        let want = num(&self.outputs[key]);
        assert_close(
            &format!("{} {key}", self.case),
            &[got],
            &[want],
            self.rtol,
            self.atol,
        );
    }
    fn array(&self, key: &str, got: &[f64]) {
        let (_, want) = array(&self.outputs[key]);
        assert_close(
            &format!("{} {key}", self.case),
            got,
            &want,
            self.rtol,
            self.atol,
        );
    }
    fn with_tol(&self, rtol: f64, atol: f64) -> Check<'_> {
        Check {
            case: self.case.clone(),
            outputs: self.outputs,
            rtol,
            atol,
        }
    }
}

fn cases<'a>(file: &'a Value, key: &str, name: &str) -> &'a Vec<Value> {
    let list = file[key]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no `{key}` list"));
    assert!(!list.is_empty(), "{name}: `{key}` is empty");
    list
}

fn check_for<'a>(file: &str, case: &'a Value) -> Check<'a> {
    let (rtol, atol) = tol(case);
    Check {
        case: format!("{file}:{}", case["name"].as_str().expect("case name")),
        outputs: &case["outputs"],
        rtol,
        atol,
    }
}

#[test]
fn oe_and_energy_oe_match_the_official_losses_and_gradients() {
    for (file, g) in golden_files("_oe_energy.json") {
        for case in cases(&g, "oe_cases", &file) {
            let c = check_for(&file, case);
            let inp = &case["inputs"];
            let (li, lo) = (t::<2>(&inp["logits_in"]), t::<2>(&inp["logits_out"]));
            let n_in = li.dims()[0];
            let n_out = lo.dims()[0];
            let x = Tensor::cat(vec![li, lo], 0).require_grad();
            let y = labels(&ints(&inp["targets_in"]));
            let weight = num(&case["hyperparameters"]["lambda"]);
            let terms = oe::oe_loss(
                x.clone().narrow(0, 0, n_in),
                y,
                x.clone().narrow(0, n_in, n_out),
                weight,
            );
            c.scalar("ce_in", scalar(terms.ce));
            c.scalar("oe_term", weight * scalar(terms.uniform_ce));
            c.scalar("loss", scalar(terms.total.clone()));
            let grads = terms.total.backward();
            c.array("grad_logits", &grad(&x, &grads));
        }
        for case in cases(&g, "energy_cases", &file) {
            let c = check_for(&file, case);
            let inp = &case["inputs"];
            let h = &case["hyperparameters"];
            let (li, lo) = (t::<2>(&inp["logits_in"]), t::<2>(&inp["logits_out"]));
            let n_in = li.dims()[0];
            let n_out = lo.dims()[0];
            let x = Tensor::cat(vec![li, lo], 0).require_grad();
            let y = labels(&ints(&inp["targets_in"]));
            let (m_in, m_out, w) = (num(&h["m_in"]), num(&h["m_out"]), num(&h["weight"]));
            let (xi, xo) = (
                x.clone().narrow(0, 0, n_in),
                x.clone().narrow(0, n_in, n_out),
            );
            let e_in = vals(oodforge_losses::ce::energy(xi.clone()));
            let e_out = vals(oodforge_losses::ce::energy(xo.clone()));
            c.array("energy_in", &e_in);
            c.array("energy_out", &e_out);
            let terms = energy_oe::energy_oe_loss(xi, y, xo, m_in, m_out, w);
            c.scalar("ce_in", scalar(terms.ce));
            c.scalar("hinge_in_mean", scalar(terms.hinge_in.clone()));
            c.scalar("hinge_out_mean", scalar(terms.hinge_out.clone()));
            c.scalar(
                "energy_term",
                w * (scalar(terms.hinge_in) + scalar(terms.hinge_out)),
            );
            c.scalar("loss", scalar(terms.total.clone()));
            let active_in = e_in.iter().filter(|&&e| e - m_in > 0.0).count();
            let active_out = e_out.iter().filter(|&&e| m_out - e > 0.0).count();
            c.scalar("n_in_active", active_in as f64);
            c.scalar("n_out_active", active_out as f64);
            let grads = terms.total.backward();
            c.array("grad_logits", &grad(&x, &grads));
        }
    }
}

#[test]
fn mixoe_matches_the_official_mixup_and_cutmix_steps() {
    for (file, g) in golden_files("_mixoe.json") {
        let inp = &g["inputs"];
        for case in cases(&g, "cases", &file) {
            let c = check_for(&file, case);
            let h = &case["hyperparameters"];
            let op = match h["mix_op"].as_str().expect("mix_op") {
                "mixup" => MixOp::Mixup,
                "cutmix" => MixOp::Cutmix,
                other => panic!("{}: unknown mix_op {other}", c.case),
            };
            let k = h["num_classes"].as_u64().expect("num_classes") as usize;
            let draws = case["random_draws"].as_array().expect("random_draws");
            assert_eq!(draws[0]["fn"], "beta", "{}", c.case);
            let draw = mixoe::MixDraw {
                lam: num(&draws[0]["value"]),
                centre: (op == MixOp::Cutmix).then(|| {
                    assert_eq!(draws.len(), 3, "{}", c.case);
                    (
                        draws[1]["value"].as_u64().expect("randint") as usize,
                        draws[2]["value"].as_u64().expect("randint") as usize,
                    )
                }),
            };
            let x = t::<4>(&inp["x"]);
            let x_out = t::<4>(&inp["oe_x"]);
            let y_values = ints(&inp["y"]);
            let y = labels(&y_values);
            let w = leaf::<2>(&inp["W"]);
            let b = leaf::<1>(&inp["b"]);
            let net = |x: Tensor<4>| {
                let [n, ..] = x.dims();
                x.reshape([n as i32, -1]).matmul(w.clone().transpose()) + b.clone().unsqueeze_dim(0)
            };
            let (mixed, lam) = mixoe::mix(x.clone(), x_out, op, &draw);
            c.scalar("lam_final", lam);
            c.array("mixed_x", &vals(mixed.clone()));
            let soft: Vec<f64> = y_values
                .iter()
                .flat_map(|&yi| {
                    (0..k).map(move |j| {
                        lam * f64::from(u8::from(j as i64 == yi)) + (1.0 - lam) / k as f64
                    })
                })
                .collect();
            c.array("soft_labels", &soft);
            let (logits_id, logits_mixed) = (net(x), net(mixed));
            c.array("logits_id", &vals(logits_id.clone()));
            c.array("logits_mixed", &vals(logits_mixed.clone()));
            let beta = num(&h["beta"]);
            let terms = mixoe::mixoe_loss(
                logits_id.clone(),
                logits_mixed.clone(),
                y.clone(),
                lam,
                beta,
            );
            c.scalar("id_loss", scalar(terms.ce));
            c.scalar("mixed_loss", scalar(terms.mix));
            c.scalar("loss", scalar(terms.total.clone()));
            let grads = terms.total.backward();
            c.array("grad_W", &grad(&w, &grads));
            c.array("grad_b", &grad(&b, &grads));
            // d loss / d logits of each pass: the same loss on the logits as leaves.
            let (li, lm) = (
                logits_id.detach().require_grad(),
                logits_mixed.detach().require_grad(),
            );
            let grads = mixoe::mixoe_loss(li.clone(), lm.clone(), y, lam, beta)
                .total
                .backward();
            c.array("grad_logits_id", &grad(&li, &grads));
            c.array("grad_logits_mixed", &grad(&lm, &grads));
        }
    }
}

#[test]
fn palm_matches_the_official_assignment_update_and_losses() {
    for (file, g) in golden_files("_palm.json") {
        for case in cases(&g, "cases", &file) {
            let tols = &case["tolerance"];
            let mut c = Check {
                case: format!("{file}:{}", case["name"].as_str().expect("case name")),
                outputs: &case["outputs"],
                rtol: 0.0,
                atol: 0.0,
            };
            let strict = (num(&tols["default"]["rtol"]), num(&tols["default"]["atol"]));
            // proto_contra's float32 mask (see the fixture's notes) loosens these three.
            let loose_key = tols
                .as_object()
                .unwrap()
                .keys()
                .find(|k| k.starts_with("proto_contra"))
                .expect("a proto_contra tolerance");
            let loose = (num(&tols[loose_key]["rtol"]), num(&tols[loose_key]["atol"]));
            (c.rtol, c.atol) = strict;
            let h = &case["hyperparameters"];
            let u = |k: &str| h[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
            let params = PalmParams {
                num_classes: u("num_classes"),
                prototypes_per_class: u("cache_size"),
                top_k: u("k"),
                proto_momentum: num(&h["proto_m"]),
                mle_temperature: num(&h["temp"]),
                pcon_weight: num(&h["lambda_pcon"]),
                pcon_temperature: num(&h["proto_contra_temperature"]),
                sinkhorn_epsilon: num(&h["epsilon"]),
                sinkhorn_iterations: u("sinkhorn_iterations"),
            };
            assert_eq!(params.num_prototypes(), u("n_protos"));
            let inp = &case["inputs"];
            let features = leaf::<3>(&inp["features"]); // [B, V, D]
            let [b, views, d] = features.dims();
            let flat = Tensor::cat(
                (0..views)
                    .map(|v| features.clone().narrow(1, v, 1).reshape([b, d]))
                    .collect(),
                0,
            );
            let y: Vec<i64> = ints(&inp["labels"]).repeat(views);
            let step = palm::palm_loss(flat, labels(&y), t::<2>(&inp["protos_before"]), &params);
            c.array("Q_before_update", &vals(step.q_before_update));
            c.array("update_mask", &vals(step.update_mask));
            c.array("update_features", &vals(step.update_features));
            c.array("protos_after", &vals(step.prototypes));
            c.array("Q_after_update", &vals(step.q_after_update));
            c.array("mle_logits", &vals(step.mle_logits.clone()));
            let loss_mask = vals(step.loss_mask.clone());
            if c.outputs.get("loss_mask").is_some() {
                c.array("loss_mask", &loss_mask);
            }
            // Upstream's `log_prob` is `pos[None, :] - neg[:, None]` ([N, N] by broadcasting).
            let n = y.len();
            let np = params.num_prototypes();
            let logits = vals(step.mle_logits);
            let pos: Vec<f64> = (0..n)
                .map(|i| {
                    (0..np)
                        .map(|j| loss_mask[i * np + j] * logits[i * np + j])
                        .sum()
                })
                .collect();
            let neg: Vec<f64> = (0..n)
                .map(|i| (0..np).map(|j| logits[i * np + j].exp()).sum::<f64>().ln())
                .collect();
            let log_prob: Vec<f64> = (0..n * n).map(|ij| pos[ij % n] - neg[ij / n]).collect();
            c.array("mle_log_prob", &log_prob);
            if let Some(idx) = c.outputs.get("topk_idx_loss_stage") {
                let (shape, idx) = array(idx);
                for i in 0..n {
                    let mut want: Vec<usize> = idx[i * shape[1]..(i + 1) * shape[1]]
                        .iter()
                        .map(|&v| v as usize)
                        .collect();
                    want.sort_unstable();
                    let got: Vec<usize> =
                        (0..np).filter(|&j| loss_mask[i * np + j] > 0.0).collect();
                    assert_eq!(got, want, "{} top-k support of sample {i}", c.case);
                }
            }
            c.scalar("mle_loss", scalar(step.mle));
            let l = c.with_tol(loose.0, loose.1);
            let pcon = scalar(step.pcon);
            l.scalar("proto_contra_loss_unweighted", pcon);
            l.scalar("proto_contra_loss_weighted", params.pcon_weight * pcon);
            l.scalar("loss", scalar(step.total.clone()));
            let grads = step.total.backward();
            l.array("grad_features", &grad(&features, &grads));
        }
    }
}

/// The NP-Mix / A2D fixture's flags as one discrepancy (they flip together in every case).
fn discrepancy(h: &Value, prefix: &str) -> A2dDistance {
    let on = |k: &str| h[format!("{prefix}{k}")].as_bool().unwrap_or(false);
    match (on("l1"), on("l2"), on("hellinger"), on("wasserstein")) {
        (true, false, false, false) => A2dDistance::L1,
        (false, true, false, false) => A2dDistance::L2,
        (false, false, true, false) => A2dDistance::Hellinger,
        (false, false, false, true) => A2dDistance::Wasserstein,
        other => panic!("unsupported {prefix}* flags {other:?}"),
    }
}

#[test]
fn npmix_and_a2d_match_the_official_synthesis_losses_and_gradients() {
    for (file, g) in golden_files("_npmix_a2d.json") {
        let inp = &g["inputs"];
        for case in cases(&g, "cases", &file) {
            let c = check_for(&file, case);
            let h = &case["hyperparameters"];
            assert_eq!(
                h["use_single_pred"], true,
                "{}: only the single-pred recipe is ported",
                c.case
            );
            let kind = discrepancy(h, "a2d_max_");
            let kind_ood = discrepancy(h, "max_ood_");
            let ratio = |k: &str| num(&h[k]);
            let y_values = ints(&inp["labels"]);
            let y_usize: Vec<usize> = y_values.iter().map(|&v| v as usize).collect();
            let v_emd = leaf::<2>(&inp["v_emd"]);
            let f_emd = leaf::<2>(&inp["f_emd"]);
            let wv = leaf::<2>(&inp["fc_v_weight"]);
            let bv = t::<1>(&inp["fc_v_bias"]);
            let wf = leaf::<2>(&inp["fc_f_weight"]);
            let bf = t::<1>(&inp["fc_f_bias"]);
            let we = t::<2>(&inp["mlp_cls_weight"]);
            let be = t::<1>(&inp["mlp_cls_bias"]);
            let lin = |x: Tensor<2>, w: &Tensor<2>, b: &Tensor<1>| {
                x.matmul(w.clone().transpose()) + b.clone().unsqueeze_dim(0)
            };
            let v_pred = lin(v_emd.clone(), &wv, &bv);
            let f_pred = lin(f_emd.clone(), &wf, &bf);
            let pred = lin(Tensor::cat(vec![v_emd.clone(), f_emd.clone()], 1), &we, &be);
            c.array("predict", &vals(pred.clone()));
            c.array("v_predict", &vals(v_pred.clone()));
            c.array("f_predict", &vals(f_pred.clone()));

            // The bank: push this batch, synthesise when it was full and the epoch has come.
            let (shape, before) = array(&case["data_dict_before"]);
            let (classes, capacity, dim) = (shape[0], shape[1], shape[2]);
            let mut bank = FeatureBank::new(classes, capacity, dim);
            bank.queues = before.chunks(capacity * dim).map(<[f64]>::to_vec).collect();
            bank.counts = case["number_dict_before"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let epoch = case["epoch_i"].as_u64().unwrap() as usize;
            let synthesise = bank.is_full() && epoch >= h["start_epoch"].as_u64().unwrap() as usize;
            let emb = vals(Tensor::cat(vec![v_emd.clone(), f_emd.clone()], 1).detach());
            bank.push(&emb, &y_usize);
            c.array("data_dict_after", &bank.queues.concat());
            let counts: Vec<f64> = bank.counts.iter().map(|&v| v as f64).collect();
            let want_counts: Vec<f64> = c.outputs["number_dict_after"]
                .as_array()
                .unwrap()
                .iter()
                .map(num)
                .collect();
            assert_eq!(counts, want_counts, "{} number_dict_after", c.case);

            let v_dim = v_emd.dims()[1];
            let ood = synthesise.then(|| {
                let protos = bank.prototypes();
                c.array("id_feature_proto", &protos.concat());
                let nn_k = h["nn_k"].as_u64().unwrap() as usize;
                let neighbours = bank.neighbours(nn_k - 1);
                for (i, q) in c.outputs["kdtree_queries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                {
                    let ind: Vec<usize> = q["ind"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as usize)
                        .collect();
                    assert_eq!(
                        ind[0], i,
                        "{}: the nearest prototype is the class itself",
                        c.case
                    );
                    assert_eq!(
                        neighbours[i],
                        ind[1..],
                        "{} neighbours of class {i}",
                        c.case
                    );
                }
                let d = case["random_draws"].as_array().unwrap();
                assert_eq!(d.len(), 4 * classes, "{}: four draws per class", c.case);
                let first = |v: &Value| {
                    v.as_array()
                        .map_or_else(|| v.as_u64(), |a| a[0].as_u64())
                        .unwrap() as usize
                };
                let draws: Vec<NpMixDraw> = (0..classes)
                    .map(|i| {
                        let r = &d[4 * i..4 * i + 4];
                        let j = first(&r[1]["value"]);
                        NpMixDraw {
                            own_row: first(&r[0]["value"]),
                            neighbour: neighbours[i]
                                .iter()
                                .position(|&n| n == j)
                                .expect("drawn neighbour is a candidate"),
                            neighbour_row: first(&r[2]["value"]),
                            lam: num(&r[3]["value"]),
                        }
                    })
                    .collect();
                let rows = bank.synthesize(&neighbours, &draws);
                c.array("ood_samples", &rows.concat());
                let o = npmix::rows_tensor(&rows, &v_pred);
                let vo = lin(o.clone().narrow(1, 0, v_dim), &wv, &bv);
                let ao = lin(o.clone().narrow(1, v_dim, dim - v_dim), &wf, &bf);
                c.array("v_pred_ood", &vals(vo.clone()));
                c.array("a_pred_ood", &vals(ao.clone()));
                (vo, ao)
            });

            // The loss as a function of the five logit blocks (so the same code gives the
            // parameter gradients and the gradients at the logits).
            let loss_of = |pred: Tensor<2>,
                           v: Tensor<2>,
                           f: Tensor<2>,
                           ood: Option<(Tensor<2>, Tensor<2>)>| {
                let y = labels(&y_values);
                let ce = (oodforge_losses::ce::cross_entropy(pred, y.clone())
                    + oodforge_losses::ce::cross_entropy(v.clone(), y.clone())
                    + oodforge_losses::ce::cross_entropy(f.clone(), y))
                .mul_scalar(1.0 / 3.0);
                let a2d = npmix::a2d_loss(v, f, &y_usize, kind);
                let mut total = ce.clone() + a2d.clone().mul_scalar(ratio("a2d_ratio"));
                let mut parts = (scalar(ce), scalar(a2d), 0.0, 0.0);
                if let Some((vo, ao)) = ood {
                    let ent = (npmix::neg_normalized_entropy(vo.clone())
                        + npmix::neg_normalized_entropy(ao.clone()))
                    .mul_scalar(0.5);
                    let a2d_ood = npmix::a2d_outlier_loss(vo, ao, kind_ood);
                    parts.2 = scalar(ent.clone());
                    parts.3 = scalar(a2d_ood.clone());
                    total = total
                        + ent.mul_scalar(ratio("ood_entropy_ratio"))
                        + a2d_ood.mul_scalar(ratio("a2d_ratio_ood"));
                }
                (total, parts)
            };
            let (total, (ce, a2d, ent, a2d_ood)) =
                loss_of(pred.clone(), v_pred.clone(), f_pred.clone(), ood.clone());
            c.scalar("ce_part", ce);
            c.scalar("a2d_loss", a2d);
            c.scalar("ood_entropy_loss", ent);
            c.scalar("a2d_loss_ood", a2d_ood);
            c.scalar("loss", scalar(total.clone()));
            let total_params = total;

            let as_leaf = |x: &Tensor<2>| x.clone().detach().require_grad();
            let (p, v, f) = (as_leaf(&pred), as_leaf(&v_pred), as_leaf(&f_pred));
            let ood_leaves = ood.as_ref().map(|(vo, ao)| (as_leaf(vo), as_leaf(ao)));
            let (total, _) = loss_of(p.clone(), v.clone(), f.clone(), ood_leaves.clone());
            let grads = total.backward();
            c.array("grad_predict", &grad(&p, &grads));
            c.array("grad_v_predict", &grad(&v, &grads));
            c.array("grad_f_predict", &grad(&f, &grads));
            if let Some((vo, ao)) = ood_leaves {
                c.array("grad_v_pred_ood", &grad(&vo, &grads));
                c.array("grad_a_pred_ood", &grad(&ao, &grads));
            }
            let grads = total_params.backward();
            c.array("grad_v_emd", &grad(&v_emd, &grads));
            c.array("grad_f_emd", &grad(&f_emd, &grads));
            c.array("grad_fc_v_weight", &grad(&wv, &grads));
            c.array("grad_fc_f_weight", &grad(&wf, &grads));
        }
    }
}

/// Parameter gradients by PyTorch name (Linear weights back in `[out, in]`).
struct TorchGrads<'a> {
    grads: &'a burn::tensor::Gradients,
    path: Vec<String>,
    out: BTreeMap<String, Vec<f64>>,
}

impl ModuleVisitor for TorchGrads<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let Some(g) = value.grad(self.grads) else {
            return;
        };
        let g = if D == 2 {
            vals(g.reshape(value.dims()).swap_dims(0, 1))
        } else {
            vals(g)
        };
        let name = self
            .path
            .join(".")
            .replace("attention_v.", "attention_V.0.")
            .replace("attention_u.", "attention_U.0.");
        self.out.insert(name, g);
    }
}

#[test]
fn aem_on_abmil_matches_the_official_loss_and_gradients() {
    for (file, g) in golden_files("_aem_abmil.json") {
        for case in cases(&g, "cases", &file) {
            let c = check_for(&file, case);
            let h = &case["hyperparameters"];
            let u = |k: &str| h[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
            assert_eq!(
                u("K_attention_heads"),
                1,
                "{}: ABMIL has one attention row",
                c.case
            );
            let mut model = MilModel::Abmil(Abmil::new(
                u("D_feat"),
                u("D_inner"),
                u("D_attn"),
                u("n_class"),
                &dev(),
            ));
            let tensors = named_arrays(&case["inputs"]["params"]);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("abmil.safetensors");
            write_safetensors(&path, "F64", &tensors);
            let report = load_mil_weights(&mut model, &path).unwrap();
            assert_eq!(report.loaded, tensors.len(), "{}", c.case);
            let MilModel::Abmil(model) = model else {
                unreachable!()
            };

            let bag = leaf::<3>(&case["inputs"]["bag"]);
            let [_, n, d] = bag.dims();
            let out = model.forward(bag.clone().reshape([n, d]));
            c.array("attn_logits", &vals(out.attention.clone()));
            c.array(
                "attn_softmax",
                &vals(burn::tensor::activation::softmax(out.attention.clone(), 1)),
            );
            c.array("afeat", &vals(out.features.clone()));
            c.array("bag_logit", &vals(out.logits.clone()));
            let lamda = num(&h["lamda"]);
            let y = labels(&ints(&case["inputs"]["label"]));
            let terms = aem::aem_loss(out.logits.clone(), y.clone(), out.attention.clone(), lamda);
            c.scalar("bag_loss", scalar(terms.ce.clone()));
            c.scalar("eval_loss_ce_only", scalar(terms.ce));
            let div = scalar(terms.neg_entropy);
            c.scalar("div_loss", div);
            c.scalar("eval_div_loss", div);
            c.scalar("entropy_of_attention", -div);
            c.scalar("loss", scalar(terms.total.clone()));
            let grads = terms.total.backward();
            c.array("grad_instances", &grad(&bag, &grads));
            let mut visitor = TorchGrads {
                grads: &grads,
                path: Vec::new(),
                out: BTreeMap::new(),
            };
            model.visit(&mut visitor);
            let want = c.outputs["grad_params"].as_object().expect("grad_params");
            assert_eq!(
                visitor.out.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{}: parameters with gradients",
                c.case
            );
            for (name, g) in &visitor.out {
                assert_close(
                    &format!("{} grad {name}", c.case),
                    g,
                    &array(&want[name]).1,
                    c.rtol,
                    c.atol,
                );
            }
            let (a, l) = (
                out.attention.detach().require_grad(),
                out.logits.detach().require_grad(),
            );
            let grads = aem::aem_loss(l.clone(), y, a.clone(), lamda)
                .total
                .backward();
            c.array("grad_attn_logits", &grad(&a, &grads));
            c.array("grad_bag_logit", &grad(&l, &grads));
        }
    }
}
