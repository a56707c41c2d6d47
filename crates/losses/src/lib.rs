//! oodforge objectives. Each method is one file of plain tensor functions (tested against the
//! official code's numbers) plus one variant of [`Objective`]; the training loop calls
//! [`Objective::step`] once per batch and knows nothing of the method.
//!
//! Randomness is never drawn inside a loss: [`Objective::step`] takes the step's seeded stream
//! and draws there (in the official call order), and the loss functions take the draws as
//! arguments, so the golden tests replay the official draws exactly.
//!
//! Divisions by a constant on a path with a gradient are written `mul_scalar(1.0 / c)`: burn
//! 0.22's autodiff takes the reciprocal of a `div_scalar` divisor in f32 for the backward pass,
//! which moves float64 gradients by ~1e-8 (e.g. 1/3, 1/sqrt 2) and the golden fixtures notice.

pub mod aem;
pub mod ce;
pub mod energy_oe;
pub mod mixoe;
pub mod npmix;
pub mod oe;
pub mod palm;
pub mod state;

use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_core::config::{A2dDistance, MixOp, ObjectiveConfig};
use oodforge_models::Classifier;
use oodforge_models::data_parallel::Network;
use rand::Rng;

pub use state::{ObjectiveState, StateArray, StateError};

/// The loss of one step and its named terms (logged to metrics.jsonl).
pub struct LossTerms {
    pub total: Tensor<1>,
    pub terms: Vec<(&'static str, Tensor<1>)>,
}

/// One training batch as the objective sees it.
pub struct StepInput<'a> {
    /// ID images `[views * b, c, h, w]`, view-major.
    pub images: Tensor<4>,
    /// The label of every row of `images`.
    pub labels: Tensor<1, Int>,
    /// The same labels on the host.
    pub label_values: &'a [usize],
    /// The outlier batch, for objectives that use one.
    pub outliers: Option<Tensor<4>>,
    /// 0-based epoch (NP-Mix's start epoch).
    pub epoch: usize,
}

/// What one step produced.
pub struct StepOutput {
    pub loss: LossTerms,
    /// Logits of the ID rows (training accuracy).
    pub logits: Tensor<2>,
}

/// Every objective, with its hyperparameters and state.
// One value per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Objective {
    Ce,
    Oe {
        oe_weight: f64,
    },
    EnergyOe {
        m_in: f64,
        m_out: f64,
        energy_weight: f64,
    },
    MixOe {
        op: MixOp,
        beta_a: f64,
        beta_b: f64,
        mix_weight: f64,
    },
    Palm {
        params: palm::PalmParams,
        /// `[C M, D]`, detached; updated by every step.
        prototypes: Tensor<2>,
    },
    NpMix {
        entropy_weight: f64,
        neighbour_classes: usize,
        beta_a: f64,
        beta_b: f64,
        start_epoch: usize,
        a2d_weight: f64,
        a2d_outlier_weight: f64,
        a2d_distance: A2dDistance,
        bank: npmix::FeatureBank,
    },
    Aem {
        weight: f64,
    },
}

/// An objective state that does not fit this config.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    #[error("objective state: {0}")]
    State(#[from] StateError),
}

