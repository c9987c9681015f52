//! Routing keys and binding patterns: which bindings a message's dotted
//! routing key reaches.
//!
//! A routing key is a sequence of words separated by `.`; the empty key
//! has no words, and `a..b` has an empty middle word. In a pattern, `*`
//! matches exactly one word and `#` matches zero or more words; any other
//! word matches itself. So `#` matches every key including the empty one,
//! `a.#` matches `a`, and `a.*` matches neither `a` nor `a.b.c`.

mod pattern;
mod trie;

pub use pattern::{Pattern, PatternError, Word, MAX_KEY_BYTES};
pub use trie::BindingTrie;

/// Splits a routing key into its words; the empty key has none.
pub fn key_words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

#[cfg(test)]
mod tests;
