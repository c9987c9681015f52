use proptest::prelude::*;

use super::*;

/// (pattern, routing key, expected match).
const CASES: &[(&str, &str, bool)] = &[
    // Literals.
    ("a", "a", true),
    ("a", "b", false),
    ("a.b", "a.b", true),
    ("a.b", "a", false),
    ("a.b", "a.b.c", false),
    ("orders.eu.created", "orders.eu.created", true),
    ("orders.eu.created", "orders.us.created", false),
    // `*`: exactly one word.
    ("*", "a", true),
    ("*", "", false),
    ("*", "a.b", false),
    ("a.*", "a", false),
    ("a.*", "a.b", true),
    ("a.*", "a.b.c", false),
    ("*.b", "a.b", true),
    ("*.*", "a.b", true),
    ("*.*", "a", false),
    ("a.*.c", "a.b.c", true),
    ("a.*.c", "a.c", false),
    // `#`: zero or more words.
    ("#", "", true),
    ("#", "a", true),
    ("#", "a.b.c", true),
    ("a.#", "a", true),
    ("a.#", "a.b", true),
    ("a.#", "a.b.c", true),
    ("a.#", "b", false),
    ("a.#", "", false),
    ("#.a", "a", true),
    ("#.a", "b.a", true),
    ("#.a", "a.b", false),
    ("a.#.b", "a.b", true),
    ("a.#.b", "a.x.y.b", true),
    ("a.#.b", "a.x.y", false),
    ("#.#", "", true),
    ("#.#", "a.b.c", true),
    ("#.*", "", false),
    ("#.*", "a", true),
    ("*.#", "a", true),
    ("*.#.*", "a", false),
    ("*.#.*", "a.b", true),
    // Empty words and the empty key.
    ("", "", true),
    ("", "a", false),
    ("a..b", "a..b", true),
    ("a.*.b", "a..b", true),
    ("a.b", "a..b", false),
    ("*", ".", false),
    ("*.*", ".", true),
    ("#", ".", true),
    ("a.#", "a.", true),
];

#[test]
fn pattern_table() {
    assert!(CASES.len() >= 40);
    for &(pattern, key, expected) in CASES {
        let parsed = Pattern::parse(pattern).unwrap();
        assert_eq!(
            parsed.matches(key),
            expected,
            "pattern `{pattern}` key `{key}`"
        );
        let mut trie = BindingTrie::new();
        trie.insert(&parsed, 1u32);
        let matched = !trie.matches(key).is_empty();
        assert_eq!(matched, expected, "trie: pattern `{pattern}` key `{key}`");
    }
}

#[test]
fn long_keys_match() {
    let key = vec!["w"; 127].join(".");
    assert!(Pattern::parse("#").unwrap().matches(&key));
    assert!(Pattern::parse("w.#.w").unwrap().matches(&key));
    assert!(!Pattern::parse("w.#.x").unwrap().matches(&key));
    let many_any = vec!["#"; 60].join(".");
    let mut trie = BindingTrie::new();
    trie.insert(&Pattern::parse(&many_any).unwrap(), "all");
    assert_eq!(trie.matches(&key), vec!["all"]);
}

#[test]
fn invalid_patterns_rejected() {
    assert_eq!(
        Pattern::parse("a*.b"),
        Err(PatternError::MixedWildcard("a*".into()))
    );
    assert_eq!(
        Pattern::parse("##"),
        Err(PatternError::MixedWildcard("##".into()))
    );
    let long = "a".repeat(MAX_KEY_BYTES + 1);
    assert_eq!(
        Pattern::parse(&long),
        Err(PatternError::TooLong(MAX_KEY_BYTES + 1))
    );
    assert_eq!(Pattern::parse("a.*.#").unwrap().to_string(), "a.*.#");
}

#[test]
fn trie_insert_remove_and_dedupe() {
    let mut trie = BindingTrie::new();
    let all = Pattern::parse("#").unwrap();
    let orders = Pattern::parse("orders.*").unwrap();
    assert!(trie.insert(&all, "audit"));
    assert!(trie.insert(&orders, "audit"));
    assert!(trie.insert(&orders, "billing"));
    assert!(
        !trie.insert(&orders, "billing"),
        "a repeated binding is not added twice"
    );
    assert_eq!(trie.len(), 3);

    let mut found = trie.matches("orders.eu");
    found.sort_unstable();
    assert_eq!(found, vec!["audit", "billing"], "each value once");
    assert_eq!(trie.matches("users.eu"), vec!["audit"]);

    assert!(trie.remove(&orders, &"billing"));
    assert!(!trie.remove(&orders, &"billing"));
    assert_eq!(trie.matches("orders.eu"), vec!["audit"]);
    assert!(trie.remove(&orders, &"audit"));
    assert!(trie.remove(&all, &"audit"));
    assert!(trie.is_empty());
    assert!(trie.matches("orders.eu").is_empty());
}

/// Matches by plain recursion, to check the other matchers against.
fn reference(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
        Some((word, rest)) => key.first() == Some(word) && reference(rest, &key[1..]),
    }
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just(String::new()),
    ]
}

fn pattern_word() -> impl Strategy<Value = String> {
    prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
}

proptest! {
    #[test]
    fn matchers_agree_with_reference(
        patterns in prop::collection::vec(prop::collection::vec(pattern_word(), 0..6), 1..8),
        key in prop::collection::vec(word(), 0..7),
    ) {
        let key_text = key.join(".");
        let key_parts = key_words(&key_text);
        let mut trie = BindingTrie::new();
        let mut expected = Vec::new();
        for (index, words) in patterns.iter().enumerate() {
            let text = words.join(".");
            let parsed = Pattern::parse(&text).unwrap();
            let pattern_words = key_words(&text);
            let expected_match = reference(&pattern_words, &key_parts);
            prop_assert_eq!(parsed.matches(&key_text), expected_match, "pattern `{}` key `{}`", text, key_text);
            trie.insert(&parsed, index);
            if expected_match {
                expected.push(index);
            }
        }
        let mut found = trie.matches(&key_text);
        found.sort_unstable();
        prop_assert_eq!(found, expected);
    }
}

#[test]
fn many_hashes_against_a_long_key() {
    // 127 `#` words against 127-word keys: matching stays polynomial.
    let pattern_text = vec!["#"; 127].join(".");
    let pattern = Pattern::parse(&pattern_text).unwrap();
    let key = vec!["w"; 127].join(".");
    assert!(pattern.matches(&key));
    let mut trie = BindingTrie::new();
    trie.insert(&pattern, 1);
    trie.insert(&Pattern::parse(&format!("{pattern_text}.x")).unwrap(), 2);
    for _ in 0..100 {
        assert_eq!(trie.matches(&key), vec![1]);
    }
    let with_x = format!("{key}.x");
    let mut both = trie.matches(&with_x);
    both.sort_unstable();
    assert_eq!(both, vec![1, 2]);
}
