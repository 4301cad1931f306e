//! Text for speech, whatever the voice: normalisation (numbers, times, currency, abbreviations
//! read as words) and sentence splitting, whole or streamed from a language model.

mod abbrev;
mod normalize;
mod numbers;
mod readings;
mod split;

pub use normalize::{normalize, spoken_word_counts};
pub use split::{ends_mid_phrase, split_sentences, SentenceSplitter, SplitOptions};
