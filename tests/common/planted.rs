//! The small corpus with planted structure that both word2vec trainers are tested on: two
//! groups of words that never meet but share their own context words, so each group's
//! members should be each other's nearest neighbours.

use std::path::{Path, PathBuf};

use recur::word2vec::KeyedVectors;

pub const ANIMALS: [&str; 8] = ["cat", "dog", "cow", "pig", "eats", "runs", "sleeps", "barn"];
pub const COLOURS: [&str; 8] = [
    "red", "blue", "green", "pink", "paint", "shade", "bright", "hue",
];

/// Writes the corpus (1500 lines of 6 words, 16 distinct words) to `dir/planted.txt`.
pub fn corpus(dir: &Path) -> PathBuf {
    let mut rng = recur::word2vec::sampling::Rng::new(11, 0);
    let mut text = String::new();
    for _ in 0..1500 {
        let g = rng.below(2);
        let group = if g == 0 { &ANIMALS } else { &COLOURS };
        let (members, ctx) = (&group[..4], &group[4..]);
        let mut line = Vec::new();
        for _ in 0..6 {
            if rng.below(2) == 0 {
                line.push(members[rng.below(4)]);
            } else {
                line.push(ctx[rng.below(4)]);
            }
        }
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    let p = dir.join("planted.txt");
    std::fs::write(&p, text).unwrap();
    p
}

/// Asserts that the vectors recovered the structure: every group member's 7 nearest
/// neighbours come from its own group's sentences, and it is closer to another member of its
/// group than to a member of the other group by more than 0.2 in cosine.
pub fn assert_recovered(kv: &KeyedVectors, what: &str) {
    assert_eq!(kv.len(), 16, "{what}");
    for (group, other, context) in [
        (&ANIMALS[..4], "red", &ANIMALS),
        (&COLOURS[..4], "cat", &COLOURS),
    ] {
        for &w in group {
            let near = kv.most_similar(&[w], &[], 7).unwrap();
            for (n, _) in &near {
                assert!(context.contains(&n.as_str()), "{what}: {w} -> {near:?}");
            }
            let next = group[(group.iter().position(|x| *x == w).unwrap() + 1) % 4];
            let same = kv.similarity(w, next).unwrap();
            let diff = kv.similarity(w, other).unwrap();
            assert!(same > diff + 0.2, "{what}: {w}: {same} vs {diff}");
        }
    }
}
