//! App discovery (SPEC 8.1): the first path segment names an app (optionally `name@range`);
//! versions come from `<dir>/<name>@<v>/`, `<dir>/<name>/<v>/` and `<dir>/<name>/` itself
//! (as `latest`, when it holds a manifest), over every worker dir in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use buntime_plugin_sdk::percent::percent_decode;
use semver::{Version, VersionReq};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub name: String,
    /// `1.2.0` or `latest`.
    pub version: String,
    pub dir: PathBuf,
}

/// One app as `GET /api/apps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub path: String,
    pub versions: Vec<String>,
}

pub struct Discovery {
    dirs: Vec<PathBuf>,
    /// First path segments that never name an app (the runtime API's).
    reserved: Vec<String>,
    /// Every app folder, read again by `refresh` (the pool's supervisor, once a second).
    /// The request path only looks names up in it: no lock, no directory read.
    index: ArcSwap<Index>,
}

/// Every app in the worker dirs: name -> versions (earlier dirs win for one version).
struct Index {
    apps: HashMap<String, Vec<(String, PathBuf)>>,
}

pub fn has_manifest(dir: &Path) -> bool {
    dir.join("manifest.yaml").is_file() || dir.join("manifest.yml").is_file()
}

/// `v` as a folder names a version: semver, or `latest`.
fn version_name(v: &str) -> bool {
    v == "latest" || Version::parse(v).is_ok()
}

impl Discovery {
    pub fn new(dirs: Vec<PathBuf>, reserved: Vec<String>) -> Discovery {
        let index = ArcSwap::from_pointee(scan(&dirs));
        Discovery {
            dirs,
            reserved,
            index,
        }
    }

    /// The app a first path segment names, if any (folders as of the last `refresh`).
    pub fn resolve(&self, segment: &str) -> Option<Located> {
        let (name, range) = match segment.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (segment, None),
        };
        if self.reserved.iter().any(|r| r == name) {
            return None;
        }
        let versions = self.index.load();
        let versions = versions.apps.get(name)?;
        // A range may arrive percent-encoded: `>=1.2 <2` always is (a raw `>` or space is
        // no valid request target), and `^1` is by Python's requests, Safari and others.
        match range {
            Some(r) if r.contains('%') => pick(versions, Some(&percent_decode(r).ok()?)),
            _ => pick(versions, range),
        }
    }

    /// Reads the worker dirs again, so that new and removed folders count.
    pub fn refresh(&self) {
        self.index.store(Arc::new(scan(&self.dirs)));
    }

    /// Every version of every app, each with its folder: by name, newest first. What
    /// applies to each version's own manifest (preloading, the start-up warnings) reads
    /// these, not the one version a bare name picks.
    pub fn every_version(&self) -> Vec<Located> {
        let index = self.index.load();
        let mut out: Vec<Located> = index
            .apps
            .iter()
            .flat_map(|(name, versions)| {
                versions.iter().map(|(v, dir)| Located {
                    name: name.clone(),
                    version: v.clone(),
                    dir: dir.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| order(&b.version, &a.version))
        });
        out
    }

    /// Folders the original Buntime served as an app and this gateway does not (SPEC 8.1
    /// asks for a manifest): `<dir>/<name>/` with a `package.json` but neither a manifest
    /// nor version folders, under a name no app has. Named at start and by `check`, so a
    /// migrated app is no silent 404.
    pub fn manifestless(&self) -> Vec<(String, PathBuf)> {
        let index = self.index.load();
        let mut out: Vec<(String, PathBuf)> = entries(&self.dirs)
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .filter(|(name, path)| {
                valid_name(name)
                    && !name.starts_with('.')
                    && !index.apps.contains_key(name)
                    && path.join("package.json").is_file()
                    && !has_manifest(path)
            })
            .collect();
        out.sort();
        out
    }

    /// Folders laid out as an app that no URL picks, each with the reason: a name no app
    /// may have (`my app`, `café`) on a folder with a manifest, version folders or a
    /// version after an `@`; or no version after the `@` of an app's name (`hello@v1.2`).
    /// Named at start and by `check`, so such an app is no silent 404.
    pub fn misnamed(&self) -> Vec<(PathBuf, String)> {
        const NAME: &str = "an app's name, the first segment of its URLs, may hold only \
                            letters, digits, -, _ and .";
        let mut out: Vec<(PathBuf, String)> = entries(&self.dirs)
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if file.starts_with(['.', '@']) || !path.is_dir() {
                    return None;
                }
                let why = match file.split_once('@') {
                    Some((name, v)) => match (valid_name(name), version_name(v)) {
                        (true, true) => return None,
                        (false, _) => NAME.to_string(),
                        (true, false) => format!(
                            "{v:?} after the @ is no version (semver such as 1.2.0, or latest)"
                        ),
                    },
                    None if valid_name(&file) => return None,
                    None if has_manifest(&path) || version_folders(&path).next().is_some() => {
                        NAME.to_string()
                    }
                    None => return None,
                };
                Some((path, why))
            })
            .collect();
        out.sort();
        out
    }

    /// Every app in every worker dir, for `GET /api/apps`.
    pub fn list(&self) -> Vec<Listed> {
        let index = self.index.load();
        let mut names: Vec<&String> = index.apps.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| {
                let mut versions = index.apps[name].clone();
                let chosen = pick(&versions, None)?;
                versions.sort_by(|a, b| order(&b.0, &a.0));
                Some(Listed {
                    path: chosen.dir.display().to_string(),
                    versions: versions.into_iter().map(|(v, _)| v).collect(),
                    name: name.clone(),
                })
            })
            .collect()
    }
}

