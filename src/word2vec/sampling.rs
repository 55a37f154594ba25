//! Randomness for the trainer: a small per-thread generator and the alias table that draws
//! negative samples from the unigram distribution raised to 0.75 in O(1).

/// SplitMix64: fast, and a stream per (seed, thread), so a 1-thread run is the same for a
/// seed every time.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator of stream `stream` (e.g. a thread's index) for `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n < 2^32).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

/// Walker's alias table (Vose's construction) for a discrete distribution.
#[derive(Clone, Debug)]
pub struct AliasTable {
    prob: Vec<f32>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// The distribution proportional to `count^power`.
    pub fn unigram(counts: &[u64], power: f64) -> Self {
        let weights: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(power)).collect();
        Self::new(&weights)
    }

    /// The distribution proportional to `weights` (non-negative, not all zero).
    pub fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0f32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as f32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Self { prob, alias }
    }

    /// Draws an index with probability proportional to its weight (as given to
    /// [`Self::new`] or [`Self::unigram`]).
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.prob.len() as u64) >> 32) as usize;
        let coin = (r & 0xFF_FFFF) as f32 * (1.0 / (1u32 << 24) as f32);
        if coin < self.prob[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }

    /// The probability of drawing `i` (for tests).
    pub fn probability(&self, i: usize) -> f64 {
        let n = self.prob.len() as f64;
        let mut p = self.prob[i] as f64 / n;
        for (j, &a) in self.alias.iter().enumerate() {
            if a as usize == i && j != i {
                p += (1.0 - self.prob[j] as f64) / n;
            }
        }
        p
    }
}
