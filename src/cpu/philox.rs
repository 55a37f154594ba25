//! Philox4x32-10, the counter-based generator in `shaders/common.wgsl`, bit for bit.
//!
//! Why Philox: it is counter-based (output = f(counter, key), no state), so element `i` of
//! step `s` is drawn independently on every invocation and the CPU and GPU agree exactly;
//! it is the generator of cuRAND and Random123, passes BigCrush, and needs only 32-bit
//! multiplies, which WGSL has.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Ten Philox rounds of `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The draw recur uses for element `index` of `(seed, step, stream)`: the first output
/// word of counter `(index, stream, step_lo, step_hi)` under key `(seed_lo, seed_hi)`.
pub fn draw(seed: u64, step: u64, stream: u32, index: u32) -> u32 {
    philox4x32_10(
        [index, stream, step as u32, (step >> 32) as u32],
        [seed as u32, (seed >> 32) as u32],
    )[0]
}

#[cfg(test)]
mod tests {
    use super::philox4x32_10;

    #[test]
    fn philox_matches_the_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }
}
