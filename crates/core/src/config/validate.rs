//! Value checks that types cannot express. Each problem names its key and the allowed range,
//! with the bad value in the message (linfa's `param_guard` habit).

use super::schema::*;

pub(super) fn check(c: &ExperimentConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |key: &str, msg: String| out.push((key.to_owned(), msg));

    if c.name.trim().is_empty() || c.name.contains(['/', '\\']) {
        bad(
            "name",
            format!(
                "{:?} must be a non-empty name without path separators",
                c.name
            ),
        );
    }

    let d = &c.data;
    if d.batch_size == 0 {
        bad(
            "data.batch_size",
            "0 is not allowed, expected an integer >= 1".into(),
        );
    }
    if d.eval_batch_size == 0 {
        bad(
            "data.eval_batch_size",
            "0 is not allowed, expected an integer >= 1".into(),
        );
    }
    if d.augment.random_crop_padding > 64 {
        bad(
            "data.augment.random_crop_padding",
            format!(
                "{} is too large, expected 0..=64",
                d.augment.random_crop_padding
            ),
        );
    }
    if let Some(n) = &d.normalize {
        for (i, s) in n.std.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0) {
                bad(
                    &format!("data.normalize.std[{i}]"),
                    format!("{s} is not allowed, expected a finite value > 0"),
                );
            }
        }
        for (i, m) in n.mean.iter().enumerate() {
            if !m.is_finite() {
                bad(
                    &format!("data.normalize.mean[{i}]"),
                    format!("{m} is not finite"),
                );
            }
        }
    }
    match &d.source {
        DataSource::Synthetic(s) => {
            if !(2..=10).contains(&s.num_classes) {
                bad(
                    "data.source.num_classes",
                    format!(
                        "{} is out of range, expected 2..=10 (the synthetic set has 10 ID shape families)",
                        s.num_classes
                    ),
                );
            }
            for (key, v) in [
                ("data.source.train_per_class", s.train_per_class),
                ("data.source.test_per_class", s.test_per_class),
                ("data.source.ood_per_set", s.ood_per_set),
            ] {
                if v == 0 {
                    bad(key, "0 is not allowed, expected an integer >= 1".into());
                }
            }
            if s.train_per_class * s.num_classes < d.batch_size {
                bad(
                    "data.batch_size",
                    format!(
                        "{} is larger than the training set ({} images)",
                        d.batch_size,
                        s.train_per_class * s.num_classes
                    ),
                );
            }
        }
    }

    match &c.model {
        ModelConfig::ResNet18 { width } | ModelConfig::ResNet10 { width } => {
            if !(1..=512).contains(width) {
                bad(
                    "model.width",
                    format!("{width} is out of range, expected 1..=512"),
                );
            }
        }
    }

    match &c.optim {
        OptimConfig::Sgd {
            lr,
            momentum,
            weight_decay,
            nesterov,
        } => {
            if !(lr.is_finite() && *lr > 0.0) {
                bad(
                    "optim.lr",
                    format!("{lr} is not allowed, expected a finite value > 0"),
                );
            }
            if !(0.0..1.0).contains(momentum) {
                bad(
                    "optim.momentum",
                    format!("{momentum} is out of range, expected 0 <= momentum < 1"),
                );
            }
            if *nesterov && *momentum == 0.0 {
                bad(
                    "optim.nesterov",
                    "Nesterov momentum needs momentum > 0".into(),
                );
            }
            if !(weight_decay.is_finite() && *weight_decay >= 0.0) {
                bad(
                    "optim.weight_decay",
                    format!("{weight_decay} is not allowed, expected a finite value >= 0"),
                );
            }
        }
    }

    let t = &c.train;
    if t.epochs == 0 {
        bad(
            "train.epochs",
            "0 is not allowed, expected an integer >= 1".into(),
        );
    }
    if t.warmup_epochs >= t.epochs.max(1) && t.warmup_epochs > 0 {
        bad(
            "train.warmup_epochs",
            format!(
                "{} must be smaller than train.epochs ({})",
                t.warmup_epochs, t.epochs
            ),
        );
    }
    let lr = c.optim.base_lr();
    let lr_ok = lr.is_finite() && lr > 0.0;
    if lr_ok && !(t.min_lr.is_finite() && t.min_lr >= 0.0 && t.min_lr <= lr) {
        bad(
            "train.min_lr",
            format!(
                "{} is not allowed, expected 0 <= min_lr <= optim.lr ({})",
                t.min_lr,
                c.optim.base_lr()
            ),
        );
    }
    if t.checkpoint_every == 0 {
        bad(
            "train.checkpoint_every",
            "0 is not allowed, expected an integer >= 1".into(),
        );
    }
    if t.log_every == 0 {
        bad(
            "train.log_every",
            "0 is not allowed, expected an integer >= 1".into(),
        );
    }

    if c.eval.postprocessors.is_empty() {
        bad(
            "eval.postprocessors",
            "an empty list is not allowed, expected at least one of msp, maxlogit, energy".into(),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in c.eval.postprocessors.iter().enumerate() {
        if !seen.insert(p.label()) {
            bad(
                &format!("eval.postprocessors[{i}]"),
                format!("`{}` is listed twice", p.label()),
            );
        }
        if let PostprocessorConfig::Energy { temperature } = p
            && !(temperature.is_finite() && *temperature > 0.0)
        {
            bad(
                &format!("eval.postprocessors[{i}].temperature"),
                format!("{temperature} is not allowed, expected a finite value > 0"),
            );
        }
    }
    out
}
