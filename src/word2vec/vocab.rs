//! The vocabulary: word counts from one pass over the corpus, `min_count`, an optional cap on
//! its size, and word2vec's subsampling of frequent words.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{bail, Result};

use super::corpus::LineReader;

/// Words sorted by count, most frequent first (ties in order of first appearance), as
/// word2vec.c sorts them; ids are positions in this order.
#[derive(Clone, Debug)]
pub struct Vocab {
    words: Vec<String>,
    counts: Vec<u64>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Counts the tokens of the corpus at `path` and keeps the words seen at least
    /// `min_count` times, at most `max_size` of them (the most frequent).
    pub fn scan(path: &Path, min_count: u64, max_size: Option<usize>) -> Result<Self> {
        let mut counts: HashMap<String, (u64, usize)> = HashMap::new();
        let mut reader = LineReader::open(path)?;
        while let Some(line) = reader.next_line()? {
            for token in line.split_whitespace() {
                if let Some(entry) = counts.get_mut(token) {
                    entry.0 += 1;
                } else {
                    let order = counts.len();
                    counts.insert(token.to_string(), (1, order));
                }
            }
        }
        if counts.is_empty() {
            bail!(Invalid, "corpus {} has no words", path.display());
        }
        let mut list: Vec<(String, u64, usize)> =
            counts.into_iter().map(|(w, (c, o))| (w, c, o)).collect();
        list.sort_by_key(|&(_, o_count, order)| (std::cmp::Reverse(o_count), order));
        Self::from_sorted(
            list.into_iter().map(|(w, c, _)| (w, c)),
            min_count,
            max_size,
        )
        .map_err(|e| e.context(format!("corpus {}", path.display())))
    }

    /// A vocabulary from `(word, count)` pairs in first-appearance order.
    pub fn from_counts(
        pairs: impl IntoIterator<Item = (String, u64)>,
        min_count: u64,
        max_size: Option<usize>,
    ) -> Result<Self> {
        let mut list: Vec<(String, u64)> = pairs.into_iter().collect();
        if list.is_empty() {
            bail!(Invalid, "no words to build a vocabulary from");
        }
        list.sort_by_key(|&(_, c)| std::cmp::Reverse(c));
        Self::from_sorted(list, min_count, max_size)
    }

    fn from_sorted(
        list: impl IntoIterator<Item = (String, u64)>,
        min_count: u64,
        max_size: Option<usize>,
    ) -> Result<Self> {
        if max_size == Some(0) {
            bail!(Invalid, "max vocabulary size 0: expected at least 1");
        }
        let mut list = list.into_iter().peekable();
        let (top_word, top_count) = match list.peek() {
            Some((w, c)) => (w.clone(), *c),
            None => bail!(Invalid, "no words to build a vocabulary from"),
        };
        let cap = max_size.unwrap_or(usize::MAX);
        let (mut words, mut counts, mut index) = (Vec::new(), Vec::new(), HashMap::new());
        for (w, c) in list {
            if c < min_count || words.len() == cap {
                break;
            }
            if index.insert(w.clone(), words.len() as u32).is_some() {
                bail!(Invalid, "word {w:?} is listed twice");
            }
            words.push(w);
            counts.push(c);
        }
        if words.is_empty() {
            bail!(
                Invalid,
                "the vocabulary is empty after min_count={min_count}: the most frequent word, \
                 {top_word:?}, occurs {top_count} times"
            );
        }
        if words.len() > u32::MAX as usize {
            bail!(
                Limit,
                "vocabulary of {} words: at most {} supported",
                words.len(),
                u32::MAX
            );
        }
        Ok(Self {
            words,
            counts,
            index,
        })
    }

    /// Words kept.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether no word was kept.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words in id order (most frequent first).
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Each word's count in the corpus, in id order.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The id of `word`; `None` where it was not kept.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// Occurrences of the kept words in the corpus (one pass).
    pub fn train_words(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each word's probability of being kept under word2vec.c's subsampling formula,
    /// `(sqrt(c / t) + 1) * t / c` with `t = sample * train_words` (1 when `sample` is 0).
    pub fn keep_probabilities(&self, sample: f64) -> Vec<f32> {
        let t = sample * self.train_words() as f64;
        self.counts
            .iter()
            .map(|&c| {
                if sample <= 0.0 {
                    1.0
                } else {
                    let c = c as f64;
                    (((c / t).sqrt() + 1.0) * t / c).min(1.0) as f32
                }
            })
            .collect()
    }
}
