//! The database plugin's settings (SPEC 7.1): `url`, `authToken`, `replicas`.

use std::path::{Path, PathBuf};

use buntime_plugin_sdk::{Problems, Settings};

use crate::db::{DbConfig, Location};

/// The file used when `url` is empty.
pub const DEFAULT_FILE: &str = "buntime.db";

pub fn parse(s: &Settings, data_dir: &Path, problems: &mut Problems) -> Option<DbConfig> {
    let before = problems.len();
    let url = s.string("url", problems).unwrap_or_default();
    let token = s.string("authToken", problems).filter(|t| !t.is_empty());
    let location = location(url.trim(), data_dir, token).unwrap_or_else(|why| {
        s.problem(problems, "url", why);
        Location::Local(data_dir.join(DEFAULT_FILE))
    });
    let replicas = s.list("replicas", problems).unwrap_or_default();
    for r in &replicas {
        if !is_remote_url(r) {
            s.problem(
                problems,
                "replicas",
                format!("{r:?} is not an http://, https:// or libsql:// URL"),
            );
        }
    }
    if !replicas.is_empty() && matches!(location, Location::Local(_)) {
        s.problem(
            problems,
            "replicas",
            "read replicas need a remote primary (url)",
        );
    }
    (problems.len() == before).then_some(DbConfig { location, replicas })
}

fn location(url: &str, data_dir: &Path, token: Option<String>) -> Result<Location, String> {
    if url.is_empty() {
        return Ok(Location::Local(data_dir.join(DEFAULT_FILE)));
    }
    if is_remote_url(url) {
        return Ok(Location::Remote {
            url: url.to_string(),
            token,
        });
    }
    let path = url.strip_prefix("file:").unwrap_or(url);
    if path.is_empty() || path == ":memory:" {
        return Err(
            "must name a database file (an in-memory database would be empty on every connection)"
                .into(),
        );
    }
    if path.contains("://") {
        return Err(
            "unsupported scheme (use http://, https://, libsql://, file: or a path)".into(),
        );
    }
    Ok(Location::Local(PathBuf::from(path)))
}

fn is_remote_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    ["http://", "https://", "libsql://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(yaml: &str) -> Result<DbConfig, Problems> {
        let s = Settings::new("plugins.database", serde_yaml::from_str(yaml).unwrap());
        let mut p = Problems::default();
        parse(&s, Path::new("/data"), &mut p).ok_or(p)
    }

    #[test]
    fn locations() {
        assert_eq!(
            parse_yaml("url: ''").unwrap().location,
            Location::Local("/data/buntime.db".into())
        );
        assert_eq!(
            parse_yaml("url: file:/tmp/x.db").unwrap().location,
            Location::Local("/tmp/x.db".into())
        );
        assert_eq!(
            parse_yaml("url: ./rel.db").unwrap().location,
            Location::Local("./rel.db".into())
        );
        let remote = parse_yaml(
            "url: http://127.0.0.1:8080\nauthToken: t\nreplicas: [https://r1, 'libsql://r2']",
        )
        .unwrap();
        assert_eq!(
            remote.location,
            Location::Remote {
                url: "http://127.0.0.1:8080".into(),
                token: Some("t".into())
            }
        );
        assert_eq!(remote.replicas.len(), 2);
    }

    #[test]
    fn bad_values_are_named() {
        let p = parse_yaml("url: 'postgres://x'\nreplicas: [ftp://r]")
            .unwrap_err()
            .to_string();
        assert!(p.contains("plugins.database.url"), "{p}");
        assert!(p.contains("ftp://r"), "{p}");
        let p = parse_yaml("url: ':memory:'").unwrap_err().to_string();
        assert!(p.contains("in-memory"), "{p}");
        let p = parse_yaml("replicas: [http://r1]").unwrap_err().to_string();
        assert!(p.contains("remote primary"), "{p}");
    }
}