impl Objective {
    /// The objective of `config` for `model`; `rng` draws PALM's initial prototypes.
    pub fn new(
        config: &ObjectiveConfig,
        model: &Classifier,
        device: &Device,
        rng: &mut impl Rng,
    ) -> Self {
        let num_classes = model.num_classes();
        match config {
            ObjectiveConfig::Ce {} => Self::Ce,
            ObjectiveConfig::Oe { oe_weight } => Self::Oe {
                oe_weight: *oe_weight,
            },
            ObjectiveConfig::EnergyOe {
                m_in,
                m_out,
                energy_weight,
            } => Self::EnergyOe {
                m_in: *m_in,
                m_out: *m_out,
                energy_weight: *energy_weight,
            },
            ObjectiveConfig::MixOe {
                mix_op,
                mix_beta_a,
                mix_beta_b,
                mix_weight,
            } => Self::MixOe {
                op: *mix_op,
                beta_a: *mix_beta_a,
                beta_b: mix_beta_b.unwrap_or(*mix_beta_a),
                mix_weight: *mix_weight,
            },
            ObjectiveConfig::Palm {
                prototypes_per_class,
                top_k,
                proto_momentum,
                mle_temperature,
                pcon_weight,
                pcon_temperature,
                sinkhorn_epsilon,
                sinkhorn_iterations,
            } => {
                let params = palm::PalmParams {
                    num_classes,
                    prototypes_per_class: *prototypes_per_class,
                    top_k: *top_k,
                    proto_momentum: *proto_momentum,
                    mle_temperature: *mle_temperature,
                    pcon_weight: *pcon_weight,
                    pcon_temperature: *pcon_temperature,
                    sinkhorn_epsilon: *sinkhorn_epsilon,
                    sinkhorn_iterations: *sinkhorn_iterations,
                };
                let dim = model
                    .projection_dim()
                    .expect("palm needs a projection head (checked by the config)");
                let n = params.num_prototypes();
                let init = palm::initial_prototypes(n, dim, rng);
                Self::Palm {
                    params,
                    prototypes: Tensor::from_data(TensorData::new(init, [n, dim]), device),
                }
            }
            ObjectiveConfig::NpMix {
                entropy_weight,
                queue_size,
                neighbour_classes,
                mix_beta_a,
                mix_beta_b,
                start_epoch,
                a2d_weight,
                a2d_outlier_weight,
                a2d_distance,
            } => Self::NpMix {
                entropy_weight: *entropy_weight,
                neighbour_classes: *neighbour_classes,
                beta_a: *mix_beta_a,
                beta_b: mix_beta_b.unwrap_or(*mix_beta_a),
                start_epoch: *start_epoch,
                a2d_weight: *a2d_weight,
                a2d_outlier_weight: *a2d_outlier_weight,
                a2d_distance: *a2d_distance,
                bank: npmix::FeatureBank::new(num_classes, *queue_size, model.feature_dim()),
            },
            ObjectiveConfig::Aem {
                attention_entropy_weight,
            } => Self::Aem {
                weight: *attention_entropy_weight,
            },
        }
    }

