//! CPU twin of f16 storage in `shaders/recurrent.wgsl` (`f16_storage_bits`, `F16_STORAGE`;
//! host side: `gpu::recurrent::Precision`). A GPU plan with `Precision::F16Storage`
//! computes the forward the f32 layer computes with W_hh and b_hh passed through
//! [`f16_storage_value`], so the CPU path checks it by rounding those two first; its
//! backward reads most gate activations as stored in f16 ([`is_f16_activation`], the rule
//! the kernels share from `ops::recurrent`,
//! [`round_saved_activations`]).

use half::f16;

use super::Real;
use crate::ops::recurrent::{f16_activations, is_f16_activation, CellKind};

/// Magnitudes below f16's smallest normal number, 2^-14, are stored as a signed zero:
/// `unpack2x16float` may flush f16 subnormals, so none is ever stored.
const SMALLEST_NORMAL: f32 = 6.103_515_6e-5;

/// The f16 bits stored for `v`: rounded to nearest, ties to even; a signed zero where
/// |v| < 2^-14; infinity past f16's range (from 65520 on); a quiet NaN (0x7e00 with `v`'s
/// sign) for NaN.
pub fn f16_storage_bits(v: f32) -> u16 {
    let sign = ((v.to_bits() >> 16) & 0x8000) as u16;
    if v.is_nan() {
        return sign | 0x7e00;
    }
    if v.abs() < SMALLEST_NORMAL {
        return sign;
    }
    // `half` rounds to nearest even, saturating to infinity as IEEE 754 does.
    f16::from_f32(v).to_bits()
}

/// The value the GPU's products see for a weight `v` stored in f16 (exact in f32).
pub fn f16_storage_value(v: f32) -> f32 {
    f16::from_bits(f16_storage_bits(v)).to_f32()
}

/// Rounds `act` (a layer's saved activations with `hidden` units,
/// [`super::recurrent::Saved::act`]) as f16 storage stores them for `cell`: those
/// [`is_f16_activation`] names in each row, each value to f32, then through
/// [`f16_storage_value`].
pub fn round_saved_activations<T: Real>(cell: CellKind, hidden: usize, act: &mut [T]) {
    let width = cell.act_width() * hidden;
    if f16_activations(cell) == 0 || width == 0 {
        return;
    }
    for row in act.chunks_mut(width) {
        // A column of `hidden` values per activation.
        for (a, column) in row.chunks_mut(hidden).enumerate() {
            if !is_f16_activation(cell, a) {
                continue;
            }
            for v in column {
                let rounded = f16_storage_value(v.to_f32().unwrap_or(f32::NAN));
                *v = T::from(rounded).unwrap_or_else(T::nan);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even_and_flushes_below_the_smallest_normal() {
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to the even one, 1.
        assert_eq!(f16_storage_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9: up.
        assert_eq!(f16_storage_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // Just past the halfway point rounds up.
        assert_eq!(
            f16_storage_bits(1.0 + 2f32.powi(-11) + 2f32.powi(-23)),
            0x3c01
        );
        assert_eq!(f16_storage_bits(2f32.powi(-14)), 0x0400);
        assert_eq!(f16_storage_bits(-2f32.powi(-15)), 0x8000);
        assert_eq!(f16_storage_bits(65504.0), 0x7bff);
        assert_eq!(f16_storage_bits(65519.0), 0x7bff);
        assert_eq!(f16_storage_bits(65520.0), 0x7c00);
        assert_eq!(f16_storage_bits(f32::NEG_INFINITY), 0xfc00);
        assert_eq!(f16_storage_bits(-f32::NAN), 0xfe00);
        assert_eq!(f16_storage_value(0.1), 0.099975586);
    }

    #[test]
    fn rounds_the_saved_activations_that_f16_storage_keeps_in_f16() {
        // Two rows of one unit's four activations (RNN: eight rows of one).
        let act = [0.1f64, -0.7, 1e-5, 0.333_333_333, 0.1, 0.2, 0.3, 0.4];
        // 0.1, -0.7 and 1/3 to their nearest f16, 1e-5 (below 2^-14) to zero.
        let (f1, f7, f3) = (0.0999755859375, -0.7001953125, 0.333251953125);
        let (f2, f3b, f4) = (0.199951171875, 0.300048828125, 0.39990234375);
        for cell in CellKind::ALL {
            let mut got = act;
            round_saved_activations(cell, 1, &mut got);
            let want: Vec<f64> = match cell {
                CellKind::Lstm | CellKind::Gru => vec![f1, f7, 0.0, f3, f1, f2, f3b, f4],
                // r and n rounded; z and r * h as they were.
                CellKind::GruResetBefore => vec![f1, -0.7, 0.0, 0.333_333_333, f1, 0.2, f3b, 0.4],
                _ => act.to_vec(),
            };
            assert_eq!(got.to_vec(), want, "{cell:?}");
        }
    }
}
