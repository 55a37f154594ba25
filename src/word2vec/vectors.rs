//! Keyed vectors: a word -> vector table with cosine similarity, most_similar and 3CosAdd
//! analogies over the whole vocabulary.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{bail, Result};

use crate::cpu::word2vec::dot;
use crate::nn::{Embedding, HostTensor};

/// Words and their vectors (row-major, `len() x dim()`).
#[derive(Debug)]
pub struct KeyedVectors {
    words: Vec<String>,
    index: HashMap<String, usize>,
    dim: usize,
    data: Vec<f32>,
    /// Rows scaled to unit length, computed once on first use.
    unit: OnceLock<Vec<f32>>,
}

impl Clone for KeyedVectors {
    fn clone(&self) -> Self {
        Self {
            words: self.words.clone(),
            index: self.index.clone(),
            dim: self.dim,
            data: self.data.clone(),
            unit: OnceLock::new(),
        }
    }
}

/// The cosine of the angle between `a` and `b` (0 if either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl KeyedVectors {
    /// Checks that `data` holds `words.len() * dim` finite values and that no word repeats.
    pub fn new(words: Vec<String>, dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 {
            bail!(Invalid, "vector size 0: expected at least 1");
        }
        if words.is_empty() {
            bail!(Invalid, "no words: expected at least one vector");
        }
        if data.len() != words.len() * dim {
            bail!(
                Shape,
                "{} values for {} words of size {dim}: expected {}",
                data.len(),
                words.len(),
                words.len() * dim
            );
        }
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            bail!(
                Numerics,
                "vector of {:?} holds {}: expected finite values",
                words[i / dim],
                data[i]
            );
        }
        let mut index = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if index.insert(w.clone(), i).is_some() {
                bail!(Invalid, "word {w:?} appears twice");
            }
        }
        Ok(Self {
            words,
            index,
            dim,
            data,
            unit: OnceLock::new(),
        })
    }

    /// Words (rows).
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Values per vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The words in row order: word `i`'s vector is [`Self::row`]`(i)`.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// All vectors, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// An `Embedding` layer whose row `i` is word `i`'s vector, `trainable` or frozen, and
    /// the vocabulary mapping each word to its row id.
    pub fn to_embedding(&self, trainable: bool) -> Result<(Embedding, HashMap<String, u32>)> {
        if self.words.len() > u32::MAX as usize {
            bail!(
                Limit,
                "{} words: an embedding takes at most {} ids",
                self.words.len(),
                u32::MAX
            );
        }
        let weight = HostTensor::new(vec![self.words.len(), self.dim], self.data.clone())?;
        let vocab = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Ok((Embedding::from_vectors(weight, trainable)?, vocab))
    }

    /// The id of `word`, if it is in the vocabulary.
    pub fn get_index(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// The id of `word`, or an error naming it.
    pub fn index_of(&self, word: &str) -> Result<usize> {
        match self.index.get(word) {
            Some(&i) => Ok(i),
            None => bail!(
                Invalid,
                "word {word:?} is not in the vocabulary ({} words)",
                self.len()
            ),
        }
    }

    /// The vector of `word` (as stored, not normalised), or an error naming it.
    pub fn vector(&self, word: &str) -> Result<&[f32]> {
        let i = self.index_of(word)?;
        Ok(self.row(i))
    }

    /// The vector of word `i` (`dim()` values). Panics when `i >= len()`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Every row scaled to unit length (zero rows stay zero), computed once.
    pub fn unit_vectors(&self) -> &[f32] {
        self.unit
            .get_or_init(|| crate::cpu::word2vec::normalize_rows(&self.data, self.dim))
    }

    /// The cosine similarity of two words.
    pub fn similarity(&self, a: &str, b: &str) -> Result<f32> {
        Ok(cosine(self.vector(a)?, self.vector(b)?))
    }

    /// The `k` words closest by cosine to the mean of the unit vectors of `positive` minus
    /// those of `negative` (gensim's most_similar), the query words excluded; best first.
    pub fn most_similar(
        &self,
        positive: &[&str],
        negative: &[&str],
        k: usize,
    ) -> Result<Vec<(String, f32)>> {
        let (query, ids) = self.query(positive, negative)?;
        let top = self.top_k_by_dot(&query, k, &ids);
        Ok(top
            .into_iter()
            .map(|(i, s)| (self.words[i].clone(), s))
            .collect())
    }

    /// most_similar's query: the unit mean of the unit vectors of `positive` minus those of
    /// `negative`, and the ids of those words (to exclude from the answer).
    pub fn query(&self, positive: &[&str], negative: &[&str]) -> Result<(Vec<f32>, Vec<usize>)> {
        if positive.is_empty() && negative.is_empty() {
            bail!(Invalid, "most_similar needs at least one word");
        }
        let ids: Vec<usize> = positive
            .iter()
            .chain(negative)
            .map(|w| self.index_of(w))
            .collect::<Result<_>>()?;
        let unit = self.unit_vectors();
        let d = self.dim;
        let mut query = vec![0.0f32; d];
        for (n, &i) in ids.iter().enumerate() {
            let sign = if n < positive.len() { 1.0 } else { -1.0 };
            for (q, x) in query.iter_mut().zip(&unit[i * d..(i + 1) * d]) {
                *q += sign * x;
            }
        }
        normalize(&mut query);
        Ok((query, ids))
    }

    /// The ids and cosines of the `k` unit rows with the largest dot product with `query`
    /// (a unit vector), skipping `exclude`; best first, ties to the lower id.
    pub fn top_k_by_dot(&self, query: &[f32], k: usize, exclude: &[usize]) -> Vec<(usize, f32)> {
        crate::cpu::word2vec::top_k_cosine(self.unit_vectors(), self.dim, query, k, exclude)
    }

    /// The vectors on the GPU, normalised once there, for [`Self::most_similar_gpu`]: answers
    /// of `k` words, queries of up to 8 words.
    pub fn gpu_index(&self, gpu: &crate::gpu::Gpu, k: usize) -> Result<crate::gpu::CosineIndex> {
        let spec = crate::ops::CosineTopK::new(self.len(), self.dim, k);
        crate::gpu::CosineIndex::new(gpu, &spec, &self.data, 8)
    }

    /// [`Self::most_similar`] with the scan over the vocabulary on the GPU.
    pub fn most_similar_gpu(
        &self,
        index: &crate::gpu::CosineIndex,
        positive: &[&str],
        negative: &[&str],
    ) -> Result<Vec<(String, f32)>> {
        let (query, ids) = self.query(positive, negative)?;
        let top = index.top_k(&query, &ids)?;
        Ok(top
            .into_iter()
            .map(|(i, s)| (self.words[i].clone(), s))
            .collect())
    }

    /// "a is to b as c is to ?" by 3CosAdd: the words closest to b - a + c.
    pub fn analogy(&self, a: &str, b: &str, c: &str, k: usize) -> Result<Vec<(String, f32)>> {
        self.most_similar(&[b, c], &[a], k)
    }
}
