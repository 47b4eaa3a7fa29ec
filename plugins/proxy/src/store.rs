//! Rule storage and the live table (SPEC 4.2). Dynamic rules live in keyval under
//! `["proxy","rules",<id>]`. Every write is one atomic commit that also checks and bumps
//! the change marker `["proxy","changed"]`, so writes from several instances never lose
//! each other, and each instance notices others' writes by polling one key.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use buntime_keyval::{Check, Key, KeyPart, KeyVal, KvError, Mutation};
use buntime_plugin_sdk::ApiError;
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

use crate::resolve::Resolver;
use crate::rule::{CompiledRule, Rule, static_shaped, valid_id};
use crate::table::RuleTable;

/// How many times a write is retried when another instance wrote in between.
const WRITE_ATTEMPTS: usize = 8;
const PAGE: usize = 1000;

fn rules_prefix() -> Key {
    Key::strings(&["proxy", "rules"])
}

fn rule_key(id: &str) -> Key {
    Key::strings(&["proxy", "rules", id])
}

fn marker_key() -> Key {
    Key::strings(&["proxy", "changed"])
}

/// The dynamic rules as last read or written, and the marker version they match.
#[derive(Default)]
struct State {
    rules: Dynamic,
    /// Stored rules that do not load (a pattern the original's JavaScript took, such as a
    /// look-ahead): their stored value and why. Not routed, but their ids stay taken, and
    /// a PUT that fixes one or a DELETE reaches it. Never an id of `rules` too: a reload
    /// puts each id in one of them, and a write takes the id out of this one.
    unloadable: Unloadable,
    marker: Option<String>,
    loaded: bool,
}

type Unloadable = BTreeMap<String, (Json, String)>;

/// The dynamic rules by id.
type Dynamic = BTreeMap<String, Stored>;

/// A dynamic rule and the versionstamp of the commit that last wrote it (a reload
/// recompiles only the rules whose stamp changed).
#[derive(Clone)]
struct Stored {
    rule: Arc<CompiledRule>,
    stamp: String,
}

/// Counters the metrics plugin reads.
#[derive(Debug, Default)]
pub struct Stats {
    pub reloads_ok: std::sync::atomic::AtomicU64,
    pub reloads_failed: std::sync::atomic::AtomicU64,
}

pub struct RuleStore {
    kv: KeyVal,
    resolver: Arc<Resolver>,
    static_rules: ArcSwap<Statics>,
    table: Arc<ArcSwap<RuleTable>>,
    state: Mutex<State>,
    pub stats: Stats,
}

/// The rules of the config file, and their ids: a write asks whether its id is one of them
/// (403), and with thousands of rules a scan per id would cost a write, or a reorder of all
/// of them, more than its commit.
struct Statics {
    rules: Vec<Arc<CompiledRule>>,
    ids: HashSet<Arc<str>>,
}

impl Statics {
    fn new(rules: Vec<Arc<CompiledRule>>) -> Statics {
        let ids = rules.iter().map(|r| r.id.clone()).collect();
        Statics { rules, ids }
    }

