//! The charts as Kubernetes would get them: rendered by the real `helm` (`$HELM_BIN`, or
//! the copy `scripts/helm.sh install` puts in `.tools/`) and checked against Kubernetes'
//! own schemas by kubernetes-validate. Without helm the chart tests skip loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The oldest Kubernetes the charts support (the pre-stop `sleep` action).
pub const KUBE_VERSION: &str = "1.30.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Option<PathBuf> {
    super::tool("HELM_BIN", ".tools/helm/bin/helm")
}

fn validator() -> Option<PathBuf> {
    super::tool("KUBE_VALIDATE_PATH", ".tools/kubernetes-validate")
}

/// Returns early from a test when helm is not available, saying so loudly.
#[macro_export]
macro_rules! require_helm {
    () => {
        $crate::require_tool!(
            $crate::common::helm::bin(),
            "no helm (set HELM_BIN or run scripts/helm.sh install)"
        )
    };
}

pub fn chart(name: &str) -> PathBuf {
    root().join("charts").join(name)
}

/// Runs `helm <args> <chart> --values <values>`.
fn helm(args: &[&str], name: &str, values: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    Command::new(bin().expect("helm"))
        .args(args)
        .arg(chart(name))
        .arg("--values")
        .arg(&file)
        .output()
        .expect("run helm")
}

/// `helm template` of a chart with `values` (YAML) as the release `rel`: the rendered
/// text, or helm's error.
pub fn template(name: &str, rel: &str, values: &str) -> Result<String, String> {
    let args = [
        "template",
        rel,
        "--namespace",
        "apps",
        "--kube-version",
        KUBE_VERSION,
    ];
    let out = helm(&args, name, values);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm lint --strict`, which also checks the values against values.schema.json.
pub fn lint(name: &str, values: &str) {
    let out = helm(&["lint", "--strict"], name, values);
    assert!(
        out.status.success(),
        "helm lint {name}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks every rendered resource against Kubernetes' schema for `KUBE_VERSION`,
/// rejecting unknown fields (custom resources, which it has no schema for, excepted).
pub fn validate(rendered: &str) {
    let path = validator()
        .expect("kubernetes-validate (set KUBE_VALIDATE_PATH or run scripts/helm.sh install)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "--no-warn",
        ])
        .args(["-k", KUBE_VERSION])
        .arg(&file)
        .env("PYTHONPATH", &path)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{}{}\n{rendered}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rendered resources, as JSON values.
pub fn docs(rendered: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(rendered)
        .filter_map(|d| {
            let v: Value = serde::Deserialize::deserialize(d).unwrap();
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// The one resource of `kind` (named `name`, when given).
pub fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let mut found = docs
        .iter()
        .filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n));
    let one = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} {name:?} in {docs:#?}"));
    assert!(found.next().is_none(), "more than one {kind} {name:?}");
    one
}

pub fn count(docs: &[Value], kind: &str) -> usize {
    docs.iter().filter(|d| d["kind"] == kind).count()
}

/// A container's path mapped into `dir`: what the volume at that path is on this machine.
pub fn host_path(dir: &Path, container_path: &str) -> PathBuf {
    let p = dir.join(container_path.trim_start_matches('/'));
    std::fs::create_dir_all(&p).unwrap();
    p
}
