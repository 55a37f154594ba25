//! The Huffman tree of hierarchical softmax: each word's path of inner nodes from the root
//! and the branch (0 or 1) taken at each, as word2vec.c builds it from the word counts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Codes and inner-node ids (rows of the output matrix, `0..inner_nodes()`) for every word.
#[derive(Clone, Debug)]
pub struct Huffman {
    offsets: Vec<usize>,
    codes: Vec<u8>,
    points: Vec<u32>,
    inner: usize,
}

impl Huffman {
    /// The tree over words with these counts. A single word gets one inner node and code 0.
    pub fn new(counts: &[u64]) -> Self {
        let v = counts.len();
        if v <= 1 {
            return Self {
                offsets: vec![0, v],
                codes: vec![0; v],
                points: vec![0; v],
                inner: 1,
            };
        }
        // Node ids: leaves 0..v, inner nodes v..2v-1 (the root last). Ties merge the older
        // node first, so the tree is the same on every run.
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| Reverse((c, i)))
            .collect();
        let mut parent = vec![0usize; 2 * v - 1];
        let mut branch = vec![0u8; 2 * v - 1];
        for node in v..2 * v - 1 {
            let Reverse((c1, a)) = heap.pop().expect("two nodes left");
            let Reverse((c2, b)) = heap.pop().expect("two nodes left");
            parent[a] = node;
            parent[b] = node;
            branch[b] = 1;
            heap.push(Reverse((c1 + c2, node)));
        }
        let root = 2 * v - 2;
        let (mut offsets, mut codes, mut points) = (vec![0], Vec::new(), Vec::new());
        let (mut path_codes, mut path_points) = (Vec::new(), Vec::new());
        for leaf in 0..v {
            path_codes.clear();
            path_points.clear();
            let mut node = leaf;
            while node != root {
                path_codes.push(branch[node]);
                node = parent[node];
                path_points.push((node - v) as u32);
            }
            codes.extend(path_codes.iter().rev());
            points.extend(path_points.iter().rev());
            offsets.push(codes.len());
        }
        Self {
            offsets,
            codes,
            points,
            inner: v - 1,
        }
    }

    /// Rows of the hierarchical-softmax output matrix.
    pub fn inner_nodes(&self) -> usize {
        self.inner
    }

    /// The branches from the root down to `word`.
    pub fn code(&self, word: usize) -> &[u8] {
        &self.codes[self.offsets[word]..self.offsets[word + 1]]
    }

    /// The inner nodes from the root down to `word`'s parent.
    pub fn points(&self, word: usize) -> &[u32] {
        &self.points[self.offsets[word]..self.offsets[word + 1]]
    }
}