    fn has(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// What a write wants to commit, and what it does to the dynamic rules: only the rules it
/// names change, so a write costs the same with 10 dynamic rules as with 10,000.
struct Plan<T> {
    checks: Vec<Check>,
    mutations: Vec<Mutation>,
    /// The rules the mutations write (`None`: deleted).
    edits: Vec<(String, Option<Arc<CompiledRule>>)>,
    output: T,
}

impl RuleStore {
    pub fn new(
        kv: KeyVal,
        resolver: Arc<Resolver>,
        static_rules: Vec<Arc<CompiledRule>>,
    ) -> RuleStore {
        let table = RuleTable::build(static_rules.clone()).unwrap_or_default();
        RuleStore {
            kv: kv.primary(),
            resolver,
            static_rules: ArcSwap::from_pointee(Statics::new(static_rules)),
            table: Arc::new(ArcSwap::from_pointee(table)),
            state: Mutex::new(State::default()),
            stats: Stats::default(),
        }
    }

    /// The live table the request path reads.
    pub fn table(&self) -> Arc<ArcSwap<RuleTable>> {
        self.table.clone()
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Resolves once the database answers.
    pub async fn wait_database(&self) {
        self.kv.database().wait_ready().await;
    }

    /// SIGHUP: new static rules, live at once.
    pub async fn set_static(&self, rules: Vec<Arc<CompiledRule>>) {
        self.static_rules.store(Arc::new(Statics::new(rules)));
        let st = self.state.lock().await;
        self.publish_state(&st).await;
    }

    /// Reloads every dynamic rule if another instance changed them (or on first call).
    pub async fn sync(&self) -> Result<bool, KvError> {
        let marker = self.kv.get(&marker_key()).await?.map(|e| e.versionstamp);
        let mut st = self.state.lock().await;
        if st.loaded && st.marker == marker {
            return Ok(false);
        }
        self.reload(&mut st).await?;
        Ok(true)
    }

    /// Reads every rule (all pages: there is no cap) and publishes a new table. Stored
    /// rules that no longer validate are skipped with a warning, not fatal.
    async fn reload(&self, st: &mut State) -> Result<(), KvError> {
        let marker = self.kv.get(&marker_key()).await?.map(|e| e.versionstamp);
        let mut loaded = BTreeMap::new();
        let mut unloadable = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .kv
                .paginate(&rules_prefix(), cursor.as_deref(), PAGE, false)
                .await?;
            for e in &page.entries {
                let Some(KeyPart::String(id)) = e.key.parts().get(2) else {
                    continue;
                };
                // Unchanged rules keep their compiled form.
                if let Some(kept) = st.rules.get(id).filter(|s| s.stamp == e.versionstamp) {
                    loaded.insert(id.clone(), kept.clone());
                    continue;
                }
                match stored_rule(id, &e.value)
                    .and_then(|r| CompiledRule::compile(r, &self.resolver))
                {
                    Ok(c) => {
                        if static_shaped(id) {
                            log::warn!(
                                "proxy: stored rule {id} has an id kept for static rules: a \
                                 static rule may share it (GET shows that one); create it \
                                 again under another id and delete this one"
                            );
                        }
                        let (rule, stamp) = (Arc::new(c), e.versionstamp.clone());
                        loaded.insert(id.clone(), Stored { rule, stamp });
                    }
                    Err(why) => {
                        log::warn!(
                            "proxy: skipping stored rule {id}: {why}; PUT a fixed rule to its \
                             id, or DELETE it"
                        );
                        unloadable.insert(id.clone(), (e.value.clone(), why));
                    }
                }
            }
            if !page.has_more {
                break;
            }
            cursor = page.cursor;
        }
        self.resolver.resolve_pending().await;
        st.rules = loaded;
        st.unloadable = unloadable;
        st.marker = marker;
        st.loaded = true;
        self.publish_state(st).await;
        Ok(())
    }

    /// Builds the table from the static rules and `st`'s dynamic ones and swaps it in
    /// whole, all on the rule-builder thread: besides compiling patterns, a list of
    /// thousands of static rules takes tens of microseconds to copy, and as long again to
    /// drop with the previous table, which would otherwise be CPU time of the plugins'
    /// thread at normal priority.
    async fn publish_state(&self, st: &State) {
        let statics = self.static_rules.load_full();
        // Dynamic rules go by order, then by id: the map is in id order and the sort is
        // stable. Sorting on the order alone, held inline, compares no strings.
        let mut dynamic: Vec<(i64, Arc<CompiledRule>)> = st
            .rules
            .values()
            .map(|s| (s.rule.rule.order, s.rule.clone()))
            .collect();
        dynamic.sort_by_key(|(order, _)| *order);
        let table = self.table.clone();
        let built = crate::table::on_builder(move || {
            let mut rules = Vec::with_capacity(statics.rules.len() + dynamic.len());
            rules.extend(statics.rules.iter().cloned());
            rules.extend(dynamic.into_iter().map(|(_, rule)| rule));
            let next = table.load_full().rebuild(rules)?;
            // The previous table goes here, unless a request still holds it.
            table.store(Arc::new(next));
            Ok::<_, String>(())
        })
        .await;
        match built.and_then(|r| r) {
            Ok(()) => {
                self.stats
                    .reloads_ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                self.stats
                    .reloads_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::error!("proxy: keeping the previous rule table: {e}");
            }
        }
    }

    /// Runs `plan` against the current state and commits it atomically; if another
    /// instance wrote in between, reloads and plans again.
    async fn write<T>(
        &self,
        mut plan: impl FnMut(&Dynamic, &Unloadable, &Statics) -> Result<Plan<T>, ApiError>,
    ) -> Result<T, ApiError> {
        let mut st = self.state.lock().await;
        if !st.loaded {
            self.reload(&mut st).await?;
        }
        for _ in 0..WRITE_ATTEMPTS {
            let p = plan(&st.rules, &st.unloadable, &self.static_rules.load())?;
            let mut checks = p.checks;
            checks.push(Check {
                key: marker_key(),
                versionstamp: st.marker.clone(),
            });
            let mut mutations = p.mutations;
            mutations.push(Mutation::Set {
                key: marker_key(),
                value: json!({"at": now_ms()}),
                expires_in: None,
            });
            match self.kv.atomic(&checks, &mutations).await? {
                Some(vs) => {
                    self.resolver.resolve_pending().await;
                    for (id, edit) in p.edits {
                        st.unloadable.remove(&id);
                        match edit {
                            Some(rule) => {
                                let stamp = vs.clone();
                                st.rules.insert(id, Stored { rule, stamp });
                            }
                            None => {
                                st.rules.remove(&id);
                            }
                        }
                    }
                    st.marker = Some(vs);
                    self.publish_state(&st).await;
                    return Ok(p.output);
                }
                None => self.reload(&mut st).await?,
            }
        }
        Err(ApiError::unavailable(
            "Rules are being changed concurrently; try again",
        ))
    }

    pub async fn create(&self, body: &serde_json::Map<String, Json>) -> Result<Rule, ApiError> {
        let requested = match body.get("id") {
            None | Some(Json::Null) => None,
            Some(Json::String(id)) if valid_id(id) => Some(id.clone()),
            Some(_) => return Err(ApiError::bad_request("Invalid rule id")),
        };
        let fresh = uuid::Uuid::new_v4().to_string();
        self.write(|current, unloadable, statics| {
            let id = requested.clone().unwrap_or_else(|| fresh.clone());
            if current.contains_key(&id) || statics.has(&id) {
                return Err(ApiError::conflict("Rule id already exists"));
            }
            if let Some((_, why)) = unloadable.get(&id) {
                return Err(ApiError::conflict(format!(
                    "Rule id already exists: a stored rule that does not load ({why}); PUT \
                     a fixed rule to it, or DELETE it"
                )));
            }
            if static_shaped(&id) {
                return Err(ApiError::bad_request(
                    "Invalid rule id: static-<n> ids are kept for static rules",
                ));
            }
            let mut rule = Rule::blank(&id)
                .with_fields(body, true)
                .map_err(ApiError::bad_request)?;
            rule.order = current
                .values()
                .map(|s| s.rule.rule.order)
                .max()
                .map_or(0, |m| m + 1);
            let compiled = Arc::new(
                CompiledRule::compile(rule.clone(), &self.resolver)
                    .map_err(ApiError::bad_request)?,
            );
            Ok(Plan {
                checks: vec![Check {
                    key: rule_key(&id),
                    versionstamp: None,
                }],
                mutations: vec![set_rule(&rule)],
                edits: vec![(id, Some(compiled))],
                output: rule,
            })
        })
        .await
    }

    pub async fn update(
        &self,
        id: &str,
        body: &serde_json::Map<String, Json>,
    ) -> Result<Rule, ApiError> {
        if let Some(given) = body.get("id")
            && given.as_str() != Some(id)
        {
            return Err(ApiError::bad_request("Rule id cannot be changed"));
        }
        let fix = |rule: Rule| {
            let rule = rule
                .with_fields(body, true)
                .map_err(ApiError::bad_request)?;
            CompiledRule::compile(rule, &self.resolver).map_err(ApiError::bad_request)
        };
        self.write(|current, unloadable, statics| {
            // A stored rule that does not load is rewritten from its stored fields.
            let compiled = match unloadable.get(id) {
                Some((value, _)) => fix(stored_rule(id, value).map_err(ApiError::bad_request)?)?,
                _ => fix(lookup(id, current, statics, "Cannot modify static rules")?
                    .rule
                    .clone())?,
            };
            Ok(replace(compiled))
        })
        .await
    }

    pub async fn toggle(&self, id: &str) -> Result<Rule, ApiError> {
        self.change(id, "Cannot modify static rules", |old| {
            Ok(old.with_enabled(!old.rule.enabled))
        })
        .await
    }

    /// Replaces one dynamic rule with `edit(old)`.
    async fn change(
        &self,
        id: &str,
        static_error: &str,
        edit: impl Fn(&CompiledRule) -> Result<CompiledRule, ApiError>,
    ) -> Result<Rule, ApiError> {
        self.write(|current, _, statics| {
            let old = lookup(id, current, statics, static_error)?;
            Ok(replace(edit(old)?))
        })
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        self.write(|current, unloadable, statics| {
            if !unloadable.contains_key(id) {
                lookup(id, current, statics, "Cannot delete static rules")?;
            }
            Ok(Plan {
                checks: Vec::new(),
                mutations: vec![Mutation::Delete { key: rule_key(id) }],
                edits: vec![(id.to_string(), None)],
                output: (),
            })
        })
        .await
    }

    pub async fn reorder(&self, ids: &[String]) -> Result<Vec<Rule>, ApiError> {
        self.write(|current, _, statics| {
            for id in ids {
                lookup(id, current, statics, "Cannot modify static rules")?;
            }
            let mut unique = ids.to_vec();
            unique.sort();
            unique.dedup();
            if unique.len() != ids.len() || unique.len() != current.len() {
                return Err(ApiError::bad_request(
                    "ids must include all dynamic rule IDs",
                ));
            }
            let mut edits = Vec::new();
            let mut mutations = Vec::new();
            let mut out = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let mut rule = current[id].rule.rule.clone();
                rule.order = i as i64;
                mutations.push(set_rule(&rule));
                let compiled = CompiledRule::compile(rule.clone(), &self.resolver)
                    .map_err(ApiError::bad_request)?;
                edits.push((id.clone(), Some(Arc::new(compiled))));
                out.push(rule);
            }
            Ok(Plan {
                checks: Vec::new(),
                mutations,
                edits,
                output: out,
            })
        })
        .await
    }
}

/// The plan that stores `compiled` under its id, replacing what was there.
fn replace(compiled: CompiledRule) -> Plan<Rule> {
    let rule = compiled.rule.clone();
    Plan {
        checks: Vec::new(),
        mutations: vec![set_rule(&rule)],
        edits: vec![(rule.id.clone(), Some(Arc::new(compiled)))],
        output: rule,
    }
}

/// A dynamic rule by id: 403 for a static one, 404 for none. A dynamic rule stored under
/// a `static-<n>` id before such ids were refused can share its id with a static rule a
/// SIGHUP added; writes reach the dynamic one (the static one cannot be written anyway),
/// so it can still be changed or deleted.
fn lookup<'a>(
    id: &str,
    current: &'a Dynamic,
    statics: &Statics,
    static_error: &str,
) -> Result<&'a CompiledRule, ApiError> {
    match current.get(id) {
        Some(stored) => Ok(&stored.rule),
        None if statics.has(id) => Err(ApiError::forbidden(static_error)),
        None => Err(ApiError::not_found("Rule not found")),
    }
}

fn set_rule(rule: &Rule) -> Mutation {
    let mut value = rule.to_json();
    if let Some(m) = value.as_object_mut() {
        m.remove("readonly");
    }
    Mutation::Set {
        key: rule_key(&rule.id),
        value,
        expires_in: None,
    }
}

/// A rule as stored (by us or by the original): unknown fields are ignored.
fn stored_rule(id: &str, value: &Json) -> Result<Rule, String> {
    let map = value.as_object().ok_or("not a JSON object")?;
    let mut rule = Rule::blank(id).with_fields(map, false)?;
    rule.order = map.get("order").and_then(Json::as_i64).unwrap_or(0);
    Ok(rule)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
