//! The compiled rule table (SPEC 4.2): every enabled rule in order, matched with
//! one-pass pattern sets (`patterns.rs`, a `RegexSet` without the parts a set does not use)
//! over an `ArcSwap` snapshot; the lowest matching index wins. Built off the request path
//! and swapped whole.
//!
//! The rules are cut into chunks of about `CHUNK` patterns, one set each, matched in
//! order (up to 384 rules: one set, one pass). A rebuild reuses every chunk whose
//! rules are unchanged, with the lazy-DFA caches it has warmed: a write recompiles, and
//! cools, only the chunk it touches. With one set for everything, a write to a 5,000-rule
//! table cost ~130 ms of CPU and each request right after the swap up to ~1.5 ms while the
//! new automaton warmed up, which doubled the p99 under load. 512 is the measured balance
//! (benches/README.md): a write to 5,000 rules costs ~2.4 ms of CPU and leaves the p99 of
//! the requests around it as it was; 10,000 rules match in ~0.9 µs.
//!
//! Where a chunk ends depends on the rules, not on their positions (`cut`): with a cut
//! every 512 positions, adding, removing, enabling or disabling a rule near the front
//! shifted every later chunk, and the write recompiled them all.

use std::sync::{Arc, OnceLock};

use buntime_plugin_sdk::percent::decode_non_ascii;

use crate::patterns::Patterns;
use crate::rule::CompiledRule;

/// Patterns per set, about: a chunk ends at a rule whose id hashes to a multiple of
/// `CHUNK / 4` once it holds `3 * CHUNK / 4` rules (on average 128 rules later), and at
/// `2 * CHUNK` rules in any case. Sizes stay near 512: a set twice as big costs a write
/// more than twice as much to compile.
const CHUNK: usize = 512;

