//! Invariants the official formulas imply: OE with weight 0 is CE; MixOE with lambda = 1 is CE
//! (its mixed batch is the ID batch and its soft target the one-hot label); PALM with momentum 1
//! keeps its prototypes.

use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_core::config::MixOp;
use oodforge_losses::ce::cross_entropy;
use oodforge_losses::mixoe::{self, MixDraw};
use oodforge_losses::oe::oe_loss;
use oodforge_losses::palm::{PalmParams, initial_prototypes, palm_loss};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), &Device::flex())
}

fn labels(v: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Device::flex())
}

fn value(t: Tensor<1>) -> f32 {
    t.into_data().try_to_vec::<f32>().unwrap()[0]
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn oe_with_weight_zero_is_ce() {
    let (li, lo) = (randn([6, 5], 1), randn([12, 5], 2));
    let y = labels(&[0, 1, 2, 3, 4, 0]);
    let ce = value(cross_entropy(li.clone(), y.clone()));
    let t = oe_loss(li, y, lo, 0.0);
    assert_eq!(value(t.total), ce);
    assert!(
        value(t.uniform_ce) > 0.0,
        "the outlier term is there, only weighted 0"
    );
}

#[test]
fn mixoe_with_lambda_one_is_ce() {
    let x = randn([4, 3, 8, 6], 3);
    let x_out = randn([4, 3, 8, 6], 4);
    let y = labels(&[1, 0, 2, 1]);
    let w = randn([5, 144], 5);
    let net = |x: Tensor<4>| x.reshape([4, 144]).matmul(w.clone().transpose());
    let ce = value(cross_entropy(net(x.clone()), y.clone()));
    for (op, centre) in [(MixOp::Mixup, None), (MixOp::Cutmix, Some((3, 2)))] {
        let (mixed, lam) = mixoe::mix(x.clone(), x_out.clone(), op, &MixDraw { lam: 1.0, centre });
        assert_eq!(lam, 1.0, "{op:?}");
        assert_eq!(
            values(mixed.clone()),
            values(x.clone()),
            "{op:?}: the mixed batch is the ID batch"
        );
        let t = mixoe::mixoe_loss(net(x.clone()), net(mixed), y.clone(), lam, 5.0);
        assert_eq!(value(t.mix), ce, "{op:?}");
        assert!((value(t.total) - 6.0 * ce).abs() <= 1e-5 * ce, "{op:?}");
    }
}

#[test]
fn palm_with_momentum_one_keeps_its_prototypes() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (classes, m, dim) = (3, 4, 8);
    let protos = initial_prototypes(classes * m, dim, &mut rng);
    let p = Tensor::<2>::from_data(
        TensorData::new(protos.clone(), [classes * m, dim]),
        &Device::flex(),
    );
    let z = randn([10, dim], 8);
    let z = z.clone() / z.square().sum_dim(1).sqrt();
    let params = PalmParams {
        num_classes: classes,
        prototypes_per_class: m,
        top_k: 2,
        proto_momentum: 1.0,
        mle_temperature: 0.1,
        pcon_weight: 1.0,
        pcon_temperature: 0.5,
        sinkhorn_epsilon: 0.05,
        sinkhorn_iterations: 3,
    };
    let step = palm_loss(
        z.clone(),
        labels(&[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]),
        p,
        &params,
    );
    for (a, b) in values(step.prototypes).iter().zip(&protos) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
    // With momentum 0.5 they move.
    let params = PalmParams {
        proto_momentum: 0.5,
        ..params
    };
    let p = Tensor::<2>::from_data(
        TensorData::new(protos.clone(), [classes * m, dim]),
        &Device::flex(),
    );
    let moved =
        values(palm_loss(z, labels(&[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), p, &params).prototypes);
    assert!(moved.iter().zip(&protos).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn sinkhorn_stays_finite_where_the_plain_exponential_overflows() {
    // z.p / 0.005 reaches 200: exp(200) is infinite in f32.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let protos = initial_prototypes(6, 4, &mut rng);
    let p = Tensor::<2>::from_data(TensorData::new(protos, [6, 4]), &Device::flex());
    let z = p.clone().narrow(0, 0, 3);
    let q = oodforge_losses::palm::sinkhorn(z, p, 0.005, 3);
    let v = values(q);
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    // Each sample's weights sum to 1.
    for row in v.chunks(6) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
}
