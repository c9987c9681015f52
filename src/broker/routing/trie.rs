//! A trie of binding patterns, so that matching a routing key costs about
//! the key's length, not the number of bindings.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use super::pattern::{Pattern, Word};

/// Binding patterns with a value each (for example a queue name); a
/// pattern may carry several values and a value several patterns.
#[derive(Debug, Clone)]
pub struct BindingTrie<V> {
    root: Node<V>,
    len: usize,
}

#[derive(Debug, Clone)]
struct Node<V> {
    literals: HashMap<String, Node<V>>,
    one: Option<Box<Node<V>>>,
    any: Option<Box<Node<V>>>,
    /// Values of the patterns that end here.
    values: Vec<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            literals: HashMap::new(),
            one: None,
            any: None,
            values: Vec::new(),
        }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.literals.is_empty()
            && self.one.is_none()
            && self.any.is_none()
    }
}

impl<V> Default for BindingTrie<V> {
    fn default() -> Self {
        BindingTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V: Clone + Eq + Hash> BindingTrie<V> {
    /// Creates an empty trie.
    pub fn new() -> BindingTrie<V> {
        BindingTrie::default()
    }

    /// Number of (pattern, value) bindings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns whether the trie contains no binding.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Binds `value` to `pattern`; returns false when it was bound already.
    pub fn insert(&mut self, pattern: &Pattern, value: V) -> bool {
        let mut node = &mut self.root;
        for word in pattern.words() {
            node = match word {
                Word::Literal(text) => node.literals.entry(text.clone()).or_default(),
                Word::One => node.one.get_or_insert_with(Box::default),
                Word::Any => node.any.get_or_insert_with(Box::default),
            };
        }
        if node.values.contains(&value) {
            return false;
        }
        node.values.push(value);
        self.len += 1;
        true
    }

    /// Removes the binding of `value` to `pattern`; returns whether it was
    /// there. Branches left empty are pruned.
    pub fn remove(&mut self, pattern: &Pattern, value: &V) -> bool {
        let removed = remove_from(&mut self.root, pattern.words(), value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Returns the values of every pattern that matches routing key `key`,
    /// each once, in no particular order.
    pub fn matches(&self, key: &str) -> Vec<V> {
        let words = super::key_words(key);
        let mut found = Vec::new();
        let mut seen_values = HashSet::new();
        // States are (node, words consumed, entered through `#`). A state
        // entered through `#` may also take one more word and stay, so each
        // state pushes at most four others and the work is
        // O(nodes × key words).
        let mut visited = HashSet::new();
        let mut stack = vec![(&self.root, 0usize, false)];
        while let Some((node, at, after_any)) = stack.pop() {
            if !visited.insert((node as *const Node<V>, at, after_any)) {
                continue;
            }
            if at == words.len() {
                for value in &node.values {
                    if seen_values.insert(value) {
                        found.push(value.clone());
                    }
                }
            }
            if after_any && at < words.len() {
                stack.push((node, at + 1, true));
            }
            if let Some(any) = &node.any {
                // `#` takes zero or more of the remaining words.
                stack.push((any, at, true));
            }
            if at < words.len() {
                if let Some(child) = node.literals.get(words[at]) {
                    stack.push((child, at + 1, false));
                }
                if let Some(one) = &node.one {
                    stack.push((one, at + 1, false));
                }
            }
        }
        found
    }
}

fn remove_from<V: Eq>(node: &mut Node<V>, words: &[Word], value: &V) -> bool {
    let Some((first, rest)) = words.split_first() else {
        let before = node.values.len();
        node.values.retain(|bound| bound != value);
        return node.values.len() < before;
    };
    match first {
        Word::Literal(text) => {
            let Some(child) = node.literals.get_mut(text) else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if child.is_empty() {
                node.literals.remove(text);
            }
            removed
        }
        Word::One | Word::Any => {
            let slot = if matches!(first, Word::One) {
                &mut node.one
            } else {
                &mut node.any
            };
            let Some(child) = slot.as_mut() else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if child.is_empty() {
                *slot = None;
            }
            removed
        }
    }
}
