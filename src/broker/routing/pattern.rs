//! Binding patterns, parsed and checked once when a binding is made.

use std::fmt;

/// Maximum length of a routing key or pattern, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// One word of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Word {
    /// Matches this exact word.
    Literal(String),
    /// `*`: matches exactly one word.
    One,
    /// `#`: matches zero or more words.
    Any,
}

/// A parsed binding pattern such as `orders.*.created` or `logs.#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    words: Vec<Word>,
}

/// The reason a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is longer than [`MAX_KEY_BYTES`].
    #[error("pattern is {0} bytes, the maximum is {MAX_KEY_BYTES}")]
    TooLong(usize),
    /// A word mixes `*` or `#` with other characters, like `a*`.
    #[error("word `{0}` mixes a wildcard with other characters; `*` and `#` must be whole words")]
    MixedWildcard(String),
}

impl Pattern {
    /// Parses `text`: words separated by `.`, each `*`, `#` or a literal
    /// without those characters. The empty pattern matches only the empty
    /// key.
    ///
    /// # Errors
    ///
    /// `TooLong` over [`MAX_KEY_BYTES`], and `MixedWildcard` for a word such
    /// as `a#` or `**`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.len() > MAX_KEY_BYTES {
            return Err(PatternError::TooLong(text.len()));
        }
        let words = super::key_words(text)
            .into_iter()
            .map(|word| match word {
                "*" => Ok(Word::One),
                "#" => Ok(Word::Any),
                word if word.contains(['*', '#']) => {
                    Err(PatternError::MixedWildcard(word.to_string()))
                }
                word => Ok(Word::Literal(word.to_string())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Pattern { words })
    }

    /// Returns the pattern's words.
    pub fn words(&self) -> &[Word] {
        &self.words
    }

    /// Returns whether the pattern matches the routing key `key`, by direct
    /// comparison. [`super::BindingTrie`] does the same for many patterns
    /// at once.
    pub fn matches(&self, key: &str) -> bool {
        matches_words(&self.words, &super::key_words(key))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self
            .words
            .iter()
            .map(|word| match word {
                Word::Literal(text) => text.as_str(),
                Word::One => "*",
                Word::Any => "#",
            })
            .collect();
        f.write_str(&words.join("."))
    }
}

/// Matches pattern words against key words. A table of which pattern
/// prefixes match which key prefixes keeps it at O(pattern words × key
/// words), however many `#` there are.
fn matches_words(pattern: &[Word], key: &[&str]) -> bool {
    // reachable[j]: the pattern prefix so far matches the first j key words.
    let mut reachable = vec![false; key.len() + 1];
    reachable[0] = true;
    for word in pattern {
        let mut next = vec![false; key.len() + 1];
        if let Word::Any = word {
            // `#` reaches every position from the first reachable one on.
            if let Some(first) = reachable.iter().position(|&reached| reached) {
                for slot in &mut next[first..] {
                    *slot = true;
                }
            }
            reachable = next;
            continue;
        }
        for j in 0..=key.len() {
            if !reachable[j] {
                continue;
            }
            match word {
                Word::Any => unreachable!("handled above"),
                Word::One => {
                    if j < key.len() {
                        next[j + 1] = true;
                    }
                }
                Word::Literal(text) => {
                    if j < key.len() && key[j] == text {
                        next[j + 1] = true;
                    }
                }
            }
        }
        reachable = next;
    }
    reachable[key.len()]
}
