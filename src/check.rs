//! Agreement measures used by the tests, `recur selftest` and the benchmarks.

/// Relative error `||a - b|| / ||b||` (Euclidean norms), `b` being the reference.
/// Any NaN in `a` (an element a kernel never wrote) gives NaN, which fails every `<` check;
/// so do slices of different lengths.
pub fn rel_error<A, B>(a: &[A], b: &[B]) -> f64
where
    A: Copy + Into<f64>,
    B: Copy + Into<f64>,
{
    if a.len() != b.len() {
        return f64::NAN;
    }
    let mut diff = 0.0f64;
    let mut norm = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    if norm == 0.0 {
        return diff.sqrt();
    }
    (diff / norm).sqrt()
}

#[cfg(test)]
mod tests {
    use super::rel_error;

    #[test]
    fn rel_error_measures_and_catches_nan() {
        assert_eq!(rel_error(&[3.0f32, 4.0], &[3.0f64, 4.0]), 0.0);
        assert!((rel_error(&[3.0f64, 5.0], &[3.0f64, 4.0]) - 0.2).abs() < 1e-12);
        assert!(rel_error(&[f32::NAN, 4.0], &[3.0f64, 4.0]).is_nan());
        assert!(rel_error(&[4.0f32], &[3.0f64, 4.0]).is_nan());
    }
}