/// Reads the worker dirs: `<name>@<v>/`, `<name>/<v>/`, and `<name>/` itself as `latest`
/// when it holds a manifest. Hidden and invalid names are skipped.
fn scan(dirs: &[PathBuf]) -> Index {
    let mut apps: HashMap<String, Vec<(String, PathBuf)>> = HashMap::new();
    let mut add = |name: &str, v: String, p: PathBuf| {
        let versions = apps.entry(name.to_string()).or_default();
        if !versions.iter().any(|(seen, _)| *seen == v) {
            versions.push((v, p));
        }
    };
    for e in entries(dirs) {
        let Ok(file) = e.file_name().into_string() else {
            continue;
        };
        let path = e.path();
        let name = file.split('@').next().unwrap_or("");
        if !path.is_dir() || name.starts_with('.') || !valid_name(name) {
            continue;
        }
        if let Some((_, v)) = file.split_once('@') {
            if version_name(v) {
                add(name, v.to_string(), path);
            }
            continue;
        }
        if has_manifest(&path) {
            add(name, "latest".to_string(), path.clone());
        }
        for (v, sub) in version_folders(&path) {
            add(name, v, sub);
        }
    }
    Index { apps }
}

/// The entries of the folders `dirs`, in order; a folder that cannot be read has none.
fn entries(dirs: &[PathBuf]) -> impl Iterator<Item = std::fs::DirEntry> + '_ {
    dirs.iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
}

/// The `<v>/` folders of an app folder, each named by a version.
fn version_folders(app: &Path) -> impl Iterator<Item = (String, PathBuf)> {
    std::fs::read_dir(app)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|sub| {
            let v = sub.file_name().into_string().ok()?;
            (version_name(&v) && sub.path().is_dir()).then(|| (v, sub.path()))
        })
}

/// What an app name may be: letters, digits, `-`, `_`, `.` (not first).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Newest first: `latest`, then semver descending.
fn order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a, b) {
        ("latest", "latest") => std::cmp::Ordering::Equal,
        ("latest", _) => std::cmp::Ordering::Greater,
        (_, "latest") => std::cmp::Ordering::Less,
        _ => Version::parse(a).ok().cmp(&Version::parse(b).ok()),
    }
}

/// No range: `latest` if present, else the highest semver. A range (`1`, `1.4`, `^1.0.0`,
/// `~1.4.0`, exact): the highest semver satisfying it.
fn pick(versions: &[(String, PathBuf)], range: Option<&str>) -> Option<Located> {
    let located = |(v, p): &(String, PathBuf)| Located {
        name: String::new(),
        version: v.clone(),
        dir: p.clone(),
    };
    let semvers = || {
        versions.iter().filter_map(|(v, p)| {
            Version::parse(v)
                .ok()
                .map(|sv| (sv, (v.clone(), p.clone())))
        })
    };
    match range {
        None => versions
            .iter()
            .find(|(v, _)| v == "latest")
            .map(located)
            .or_else(|| {
                semvers()
                    .max_by(|a, b| a.0.cmp(&b.0))
                    .map(|(_, x)| located(&x))
            }),
        Some("latest") => versions.iter().find(|(v, _)| v == "latest").map(located),
        Some(r) => {
            let req = requirement(r)?;
            semvers()
                .filter(|(sv, _)| req.matches(sv))
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, x)| located(&x))
        }
    }
}

/// `1` and `1.4` mean "that major/minor line"; `1.2.3` alone is exact; operators as written.
fn requirement(r: &str) -> Option<VersionReq> {
    let r = r.trim();
    if Version::parse(r).is_ok() {
        return VersionReq::parse(&format!("={r}")).ok();
    }
    if r.split('.').all(|p| p.parse::<u64>().is_ok()) {
        return VersionReq::parse(&format!("{r}.*"))
            .ok()
            .or_else(|| VersionReq::parse(&format!("~{r}")).ok());
    }
    VersionReq::parse(r).ok()
}

