//! Linear warmup then cosine decay to `min_lr`, as a pure function of the step so that a
//! resumed run needs no scheduler state beyond the step.

use super::config::OptimSection;

pub fn lr_at(o: &OptimSection, step: usize) -> f64 {
    if o.warmup_steps > 0 && step < o.warmup_steps {
        return o.lr * (step + 1) as f64 / o.warmup_steps as f64;
    }
    let decay = (o.steps - o.warmup_steps).max(1) as f64;
    let progress = ((step - o.warmup_steps) as f64 / decay).min(1.0);
    o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let o = OptimSection { lr: 1.0, min_lr: 0.1, warmup_steps: 10, steps: 110, ..Default::default() };
        assert!((lr_at(&o, 0) - 0.1).abs() < 1e-12);
        assert!((lr_at(&o, 9) - 1.0).abs() < 1e-12);
        assert!((lr_at(&o, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(&o, 60) - 0.55).abs() < 1e-12, "half way down the cosine");
        assert!((lr_at(&o, 110) - 0.1).abs() < 1e-12);
        let mut prev = f64::INFINITY;
        for s in 10..110 {
            assert!(lr_at(&o, s) <= prev);
            prev = lr_at(&o, s);
        }
    }
}
