//! The compiled rule table (SPEC 4.2): one `RegexSet` pass over every enabled rule in
//! order; the lowest matching index wins. Built off the request path and swapped whole.

use std::sync::Arc;

use regex::{RegexSet, RegexSetBuilder};

use crate::rule::CompiledRule;

/// Generous limits: thousands of rules make one large automaton.
const SET_SIZE_LIMIT: usize = 512 << 20;
const SET_DFA_LIMIT: usize = 64 << 20;

#[derive(Debug)]
pub struct RuleTable {
    /// Enabled rules in match order: static first, then dynamic by `order`.
    active: Vec<Arc<CompiledRule>>,
    set: RegexSet,
    /// Every rule (disabled ones too), static then dynamic, for the API.
    all: Vec<Arc<CompiledRule>>,
}

impl Default for RuleTable {
    fn default() -> Self {
        RuleTable {
            active: Vec::new(),
            set: RegexSet::empty(),
            all: Vec::new(),
        }
    }
}

impl RuleTable {
    /// `rules` in match order (static first, then dynamic sorted by order).
    pub fn build(rules: Vec<Arc<CompiledRule>>) -> Result<RuleTable, String> {
        let active: Vec<Arc<CompiledRule>> =
            rules.iter().filter(|r| r.rule.enabled).cloned().collect();
        let set = RegexSetBuilder::new(active.iter().map(|r| r.rule.pattern.as_str()))
            .size_limit(SET_SIZE_LIMIT)
            .dfa_size_limit(SET_DFA_LIMIT)
            .build()
            .map_err(|e| format!("cannot combine the rule patterns: {e}"))?;
        Ok(RuleTable {
            active,
            set,
            all: rules,
        })
    }

    /// The first enabled rule whose pattern matches `path`. A WebSocket upgrade skips
    /// rules with `ws: false`.
    pub fn matching(&self, path: &str, websocket: bool) -> Option<&Arc<CompiledRule>> {
        if self.active.is_empty() {
            return None;
        }
        if !websocket {
            // Most requests: the first match in index order is the winner.
            return self
                .set
                .matches(path)
                .iter()
                .next()
                .map(|i| &self.active[i]);
        }
        self.set
            .matches(path)
            .iter()
            .map(|i| &self.active[i])
            .find(|r| r.rule.ws)
    }

    pub fn all(&self) -> &[Arc<CompiledRule>] {
        &self.all
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CompiledRule>> {
        self.all.iter().find(|r| &*r.id == id)
    }

    /// Enabled rules.
    pub fn active_len(&self) -> usize {
        self.active.len()
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
}
