//! Progressive label schedule: which contrastive target applies at training progress p.
//!
//! LightCLIP softens the instance-level targets as training goes on (SPEC §2, L_ins). Every
//! target is one mixture of three N×N matrices,
//!
//! ```text
//! Y = identity · I  +  uniform · U  +  negatives · W
//! ```
//!
//! where `U` spreads one unit of mass evenly over the N−1 negatives of a row and `W` is the
//! softmax of the (detached) logits over the negatives. The three weights sum to 1, so every row
//! of Y sums to 1. This module only decides the weights; the binding (`rust/py/src/labels.rs`)
//! wraps [`LabelSchedule`] as `lightclip.LabelSchedule` and builds the matrices with libtorch on
//! the logits' device.
//!
//! Hard switches (the default): `p < r1` hard (I), `r1 ≤ p < r2` uniform smoothing
//! ((1−α) I + α U), `p ≥ r2` negative-aware ((1−α) I + α W).
//!
//! Linear ramps (`ramp = true`) — our reading of "a linear ramp between phases": each switch
//! is replaced by a linear blend across a window of width `ramp_width` centred on it.
//! * the smoothing mass s(p) = α · clamp((p − (r1 − w/2)) / w, 0, 1) grows from 0 to α
//!   across [r1 − w/2, r1 + w/2];
//! * the share of that mass given to W, b(p) = clamp((p − (r2 − w/2)) / w, 0, 1), grows from
//!   0 to 1 across [r2 − w/2, r2 + w/2];
//! * weights: identity = 1 − s, uniform = s (1 − b), negatives = s b.
//!
//! Outside the windows the ramp equals the hard schedule exactly. When the windows overlap
//! (`r2 − r1 < w`) the formulas stay a valid mixture; the pure uniform phase is then skipped.
//! Windows reaching below 0 or above 1 are simply cut off by the progress range.

use crate::error::{CoreError, Result};

/// Default phase boundaries, smoothing mass and ramp width (SPEC §2).
pub const DEFAULT_R1: f64 = 0.33;
pub const DEFAULT_R2: f64 = 0.66;
pub const DEFAULT_ALPHA: f64 = 0.2;
pub const DEFAULT_RAMP_WIDTH: f64 = 0.1;

/// The nominal phase of the schedule: the label kind the hard-switch schedule uses at p.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelPhase {
    /// Y = I (one-hot on the paired sample).
    Hard,
    /// Y = (1−α) I + α U (uniform label smoothing over the negatives).
    Uniform,
    /// Y = (1−α) I + α W (negative-importance-aware softening).
    NegativeAware,
}

impl LabelPhase {
    /// The name Python sees (`"hard"`, `"uniform"`, `"negative"`).
    pub fn name(self) -> &'static str {
        match self {
            LabelPhase::Hard => "hard",
            LabelPhase::Uniform => "uniform",
            LabelPhase::NegativeAware => "negative",
        }
    }
}

/// Weights of I, U and W in the target at one progress value; they sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelMix {
    pub identity: f64,
    pub uniform: f64,
    pub negatives: f64,
}

impl LabelMix {
    pub const HARD: LabelMix = LabelMix {
        identity: 1.0,
        uniform: 0.0,
        negatives: 0.0,
    };

    /// True when the target is the identity (no softening at all).
    pub fn is_hard(&self) -> bool {
        self.uniform == 0.0 && self.negatives == 0.0
    }

    /// True when the negative-aware matrix W (and so the logits' values) is needed.
    pub fn needs_logits(&self) -> bool {
        self.negatives > 0.0
    }
}

/// The schedule's configuration, validated on construction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelSchedule {
    r1: f64,
    r2: f64,
    alpha: f64,
    ramp: bool,
    ramp_width: f64,
}

impl Default for LabelSchedule {
    fn default() -> Self {
        LabelSchedule {
            r1: DEFAULT_R1,
            r2: DEFAULT_R2,
            alpha: DEFAULT_ALPHA,
            ramp: false,
            ramp_width: DEFAULT_RAMP_WIDTH,
        }
    }
}

