//! Per-step learning rates.
//!
//! Cosine: OpenOOD `openood/trainers/base_trainer.py::cosine_annealing`, used as a `LambdaLR`
//! stepped after every optimiser step: `lr(k) = min + (base - min) * 0.5 * (1 + cos(pi * k / T))`
//! with `T = epochs * steps_per_epoch`. With a warm-up of `W` steps the rate rises linearly,
//! `lr(k) = base * (k + 1) / W` for `k < W`, and the cosine then runs over the remaining
//! `T - W` steps.

use oodforge_core::config::{ExperimentConfig, LrSchedule};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: LrSchedule,
    pub base: f64,
    pub min: f64,
    pub total_steps: usize,
    pub warmup_steps: usize,
}

impl Schedule {
    /// The schedule of a config's `[train]` and `[optim]` for `steps_per_epoch` steps an epoch.
    pub fn for_run(cfg: &ExperimentConfig, steps_per_epoch: usize) -> Self {
        Self {
            kind: cfg.train.lr_schedule,
            base: cfg.optim.base_lr(),
            min: cfg.train.min_lr,
            total_steps: cfg.train.epochs * steps_per_epoch,
            warmup_steps: cfg.train.warmup_epochs * steps_per_epoch,
        }
    }

    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.kind {
            LrSchedule::Constant => self.base,
            LrSchedule::Cosine => {
                let span = (self.total_steps - self.warmup_steps).max(1) as f64;
                let t = (step - self.warmup_steps) as f64 / span;
                self.min + (self.base - self.min) * 0.5 * (1.0 + (t * std::f64::consts::PI).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_matches_openood_lambda() {
        let s = Schedule {
            kind: LrSchedule::Cosine,
            base: 0.1,
            min: 1e-6,
            total_steps: 100,
            warmup_steps: 0,
        };
        // OpenOOD: lr * cosine_annealing(step, 100, 1, 1e-6 / lr)
        let openood = |step: f64| {
            0.1 * (1e-5 + (1.0 - 1e-5) * 0.5 * (1.0 + (step / 100.0 * std::f64::consts::PI).cos()))
        };
        for step in [0usize, 1, 25, 50, 99, 100] {
            assert!(
                (s.lr(step) - openood(step as f64)).abs() < 1e-15,
                "step {step}"
            );
        }
        assert_eq!(s.lr(0), 0.1);
    }

    #[test]
    fn warmup_is_linear_then_cosine() {
        let s = Schedule {
            kind: LrSchedule::Cosine,
            base: 0.2,
            min: 0.0,
            total_steps: 110,
            warmup_steps: 10,
        };
        assert!((s.lr(0) - 0.02).abs() < 1e-15);
        assert!((s.lr(9) - 0.2).abs() < 1e-15);
        assert!((s.lr(10) - 0.2).abs() < 1e-15);
        assert!((s.lr(60) - 0.1).abs() < 1e-12);
        let c = Schedule {
            kind: LrSchedule::Constant,
            ..s
        };
        assert_eq!(c.lr(50), 0.2);
    }
}
