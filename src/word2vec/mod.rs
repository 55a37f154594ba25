//! word2vec (Mikolov et al. 2013) as word2vec.c and gensim implement it: CBOW and skip-gram,
//! with a full softmax, hierarchical softmax or negative sampling output layer; a streaming
//! corpus reader; keyed vectors (cosine similarity, most_similar, 3CosAdd analogies); the
//! word-pair and analogy evaluations; word2vec.c's text and binary vector files.

pub mod corpus;
pub mod eval;
pub mod format;
mod gpu_batches;
pub mod gpu_train;
pub mod grad;
pub mod huffman;
mod progress;
pub mod sampling;
pub mod train;
pub mod vectors;
pub mod vocab;

pub use eval::{
    evaluate_analogies, evaluate_analogies_gpu, evaluate_pairs, AnalogyResult, PairsResult, Section,
};
pub use format::{load, load_binary, load_embedding, load_text, save_binary, save_text};
pub use gpu_train::{
    plan_run, train_gpu, train_with_vocab_gpu, train_with_vocab_gpu_using, GpuTrainOptions,
};
pub use train::{
    train, train_on, train_with_vocab, train_with_vocab_on, Arch, Config, Output, TrainReport,
};
pub use vectors::{cosine, KeyedVectors};
pub use vocab::Vocab;
