//! Environment variables in the gateway's own namespaces that nothing reads (SPEC 11 makes
//! an unknown config-file key an error so that a typo is never silently ignored; a
//! misspelt variable deserves the same, as a warning, since other software shares the
//! environment). Named by `check` and at the start of `serve`.

use buntime_plugin_sdk::PluginSpec;

use crate::config::SERVER_KEYS;

/// Prefixes the gateway's variables use. `PORT` is bare and so not checked.
const PREFIXES: &[&str] = &[
    "RUNTIME_",
    "GATEWAY_",
    "AUTH_JWT_",
    "AUTH_PUBLIC_",
    "DATABASE_LIBSQL_",
    "METRICS_",
    "DEPLOYMENTS_",
];

/// The original Buntime's variables that have no counterpart here, and why.
const ORIGINAL_ONLY: &[(&str, &str)] = &[
    (
        "RUNTIME_WORKER_CONFIG_CACHE_TTL_MS",
        "the original Buntime's manifest cache; manifests are read when a worker starts here",
    ),
    (
        "RUNTIME_WORKER_RESOLVER_CACHE_TTL_MS",
        "the original Buntime's folder lookup cache",
    ),
    (
        "RUNTIME_STATE_DIR",
        "the original Buntime's API-key store; this gateway has no /api/keys",
    ),
    (
        "RUNTIME_PORT",
        "the original Buntime's; the gateway listens on PORT",
    ),
    (
        "RUNTIME_API_URL",
        "the original Buntime set it for its workers",
    ),
    (
        "DEPLOYMENTS_EXCLUDES",
        "read by the deployments plugin, which this build does not include",
    ),
];

/// One warning per variable under [`PREFIXES`] that no part of the gateway reads, in name
/// order. Kubernetes service links (`<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_...`, set
/// for every Service in the namespace, so also for one named `gateway`) are not ours to
/// judge and are left out.
pub fn warnings<'a>(names: impl Iterator<Item = &'a str>, specs: &[PluginSpec]) -> Vec<String> {
    let names: Vec<&str> = names.collect();
    let known: Vec<&str> = SERVER_KEYS
        .iter()
        .map(|(_, var)| *var)
        .chain(specs.iter().flat_map(|s| s.env.iter().map(|(var, _)| *var)))
        .collect();
    let numbered: Vec<&str> = specs
        .iter()
        .flat_map(|s| s.env_numbered.iter().map(|(prefix, _)| *prefix))
        .collect();
    let mut out: Vec<(&str, String)> = names
        .iter()
        .filter(|name| PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|name| !known.contains(name) && !service_link(name))
        .filter_map(|&name| {
            let why = match ORIGINAL_ONLY.iter().find(|(var, _)| *var == name) {
                Some((_, why)) => format!("{why}; it has no effect"),
                None => match numbered.iter().find(|p| name.starts_with(*p)) {
                    Some(prefix) => gap(name, prefix, &names)?,
                    None => unread(name, &known),
                },
            };
            Some((
                name,
                format!("environment variable {name} is not read: {why}"),
            ))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, w)| w).collect()
}

/// Why `PREFIX<n>` is not read, or `None` when it is: the list is read from 1 up to the
/// first number not set.
fn gap(name: &str, prefix: &str, names: &[&str]) -> Option<String> {
    let digits = &name[prefix.len()..];
    let n = match digits.parse::<u32>() {
        Ok(n) if n > 0 && digits == n.to_string() => n,
        _ => return Some(format!("numbered {prefix}<n> variables take 1, 2, 3, ...")),
    };
    let set = |i: u32| names.contains(&format!("{prefix}{i}").as_str());
    let missing = (1..n).find(|&i| !set(i))?;
    Some(format!(
        "{prefix}1, {prefix}2, ... are read up to the first one not set, {prefix}{missing}"
    ))
}

/// Why an unknown name is not read: a likely typo of the closest known name, if one is
/// close.
fn unread(name: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| (strsim::levenshtein(name, k), *k))
        .min()
        .filter(|(distance, _)| *distance <= 3);
    match closest {
        Some((_, k)) => format!("no such setting (did you mean {k}?)"),
        None => "no such setting".to_string(),
    }
}

