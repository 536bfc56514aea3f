//! Which of a route's upstreams a try goes to (SPEC 4.10, 7.6): smooth
//! weighted round robin (the default), least request (two upstreams picked
//! at random by weight, the one with fewer requests in flight per unit of
//! weight wins), or weighted rendezvous hashing of a key. Every way skips
//! the upstreams a request has tried and, while another is eligible, those
//! ejected or unhealthy; if none is, all are eligible again (better a try
//! than a certain 502).
//!
//! A pick is atomics only: the round robin is one increment on a schedule
//! computed when the table was built, and the in-flight counts each
//! upstream URL keeps (see [`RouteUpstream::in_flight`]) are read, not
//! locked.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::routes::config::{Balance, UpstreamSpec};
use crate::routes::upstream_tls::UpstreamTls;
pub use crate::routes::upstreams::key_digest;
use crate::routes::upstreams::{now_ms, RouteUpstream, MAX_TRIES};

/// The upstreams a request has been sent to, in order.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried {
    indices: [u16; MAX_ATTEMPTS],
    len: u8,
}

/// Tries one request may make in all: a connect failure's next try
/// (SPEC 4.10) or a retried answer (SPEC 7.5, at most 5).
pub const MAX_ATTEMPTS: usize = 5;

impl Tried {
    pub fn push(&mut self, index: usize) {
        if let Some(slot) = self.indices.get_mut(usize::from(self.len)) {
            *slot = index as u16;
            self.len += 1;
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        self.as_slice().iter().any(|&i| usize::from(i) == index)
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.indices[..usize::from(self.len)]
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn last(&self) -> Option<usize> {
        self.as_slice().last().map(|&i| usize::from(i))
    }
}

/// A route's upstreams and how a try picks among them.
#[derive(Debug)]
pub struct Balancer {
    upstreams: Box<[RouteUpstream]>,
    /// One full round of smooth weighted round robin, precomputed so that a
    /// pick is one atomic increment and an index, with no lock and no
    /// shared weights to update. Least request draws from it too: an
    /// upstream appears in it as many times as its weight.
    schedule: Box<[u16]>,
    next: AtomicUsize,
    balance: Balance,
}

impl Balancer {
    pub fn new(specs: &[UpstreamSpec], tls: Option<&Arc<UpstreamTls>>, balance: &Balance) -> Self {
        let weights: Vec<u32> = specs.iter().map(|u| u.weight).collect();
        Balancer {
            upstreams: specs
                .iter()
                .cloned()
                .map(|spec| RouteUpstream::new(spec, tls))
                .collect(),
            schedule: smooth_schedule(&weights),
            next: AtomicUsize::new(0),
            balance: balance.clone(),
        }
    }

    pub fn upstreams(&self) -> &[RouteUpstream] {
        &self.upstreams
    }

    pub fn upstreams_mut(&mut self) -> &mut [RouteUpstream] {
        &mut self.upstreams
    }

    pub fn balance(&self) -> &Balance {
        &self.balance
    }

    /// The upstream for a request's next try after a connect failure (or
    /// its first), or `None` when it has tried as many as it may: each
    /// upstream at most once, [`MAX_TRIES`] in all. `key` is the digest of
    /// the request's hash key, for `balance: hash`.
    pub fn pick(&self, tried: &Tried, key: Option<u64>) -> Option<usize> {
        let count = self.upstreams.len();
        if tried.len() >= count.min(MAX_TRIES) {
            return None;
        }
        if count == 1 {
            // Nowhere else to go: an ejected single upstream still gets the
            // request (better a try than a certain 502), but a trial is
            // still claimed so that the ejection's end is noticed.
            let _ = self.upstreams[0].health.try_take(now_ms);
            return Some(0);
        }
        self.choose(tried, key)
    }

    /// The upstream for a retry of an answer (SPEC 7.5): another eligible
    /// one where there is one, the same again otherwise.
    pub fn pick_again(&self, tried: &Tried, key: Option<u64>) -> Option<usize> {
        if self.upstreams.len() == 1 {
            let _ = self.upstreams[0].health.try_take(now_ms);
            return Some(0);
        }
        let untried = (0..self.upstreams.len()).any(|i| !tried.contains(i));
        if untried {
            self.choose(tried, key)
        } else {
            self.choose(&Tried::default(), key)
        }
    }

    fn choose(&self, tried: &Tried, key: Option<u64>) -> Option<usize> {
        let chosen = match (&self.balance, key) {
            (Balance::LeastRequest, _) => self.least_request(tried),
            (Balance::Hash(_), Some(key)) => self.rendezvous(tried, key),
            _ => None,
        };
        chosen.or_else(|| self.round_robin(tried))
    }

    /// The next turn of the round robin that has not been tried and will
    /// take a request. The first try takes a turn; retries walk on from
    /// where it stood, so they spread as the weights say.
    fn round_robin(&self, tried: &Tried) -> Option<usize> {
        let start = if tried.is_empty() {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed).wrapping_sub(1) + tried.len()
        };
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(now_ms);
        let len = self.schedule.len();
        let mut fallback = None;
        for offset in 0..len {
            let index = usize::from(self.schedule[(start + offset) % len]);
            if tried.contains(index) {
                continue;
            }
            fallback.get_or_insert(index);
            if self.upstreams[index].health.try_take(&mut clock) {
                return Some(index);
            }
        }
        // Every untried upstream is out: all are in again.
        fallback
    }

    /// Two upstreams drawn at random by weight, the one with fewer
    /// requests in flight per unit of weight taken. `None` when no draw
    /// finds an untried, available one: the round robin decides then.
    fn least_request(&self, tried: &Tried) -> Option<usize> {
        /// Draws per candidate before the round robin takes over: enough
        /// to find one of a few eligible upstreams among many ejected.
        const DRAWS: usize = 4;
        let now = now_ms();
        let draw = |other: Option<usize>| {
            (0..DRAWS).find_map(|_| {
                let slot = (random() % self.schedule.len() as u64) as usize;
                let index = usize::from(self.schedule[slot]);
                (Some(index) != other
                    && !tried.contains(index)
                    && self.upstreams[index].health.available(now))
                .then_some(index)
            })
        };
        // Two different upstreams where there are two: with two upstreams
        // the less loaded one always wins.
        let first = draw(None)?;
        let second = draw(Some(first)).unwrap_or(first);
        let (a, b) = (&self.upstreams[first], &self.upstreams[second]);
        // load(a) / weight(a) <= load(b) / weight(b), without division.
        let (load_a, load_b) = (a.in_flight() as u64, b.in_flight() as u64);
        let winner = if load_a * u64::from(b.spec.weight) <= load_b * u64::from(a.spec.weight) {
            first
        } else {
            second
        };
        self.upstreams[winner]
            .health
            .try_take(now_ms)
            .then_some(winner)
    }

    /// Weighted rendezvous hashing: the untried upstream with the highest
    /// `-weight / ln(u)`, `u` from the key and the upstream's URL, so a key
    /// stays on its upstream while that one is there, and removing one of
    /// n upstreams moves only its own keys. Available upstreams first; if
    /// none is, the best of the rest.
    fn rendezvous(&self, tried: &Tried, key: u64) -> Option<usize> {
        let now = now_ms();
        let score = |upstream: &RouteUpstream| {
            let mixed = mix(key ^ upstream.key_hash);
            // 53 random bits as a float in (0, 1).
            let unit = ((mixed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            -f64::from(upstream.spec.weight) / unit.ln()
        };
        let best = |available: bool| {
            self.upstreams
                .iter()
                .enumerate()
                .filter(|(i, u)| !tried.contains(*i) && u.health.available(now) == available)
                .max_by(|(_, a), (_, b)| score(a).total_cmp(&score(b)))
                .map(|(i, _)| i)
        };
        let chosen = best(true).or_else(|| best(false))?;
        let _ = self.upstreams[chosen].health.try_take(now_ms);
        Some(chosen)
    }

    /// Whether each upstream would take a request now, for `/routes/match`.
    pub fn eligible_now(&self) -> Vec<bool> {
        let now = now_ms();
        let eligible: Vec<bool> = self
            .upstreams
            .iter()
            .map(|u| u.health.eligible(now))
            .collect();
        if eligible.iter().any(|&e| e) {
            eligible
        } else {
            vec![true; eligible.len()]
        }
    }
}

/// SplitMix64's finalizer: spreads every input bit over the output, so
/// that nearby keys and URLs score independently.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    /// This thread's random state for least-request draws: no lock and
    /// nothing shared, seeded from the process's random hasher keys.
    static RANDOM: Cell<u64> = Cell::new(
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1,
    );
}

/// A random number (xorshift64*), good enough to spread draws.
fn random() -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// One round of nginx's smooth weighted round robin: each step, every
/// upstream gains its weight, the one with the most is picked and loses
/// the total. Weights 9 and 1 give `a a a a a b a a a a`: the light one
/// interleaved, never a burst.
fn smooth_schedule(weights: &[u32]) -> Box<[u16]> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for (index, &weight) in weights.iter().enumerate() {
                current[index] += i64::from(weight);
                if current[index] > current[best] {
                    best = index;
                }
            }
            current[best] -= total;
            best as u16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::config::HashOn;
    use crate::routes::upstreams::EJECT_AFTER_FAILURES;

    fn specs(urls: &[(&str, u32)]) -> Vec<UpstreamSpec> {
        urls.iter()
            .map(|(u, weight)| UpstreamSpec {
                url: url::Url::parse(u).expect("valid"),
                weight: *weight,
            })
            .collect()
    }

    #[test]
    fn smooth_schedule_interleaves_by_weight() {
        let schedule = smooth_schedule(&[9, 1]);
        assert_eq!(&*schedule, &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        let schedule = smooth_schedule(&[5, 1, 1]);
        assert_eq!(&*schedule, &[0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(&*smooth_schedule(&[1, 1, 1]), &[0, 1, 2]);
    }

    #[test]
    fn picks_skip_ejected_upstreams_until_all_are_out() {
        let balancer = Balancer::new(
            &specs(&[("http://a:1", 1), ("http://b:2", 1)]),
            None,
            &Balance::RoundRobin,
        );
        let now = now_ms();
        for _ in 0..EJECT_AFTER_FAILURES {
            balancer.upstreams()[1].health.failed(now);
        }
        for _ in 0..10 {
            assert_eq!(balancer.pick(&Tried::default(), None), Some(0));
        }
        let mut tried = Tried::default();
        tried.push(0);
        assert_eq!(
            balancer.pick(&tried, None),
            Some(1),
            "the ejected one as a last resort"
        );
        tried.push(1);
        assert_eq!(
            balancer.pick(&tried, None),
            None,
            "each upstream at most once"
        );
        assert_eq!(
            balancer.pick_again(&tried, None),
            Some(0),
            "a retry may go back"
        );
        assert_eq!(balancer.eligible_now(), [true, false]);
    }

    #[test]
    fn least_request_prefers_the_upstream_with_fewer_in_flight() {
        let balancer = Balancer::new(
            &specs(&[("http://a:1", 1), ("http://b:2", 1)]),
            None,
            &Balance::LeastRequest,
        );
        let _busy: Vec<_> = (0..5).map(|_| balancer.upstreams()[0].start()).collect();
        let picks = (0..200)
            .filter(|_| balancer.pick(&Tried::default(), None) == Some(1))
            .count();
        // A draw of two finds the idle one unless both draws are the busy
        // one: about three in four.
        assert!(picks > 100, "the idle upstream won {picks} of 200");
    }

    #[test]
    fn rendezvous_keeps_keys_and_moves_only_the_removed_upstreams() {
        let four = specs(&[
            ("http://a:1", 1),
            ("http://b:1", 1),
            ("http://c:1", 1),
            ("http://d:1", 1),
        ]);
        let hash = Balance::Hash(HashOn::ClientIp);
        let all = Balancer::new(&four, None, &hash);
        let three = Balancer::new(&four[..3], None, &hash);
        let mut moved = 0;
        let mut on_d = 0;
        for n in 0..1_000u32 {
            let key = key_digest(&n.to_be_bytes());
            let before = all.pick(&Tried::default(), Some(key)).expect("a pick");
            assert_eq!(
                all.pick(&Tried::default(), Some(key)),
                Some(before),
                "stable"
            );
            let after = three.pick(&Tried::default(), Some(key)).expect("a pick");
            if before == 3 {
                on_d += 1;
            } else if after != before {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys not on the removed upstream stay");
        assert!(
            (150..350).contains(&on_d),
            "{on_d} of 1,000 keys on one of four"
        );
    }
}
