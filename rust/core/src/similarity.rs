//! Shape contract of the batched token-similarity op `S_b = A_b B_bᵀ` (cosine).
//!
//! The arithmetic runs in libtorch (binding crate) so autograd records it; what belongs here
//! is the rule for which operand shapes are accepted, testable without libtorch.

use crate::error::{CoreError, Result};

/// Sizes of a validated batched similarity: `a` is `[batch, n, dim]`, `b` is `[batch, m, dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimilarityShape {
    pub batch: usize,
    pub n: usize,
    pub m: usize,
    pub dim: usize,
}

impl SimilarityShape {
    /// Accepts `[batch, n, dim]` × `[batch, m, dim]`, or 2-D `[n, dim]` × `[m, dim]` as a batch
    /// of one. `names` are the argument names used in the error messages.
    pub fn check(a: &[i64], b: &[i64], names: (&str, &str)) -> Result<Self> {
        let (na, nb) = names;
        if a.len() != b.len() || !(a.len() == 2 || a.len() == 3) {
            return Err(CoreError::invalid(
                na,
                format!(
                    "`{na}` and `{nb}` must both be 2-D [tokens, dim] or both 3-D \
                     [batch, tokens, dim], got shapes {a:?} and {b:?}"
                ),
            ));
        }
        let (a3, b3) = if a.len() == 2 {
            ([1, a[0], a[1]], [1, b[0], b[1]])
        } else {
            ([a[0], a[1], a[2]], [b[0], b[1], b[2]])
        };
        if a3[0] != b3[0] {
            return Err(CoreError::invalid(
                nb,
                format!(
                    "batch sizes differ: `{na}` has {}, `{nb}` has {}",
                    a3[0], b3[0]
                ),
            ));
        }
        if a3[2] != b3[2] {
            return Err(CoreError::invalid(
                nb,
                format!(
                    "feature sizes differ: `{na}` has {}, `{nb}` has {}",
                    a3[2], b3[2]
                ),
            ));
        }
        if a3[2] == 0 {
            return Err(CoreError::invalid(na, "feature size must be at least 1"));
        }
        Ok(SimilarityShape {
            batch: a3[0] as usize,
            n: a3[1] as usize,
            m: b3[1] as usize,
            dim: a3[2] as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_batched_and_single() {
        let s = SimilarityShape::check(&[4, 49, 8], &[4, 16, 8], ("a", "b")).unwrap();
        assert_eq!((s.batch, s.n, s.m, s.dim), (4, 49, 16, 8));
        let s = SimilarityShape::check(&[49, 8], &[16, 8], ("a", "b")).unwrap();
        assert_eq!((s.batch, s.n, s.m, s.dim), (1, 49, 16, 8));
    }

    #[test]
    fn rejects_mismatches_naming_the_argument() {
        let e = SimilarityShape::check(&[4, 49, 8], &[3, 16, 8], ("img", "txt")).unwrap_err();
        assert!(e.to_string().contains("`txt`") && e.to_string().contains("batch"));
        let e = SimilarityShape::check(&[4, 49, 8], &[4, 16, 9], ("img", "txt")).unwrap_err();
        assert!(e.to_string().contains("feature sizes differ"));
        let e = SimilarityShape::check(&[4, 49], &[4, 16, 9], ("img", "txt")).unwrap_err();
        assert!(e.to_string().contains("must both be 2-D"));
        let e = SimilarityShape::check(&[2, 3, 0], &[2, 4, 0], ("img", "txt")).unwrap_err();
        assert!(e.to_string().contains("at least 1"));
    }
}
