//! Rule matching cost (SPEC 4.2: pattern-set passes over an ArcSwap snapshot, one per 512
//! rules) for 10, 1,000 and 10,000 rules, and the cost of rebuilding and swapping a
//! 5,000-rule table: from scratch, after the last rule changed and after a rule near the
//! front was disabled (unchanged chunks reused), after the one dynamic rule behind 5,000
//! static ones changed (an API write), and the first match after a change.
//! Run: `cargo bench --bench rules`.

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use buntime_proxy::{CompiledRule, Resolver, Rule, RuleTable};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// Realistic patterns: anchored service prefixes with an optional tail, some with a
/// capture group and a rewrite, a few unanchored.
fn rules(n: usize, resolver: &Resolver) -> Vec<Arc<CompiledRule>> {
    (0..n)
        .map(|i| {
            let fields = match i % 4 {
                0 => serde_json::json!({"pattern": format!("^/svc{i}(/.*)?$"), "target": "http://127.0.0.1:9000", "rewrite": "$1"}),
                1 => serde_json::json!({"pattern": format!("^/api/v{}/team{i}/", i % 3 + 1), "target": "http://10.0.0.1:8080/base"}),
                2 => serde_json::json!({"pattern": format!(r"^/users/(?P<id>\d+)/app{i}$"), "target": "http://127.0.0.1:9000", "rewrite": "/u/${id}"}),
                _ => serde_json::json!({"pattern": format!("/static{i}/.+\\.(js|css)$"), "target": "http://127.0.0.1:9001"}),
            };
            let rule = Rule::blank(&format!("r{i}"))
                .with_fields(fields.as_object().unwrap(), true)
                .unwrap();
            Arc::new(CompiledRule::compile(rule, resolver).unwrap())
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let resolver = Resolver::default();
    for n in [10, 1_000, 10_000] {
        let table = ArcSwap::from_pointee(RuleTable::build(rules(n, &resolver)).unwrap());
        // The last `svc` rule (every fourth rule is one).
        let last = format!("/svc{}/orders/42", (n - 1) / 4 * 4);
        let mut g = c.benchmark_group(format!("match/{n}_rules"));
        g.bench_function("last_rule", |b| {
            b.iter(|| {
                let t = table.load();
                let r = t.matching(black_box(&last), false).expect("matches");
                black_box(r.upstream_path(&last))
            })
        });
        g.bench_function("no_match", |b| {
            b.iter(|| {
                black_box(
                    table
                        .load()
                        .matching(black_box("/nothing/here"), false)
                        .is_none(),
                )
            })
        });
        g.finish();
    }
}

fn rebuild(c: &mut Criterion) {
    let resolver = Resolver::default();
    let compiled = rules(5_000, &resolver);
    let live = ArcSwap::from_pointee(RuleTable::default());
    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    g.bench_function("5000_rules_build_and_swap", |b| {
        b.iter(|| live.store(Arc::new(RuleTable::build(compiled.clone()).unwrap())))
    });
    // A write: the last rule replaced; the table before it is the previous one.
    let mut changed = compiled.clone();
    *changed.last_mut().unwrap() = rules(1, &resolver).remove(0);
    let before = Arc::new(RuleTable::build(compiled.clone()).unwrap());
    g.bench_function("5000_rules_one_changed_rebuild_and_swap", |b| {
        b.iter(|| live.store(Arc::new(before.rebuild(changed.clone()).unwrap())))
    });
    // A rule near the front disabled: the rules after it move up one place.
    let mut early = compiled.clone();
    let mut off = early[10].rule.clone();
    off.enabled = false;
    early[10] = Arc::new(CompiledRule::compile(off, &resolver).unwrap());
    g.bench_function(
        "5000_rules_one_disabled_near_the_front_rebuild_and_swap",
        |b| b.iter(|| live.store(Arc::new(before.rebuild(early.clone()).unwrap()))),
    );
    // An API write with 5,000 static rules: the dynamic rules have chunks of their own.
    let statics: Vec<Arc<CompiledRule>> = compiled
        .iter()
        .map(|r| {
            let mut own = r.rule.clone();
            own.readonly = true;
            Arc::new(CompiledRule::compile(own, &resolver).unwrap())
        })
        .collect();
    let with_dynamic = |rule: Arc<CompiledRule>| {
        let mut all = statics.clone();
        all.push(rule);
        all
    };
    let before_api = Arc::new(RuleTable::build(with_dynamic(compiled[0].clone())).unwrap());
    let after_api = with_dynamic(rules(1, &resolver).remove(0));
    g.bench_function(
        "5000_static_rules_the_dynamic_one_changed_rebuild_and_swap",
        |b| b.iter(|| live.store(Arc::new(before_api.rebuild(after_api.clone()).unwrap()))),
    );
    // What the first request after that write pays: a path that no rule matches runs
    // through every chunk, the rebuilt one cold (its automaton has seen no input).
    g.bench_function("5000_rules_first_match_after_one_changed", |b| {
        b.iter_batched(
            || before.rebuild(changed.clone()).unwrap(),
            |fresh| black_box(fresh.matching(black_box("/nothing/here"), false).is_none()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, matching, rebuild);
criterion_main!(benches);
