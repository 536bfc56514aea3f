//! Requests that the candidate would route elsewhere than the live table
//! (SPEC 10.1): a count per (live route, candidate route) pair that
//! differ, with the first few requests of each as examples.
//!
//! The request path finds its pair's slot in a lock-free map by a digest
//! of the two names and bumps an atomic; only the first examples of a pair
//! allocate (their method, host and path), each written once into a slot
//! of its own.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde::Serialize;

/// Examples kept per pair (SPEC 10.1).
pub const EXAMPLES: usize = 5;

/// The most pairs counted; past it, moves are counted in the total only.
/// Two tables of a thousand routes each cannot make this many pairs from
/// any traffic that matters, and it bounds memory whatever comes.
const MAX_PAIRS: usize = 10_000;

/// One request, as an example of a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    pub method: String,
    pub host: Option<String>,
    pub path: String,
}

/// What the request path knows about a request when it compares: enough
/// to make an example, borrowed until one is needed.
pub struct Seen<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
}

#[derive(Debug)]
struct Pair {
    from: Option<String>,
    to: Option<String>,
    count: AtomicU64,
    taken: AtomicUsize,
    examples: [OnceLock<Example>; EXAMPLES],
}

/// One pair as `GET /candidate` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub from: Option<String>,
    pub to: Option<String>,
    pub count: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug)]
pub struct Moves {
    pairs: papaya::HashMap<u64, Pair, foldhash::fast::FixedState>,
    total: AtomicU64,
}

impl Default for Moves {
    fn default() -> Self {
        Moves {
            pairs: papaya::HashMap::builder()
                .hasher(foldhash::fast::FixedState::default())
                .build(),
            total: AtomicU64::new(0),
        }
    }
}

/// The digest of a pair of names; a name and no name differ.
fn digest(from: Option<&str>, to: Option<&str>) -> u64 {
    let mut hasher = foldhash::fast::FixedState::with_seed(0x5157_1c4d).build_hasher();
    for name in [from, to] {
        match name {
            Some(name) => {
                hasher.write_u8(1);
                hasher.write(name.as_bytes());
                hasher.write_u8(0xff);
            }
            None => hasher.write_u8(0),
        }
    }
    hasher.finish()
}

impl Moves {
    /// Counts one request that `from` (the live table's route) and `to`
    /// (the candidate's) disagree on. Callers skip agreeing pairs.
    pub fn count(&self, from: Option<&str>, to: Option<&str>, seen: &Seen<'_>) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let key = digest(from, to);
        let pairs = self.pairs.pin();
        let pair = match pairs.get(&key) {
            Some(pair) => pair,
            None if pairs.len() >= MAX_PAIRS => return,
            None => pairs.get_or_insert_with(key, || Pair {
                from: from.map(str::to_owned),
                to: to.map(str::to_owned),
                count: AtomicU64::new(0),
                taken: AtomicUsize::new(0),
                examples: Default::default(),
            }),
        };
        if pair.from.as_deref() != from || pair.to.as_deref() != to {
            // Two pairs with one digest: counted in the total only.
            return;
        }
        pair.count.fetch_add(1, Ordering::Relaxed);
        if pair.taken.load(Ordering::Relaxed) < EXAMPLES {
            let slot = pair.taken.fetch_add(1, Ordering::Relaxed);
            if let Some(example) = pair.examples.get(slot) {
                let _ = example.set(Example {
                    method: seen.method.to_owned(),
                    host: seen.host.map(str::to_owned),
                    path: seen.path.to_owned(),
                });
            }
        }
    }

    /// Every request counted as a move.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Every pair, the largest count first.
    pub fn report(&self) -> Vec<Move> {
        let pairs = self.pairs.pin();
        let mut moves: Vec<Move> = pairs
            .values()
            .map(|pair| Move {
                from: pair.from.clone(),
                to: pair.to.clone(),
                count: pair.count.load(Ordering::Relaxed),
                examples: pair
                    .examples
                    .iter()
                    .filter_map(|e| e.get().cloned())
                    .collect(),
            })
            .collect();
        moves.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(path: &str) -> Seen<'_> {
        Seen {
            method: "GET",
            host: Some("api.example.com"),
            path,
        }
    }

    #[test]
    fn pairs_are_counted_apart_with_their_first_examples() {
        let moves = Moves::default();
        for i in 0..12 {
            let path = format!("/api/users/{i}");
            moves.count(Some("users"), Some("users-v2"), &seen(&path));
        }
        moves.count(None, Some("new"), &seen("/new"));
        moves.count(Some("old"), None, &seen("/old"));
        let report = moves.report();
        assert_eq!(moves.total(), 14);
        assert_eq!(report.len(), 3);
        assert_eq!(report[0].from.as_deref(), Some("users"));
        assert_eq!(report[0].count, 12);
        assert_eq!(report[0].examples.len(), EXAMPLES);
        assert_eq!(report[0].examples[0].path, "/api/users/0");
        assert_eq!(report[1].from, None);
        assert_eq!(report[2].to, None);
    }

    #[test]
    fn a_name_and_no_name_make_different_digests() {
        assert_ne!(digest(Some("a"), None), digest(None, Some("a")));
        assert_ne!(digest(Some("ab"), Some("c")), digest(Some("a"), Some("bc")));
    }
}
