//! The standard evaluations: word-pair similarity (Spearman and Pearson correlation of the
//! cosines with human scores) and analogies in the questions-words.txt format (accuracy of
//! 3CosAdd, per section and overall). A word missing from the vocabulary is looked up again
//! in lower case, as these files are often capitalised and corpora often are not.

use std::path::Path;

use crate::error::{bail, err, Result};
use serde::Serialize;

use super::vectors::KeyedVectors;

fn lookup(kv: &KeyedVectors, word: &str) -> Option<usize> {
    kv.get_index(word)
        .or_else(|| kv.get_index(&word.to_lowercase()))
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = crate::io::read_file(path, "evaluation file")?;
    String::from_utf8(bytes).map_err(|e| {
        err!(
            Format,
            "{}: invalid UTF-8 at byte offset {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The word-pair similarity figures of one file.
#[derive(Clone, Debug, Serialize)]
pub struct PairsResult {
    /// Pearson correlation of the cosines with the human scores, over the pairs scored.
    pub pearson: f64,
    /// Spearman rank correlation (ties ranked by their mean rank), the figure usually reported.
    pub spearman: f64,
    /// Pairs scored (both words known).
    pub pairs: usize,
    /// Pairs skipped because a word is out of the vocabulary.
    pub oov: usize,
    /// `oov / (pairs + oov)`.
    pub oov_ratio: f64,
}

/// Evaluates on a file of `word1<TAB>word2<TAB>score` lines (`#` starts a comment line).
pub fn evaluate_pairs(kv: &KeyedVectors, path: &Path) -> Result<PairsResult> {
    let text = read_text(path)?;
    let (mut model, mut human, mut oov) = (Vec::new(), Vec::new(), 0);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [a, b, score] = fields[..] else {
            bail!(
                Format,
                "{} line {}: expected `word1<TAB>word2<TAB>score`, found {line:?}",
                path.display(),
                n + 1
            );
        };
        let score: f64 = score
            .trim()
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| {
                err!(
                    Format,
                    "{} line {}: score {score:?} is not a number",
                    path.display(),
                    n + 1
                )
            })?;
        match (lookup(kv, a.trim()), lookup(kv, b.trim())) {
            (Some(i), Some(j)) => {
                model.push(super::vectors::cosine(kv.row(i), kv.row(j)) as f64);
                human.push(score);
            }
            _ => oov += 1,
        }
    }
    if model.len() < 2 {
        bail!(
            Invalid,
            "{}: {} pairs with both words in the vocabulary ({oov} out of it): need at least 2",
            path.display(),
            model.len()
        );
    }
    Ok(PairsResult {
        pearson: pearson(&model, &human),
        spearman: spearman(&model, &human),
        pairs: model.len(),
        oov,
        oov_ratio: oov as f64 / (model.len() + oov) as f64,
    })
}

/// Pearson's correlation coefficient (0 when either side is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Ranks from 1, ties given their mean rank.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation: Pearson's on the ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// The analogy questions of one section (or all of them).
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// The section's header without its `:` (e.g. `capital-common-countries`), or "overall".
    pub name: String,
    /// Questions answered correctly.
    pub correct: usize,
    /// Questions asked (all four words known).
    pub total: usize,
    /// Questions skipped for a word out of the vocabulary.
    pub skipped: usize,
}

impl Section {
    /// `correct / total`, in `[0, 1]`; 0 where no question was asked.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// The analogy figures of one file.
#[derive(Clone, Debug, Serialize)]
pub struct AnalogyResult {
    /// Every section, in file order.
    pub sections: Vec<Section>,
    /// The sections summed, named "overall".
    pub overall: Section,
}

/// Evaluates on a questions-words.txt file: `: section` headers, then lines `a b c d` for
/// "a is to b as c is to d"; a question counts as correct when 3CosAdd's best word,
/// the three question words excluded, is d.
pub fn evaluate_analogies(kv: &KeyedVectors, path: &Path) -> Result<AnalogyResult> {
    evaluate_analogies_with(kv, path, |query, exclude| {
        Ok(kv.top_k_by_dot(query, 1, exclude).first().map(|x| x.0))
    })
}

/// [`evaluate_analogies`] on the GPU: the scan over the vocabulary runs there.
pub fn evaluate_analogies_gpu(
    kv: &KeyedVectors,
    gpu: &crate::gpu::Gpu,
    path: &Path,
) -> Result<AnalogyResult> {
    let index = kv.gpu_index(gpu, 1)?;
    evaluate_analogies_with(kv, path, |query, exclude| {
        Ok(index.top_k(query, exclude)?.first().map(|x| x.0))
    })
}

/// The analogy evaluation with `best(query, exclude)` finding the row closest to a unit
/// query, the excluded rows skipped.
pub fn evaluate_analogies_with(
    kv: &KeyedVectors,
    path: &Path,
    mut best: impl FnMut(&[f32], &[usize]) -> Result<Option<usize>>,
) -> Result<AnalogyResult> {
    let text = read_text(path)?;
    let mut sections: Vec<Section> = Vec::new();
    let unit = kv.unit_vectors();
    let d = kv.dim();
    let mut query = vec![0.0f32; d];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix(':') {
            sections.push(Section {
                name: name.trim().to_string(),
                correct: 0,
                total: 0,
                skipped: 0,
            });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            bail!(
                Format,
                "{} line {}: a question before any `: section` line",
                path.display(),
                n + 1
            );
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 4 {
            bail!(
                Format,
                "{} line {}: expected four words, found {line:?}",
                path.display(),
                n + 1
            );
        }
        let ids: Vec<Option<usize>> = words.iter().map(|w| lookup(kv, w)).collect();
        let [Some(a), Some(b), Some(c), Some(expected)] = ids[..] else {
            section.skipped += 1;
            continue;
        };
        let row = |i: usize| &unit[i * d..(i + 1) * d];
        for (k, q) in query.iter_mut().enumerate() {
            *q = row(b)[k] - row(a)[k] + row(c)[k];
        }
        let norm = crate::cpu::word2vec::dot(&query, &query).sqrt();
        if norm > 0.0 {
            query.iter_mut().for_each(|x| *x /= norm);
        }
        let answer = best(&query, &[a, b, c])?;
        section.total += 1;
        if answer == Some(expected) {
            section.correct += 1;
        }
    }
    if sections.is_empty() {
        bail!(
            Format,
            "{}: no `: section` line and no questions",
            path.display()
        );
    }
    let overall = Section {
        name: "overall".to_string(),
        correct: sections.iter().map(|s| s.correct).sum(),
        total: sections.iter().map(|s| s.total).sum(),
        skipped: sections.iter().map(|s| s.skipped).sum(),
    };
    Ok(AnalogyResult { sections, overall })
}