    /// One training step: forward pass(es) and loss. `rng` is this step's seeded stream.
    /// `model` is a [`Classifier`], or a [`DataParallel`](oodforge_models::data_parallel::DataParallel)
    /// one whose forward passes are scattered over devices and gathered; either way the loss is
    /// computed here on the outputs of the whole batch.
    pub fn step(
        &mut self,
        model: &impl Network,
        input: StepInput,
        rng: &mut impl Rng,
    ) -> StepOutput {
        let StepInput {
            images,
            labels,
            label_values,
            outliers,
            epoch,
        } = input;
        let n = label_values.len();
        match self {
            Self::Ce => {
                let out = model.forward(images);
                let ce = ce::cross_entropy(out.logits.clone(), labels);
                StepOutput {
                    loss: LossTerms {
                        total: ce.clone(),
                        terms: vec![("ce", ce)],
                    },
                    logits: out.logits,
                }
            }
            Self::Oe { oe_weight } => {
                let (logits_in, logits_out) = joint_forward(model, images, outliers, n);
                let t = oe::oe_loss(logits_in.clone(), labels, logits_out, *oe_weight);
                StepOutput {
                    loss: LossTerms {
                        total: t.total,
                        terms: vec![("ce", t.ce), ("uniform_ce", t.uniform_ce)],
                    },
                    logits: logits_in,
                }
            }
            Self::EnergyOe {
                m_in,
                m_out,
                energy_weight,
            } => {
                let (logits_in, logits_out) = joint_forward(model, images, outliers, n);
                let t = energy_oe::energy_oe_loss(
                    logits_in.clone(),
                    labels,
                    logits_out,
                    *m_in,
                    *m_out,
                    *energy_weight,
                );
                StepOutput {
                    loss: LossTerms {
                        total: t.total,
                        terms: vec![
                            ("ce", t.ce),
                            ("hinge_in", t.hinge_in),
                            ("hinge_out", t.hinge_out),
                        ],
                    },
                    logits: logits_in,
                }
            }
            Self::MixOe {
                op,
                beta_a,
                beta_b,
                mix_weight,
            } => {
                let x_out =
                    outliers.expect("mixoe is configured with outliers (checked by the config)");
                let [b, _, h, w] = images.dims();
                // Rows are paired one to one; the epoch's last, partial ID batch (kept, as
                // PyTorch's `drop_last=False`) takes the first `b` outliers of its batch.
                let x_out = if x_out.dims()[0] > b {
                    x_out.narrow(0, 0, b)
                } else {
                    x_out
                };
                let draw = mixoe::draw(*op, *beta_a, *beta_b, h, w, rng);
                let logits_id = model.forward(images.clone()).logits;
                let (mixed, lam) = mixoe::mix(images, x_out, *op, &draw);
                let logits_mixed = model.forward(mixed).logits;
                let t =
                    mixoe::mixoe_loss(logits_id.clone(), logits_mixed, labels, lam, *mix_weight);
                StepOutput {
                    loss: LossTerms {
                        total: t.total,
                        terms: vec![("ce", t.ce), ("mix", t.mix)],
                    },
                    logits: logits_id,
                }
            }
            Self::Palm { params, prototypes } => {
                let out = model.forward(images);
                let z = out
                    .embedding
                    .expect("palm needs a projection head (checked by the config)");
                let s = palm::palm_loss(z, labels, prototypes.clone(), params);
                *prototypes = s.prototypes;
                StepOutput {
                    loss: LossTerms {
                        total: s.total,
                        terms: vec![("mle", s.mle), ("pcon", s.pcon)],
                    },
                    logits: out.logits,
                }
            }
            Self::NpMix {
                entropy_weight,
                neighbour_classes,
                beta_a,
                beta_b,
                start_epoch,
                a2d_weight,
                a2d_outlier_weight,
                a2d_distance,
                bank,
            } => {
                let out = model.forward(images);
                // With two heads they play MultiOOD's modality heads (`--use_single_pred`): each
                // trained with CE, averaged, and A2D on the non-label classes.
                let mut terms = Vec::new();
                let ce = ce::cross_entropy(out.logits.clone(), labels.clone());
                let mut total = match &out.aux_logits {
                    None => ce.clone(),
                    Some(aux) => {
                        let ce_aux = ce::cross_entropy(aux.clone(), labels);
                        terms.push(("ce_aux", ce_aux.clone()));
                        let a2d = npmix::a2d_loss(
                            out.logits.clone(),
                            aux.clone(),
                            label_values,
                            *a2d_distance,
                        );
                        terms.push(("a2d", a2d.clone()));
                        (ce.clone() + ce_aux).mul_scalar(0.5) + a2d.mul_scalar(*a2d_weight)
                    }
                };
                terms.insert(0, ("ce", ce));
                // `sum_temp == num_class * sample_number` is read before this batch is queued.
                let synthesise = bank.is_full() && epoch >= *start_epoch;
                let features = out.features.clone().detach().into_data().convert::<f64>();
                bank.push(
                    features.as_slice::<f64>().expect("f64 features"),
                    label_values,
                );
                if synthesise {
                    let neighbours = bank.neighbours(*neighbour_classes);
                    let draws = bank.draw(*neighbour_classes, *beta_a, *beta_b, rng);
                    let outliers =
                        npmix::rows_tensor(&bank.synthesize(&neighbours, &draws), &out.features);
                    let logits = model.classifier().forward_head(outliers.clone());
                    let ent = match model.classifier().forward_aux_head(outliers) {
                        None => npmix::neg_normalized_entropy(logits),
                        Some(aux) => {
                            let a2d =
                                npmix::a2d_outlier_loss(logits.clone(), aux.clone(), *a2d_distance);
                            terms.push(("a2d_outlier", a2d.clone()));
                            total = total + a2d.mul_scalar(*a2d_outlier_weight);
                            (npmix::neg_normalized_entropy(logits)
                                + npmix::neg_normalized_entropy(aux))
                            .mul_scalar(0.5)
                        }
                    };
                    total = total + ent.clone().mul_scalar(*entropy_weight);
                    terms.push(("neg_entropy", ent));
                }
                StepOutput {
                    loss: LossTerms { total, terms },
                    logits: out.logits,
                }
            }
            Self::Aem { weight } => {
                let out = model.forward(images);
                let last = out
                    .cls_attention
                    .last()
                    .cloned()
                    .expect("aem needs a ViT (checked by the config)");
                let [b, h, t] = last.dims();
                let terms = aem::aem_loss(
                    out.logits.clone(),
                    labels,
                    last.reshape([b * h, t]),
                    *weight,
                );
                StepOutput {
                    loss: LossTerms {
                        total: terms.total,
                        terms: vec![("ce", terms.ce), ("neg_entropy", terms.neg_entropy)],
                    },
                    logits: out.logits,
                }
            }
        }
    }

