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
    if !(1..=4096).contains(&d.image_size) {
        bad(
            "data.image_size",
            format!("{} is out of range, expected 1..=4096", d.image_size),
        );
    }
    if let Some(p) = d.pre_size
        && p < d.image_size
    {
        bad(
            "data.pre_size",
            format!(
                "{p} is smaller than data.image_size = {}; the centre crop needs pre_size >= image_size",
                d.image_size
            ),
        );
    }
    if !(1..=8).contains(&d.views) {
        bad(
            "data.views",
            format!("{} is out of range, expected 1..=8", d.views),
        );
    }
    if d.loader.prefetch == 0 {
        bad(
            "data.loader.prefetch",
            "0 is not allowed, expected an integer >= 1".into(),
        );
    }
    for (i, op) in d.train_transform.iter().enumerate() {
        let key = |k: &str| format!("data.train_transform[{i}].{k}");
        let mut prob = |k: &str, p: f64| {
            if !(0.0..=1.0).contains(&p) {
                bad(&key(k), format!("{p} is not a probability, expected 0..=1"));
            }
        };
        match op {
            TransformOp::Resize { size }
            | TransformOp::ResizeSquare { size }
            | TransformOp::CenterCrop { size } => {
                if *size == 0 {
                    bad(&key("size"), "0 is not allowed, expected >= 1".into());
                }
            }
            TransformOp::RandomCrop { size, padding } => {
                if *size == 0 {
                    bad(&key("size"), "0 is not allowed, expected >= 1".into());
                }
                if *padding > 256 {
                    bad(
                        &key("padding"),
                        format!("{padding} is too large, expected 0..=256"),
                    );
                }
            }
            TransformOp::HorizontalFlip { p } | TransformOp::Grayscale { p } => prob("p", *p),
            TransformOp::RandomResizedCrop { size, scale, ratio } => {
                if *size == 0 {
                    bad(&key("size"), "0 is not allowed, expected >= 1".into());
                }
                if !(scale[0] > 0.0 && scale[0] <= scale[1] && scale[1] <= 1.0) {
                    bad(
                        &key("scale"),
                        format!("{scale:?} must satisfy 0 < min <= max <= 1"),
                    );
                }
                if !(ratio[0] > 0.0 && ratio[0] <= ratio[1] && ratio[1].is_finite()) {
                    bad(
                        &key("ratio"),
                        format!("{ratio:?} must satisfy 0 < min <= max"),
                    );
                }
            }
            TransformOp::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
                p,
            } => {
                prob("p", *p);
                for (k, v) in [
                    ("brightness", brightness),
                    ("contrast", contrast),
                    ("saturation", saturation),
                ] {
                    if !(v.is_finite() && *v >= 0.0) {
                        bad(
                            &key(k),
                            format!("{v} is not allowed, expected a finite value >= 0"),
                        );
                    }
                }
                if !(0.0..=0.5).contains(hue) {
                    bad(
                        &key("hue"),
                        format!("{hue} is out of range, expected 0..=0.5"),
                    );
                }
            }
        }
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
        DataSource::OpenOod { benchmark, .. } => {
            const B: [&str; 4] = ["cifar10", "cifar100", "imagenet200", "imagenet1k"];
            if !B.contains(&benchmark.as_str()) {
                bad(
                    "data.source.benchmark",
                    format!(
                        "unknown benchmark `{benchmark}`, expected one of {}",
                        B.join(", ")
                    ),
                );
            }
        }
        DataSource::Classic {
            id,
            suite,
            outliers,
            ..
        } => {
            if !["cifar10", "cifar100"].contains(&id.as_str()) {
                bad(
                    "data.source.id",
                    format!("unknown ID set `{id}`, expected cifar10 or cifar100"),
                );
            }
            if !["energy", "oe", "palm"].contains(&suite.as_str()) {
                bad(
                    "data.source.suite",
                    format!("unknown suite `{suite}`, expected energy, oe or palm"),
                );
            }
            if !["300k", "none"].contains(&outliers.as_str()) {
                bad(
                    "data.source.outliers",
                    format!("unknown outlier set `{outliers}`, expected 300k or none"),
                );
            }
        }
        DataSource::Finegrained {
            dataset,
            outliers,
            root,
            info,
            ..
        } => {
            const SETS: [&str; 4] = ["bird", "butterfly", "car", "aircraft"];
            if !SETS.contains(&dataset.as_str()) {
                bad(
                    "data.source.dataset",
                    format!(
                        "unknown fine-grained dataset `{dataset}`, expected one of {}",
                        SETS.join(", ")
                    ),
                );
            }
            if !["webvision", "none"].contains(&outliers.as_str()) {
                bad(
                    "data.source.outliers",
                    format!("unknown outlier set `{outliers}`, expected webvision or none"),
                );
            }
            for (key, v) in [("data.source.root", root), ("data.source.info", info)] {
                if v.trim().is_empty() {
                    bad(key, "an empty path is not allowed".into());
                }
            }
        }
        DataSource::Custom(s) => {
            if s.num_classes < 2 {
                bad(
                    "data.source.num_classes",
                    format!("{} is not allowed, expected >= 2", s.num_classes),
                );
            }
            let mut specs = vec![
                ("data.source.train".to_owned(), &s.train),
                ("data.source.test".to_owned(), &s.test),
            ];
            for (i, o) in s.ood.iter().enumerate() {
                if !["near", "far"].contains(&o.group.as_str()) {
                    bad(
                        &format!("data.source.ood[{i}].group"),
                        format!("`{}` is not a group, expected near or far", o.group),
                    );
                }
                if o.name.trim().is_empty() || o.name.contains(['/', '\\']) {
                    bad(
                        &format!("data.source.ood[{i}].name"),
                        format!(
                            "{:?} must be a non-empty name without path separators",
                            o.name
                        ),
                    );
                }
                specs.push((format!("data.source.ood[{i}].set"), &o.set));
            }
            if let Some(o) = &s.outliers {
                specs.push(("data.source.outliers".to_owned(), o));
            }
            for (key, spec) in specs {
                match spec {
                    SetSpec::Cifar10 { split, .. } | SetSpec::Cifar100 { split, .. }
                        if !["train", "test"].contains(&split.as_str()) =>
                    {
                        bad(
                            &format!("{key}.split"),
                            format!("`{split}` is not a split, expected train or test"),
                        );
                    }
                    _ => {}
                }
                if let SetSpec::Webvision { exclude, .. } = spec
                    && !["none", "mixoe"].contains(&exclude.as_str())
                {
                    bad(
                        &format!("{key}.exclude"),
                        format!("`{exclude}` is not allowed, expected none or mixoe"),
                    );
                }
                if let SetSpec::Cifar100 { labels, .. } = spec
                    && !["fine", "coarse"].contains(&labels.as_str())
                {
                    bad(
                        &format!("{key}.labels"),
                        format!("`{labels}` is not allowed, expected fine or coarse"),
                    );
                }
            }
        }
        DataSource::Bags(b) => {
            const SETS: [&str; 3] = ["camelyon16", "camelyon17", "bracs"];
            if !SETS.contains(&b.dataset.as_str()) {
                bad(
                    "data.source.dataset",
                    format!(
                        "unknown bag dataset `{}`, expected one of {}",
                        b.dataset,
                        SETS.join(", ")
                    ),
                );
            }
            for (key, v) in [
                ("data.source.features", &b.features),
                ("data.source.labels", &b.labels),
            ] {
                if v.trim().is_empty() {
                    bad(key, "an empty path is not allowed".into());
                }
            }
            if !(b.val_fraction > 0.0 && b.val_fraction < 1.0) {
                bad(
                    "data.source.val_fraction",
                    format!(
                        "{} is out of range, expected 0 < val_fraction < 1",
                        b.val_fraction
                    ),
                );
            }
        }
        DataSource::SyntheticBags(s) => {
            if !(2..=8).contains(&s.num_classes) {
                bad(
                    "data.source.num_classes",
                    format!("{} is out of range, expected 2..=8", s.num_classes),
                );
            }
            for (key, v) in [
                ("data.source.train_bags", s.train_bags),
                ("data.source.val_bags", s.val_bags),
                ("data.source.test_bags", s.test_bags),
                ("data.source.feature_dim", s.feature_dim),
            ] {
                if v == 0 {
                    bad(key, "0 is not allowed, expected an integer >= 1".into());
                }
            }
            let [lo, hi] = s.instances;
            if lo < 2 || lo > hi {
                bad(
                    "data.source.instances",
                    format!(
                        "{:?} is not allowed, expected [min, max] with 2 <= min <= max",
                        s.instances
                    ),
                );
            }
        }
    }
    // Feature bags and images go through different networks and loops.
    if d.source.is_bags() != c.model.backbone.is_mil() {
        let msg = if d.source.is_bags() {
            "feature bags need an attention-MIL model: expected backbone = \"abmil\" or \"mil_mha\""
        } else {
            "abmil and mil_mha aggregate feature bags: they need data.source.kind = \"bags\" or \"synthetic_bags\""
        };
        bad("model.backbone", msg.into());
    }
    if d.source.is_bags() {
        // AEM `config/*.yml` `B: 1`: a bag is one slide of any number of patches.
        if d.batch_size != 1 {
            bad(
                "data.batch_size",
                format!(
                    "{} is not allowed with feature bags, which train one bag (slide) per step as AEM does: expected 1",
                    d.batch_size
                ),
            );
        }
        if c.model.projection.is_some()
            || c.model.prediction_heads != 1
            || c.model.weights.is_some()
        {
            bad(
                "model",
                "projection, prediction_heads and weights are image-classifier options; an attention-MIL model takes none of them".into(),
            );
        }
        if !matches!(
            c.objective,
            ObjectiveConfig::Ce {} | ObjectiveConfig::Aem { .. }
        ) {
            bad(
                "objective.name",
                format!(
                    "{} is not available for feature bags, expected ce or aem",
                    c.objective.name()
                ),
            );
        }
    }

    match &c.model.backbone {
        Backbone::ResNet18 { width, .. }
        | Backbone::ResNet34 { width, .. }
        | Backbone::ResNet50 { width, .. }
        | Backbone::ResNet10 { width, .. } => {
            if !(1..=512).contains(width) {
                bad(
                    "model.width",
                    format!("{width} is out of range, expected 1..=512"),
                );
            }
        }
        Backbone::Wrn {
            depth,
            widen_factor,
            dropout,
        } => {
            if *depth < 10 || depth % 6 != 4 {
                bad(
                    "model.depth",
                    format!(
                        "{depth} is not allowed, expected 6n + 4 with n >= 1 (16, 28, 40, ...)"
                    ),
                );
            }
            if !(1..=20).contains(widen_factor) {
                bad(
                    "model.widen_factor",
                    format!("{widen_factor} is out of range, expected 1..=20"),
                );
            }
            if !(0.0..1.0).contains(dropout) {
                bad(
                    "model.dropout",
                    format!("{dropout} is out of range, expected 0 <= p < 1"),
                );
            }
        }
        Backbone::VitTiny { patch_size } | Backbone::VitSmall { patch_size } => {
            if let Some(p) = patch_size {
                check_patch(&mut bad, *p, d.image_size);
            }
        }
        Backbone::Vit {
            patch_size,
            dim,
            depth,
            heads,
            mlp_dim,
        } => {
            check_patch(&mut bad, *patch_size, d.image_size);
            if *heads == 0 || *dim == 0 || dim % heads != 0 {
                bad(
                    "model.dim",
                    format!(
                        "{dim} is not allowed, expected a positive multiple of model.heads = {heads}"
                    ),
                );
            }
            if *depth == 0 {
                bad(
                    "model.depth",
                    "0 is not allowed, expected an integer >= 1".into(),
                );
            }
            if *mlp_dim == Some(0) {
                bad(
                    "model.mlp_dim",
                    "0 is not allowed, expected an integer >= 1".into(),
                );
            }
        }
        Backbone::Abmil {
            d_inner,
            d_attention,
        } => {
            for (key, v) in [
                ("model.d_inner", d_inner),
                ("model.d_attention", d_attention),
            ] {
                if *v == 0 {
                    bad(key, "0 is not allowed, expected an integer >= 1".into());
                }
            }
        }
        Backbone::MilMha { d_inner } => {
            if *d_inner == 0 || d_inner % 8 != 0 {
                bad(
                    "model.d_inner",
                    format!(
                        "{d_inner} is not allowed, expected a positive multiple of the 8 heads"
                    ),
                );
            }
        }
    }
    if let Some(p) = &c.model.projection {
        for (key, v) in [
            ("model.projection.hidden", p.hidden),
            ("model.projection.dim", p.dim),
        ] {
            if v == 0 {
                bad(key, "0 is not allowed, expected an integer >= 1".into());
            }
        }
    }
    if let Some(w) = &c.model.weights
        && w.path.trim().is_empty()
    {
        bad(
            "model.weights.path",
            "an empty path is not allowed, expected a checkpoint file".into(),
        );
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
        OptimConfig::AdamW {
            lr,
            betas,
            epsilon,
            weight_decay,
        } => {
            if !(lr.is_finite() && *lr > 0.0) {
                bad(
                    "optim.lr",
                    format!("{lr} is not allowed, expected a finite value > 0"),
                );
            }
            if !betas.iter().all(|b| (0.0..1.0).contains(b)) {
                bad(
                    "optim.betas",
                    format!("{betas:?} is out of range, expected two values in 0 <= beta < 1"),
                );
            }
            if !(epsilon.is_finite() && *epsilon > 0.0) {
                bad(
                    "optim.epsilon",
                    format!("{epsilon} is not allowed, expected a finite value > 0"),
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

    if !(1..=2).contains(&c.model.prediction_heads) {
        bad(
            "model.prediction_heads",
            format!(
                "{} is not allowed, expected 1 or 2",
                c.model.prediction_heads
            ),
        );
    }
    check_objective(&mut bad, c);

    if c.eval.postprocessors.is_empty() {
        bad(
            "eval.postprocessors",
            "an empty list is not allowed, expected at least one of msp, maxlogit, energy, odin, gen, mds, knn, vim, react, ash".into(),
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
        let key = |k: &str| format!("eval.postprocessors[{i}].{k}");
        let mut positive = |k: &str, v: f64| {
            if !(v.is_finite() && v > 0.0) {
                bad(
                    &key(k),
                    format!("{v} is not allowed, expected a finite value > 0"),
                );
            }
        };
        match p {
            PostprocessorConfig::Energy { temperature } => positive("temperature", *temperature),
            PostprocessorConfig::Odin { temperature, noise } => {
                positive("temperature", *temperature);
                if !(noise.is_finite() && *noise >= 0.0) {
                    bad(
                        &key("noise"),
                        format!("{noise} is not allowed, expected a finite value >= 0"),
                    );
                }
            }
            PostprocessorConfig::Gen { gamma, top_m } => {
                positive("gamma", *gamma);
                if *top_m == 0 {
                    bad(&key("top_m"), "0 is not allowed, expected >= 1".into());
                }
            }
            PostprocessorConfig::Knn { k } if *k == 0 => {
                bad(&key("k"), "0 is not allowed, expected >= 1".into());
            }
            PostprocessorConfig::Vim { dim } if *dim == 0 => {
                bad(&key("dim"), "0 is not allowed, expected >= 1".into());
            }
            PostprocessorConfig::React { percentile } | PostprocessorConfig::Ash { percentile }
                if !(*percentile > 0.0 && *percentile <= 100.0) =>
            {
                bad(
                    &key("percentile"),
                    format!("{percentile} is out of range, expected 0 < percentile <= 100"),
                );
            }
            _ => {}
        }
    }
    match &c.eval.convention {
        MetricConvention::Oe {
            draws, ood_samples, ..
        }
        | MetricConvention::Energy {
            draws, ood_samples, ..
        } => {
            if *draws == 0 {
                bad(
                    "eval.convention.draws",
                    "0 is not allowed, expected >= 1".into(),
                );
            }
            if *ood_samples == Some(0) {
                bad(
                    "eval.convention.ood_samples",
                    "0 is not allowed, expected >= 1 (or leave it out for ID test size / 5)".into(),
                );
            }
        }
        MetricConvention::MixOe { draws, .. } if *draws == 0 => {
            bad(
                "eval.convention.draws",
                "0 is not allowed, expected >= 1".into(),
            );
        }
        _ => {}
    }

    check_devices(&mut bad, c);
    out
}

/// `devices`: a non-empty list of distinct indices, or "all". Every objective runs
/// data-parallel (its loss sees the gathered outputs of the whole batch); feature bags do not
/// (their trainer steps one bag at a time).
fn check_devices(bad: &mut impl FnMut(&str, String), c: &ExperimentConfig) {
    if let Devices::List(list) = &c.devices {
        if list.is_empty() {
            bad(
                "devices",
                "[] is not allowed, expected at least one device index such as [0]".into(),
            );
            return;
        }
        let mut sorted = list.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            bad(
                "devices",
                format!("device {} is listed twice, expected distinct indices", w[0]),
            );
        }
    }
    if !c.devices.is_single() && c.data.source.is_bags() {
        bad(
            "devices",
            "data-parallel training is not supported for feature bags (the MIL trainer steps one bag at a time); expected devices = [0]".into(),
        );
    }
}

fn check_patch(bad: &mut impl FnMut(&str, String), patch: usize, image_size: usize) {
    if patch == 0 || !image_size.is_multiple_of(patch) {
        bad(
            "model.patch_size",
            format!("{patch} is not allowed, expected a divisor of data.image_size = {image_size}"),
        );
    }
}

/// The objective's hyperparameters, and what it needs from the data and the model.
fn check_objective(bad: &mut impl FnMut(&str, String), c: &ExperimentConfig) {
    let o = &c.objective;
    let key = |k: &str| format!("objective.{k}");
    let non_negative = |bad: &mut dyn FnMut(&str, String), k: &str, v: f64| {
        if !(v.is_finite() && v >= 0.0) {
            bad(
                &key(k),
                format!("{v} is not allowed, expected a finite value >= 0"),
            );
        }
    };
    match o {
        ObjectiveConfig::Ce {} => {}
        ObjectiveConfig::Oe { oe_weight } => non_negative(bad, "oe_weight", *oe_weight),
        ObjectiveConfig::EnergyOe {
            m_in,
            m_out,
            energy_weight,
        } => {
            non_negative(bad, "energy_weight", *energy_weight);
            for (k, v) in [("m_in", m_in), ("m_out", m_out)] {
                if !v.is_finite() {
                    bad(
                        &key(k),
                        format!("{v} is not allowed, expected a finite energy"),
                    );
                }
            }
        }
        ObjectiveConfig::MixOe {
            mix_beta_a,
            mix_beta_b,
            mix_weight,
            ..
        } => {
            non_negative(bad, "mix_weight", *mix_weight);
            check_beta(bad, *mix_beta_a, *mix_beta_b);
            // MixOE pairs ID image i with outlier i (no permutation, `train_mixoe.py`).
            if c.data.outlier_batch_size != c.data.batch_size {
                bad(
                    "data.outlier_batch_size",
                    format!(
                        "{} is not allowed for mixoe, which mixes ID image i with outlier i: expected data.batch_size = {}",
                        c.data.outlier_batch_size, c.data.batch_size
                    ),
                );
            }
        }
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
            if *prototypes_per_class < 2 {
                bad(
                    &key("prototypes_per_class"),
                    format!(
                        "{prototypes_per_class} is not allowed, expected >= 2 (the contrastive loss needs another prototype of the same class)"
                    ),
                );
            }
            if top_k > prototypes_per_class {
                bad(
                    &key("top_k"),
                    format!(
                        "{top_k} is not allowed, expected 0 (no top-k) ..= prototypes_per_class = {prototypes_per_class}"
                    ),
                );
            }
            if !(0.0..=1.0).contains(proto_momentum) {
                bad(
                    &key("proto_momentum"),
                    format!("{proto_momentum} is not allowed, expected 0..=1"),
                );
            }
            non_negative(bad, "pcon_weight", *pcon_weight);
            for (k, v) in [
                ("mle_temperature", mle_temperature),
                ("pcon_temperature", pcon_temperature),
                ("sinkhorn_epsilon", sinkhorn_epsilon),
            ] {
                if !(v.is_finite() && *v > 0.0) {
                    bad(
                        &key(k),
                        format!("{v} is not allowed, expected a finite value > 0"),
                    );
                }
            }
            if *sinkhorn_iterations == 0 {
                bad(
                    &key("sinkhorn_iterations"),
                    "0 is not allowed, expected >= 1".into(),
                );
            }
            if c.model.projection.is_none() {
                bad(
                    "model.projection",
                    "palm needs a projection head: add `projection = { hidden = 512, dim = 128 }` to [model]".into(),
                );
            }
        }
        ObjectiveConfig::NpMix {
            entropy_weight,
            queue_size,
            neighbour_classes,
            mix_beta_a,
            mix_beta_b,
            a2d_weight,
            a2d_outlier_weight,
            ..
        } => {
            non_negative(bad, "entropy_weight", *entropy_weight);
            non_negative(bad, "a2d_weight", *a2d_weight);
            non_negative(bad, "a2d_outlier_weight", *a2d_outlier_weight);
            if (*a2d_weight > 0.0 || *a2d_outlier_weight > 0.0) && c.model.prediction_heads != 2 {
                bad(
                    "model.prediction_heads",
                    format!(
                        "{} is not allowed with A2D (objective.a2d_weight / a2d_outlier_weight > 0), which compares two predictions: expected 2",
                        c.model.prediction_heads
                    ),
                );
            }
            if *queue_size == 0 {
                bad(&key("queue_size"), "0 is not allowed, expected >= 1".into());
            }
            if *neighbour_classes == 0 {
                bad(
                    &key("neighbour_classes"),
                    "0 is not allowed, expected >= 1".into(),
                );
            }
            check_beta(bad, *mix_beta_a, *mix_beta_b);
        }
        ObjectiveConfig::Aem {
            attention_entropy_weight,
        } => {
            non_negative(bad, "attention_entropy_weight", *attention_entropy_weight);
            if !matches!(
                c.model.backbone,
                Backbone::VitTiny { .. }
                    | Backbone::VitSmall { .. }
                    | Backbone::Vit { .. }
                    | Backbone::Abmil { .. }
                    | Backbone::MilMha { .. }
            ) {
                bad(
                    "objective.name",
                    "aem regularises attention: it needs an attention-MIL model on feature bags (abmil, mil_mha) or a ViT backbone (vit_tiny, vit_small, vit)"
                        .into(),
                );
            }
        }
    }
    if o.uses_outliers() && c.data.outlier_batch_size == 0 {
        bad(
            "data.outlier_batch_size",
            format!(
                "0 is not allowed for {}, which trains on outliers: set the outliers per batch (OE: 2 x batch_size)",
                o.name()
            ),
        );
    }
}

/// `objective.mix_beta_a` / `mix_beta_b` are parameters of a Beta distribution.
fn check_beta(bad: &mut dyn FnMut(&str, String), a: f64, b: Option<f64>) {
    for (k, v) in [("mix_beta_a", Some(a)), ("mix_beta_b", b)] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            bad(
                &format!("objective.{k}"),
                format!("{v} is not a Beta parameter, expected a finite value > 0"),
            );
        }
    }
}
