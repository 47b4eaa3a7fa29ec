//! Bounded `route` label values (SPEC 9): past 500 distinct rule ids new ones fold into
//! `rule:other`, past 500 app names into `app:other`. Never a raw path, IP or token.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use buntime_plugin_sdk::RouteKind;

pub const BUDGET: usize = 500;

/// The labels given out so far, for one kind (rules or apps).
#[derive(Default)]
struct Budget {
    seen: ArcSwap<HashSet<Arc<str>>>,
}

impl Budget {
    fn label(&self, prefix: &str, name: &str) -> String {
        if self.seen.load().contains(name) {
            return format!("{prefix}{name}");
        }
        let mut admitted = false;
        self.seen.rcu(|current| {
            if current.contains(name) {
                admitted = true;
                return Arc::clone(current);
            }
            if current.len() >= BUDGET {
                admitted = false;
                return Arc::clone(current);
            }
            admitted = true;
            let mut next = (**current).clone();
            next.insert(Arc::from(name));
            Arc::new(next)
        });
        if admitted {
            format!("{prefix}{name}")
        } else {
            format!("{prefix}other")
        }
    }
}

#[derive(Default)]
pub struct RouteLabels {
    rules: Budget,
    apps: Budget,
}

impl RouteLabels {
    pub fn of(&self, route: &RouteKind) -> String {
        match route {
            RouteKind::Api => "api".into(),
            RouteKind::Plugin(name) => format!("plugin:{name}"),
            RouteKind::Rule(id) => self.rules.label("rule:", id),
            RouteKind::App(name) => self.apps.label("app:", name),
            RouteKind::Shell => "shell".into(),
            RouteKind::Preflight => "preflight".into(),
            RouteKind::None => "none".into(),
        }
    }
}

/// `GET` .. `PATCH`, `OPTIONS`, else `OTHER`.
pub fn method(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_apps_have_separate_budgets() {
        let l = RouteLabels::default();
        for i in 0..BUDGET {
            assert_eq!(
                l.of(&RouteKind::Rule(format!("r{i}").into())),
                format!("rule:r{i}")
            );
        }
        assert_eq!(
            l.of(&RouteKind::Rule("r0".into())),
            "rule:r0",
            "known ids keep their label"
        );
        assert_eq!(l.of(&RouteKind::Rule("new".into())), "rule:other");
        assert_eq!(
            l.of(&RouteKind::App("hello".into())),
            "app:hello",
            "apps have their own budget"
        );
        assert_eq!(l.of(&RouteKind::Plugin("proxy")), "plugin:proxy");
        assert_eq!(
            method(&http::Method::from_bytes(b"PROPFIND").unwrap()),
            "OTHER"
        );
    }
}
