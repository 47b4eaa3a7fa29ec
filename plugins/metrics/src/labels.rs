//! Bounded `route` label values (SPEC 9): past 500 distinct rule ids new ones fold into
//! `rule:other`, past 500 app names into `app:other`. Never a raw path, IP or token.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use buntime_plugin_sdk::RouteKind;

pub const BUDGET: usize = 500;

/// The series of one kind of route (rules, apps, ...) handed out so far, by name. Each is
/// made once, so a request's route costs one map lookup: no formatting, no label hashing.
struct Budget<T> {
    prefix: &'static str,
    limit: usize,
    seen: ArcSwap<HashMap<Arc<str>, Arc<T>>>,
    other: OnceLock<Arc<T>>,
}

impl<T> Budget<T> {
    fn new(prefix: &'static str, limit: usize) -> Budget<T> {
        Budget {
            prefix,
            limit,
            seen: ArcSwap::from_pointee(HashMap::new()),
            other: OnceLock::new(),
        }
    }

    fn get(&self, name: &str, make: &dyn Fn(&str) -> T) -> Arc<T> {
        let seen = self.seen.load();
        if let Some(t) = seen.get(name) {
            return Arc::clone(t);
        }
        if seen.len() >= self.limit {
            return self.folded(make);
        }
        let fresh = Arc::new(make(&format!("{}{name}", self.prefix)));
        let mut admitted = None;
        self.seen.rcu(|current| {
            if let Some(t) = current.get(name) {
                admitted = Some(Arc::clone(t));
                return Arc::clone(current);
            }
            if current.len() >= self.limit {
                admitted = None;
                return Arc::clone(current);
            }
            admitted = Some(Arc::clone(&fresh));
            let mut next = (**current).clone();
            next.insert(Arc::from(name), Arc::clone(&fresh));
            Arc::new(next)
        });
        admitted.unwrap_or_else(|| self.folded(make))
    }

    fn folded(&self, make: &dyn Fn(&str) -> T) -> Arc<T> {
        Arc::clone(
            self.other
                .get_or_init(|| Arc::new(make(&format!("{}other", self.prefix)))),
        )
    }
}

/// Per-route values (`T`: the route's label and metric handles), bounded per SPEC 9.
pub struct RouteLabels<T> {
    fixed: Budget<T>,
    plugins: Budget<T>,
    rules: Budget<T>,
    apps: Budget<T>,
}

impl<T> Default for RouteLabels<T> {
    fn default() -> Self {
        RouteLabels {
            fixed: Budget::new("", usize::MAX),
            plugins: Budget::new("plugin:", usize::MAX),
            rules: Budget::new("rule:", BUDGET),
            apps: Budget::new("app:", BUDGET),
        }
    }
}

impl<T> RouteLabels<T> {
    /// The value for a route; `make` builds it from the label the first time.
    pub fn of(&self, route: &RouteKind, make: &dyn Fn(&str) -> T) -> Arc<T> {
        match route {
            RouteKind::Api => self.fixed.get("api", make),
            RouteKind::Plugin(name) => self.plugins.get(name, make),
            RouteKind::Rule(id) => self.rules.get(id, make),
            RouteKind::App(name) => self.apps.get(name, make),
            RouteKind::Shell => self.fixed.get("shell", make),
            RouteKind::Preflight => self.fixed.get("preflight", make),
            RouteKind::None => self.fixed.get("none", make),
        }
    }
}

/// `GET` .. `PATCH`, `OPTIONS`, else `OTHER`, and its place in that list (a key that
/// needs no hashing).
pub fn method(m: &http::Method) -> (u8, &'static str) {
    match *m {
        http::Method::GET => (0, "GET"),
        http::Method::HEAD => (1, "HEAD"),
        http::Method::POST => (2, "POST"),
        http::Method::PUT => (3, "PUT"),
        http::Method::PATCH => (4, "PATCH"),
        http::Method::DELETE => (5, "DELETE"),
        http::Method::OPTIONS => (6, "OPTIONS"),
        _ => (7, "OTHER"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_apps_have_separate_budgets() {
        let l = RouteLabels::<String>::default();
        let of = |r: &RouteKind| l.of(r, &|label| label.to_string()).to_string();
        for i in 0..BUDGET {
            assert_eq!(
                of(&RouteKind::Rule(format!("r{i}").into())),
                format!("rule:r{i}")
            );
        }
        assert_eq!(
            of(&RouteKind::Rule("r0".into())),
            "rule:r0",
            "known ids keep their label"
        );
        assert_eq!(of(&RouteKind::Rule("new".into())), "rule:other");
        assert_eq!(
            of(&RouteKind::App("hello".into())),
            "app:hello",
            "apps have their own budget"
        );
        assert_eq!(of(&RouteKind::Plugin("proxy")), "plugin:proxy");
        assert_eq!(of(&RouteKind::Api), "api");
        assert_eq!(of(&RouteKind::None), "none");
        assert_eq!(
            method(&http::Method::from_bytes(b"PROPFIND").unwrap()),
            (7, "OTHER")
        );
        assert_eq!(method(&http::Method::PATCH), (4, "PATCH"));
    }

    #[test]
    fn a_route_is_made_once() {
        let l = RouteLabels::<String>::default();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let make = |label: &str| {
            made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            label.to_string()
        };
        let a = l.of(&RouteKind::Rule("x".into()), &make);
        let b = l.of(&RouteKind::Rule("x".into()), &make);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(made.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