/// Whether `name` is one of the variables Kubernetes sets for a Service: `X_SERVICE_HOST`,
/// `X_SERVICE_PORT`, `X_SERVICE_PORT_<port name>`, `X_PORT` and `X_PORT_<n>_<PROTO>[_...]`.
fn service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST")
        || name.ends_with("_SERVICE_PORT")
        || name.contains("_SERVICE_PORT_")
    {
        return true;
    }
    let Some(at) = name.rfind("_PORT") else {
        return false;
    };
    // `X_PORT` itself, or the `X_PORT_<n>_<PROTO>` family, whose `_PORT` may repeat at
    // the end (`X_PORT_80_TCP_PORT`).
    let first = name.find("_PORT_").unwrap_or(at);
    let rest = &name[first + "_PORT".len()..];
    if rest.is_empty() {
        return true;
    }
    let mut parts = rest.trim_start_matches('_').split('_');
    let port = parts.next().unwrap_or("");
    let proto = parts.next().unwrap_or("");
    !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(proto, "TCP" | "UDP" | "SCTP")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[PluginSpec] = &[PluginSpec {
        name: "database",
        manifest: "name: database\n",
        keys: &[],
        env: &[("DATABASE_LIBSQL_URL", "libsqlUrl")],
        env_numbered: &[("DATABASE_LIBSQL_REPLICAS_", "replicas")],
    }];

    fn check(names: &[&str]) -> Vec<String> {
        warnings(names.iter().copied(), SPECS)
    }

    #[test]
    fn known_and_foreign_names_pass() {
        assert!(check(&["PORT", "RUNTIME_POOL_SIZE", "DATABASE_LIBSQL_URL", "HOME"]).is_empty());
    }

    #[test]
    fn auth_public_routes_is_checked_too() {
        let specs = [PluginSpec {
            env: &[("AUTH_PUBLIC_ROUTES", "publicRoutes")],
            ..SPECS[0]
        }];
        assert_eq!(
            warnings(["AUTH_PUBLIC_ROUTE", "AUTH_SECRET"].into_iter(), &specs),
            [
                "environment variable AUTH_PUBLIC_ROUTE is not read: no such setting \
              (did you mean AUTH_PUBLIC_ROUTES?)"
            ]
        );
    }

    #[test]
    fn a_typo_names_the_closest_setting() {
        assert_eq!(
            check(&["RUNTIME_POOL_SIZ", "RUNTIME_BANANA"]),
            [
                "environment variable RUNTIME_BANANA is not read: no such setting",
                "environment variable RUNTIME_POOL_SIZ is not read: no such setting \
                 (did you mean RUNTIME_POOL_SIZE?)",
            ]
        );
    }

    #[test]
    fn numbered_lists_stop_at_the_first_gap() {
        assert!(check(&["DATABASE_LIBSQL_REPLICAS_1", "DATABASE_LIBSQL_REPLICAS_2"]).is_empty());
        assert_eq!(
            check(&["DATABASE_LIBSQL_REPLICAS_1", "DATABASE_LIBSQL_REPLICAS_3"]),
            [
                "environment variable DATABASE_LIBSQL_REPLICAS_3 is not read: \
              DATABASE_LIBSQL_REPLICAS_1, DATABASE_LIBSQL_REPLICAS_2, ... are read up to \
              the first one not set, DATABASE_LIBSQL_REPLICAS_2"
            ]
        );
        for odd in ["DATABASE_LIBSQL_REPLICAS_0", "DATABASE_LIBSQL_REPLICAS_01"] {
            assert_eq!(
                check(&[odd]),
                [format!(
                    "environment variable {odd} is not read: numbered \
                     DATABASE_LIBSQL_REPLICAS_<n> variables take 1, 2, 3, ..."
                )]
            );
        }
    }

    #[test]
    fn kubernetes_service_links_pass() {
        let links = [
            "GATEWAY_SERVICE_HOST",
            "GATEWAY_SERVICE_PORT",
            "GATEWAY_SERVICE_PORT_HTTP",
            "GATEWAY_PORT",
            "GATEWAY_PORT_8000_TCP",
            "GATEWAY_PORT_8000_TCP_PROTO",
            "GATEWAY_PORT_8000_TCP_PORT",
            "RUNTIME_API_PORT_53_UDP_ADDR",
        ];
        assert!(check(&links).is_empty(), "{:?}", check(&links));
        assert_eq!(check(&["GATEWAY_PORT_X"]).len(), 1);
    }

    #[test]
    fn the_originals_variables_are_named_as_such() {
        assert_eq!(
            check(&["RUNTIME_WORKER_CONFIG_CACHE_TTL_MS"]),
            [
                "environment variable RUNTIME_WORKER_CONFIG_CACHE_TTL_MS is not read: the \
              original Buntime's manifest cache; manifests are read when a worker starts \
              here; it has no effect"
            ]
        );
    }
}
