//! Many patterns matched in one pass, answering which is the first (lowest-numbered) one
//! that matches: what the rule table needs from each of its chunks.
//!
//! `regex::RegexSet` answers the same, but it also compiles what a set never uses: a
//! reverse NFA (for the reverse searches of its single-pattern strategies) and capture
//! states. That is half of the compile time (1,024 rules: ~20 ms down to ~10 ms), and a
//! rule write recompiles a chunk on a machine that is serving requests. It also
//! allocates a result set per search. This keeps a forward lazy DFA over a capture-free
//! NFA, and the PikeVM that the lazy DFA falls back to: it quits on non-ASCII input when a
//! pattern has a Unicode `\b`, and gives up when its cache thrashes. Same syntax and
//! semantics as `regex` (Unicode, UTF-8 haystacks), as the tests below check.

use regex_automata::hybrid::dfa::{self, DFA, OverlappingState};
use regex_automata::nfa::thompson::{self, WhichCaptures, pikevm, pikevm::PikeVM};
use regex_automata::util::pool::Pool;
use regex_automata::{Input, MatchKind, PatternSet};

/// Generous limits: a chunk of long patterns makes a large automaton.
const NFA_SIZE_LIMIT: usize = 512 << 20;
const DFA_CACHE_LIMIT: usize = 64 << 20;

type CachePool = Pool<Caches, Box<dyn Fn() -> Caches + Send + Sync>>;

pub struct Patterns {
    dfa: DFA,
    pikevm: PikeVM,
    /// One cache per searching thread, as `regex` keeps them.
    caches: CachePool,
}

#[derive(Clone)]
struct Caches {
    dfa: dfa::Cache,
    /// Made on the first fallback only: it is large and rarely needed.
    pikevm: Option<pikevm::Cache>,
}

impl Patterns {
    pub fn new<P: AsRef<str>>(patterns: &[P]) -> Result<Patterns, String> {
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .which_captures(WhichCaptures::None)
                    .nfa_size_limit(Some(NFA_SIZE_LIMIT)),
            )
            .build_many(patterns)
            .map_err(|e| e.to_string())?;
        // The lazy DFA's settings for giving up are the ones `regex` uses.
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .unicode_word_boundary(true)
                    .cache_capacity(DFA_CACHE_LIMIT)
                    .minimum_cache_clear_count(Some(3))
                    .minimum_bytes_per_state(Some(10)),
            )
            .build_from_nfa(nfa.clone())
            .map_err(|e| e.to_string())?;
        let pikevm = PikeVM::builder()
            .configure(PikeVM::config().match_kind(MatchKind::All))
            .build_from_nfa(nfa)
            .map_err(|e| e.to_string())?;
        // Caches are handed out as clones of one made here, off the request path, with
        // the start state already computed: with a thousand patterns that is the costly
        // one, and the first request after a rebuild would pay for it.
        let mut template = Caches {
            dfa: dfa.create_cache(),
            pikevm: None,
        };
        let _ = dfa.try_search_fwd(&mut template.dfa, &Input::new("/"));
        let caches: CachePool = Pool::new(Box::new(move || template.clone()));
        Ok(Patterns {
            dfa,
            pikevm,
            caches,
        })
    }

    /// The lowest-numbered pattern that matches `haystack` and that `accept` takes.
    pub fn first(&self, haystack: &str, accept: impl Fn(usize) -> bool) -> Option<usize> {
        let mut caches = self.caches.get();
        let input = Input::new(haystack);
        let mut state = OverlappingState::start();
        let mut best: Option<usize> = None;
        loop {
            if self
                .dfa
                .try_search_overlapping_fwd(&mut caches.dfa, &input, &mut state)
                .is_err()
            {
                return self.first_slow(&mut caches, &input, accept);
            }
            // Every match end of every pattern, in haystack order: keep the lowest.
            let Some(hit) = state.get_match() else {
                return best;
            };
            let id = hit.pattern().as_usize();
            if best.is_none_or(|b| id < b) && accept(id) {
                best = Some(id);
            }
        }
    }

    fn first_slow(
        &self,
        caches: &mut Caches,
        input: &Input<'_>,
        accept: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let cache = caches
            .pikevm
            .get_or_insert_with(|| self.pikevm.create_cache());
        let mut hits = PatternSet::new(self.pikevm.pattern_len());
        self.pikevm
            .which_overlapping_matches(cache, input, &mut hits);
        hits.iter().map(|p| p.as_usize()).find(|&i| accept(i))
    }

    pub fn len(&self) -> usize {
        self.pikevm.pattern_len()
    }
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::RegexSet;

    /// The first match agrees with `regex::RegexSet`'s, for every pattern and haystack.
    fn agrees(patterns: &[&str], haystacks: &[&str]) {
        let ours = Patterns::new(patterns).unwrap();
        let theirs = RegexSet::new(patterns).unwrap();
        for h in haystacks {
            assert_eq!(
                ours.first(h, |_| true),
                theirs.matches(h).iter().next(),
                "first match of {h:?} in {patterns:?}"
            );
            // With a filter: the first odd-numbered match.
            assert_eq!(
                ours.first(h, |i| i % 2 == 1),
                theirs.matches(h).iter().find(|i| i % 2 == 1),
                "first odd match of {h:?} in {patterns:?}"
            );
        }
    }

    #[test]
    fn same_answers_as_regex_set() {
        let haystacks = [
            "",
            "/",
            "/api",
            "/api/v2/users/42",
            "/r7/123/x",
            "/r7/١٢٣/x",
            "/café/menu",
            "/x/users/1",
            "/UPPER",
            "/a/b/c/d/e/f/g",
        ];
        agrees(
            &[
                r"^/api/v2",
                r"^/api",
                r"users",
                r"^/r7/(\d+)/x$",
                r"^/caf\w/",
                r"(?i)^/upper$",
                r"",
                r"^$",
                r"^/(a/)?b",
                r"[/][a-z]/[b-z]/",
            ],
            &haystacks,
        );
        agrees(&[r"^/nothing$", r"^/nor-this"], &haystacks);
    }

    #[test]
    fn unicode_word_boundaries_fall_back_correctly() {
        // The lazy DFA quits on non-ASCII input with a Unicode `\b`; the PikeVM answers.
        agrees(
            &[r"\bmenu\b", r"^/caf", r"\bcafé\b"],
            &["/café/menu", "/cafémenu", "/menu", "/éemenu", "/x"],
        );
    }

    #[test]
    fn many_patterns() {
        let patterns: Vec<String> = (0..2000).map(|i| format!(r"^/r{i}/(\d+)/x$")).collect();
        let ours = Patterns::new(&patterns).unwrap();
        assert_eq!(ours.len(), 2000);
        assert_eq!(ours.first("/r1999/5/x", |_| true), Some(1999));
        assert_eq!(ours.first("/r1999/5/x", |i| i != 1999), None);
        assert_eq!(ours.first("/r19/5/y", |_| true), None);
    }

    #[test]
    fn a_bad_pattern_is_an_error() {
        assert!(Patterns::new(&["(unclosed"]).is_err());
    }
}
