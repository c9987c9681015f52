//! Routing-key matching with many bindings: `BindingTrie::matches` against
//! the baseline of testing every pattern in turn with `Pattern::matches`,
//! measured in the same run.
//!
//! The bindings are 10,000 patterns of three or four words drawn from 50
//! words per position, about one in five words `*` and one in ten `#`,
//! from a fixed seed. Each iteration matches 100 keys of three or four
//! words from the same vocabulary.
//! Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry::broker::routing::{BindingTrie, Pattern};

const BINDINGS: usize = 10_000;
const KEYS: usize = 100;
const VOCABULARY: u64 = 50;

/// A small deterministic generator (xorshift64), so every run uses the
/// same bindings and keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn word(&mut self, position: usize) -> String {
        format!("w{position}x{}", self.next() % VOCABULARY)
    }
}

fn patterns(rng: &mut Rng) -> Vec<Pattern> {
    (0..BINDINGS)
        .map(|_| {
            let length = 3 + (rng.next() % 2) as usize;
            let words: Vec<String> = (0..length)
                .map(|position| match rng.next() % 10 {
                    0 => "#".to_string(),
                    1 | 2 => "*".to_string(),
                    _ => rng.word(position),
                })
                .collect();
            Pattern::parse(&words.join(".")).expect("generated patterns are valid")
        })
        .collect()
}

fn keys(rng: &mut Rng) -> Vec<String> {
    (0..KEYS)
        .map(|_| {
            let length = 3 + (rng.next() % 2) as usize;
            let words: Vec<String> = (0..length).map(|position| rng.word(position)).collect();
            words.join(".")
        })
        .collect()
}

fn routing(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let patterns = patterns(&mut rng);
    let keys = keys(&mut rng);
    let mut trie = BindingTrie::new();
    for (index, pattern) in patterns.iter().enumerate() {
        trie.insert(pattern, index);
    }

    let mut group = c.benchmark_group("routing_10000_bindings");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("trie", |b| {
        b.iter(|| {
            let mut matched = 0;
            for key in &keys {
                matched += trie.matches(black_box(key)).len();
            }
            matched
        })
    });
    group.bench_function("baseline_linear_scan", |b| {
        b.iter(|| {
            let mut matched = 0;
            for key in &keys {
                matched += patterns
                    .iter()
                    .filter(|p| p.matches(black_box(key)))
                    .count();
            }
            matched
        })
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