impl Discovery {
    /// Like `resolve`, naming the app.
    pub fn find(&self, segment: &str) -> Option<Located> {
        self.resolve(segment).map(|mut l| {
            l.name = segment.split('@').next().unwrap_or(segment).to_string();
            l
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(spec: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for p in spec {
            let path = root.path().join(p);
            if p.ends_with(".yaml") {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, "{}").unwrap();
            } else {
                std::fs::create_dir_all(path).unwrap();
            }
        }
        root
    }

    fn version(d: &Discovery, seg: &str) -> Option<String> {
        d.find(seg).map(|l| l.version)
    }

    #[test]
    fn versions_and_ranges() {
        let root = tree(&[
            "hello@1.0.0",
            "hello@1.4.2",
            "hello/1.4.9",
            "hello/2.0.0",
            "hello/notaversion",
            "plain/manifest.yaml",
            "plain/0.1.0",
            "bare",
        ]);
        let d = Discovery::new(vec![root.path().into()], vec!["api".into()]);
        assert_eq!(
            version(&d, "hello").as_deref(),
            Some("2.0.0"),
            "no latest: the highest semver"
        );
        assert_eq!(version(&d, "hello@1").as_deref(), Some("1.4.9"));
        assert_eq!(version(&d, "hello@1.4").as_deref(), Some("1.4.9"));
        assert_eq!(version(&d, "hello@^1.0.0").as_deref(), Some("1.4.9"));
        assert_eq!(version(&d, "hello@~1.4.0").as_deref(), Some("1.4.9"));
        assert_eq!(
            version(&d, "hello@1.4.2").as_deref(),
            Some("1.4.2"),
            "exact"
        );
        assert_eq!(version(&d, "hello@1.0.0").as_deref(), Some("1.0.0"));
        assert_eq!(
            version(&d, "hello@%5E1.0.0").as_deref(),
            Some("1.4.9"),
            "a percent-encoded range"
        );
        assert_eq!(
            version(&d, "hello@%3E%3D1.0.1,%20%3C1.4.5").as_deref(),
            Some("1.4.2")
        );
        assert_eq!(version(&d, "hello@%5E1.0.0%zz"), None, "a bad escape");
        assert_eq!(version(&d, "hello@3"), None);
        assert_eq!(version(&d, "hello@garbage"), None);
        assert_eq!(
            version(&d, "plain").as_deref(),
            Some("latest"),
            "a folder with a manifest is latest"
        );
        assert_eq!(version(&d, "plain@0.1").as_deref(), Some("0.1.0"));
        assert_eq!(version(&d, "bare"), None, "no manifest and no versions");
        assert_eq!(
            d.find("hello@1.4").unwrap().dir,
            root.path().join("hello/1.4.9")
        );
    }

    #[test]
    fn dirs_are_searched_in_order() {
        let core = tree(&["tool/manifest.yaml", "tool@1.0.0"]);
        let external = tree(&["tool/manifest.yaml", "tool@2.0.0", "other@1.0.0"]);
        let d = Discovery::new(vec![core.path().into(), external.path().into()], vec![]);
        assert_eq!(
            d.find("tool").unwrap().dir,
            core.path().join("tool"),
            "the core dir's latest wins"
        );
        assert_eq!(
            version(&d, "tool@2").as_deref(),
            Some("2.0.0"),
            "versions from every dir count"
        );
        assert_eq!(version(&d, "other").as_deref(), Some("1.0.0"));
        let listed = d.list();
        let tool = listed.iter().find(|l| l.name == "tool").unwrap();
        assert_eq!(tool.versions, vec!["latest", "2.0.0", "1.0.0"]);
        let every: Vec<(String, String, PathBuf)> = d
            .every_version()
            .into_iter()
            .map(|l| (l.name, l.version, l.dir))
            .collect();
        let own = |n: &str, v: &str, dir: &PathBuf| (n.to_string(), v.to_string(), dir.clone());
        assert_eq!(
            every,
            [
                own("other", "1.0.0", &external.path().join("other@1.0.0")),
                own("tool", "latest", &core.path().join("tool")),
                own("tool", "2.0.0", &external.path().join("tool@2.0.0")),
                own("tool", "1.0.0", &core.path().join("tool@1.0.0")),
            ]
        );
    }

    #[test]
    fn refused_names() {
        let root = tree(&[
            ".hidden/manifest.yaml",
            "api/manifest.yaml",
            "ok/manifest.yaml",
        ]);
        let d = Discovery::new(vec![root.path().into()], vec!["api".into()]);
        assert_eq!(d.find(".hidden"), None);
        assert_eq!(d.find("api"), None, "the runtime API's segment");
        assert_eq!(d.find("..%2f"), None);
        assert!(d.find("ok").is_some());
        assert!(d.list().iter().all(|l| l.name != ".hidden"));
    }

    #[test]
    fn new_folders_appear_on_refresh() {
        let root = tree(&[]);
        let d = Discovery::new(vec![root.path().into()], vec![]);
        assert_eq!(d.find("late"), None);
        std::fs::create_dir_all(root.path().join("late@1.0.0")).unwrap();
        assert_eq!(d.find("late"), None, "the index is read only on refresh");
        d.refresh();
        assert_eq!(version(&d, "late").as_deref(), Some("1.0.0"));
        std::fs::remove_dir(root.path().join("late@1.0.0")).unwrap();
        d.refresh();
        assert_eq!(d.find("late"), None);
    }
}