/// Cuts the enabled rules into chunks whose ends are chosen by the rules' ids, so that a
/// write changes the chunk that holds its rule (and the next, when the rule was where one
/// ended) and leaves the others as they were: their boundaries fall at the same rules.
///
/// The last static rule ends a chunk too. Static rules change only with the config file,
/// dynamic ones with every API write: a write then recompiles dynamic rules only, and with
/// a few dynamic rules behind thousands of static ones it compiles a few patterns instead
/// of a chunk of several hundred (which, on the proxy's core, slowed the requests around
/// it: benches/README.md).
fn cut<'a>(active: &'a [&'a Arc<CompiledRule>]) -> Vec<&'a [&'a Arc<CompiledRule>]> {
    let (min, every, max) = (3 * CHUNK / 4, (CHUNK / 4) as u64, 2 * CHUNK);
    let mut chunks = Vec::with_capacity(active.len() / min + 1);
    let mut start = 0;
    for (i, rule) in active.iter().enumerate() {
        let len = i + 1 - start;
        let ends = len >= min && rule.id_hash % every == 0;
        let last_static = rule.rule.readonly && active.get(i + 1).is_some_and(|n| !n.rule.readonly);
        if ends || len == max || last_static {
            chunks.push(&active[start..=i]);
            start = i + 1;
        }
    }
    if start < active.len() {
        chunks.push(&active[start..]);
    }
    chunks
}

/// Consecutive enabled rules and the set that matches them.
#[derive(Debug)]
struct Chunk {
    rules: Vec<Arc<CompiledRule>>,
    set: Patterns,
}

impl Chunk {
    fn build(rules: Vec<Arc<CompiledRule>>) -> Result<Chunk, String> {
        let patterns: Vec<&str> = rules.iter().map(|r| r.rule.pattern.as_str()).collect();
        let set = Patterns::new(&patterns)
            .map_err(|e| format!("cannot combine the rule patterns: {e}"))?;
        Ok(Chunk { rules, set })
    }

    /// Same rules (the very same compiled ones) in the same order.
    fn holds(&self, rules: &[&Arc<CompiledRule>]) -> bool {
        self.rules.len() == rules.len()
            && self.rules.iter().zip(rules).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

#[derive(Debug, Default)]
pub struct RuleTable {
    chunks: Vec<Arc<Chunk>>,
    active: usize,
    /// Every rule (disabled ones too), static then dynamic, for the API.
    all: Vec<Arc<CompiledRule>>,
}

impl RuleTable {
    /// `rules` in match order (static first, then dynamic sorted by order).
    pub fn build(rules: Vec<Arc<CompiledRule>>) -> Result<RuleTable, String> {
        RuleTable::default().rebuild(rules)
    }

    /// A table for `rules` that shares the chunks of `self` that did not change.
    pub fn rebuild(&self, rules: Vec<Arc<CompiledRule>>) -> Result<RuleTable, String> {
        // References: the rules of the chunks reused keep their reference counts untouched.
        // Sized up front: collected from a filter, 5,000 rules took a dozen reallocations
        // and copies, a fifth of a rebuild's instructions (benches/README.md).
        let mut active: Vec<&Arc<CompiledRule>> = Vec::with_capacity(rules.len());
        active.extend(rules.iter().filter(|r| r.rule.enabled));
        let chunks = cut(&active)
            .into_iter()
            .map(|part| match self.chunks.iter().find(|c| c.holds(part)) {
                Some(same) => Ok(Arc::clone(same)),
                None => Chunk::build(part.iter().map(|r| Arc::clone(r)).collect()).map(Arc::new),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let active = active.len();
        Ok(RuleTable {
            chunks,
            active,
            all: rules,
        })
    }

    /// The first enabled rule whose pattern matches `path`, as sent or with its non-ASCII
    /// characters decoded (`^/café` matches `/caf%C3%A9`, as clients send it). A WebSocket
    /// upgrade skips rules with `ws: false`.
    pub fn matching(&self, path: &str, websocket: bool) -> Option<&Arc<CompiledRule>> {
        let first = |path: &str| {
            self.chunks.iter().enumerate().find_map(|(c, chunk)| {
                let found = chunk
                    .set
                    .first(path, |i| !websocket || chunk.rules[i].rule.ws)?;
                Some(((c, found), &chunk.rules[found]))
            })
        };
        let sent = first(path);
        match decode_non_ascii(path).and_then(|decoded| first(&decoded)) {
            Some(d) if sent.as_ref().is_none_or(|s| d.0 < s.0) => Some(d.1),
            _ => sent.map(|s| s.1),
        }
    }

    pub fn all(&self) -> &[Arc<CompiledRule>] {
        &self.all
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CompiledRule>> {
        self.all.iter().find(|r| &*r.id == id)
    }

    /// Enabled rules.
    pub fn active_len(&self) -> usize {
        self.active
    }

    /// How many sets the rules are matched with: for tests and benches.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// How many chunks a rebuild from `self` would reuse: for tests and benches.
    pub fn shared_chunks(&self, other: &RuleTable) -> usize {
        self.chunks
            .iter()
            .filter(|c| other.chunks.iter().any(|o| Arc::ptr_eq(c, o)))
            .count()
    }
}

/// Runs `job` on the rule-builder thread: one long-lived thread at the idle CPU priority,
/// so that building a table (compiling patterns, and assembling and dropping lists of
/// thousands of rules) only uses CPU time that proxied requests leave. The caller awaits
/// the result.
pub async fn on_builder<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    type Job = Box<dyn FnOnce() + Send>;
    static BUILDER: OnceLock<Option<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let builder = BUILDER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rule-builder".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    job();
                }
            })
            .map_err(|e| log::warn!("proxy: no rule-builder thread ({e}); building inline"))
            .ok()
            .map(|_| tx)
    });
    let Some(jobs) = builder else {
        return Ok(job());
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    jobs.send(Box::new(move || drop(reply.send(job()))))
        .map_err(|_| "the rule-builder thread is gone".to_string())?;
    answer
        .await
        .map_err(|_| "the rule-builder thread is gone".to_string())
}

/// `SCHED_IDLE` for the calling thread: it runs on CPU time nothing else wants, and a
/// proxy thread that wakes up takes its CPU at once. With nice 19 alone, a rebuild on one
/// core still raised the p99 of requests served on the other (benches/README.md). On a
/// machine with no idle CPU a write waits longer for its table, but it still completes:
/// the scheduler gives idle threads a small share.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        log::debug!("proxy: cannot lower the rule-builder's priority: {e:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Resolver;
    use crate::rule::Rule;
    use serde_json::json;

    fn rule(id: &str, fields: serde_json::Value) -> Arc<CompiledRule> {
        let r = Rule::blank(id)
            .with_fields(fields.as_object().unwrap(), true)
            .unwrap();
        Arc::new(CompiledRule::compile(r, &Resolver::default()).unwrap())
    }

    #[test]
    fn first_match_in_order_wins() {
        let t = RuleTable::build(vec![
            rule("a", json!({"pattern": "^/api/v2", "target": "http://h"})),
            rule("b", json!({"pattern": "^/api", "target": "http://h"})),
            rule(
                "off",
                json!({"pattern": "^/", "target": "http://h", "enabled": false}),
            ),
            rule("c", json!({"pattern": "users", "target": "http://h"})),
        ])
        .unwrap();
        let id = |p: &str| t.matching(p, false).map(|r| r.id.to_string());
        assert_eq!(id("/api/v2/x").as_deref(), Some("a"));
        assert_eq!(id("/api/v1").as_deref(), Some("b"));
        assert_eq!(
            id("/x/users/1").as_deref(),
            Some("c"),
            "unanchored unless anchored"
        );
        assert_eq!(id("/other"), None, "disabled rules never match");
        assert_eq!(t.all().len(), 4);
        assert_eq!(t.active_len(), 3);
    }

    #[test]
    fn websocket_skips_rules_without_ws() {
        let t = RuleTable::build(vec![
            rule(
                "http-only",
                json!({"pattern": "^/live", "target": "http://h", "ws": false}),
            ),
            rule("sockets", json!({"pattern": "^/live", "target": "ws://h"})),
        ])
        .unwrap();
        assert_eq!(&*t.matching("/live", false).unwrap().id, "http-only");
        assert_eq!(&*t.matching("/live", true).unwrap().id, "sockets");
    }

    #[test]
    fn thousands_of_rules() {
        let rules = (0..5000)
            .map(|i| {
                rule(
                    &format!("r{i}"),
                    json!({"pattern": format!("^/svc{i}(/.*)?$"), "target": "http://h"}),
                )
            })
            .collect();
        let t = RuleTable::build(rules).unwrap();
        assert_eq!(&*t.matching("/svc4321/x", false).unwrap().id, "r4321");
        assert!(t.matching("/nope", false).is_none());
    }

    fn many(n: usize) -> Vec<Arc<CompiledRule>> {
        (0..n)
            .map(|i| {
                rule(
                    &format!("r{i}"),
                    json!({"pattern": format!("^/svc{i}(/.*)?$"), "target": "http://h"}),
                )
            })
            .collect()
    }

    #[test]
    fn order_holds_across_chunks() {
        let mut rules = many(2 * CHUNK + 10);
        // A catch-all in the last chunk, and one shadowed by an earlier chunk's rule.
        rules.push(rule(
            "late-all",
            json!({"pattern": "^/", "target": "http://h"}),
        ));
        rules.push(rule(
            "shadowed",
            json!({"pattern": "^/svc3/", "target": "http://h"}),
        ));
        rules[5] = rule(
            "http-only",
            json!({"pattern": "^/svc5$", "target": "http://h", "ws": false}),
        );
        let t = RuleTable::build(rules).unwrap();
        assert_eq!(&*t.matching("/svc3/x", false).unwrap().id, "r3");
        let third = 2 * CHUNK + 5;
        assert_eq!(
            *t.matching(&format!("/svc{third}"), false).unwrap().id,
            format!("r{third}")
        );
        assert_eq!(&*t.matching("/elsewhere", false).unwrap().id, "late-all");
        // A WebSocket skips the first chunk's `ws: false` rule for a later chunk's.
        assert_eq!(&*t.matching("/svc5", false).unwrap().id, "http-only");
        assert_eq!(&*t.matching("/svc5", true).unwrap().id, "late-all");
    }

    #[test]
    fn a_rebuild_reuses_unchanged_chunks() {
        let mut rules = many(3 * CHUNK);
        let t = RuleTable::build(rules.clone()).unwrap();
        assert!(t.chunk_count() >= 2, "{}", t.chunk_count());
        // Change the last rule only: every other chunk is shared, not recompiled.
        rules[3 * CHUNK - 1] = rule("new", json!({"pattern": "^/new", "target": "http://h"}));
        let next = t.rebuild(rules.clone()).unwrap();
        assert_eq!(next.shared_chunks(&t), t.chunk_count() - 1);
        assert_eq!(&*next.matching("/new", false).unwrap().id, "new");
        assert!(
            next.matching(&format!("/svc{}", 3 * CHUNK - 1), false)
                .is_none()
        );
        // Nothing changed: everything shared.
        let same = next.rebuild(rules).unwrap();
        assert_eq!(same.shared_chunks(&next), next.chunk_count());
    }

    /// A write near the front recompiles the chunk that holds its rule, and at most the
    /// next: the later chunks end at the same rules as before.
    #[test]
    fn a_write_near_the_front_leaves_later_chunks_alone() {
        let rules = many(8 * CHUNK);
        let t = RuleTable::build(rules.clone()).unwrap();
        let n = t.chunk_count();
        assert!(
            (4..=16).contains(&n),
            "{n} chunks for {} rules",
            rules.len()
        );

        let mut disabled = rules.clone();
        disabled[10] = rule(
            "r10",
            json!({"pattern": "^/svc10(/.*)?$", "target": "http://h", "enabled": false}),
        );
        let mut inserted = rules.clone();
        inserted.insert(
            3,
            rule("early", json!({"pattern": "^/early", "target": "http://h"})),
        );
        let mut removed = rules;
        removed.remove(0);
        let [off, more, fewer] = [disabled, inserted, removed].map(|changed| {
            let next = t.rebuild(changed).unwrap();
            assert!(
                next.shared_chunks(&t) >= n - 2,
                "{} of {n}",
                next.shared_chunks(&t)
            );
            next
        });
        assert!(off.matching("/svc10", false).is_none());
        assert_eq!(&*more.matching("/early", false).unwrap().id, "early");
        assert_eq!(&*more.matching("/svc4000/x", false).unwrap().id, "r4000");
        assert!(fewer.matching("/svc0", false).is_none());
    }

    /// A write to a dynamic rule compiles the dynamic rules only: the static ones keep
    /// their chunks, and the last of them ends one.
    #[test]
    fn dynamic_rules_get_their_own_chunks() {
        let statics: Vec<Arc<CompiledRule>> = many(3 * CHUNK)
            .into_iter()
            .map(|r| {
                let mut own = r.rule.clone();
                own.readonly = true;
                Arc::new(CompiledRule::compile(own, &Resolver::default()).unwrap())
            })
            .collect();
        let alone = RuleTable::build(statics.clone()).unwrap();
        let dynamic = |enabled: bool| {
            let mut rules = statics.clone();
            rules.push(rule(
                "shadowed",
                json!({"pattern": "^/svc7$", "target": "http://h"}),
            ));
            rules.push(rule(
                "dyn",
                json!({"pattern": "^/dyn", "target": "http://h", "enabled": enabled}),
            ));
            rules
        };
        let on = alone.rebuild(dynamic(true)).unwrap();
        assert_eq!(on.chunk_count(), alone.chunk_count() + 1);
        assert_eq!(on.shared_chunks(&alone), alone.chunk_count());
        let off = on.rebuild(dynamic(false)).unwrap();
        assert_eq!(off.shared_chunks(&on), alone.chunk_count());
        assert_eq!(&*on.matching("/dyn", false).unwrap().id, "dyn");
        assert!(off.matching("/dyn", false).is_none());
        // Static rules still come first.
        assert_eq!(&*off.matching("/svc7", false).unwrap().id, "r7");
    }
}