    /// The state to checkpoint, for objectives that have one.
    pub fn state(&self) -> Option<ObjectiveState> {
        match self {
            Self::Palm { prototypes, .. } => {
                let data = prototypes.clone().into_data().convert::<f64>();
                Some(ObjectiveState {
                    objective: "palm".into(),
                    arrays: vec![StateArray {
                        name: "prototypes".into(),
                        shape: prototypes.dims().to_vec(),
                        data: data.try_to_vec::<f64>().expect("f64 data"),
                    }],
                })
            }
            Self::NpMix { bank, .. } => Some(ObjectiveState {
                objective: "npmix".into(),
                arrays: vec![
                    StateArray {
                        name: "queues".into(),
                        shape: vec![bank.num_classes, bank.capacity, bank.dim],
                        data: bank.queues.concat(),
                    },
                    StateArray {
                        name: "counts".into(),
                        shape: vec![bank.num_classes],
                        data: bank.counts.iter().map(|&c| c as f64).collect(),
                    },
                ],
            }),
            _ => None,
        }
    }

    /// Restore the state saved with a checkpoint (checked against this objective's shapes); an
    /// objective that keeps state refuses a checkpoint without one.
    pub fn restore(&mut self, saved: Option<&ObjectiveState>) -> Result<(), LossError> {
        let Some(state) = saved else {
            let missing = |name: &str| {
                Err(StateError(format!(
                    "the {name} objective keeps state between steps but the checkpoint has none"
                ))
                .into())
            };
            return match self {
                Self::Palm { .. } => missing("palm"),
                Self::NpMix { .. } => missing("npmix"),
                _ => Ok(()),
            };
        };
        let mismatch = |want: &str| {
            StateError(format!(
                "the checkpoint holds {} state, this config's objective is {want}",
                state.objective
            ))
        };
        match self {
            Self::Palm { prototypes, .. } => {
                if state.objective != "palm" {
                    return Err(mismatch("palm").into());
                }
                let dims = prototypes.dims();
                let a = state.array("prototypes", &dims)?;
                let device: Device = prototypes.device();
                *prototypes = Tensor::from_data(
                    TensorData::new(a.data.clone(), dims),
                    (&device, prototypes.dtype()),
                );
            }
            Self::NpMix { bank, .. } => {
                if state.objective != "npmix" {
                    return Err(mismatch("npmix").into());
                }
                let q = state.array("queues", &[bank.num_classes, bank.capacity, bank.dim])?;
                let c = state.array("counts", &[bank.num_classes])?;
                let per = bank.capacity * bank.dim;
                bank.queues = q.data.chunks(per.max(1)).map(<[f64]>::to_vec).collect();
                bank.counts = c.data.iter().map(|&v| v as usize).collect();
                if bank.counts.iter().any(|&v| v > bank.capacity) {
                    return Err(StateError("queue counts exceed the queue size".into()).into());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// One forward pass over `[ID; outliers]` (OE, energy OE), split back into the two logit blocks.
fn joint_forward(
    model: &impl Network,
    images: Tensor<4>,
    outliers: Option<Tensor<4>>,
    n_in: usize,
) -> (Tensor<2>, Tensor<2>) {
    let x_out =
        outliers.expect("this objective is configured with outliers (checked by the config)");
    let [n_out, ..] = x_out.dims();
    let logits = model.forward(Tensor::cat(vec![images, x_out], 0)).logits;
    (
        logits.clone().narrow(0, 0, n_in),
        logits.narrow(0, n_in, n_out),
    )
}