fn require_finite(argument: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(CoreError::invalid(
            argument,
            format!("must be a finite number, got {value}"),
        ))
    }
}

impl LabelSchedule {
    /// Checks `0 ≤ r1 ≤ r2 ≤ 1`, `0 ≤ alpha < 1` and `0 < ramp_width ≤ 1` (the width is
    /// checked even when `ramp` is off so a config is valid or not regardless of the switch).
    pub fn new(r1: f64, r2: f64, alpha: f64, ramp: bool, ramp_width: f64) -> Result<Self> {
        for (name, value) in [
            ("r1", r1),
            ("r2", r2),
            ("alpha", alpha),
            ("ramp_width", ramp_width),
        ] {
            require_finite(name, value)?;
        }
        if !(0.0..=1.0).contains(&r1) {
            return Err(CoreError::invalid(
                "r1",
                format!("must lie in [0, 1], got {r1}"),
            ));
        }
        if !(0.0..=1.0).contains(&r2) {
            return Err(CoreError::invalid(
                "r2",
                format!("must lie in [0, 1], got {r2}"),
            ));
        }
        if r1 > r2 {
            return Err(CoreError::invalid(
                "r1",
                format!("must not exceed `r2` ({r2}), got {r1}"),
            ));
        }
        // α = 1 would put no mass on the paired sample: the target would no longer say which
        // sample is the positive.
        if !(0.0..1.0).contains(&alpha) {
            return Err(CoreError::invalid(
                "alpha",
                format!("must lie in [0, 1), got {alpha}"),
            ));
        }
        if !(ramp_width > 0.0 && ramp_width <= 1.0) {
            return Err(CoreError::invalid(
                "ramp_width",
                format!("must lie in (0, 1], got {ramp_width}"),
            ));
        }
        Ok(LabelSchedule {
            r1,
            r2,
            alpha,
            ramp,
            ramp_width,
        })
    }

