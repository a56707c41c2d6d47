//! Energy-bounded outlier exposure (Liu, Wang, Owens, Li, NeurIPS 2020; METHODS §3).
//!
//! `energy_ood/CIFAR/train.py` L191-198 (`--score energy`), on one forward pass over
//! `cat([x_in, x_out])` with `E = -torch.logsumexp(x, dim=1)`:
//! `loss += 0.1 * (torch.pow(F.relu(Ec_in - m_in), 2).mean() + torch.pow(F.relu(m_out - Ec_out), 2).mean())`.
//! The weight 0.1 is hard-coded upstream; the margins of the authors' `run.sh` are
//! CIFAR-10 m_in = -23, m_out = -5 and CIFAR-100 m_in = -27, m_out = -5.

use crate::ce::{cross_entropy, energy};
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor};

/// The pieces of the energy OE loss.
pub struct EnergyOeTerms {
    /// CE on the ID batch.
    pub ce: Tensor<1>,
    /// `mean_in relu(E_in - m_in)^2`.
    pub hinge_in: Tensor<1>,
    /// `mean_out relu(m_out - E_out)^2`.
    pub hinge_out: Tensor<1>,
    /// `ce + energy_weight * (hinge_in + hinge_out)`.
    pub total: Tensor<1>,
}

/// The energy OE loss of the ID logits (with labels) and the outlier logits.
pub fn energy_oe_loss(
    logits_in: Tensor<2>,
    labels: Tensor<1, Int>,
    logits_out: Tensor<2>,
    m_in: f64,
    m_out: f64,
    energy_weight: f64,
) -> EnergyOeTerms {
    let ce = cross_entropy(logits_in.clone(), labels);
    let hinge_in = relu(energy(logits_in).sub_scalar(m_in)).square().mean();
    let hinge_out = relu(energy(logits_out).neg().add_scalar(m_out))
        .square()
        .mean();
    EnergyOeTerms {
        total: ce.clone() + (hinge_in.clone() + hinge_out.clone()).mul_scalar(energy_weight),
        ce,
        hinge_in,
        hinge_out,
    }
}