    pub fn r1(&self) -> f64 {
        self.r1
    }
    pub fn r2(&self) -> f64 {
        self.r2
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    pub fn ramp(&self) -> bool {
        self.ramp
    }
    pub fn ramp_width(&self) -> f64 {
        self.ramp_width
    }

    /// Checks that `progress` is a number in [0, 1].
    pub fn check_progress(progress: f64) -> Result<f64> {
        if progress.is_finite() && (0.0..=1.0).contains(&progress) {
            Ok(progress)
        } else {
            Err(CoreError::invalid(
                "progress",
                format!("must lie in [0, 1] (step / total_steps), got {progress}"),
            ))
        }
    }

    /// The hard-switch phase at progress p (also the nominal phase when ramping).
    pub fn phase_at(&self, progress: f64) -> Result<LabelPhase> {
        let p = Self::check_progress(progress)?;
        Ok(if p < self.r1 {
            LabelPhase::Hard
        } else if p < self.r2 {
            LabelPhase::Uniform
        } else {
            LabelPhase::NegativeAware
        })
    }

    /// The weights of I, U and W at progress p.
    pub fn mix_at(&self, progress: f64) -> Result<LabelMix> {
        let p = Self::check_progress(progress)?;
        let (smoothing, w_share) = if self.ramp {
            (
                self.alpha * self.window(p, self.r1),
                self.window(p, self.r2),
            )
        } else {
            (
                if p < self.r1 { 0.0 } else { self.alpha },
                if p < self.r2 { 0.0 } else { 1.0 },
            )
        };
        Ok(LabelMix {
            identity: 1.0 - smoothing,
            uniform: smoothing * (1.0 - w_share),
            negatives: smoothing * w_share,
        })
    }

    /// 0 before the window centred on `centre`, 1 after it, linear inside.
    fn window(&self, p: f64, centre: f64) -> f64 {
        let start = centre - 0.5 * self.ramp_width;
        ((p - start) / self.ramp_width).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: LabelMix, b: LabelMix) -> bool {
        (a.identity - b.identity).abs() < EPS
            && (a.uniform - b.uniform).abs() < EPS
            && (a.negatives - b.negatives).abs() < EPS
    }

    fn uniform(alpha: f64) -> LabelMix {
        LabelMix {
            identity: 1.0 - alpha,
            uniform: alpha,
            negatives: 0.0,
        }
    }

    fn negative(alpha: f64) -> LabelMix {
        LabelMix {
            identity: 1.0 - alpha,
            uniform: 0.0,
            negatives: alpha,
        }
    }

    fn ramped(width: f64) -> LabelSchedule {
        LabelSchedule::new(DEFAULT_R1, DEFAULT_R2, DEFAULT_ALPHA, true, width).unwrap()
    }

    #[test]
    fn hard_switches_at_and_around_the_boundaries() {
        let s = LabelSchedule::default();
        let below = |x: f64| x - 1e-9;
        let cases = [
            (0.0, LabelPhase::Hard, LabelMix::HARD),
            (below(0.33), LabelPhase::Hard, LabelMix::HARD),
            (0.33, LabelPhase::Uniform, uniform(0.2)),
            (0.5, LabelPhase::Uniform, uniform(0.2)),
            (below(0.66), LabelPhase::Uniform, uniform(0.2)),
            (0.66, LabelPhase::NegativeAware, negative(0.2)),
            (1.0, LabelPhase::NegativeAware, negative(0.2)),
        ];
        for (p, phase, mix) in cases {
            assert_eq!(s.phase_at(p).unwrap(), phase, "phase at p={p}");
            assert!(close(s.mix_at(p).unwrap(), mix), "mix at p={p}");
        }
    }

    #[test]
    fn equal_boundaries_skip_the_uniform_phase() {
        let s = LabelSchedule::new(0.5, 0.5, 0.3, false, 0.1).unwrap();
        assert_eq!(s.phase_at(0.4999).unwrap(), LabelPhase::Hard);
        assert_eq!(s.phase_at(0.5).unwrap(), LabelPhase::NegativeAware);
        assert!(close(s.mix_at(0.5).unwrap(), negative(0.3)));
    }

    #[test]
    fn ramp_end_points_equal_the_hard_phases() {
        let (w, s) = (0.1, ramped(0.1));
        let hard = LabelSchedule::default();
        // The window edges and points outside the windows agree with the hard schedule.
        for p in [
            0.0,
            0.2,
            0.33 - w / 2.0,
            0.33 + w / 2.0,
            0.5,
            0.66 - w / 2.0,
        ] {
            assert!(
                close(s.mix_at(p).unwrap(), hard.mix_at(p).unwrap()),
                "p={p}"
            );
        }
        for p in [0.66 + w / 2.0, 0.8, 1.0] {
            assert!(close(s.mix_at(p).unwrap(), negative(0.2)), "p={p}");
        }
    }

    #[test]
    fn ramp_is_linear_inside_the_windows() {
        let s = ramped(0.1);
        // Halfway through the first window: half the smoothing mass, all of it uniform.
        assert!(close(s.mix_at(0.33).unwrap(), uniform(0.1)));
        // A quarter of the way through.
        assert!(close(s.mix_at(0.305).unwrap(), uniform(0.05)));
        // Halfway through the second window: the α mass split evenly between U and W.
        let mid = s.mix_at(0.66).unwrap();
        assert!(close(
            mid,
            LabelMix {
                identity: 0.8,
                uniform: 0.1,
                negatives: 0.1
            }
        ));
    }

    #[test]
    fn overlapping_windows_still_give_a_mixture_that_ends_negative() {
        let s = LabelSchedule::new(0.4, 0.45, 0.2, true, 0.3).unwrap();
        for i in 0..=100 {
            let m = s.mix_at(i as f64 / 100.0).unwrap();
            assert!((m.identity + m.uniform + m.negatives - 1.0).abs() < EPS);
            assert!(m.identity >= 1.0 - 0.2 - EPS && m.uniform >= 0.0 && m.negatives >= 0.0);
        }
        assert!(close(s.mix_at(0.0).unwrap(), LabelMix::HARD));
        assert!(close(s.mix_at(1.0).unwrap(), negative(0.2)));
    }

    #[test]
    fn weights_sum_to_one_and_softening_never_decreases() {
        for ramp in [false, true] {
            let s = LabelSchedule::new(0.2, 0.7, 0.4, ramp, 0.2).unwrap();
            let mut previous = LabelMix::HARD;
            for i in 0..=1000 {
                let m = s.mix_at(i as f64 / 1000.0).unwrap();
                assert!((m.identity + m.uniform + m.negatives - 1.0).abs() < EPS);
                assert!(m.identity <= previous.identity + EPS, "ramp={ramp}, i={i}");
                assert!(
                    m.negatives >= previous.negatives - EPS,
                    "ramp={ramp}, i={i}"
                );
                previous = m;
            }
        }
    }

    #[test]
    fn flags_say_what_the_binding_must_compute() {
        let s = LabelSchedule::default();
        assert!(s.mix_at(0.1).unwrap().is_hard());
        let u = s.mix_at(0.4).unwrap();
        assert!(!u.is_hard() && !u.needs_logits());
        assert!(s.mix_at(0.9).unwrap().needs_logits());
        // α = 0 never softens.
        let zero = LabelSchedule::new(0.33, 0.66, 0.0, false, 0.1).unwrap();
        assert!(zero.mix_at(0.9).unwrap().is_hard());
    }

    #[test]
    fn bad_configurations_name_the_argument() {
        let cases: [(f64, f64, f64, f64, &str); 9] = [
            (-0.1, 0.66, 0.2, 0.1, "invalid `r1`: must lie in [0, 1]"),
            (0.33, 1.5, 0.2, 0.1, "invalid `r2`: must lie in [0, 1]"),
            (
                0.7,
                0.66,
                0.2,
                0.1,
                "invalid `r1`: must not exceed `r2` (0.66)",
            ),
            (0.33, 0.66, 1.0, 0.1, "invalid `alpha`: must lie in [0, 1)"),
            (0.33, 0.66, -0.01, 0.1, "invalid `alpha`"),
            (
                0.33,
                0.66,
                0.2,
                0.0,
                "invalid `ramp_width`: must lie in (0, 1]",
            ),
            (0.33, 0.66, 0.2, 1.5, "invalid `ramp_width`"),
            (
                f64::NAN,
                0.66,
                0.2,
                0.1,
                "invalid `r1`: must be a finite number",
            ),
            (
                0.33,
                0.66,
                f64::INFINITY,
                0.1,
                "invalid `alpha`: must be a finite",
            ),
        ];
        for (r1, r2, alpha, width, message) in cases {
            let err = LabelSchedule::new(r1, r2, alpha, true, width).unwrap_err();
            assert!(err.to_string().starts_with(message), "{err}");
        }
    }

    #[test]
    fn progress_outside_the_unit_interval_is_refused() {
        let s = LabelSchedule::default();
        for p in [-1e-9, 1.0 + 1e-9, f64::NAN, f64::INFINITY] {
            let err = s.mix_at(p).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid `progress`: must lie in [0, 1]"),
                "{err}"
            );
            assert!(s.phase_at(p).is_err());
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn every_valid_configuration_gives_a_mixture_that_matches_the_hard_schedule_outside_the_windows(
                r1 in 0.0..=1.0f64,
                gap in 0.0..=1.0f64,
                alpha in 0.0..0.999f64,
                width in 0.001..=1.0f64,
                p in 0.0..=1.0f64,
            ) {
                let r2 = (r1 + gap).min(1.0);
                let hard = LabelSchedule::new(r1, r2, alpha, false, width).unwrap();
                let ramp = LabelSchedule::new(r1, r2, alpha, true, width).unwrap();
                for s in [hard, ramp] {
                    let m = s.mix_at(p).unwrap();
                    prop_assert!((m.identity + m.uniform + m.negatives - 1.0).abs() < EPS);
                    prop_assert!(m.uniform >= 0.0 && m.negatives >= 0.0);
                    prop_assert!(m.identity >= 1.0 - alpha - EPS);
                }
                let far_from = |c: f64| (p - c).abs() >= width / 2.0 + 1e-9;
                if far_from(r1) && far_from(r2) {
                    prop_assert!(close(ramp.mix_at(p).unwrap(), hard.mix_at(p).unwrap()));
                }
            }
        }
    }
}
