//! The Helm charts (SPEC 12): rendered by the real helm, checked against Kubernetes'
//! schemas, and run: the gateway starts with the environment the buntime chart gives it
//! and answers its probes, and sqld starts with the arguments the libsql chart gives it,
//! a primary and a replica that gateways share.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::helm::{self, count, docs, find, host_path};
use common::{Gateway, Options, eventually, free_port};
use serde_json::{Value, json};

const IMAGE: &str = "image:\n  repository: registry.example.com/buntime\n";

fn deployment(d: &[Value]) -> &Value {
    find(d, "Deployment", Some("gw-buntime"))
}

fn container(d: &[Value]) -> &Value {
    &deployment(d)["spec"]["template"]["spec"]["containers"][0]
}

/// The environment the gateway's container gets: its ConfigMap, then its Secret.
fn container_env(d: &[Value]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in container(d)["envFrom"].as_array().unwrap() {
        let (kind, field, name) = if from["configMapRef"].is_object() {
            ("ConfigMap", "data", &from["configMapRef"]["name"])
        } else {
            ("Secret", "stringData", &from["secretRef"]["name"])
        };
        let res = find(d, kind, name.as_str());
        for (k, v) in res[field].as_object().unwrap() {
            env.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    env
}

fn render(values: &str) -> (String, Vec<Value>) {
    let text = helm::template("buntime", "gw", values).unwrap_or_else(|e| panic!("{e}"));
    let d = docs(&text);
    (text, d)
}

#[test]
fn buntime_chart_defaults() {
    require_helm!();
    helm::lint("buntime", IMAGE);
    let (text, d) = render(IMAGE);
    helm::validate(&text);

    let c = container(&d);
    assert_eq!(c["image"], "registry.example.com/buntime:0.1.0");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/api/health/live");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/api/health/live");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/api/health/ready");
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8000, "protocol": "TCP"}])
    );
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    let pod = &deployment(&d)["spec"]["template"]["spec"];
    // Pre-stop 5 s + drain delay 0 s + shutdown grace 30 s + 10 s for the workers.
    assert_eq!(pod["terminationGracePeriodSeconds"], 45);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);

    // One pod on the local database: its file is not shared.
    let spec = &deployment(&d)["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");

    // Apps, plugins and the local database each on a claim, mounted where the gateway
    // looks for them.
    let env = container_env(&d);
    assert_eq!(env["RUNTIME_WORKER_DIRS"], "/data/.apps:/data/apps");
    assert_eq!(env["RUNTIME_PLUGIN_DIRS"], "/data/.plugins:/data/plugins");
    assert_eq!(env["RUNTIME_LOG_FORMAT"], "json");
    assert!(
        !env.contains_key("RUNTIME_THREADS"),
        "empty values stay unset"
    );
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(mounts["apps"], "/data/apps");
    assert_eq!(mounts["plugins"], "/data/plugins");
    assert_eq!(mounts["data"], env["RUNTIME_DATA_DIR"]);
    for v in pod["volumes"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        if name != "tmp" {
            assert_eq!(
                v["persistentVolumeClaim"]["claimName"],
                format!("gw-buntime-{name}")
            );
            find(
                &d,
                "PersistentVolumeClaim",
                Some(&format!("gw-buntime-{name}")),
            );
        }
    }
    assert_eq!(count(&d, "PersistentVolumeClaim"), 3);

    // Nothing optional, and no Secret without a credential.
    for kind in [
        "Secret",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert_eq!(count(&d, kind), 0, "{kind}");
    }
    let svc = find(&d, "Service", Some("gw-buntime"));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
}

/// The environment the chart renders, given to the real gateway (the container's volume
/// paths mapped into a temp dir), answers the Deployment's own probes.
#[test]
fn buntime_chart_environment_runs_the_gateway() {
    require_helm!();
    let values = format!(
        "{IMAGE}
config:
  RUNTIME_API_PREFIX: _/
  RUNTIME_SHUTDOWN_GRACE: 1m
  RUNTIME_DRAIN_DELAY: 500ms
  RUNTIME_POOL_SIZE: 20
  GATEWAY_CORS_ORIGIN: https://app.example.com
  GATEWAY_CORS_CREDENTIALS: true
  GATEWAY_CORS_MAX_AGE: 0
  GATEWAY_RATE_LIMIT_REQUESTS: 1000000
  AUTH_JWT_ISSUER: https://issuer.example.com
secrets:
  RUNTIME_MASTER_KEY: chart-master-key
  AUTH_JWT_SECRET: chart-jwt-secret-chart-jwt-secret
"
    );
    helm::lint("buntime", &values);
    let (text, d) = render(&values);
    helm::validate(&text);

    let env = container_env(&d);
    // Bare numbers and booleans arrive as the gateway reads them; credentials only in
    // the Secret.
    assert_eq!(env["RUNTIME_POOL_SIZE"], "20");
    assert_eq!(env["GATEWAY_CORS_CREDENTIALS"], "true");
    assert_eq!(env["GATEWAY_CORS_MAX_AGE"], "0");
    assert_eq!(env["GATEWAY_RATE_LIMIT_REQUESTS"], "1000000");
    let cm = find(&d, "ConfigMap", Some("gw-buntime"));
    assert!(cm["data"].get("RUNTIME_MASTER_KEY").is_none());
    assert_eq!(
        find(&d, "Secret", Some("gw-buntime"))["stringData"]["RUNTIME_MASTER_KEY"],
        "chart-master-key"
    );
    let pod = &deployment(&d)["spec"]["template"]["spec"];
    // 5 + 1 (500 ms, rounded up) + 60 + 10.
    assert_eq!(pod["terminationGracePeriodSeconds"], 76);

    // `buntime check` accepts every value as rendered.
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (ok, out) = common::check(None, &pairs);
    assert!(ok, "{out}");

    // Run it, with the volumes' paths in a temp dir and a free port for 8000.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::default();
    for (k, v) in &env {
        let v = match k.as_str() {
            "RUNTIME_WORKER_DIRS" | "RUNTIME_PLUGIN_DIRS" | "RUNTIME_DATA_DIR" => v
                .split(':')
                .map(|p| host_path(dir.path(), p).display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            "PORT" => continue, // the harness picks one
            _ => v.clone(),
        };
        opts = opts.env(k, &v);
    }
    let gw = Gateway::start(opts);
    let c = container(&d);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().unwrap();
        assert!(path.starts_with("/_/api/health/"), "{path}");
        let ok = eventually(Duration::from_secs(20), || {
            (gw.get(path).status == 200).then_some(())
        });
        assert!(ok.is_some(), "{probe} {path}: {:?}", gw.get(path));
    }
    // The Secret's master key is the admin credential; JSON lines on stderr.
    let rules = "/redirects/api/rules";
    assert_eq!(
        gw.get_with(rules, &[("x-api-key", "chart-master-key")])
            .status,
        200
    );
    assert_eq!(gw.get_with(rules, &[("x-api-key", "wrong")]).status, 401);
    let line = gw.stderr().lines().next().unwrap_or_default().to_string();
    assert!(
        serde_json::from_str::<Value>(&line).is_ok(),
        "not JSON: {line}"
    );
}

#[test]
fn buntime_chart_options() {
    require_helm!();
    let values = format!(
        "{IMAGE}
config:
  DATABASE_LIBSQL_URL: http://db-libsql.apps.svc:8080
  DATABASE_LIBSQL_REPLICAS_1: http://db-libsql-replica-0.db-libsql-replica.apps.svc:8080
  METRICS_PORT: 9100
secrets:
  METRICS_TOKEN: scrape-me
  DATABASE_LIBSQL_AUTH_TOKEN: a.b.c
ingress:
  enabled: true
  className: nginx
  hosts:
    - host: gw.example.com
      paths: [{{path: /, pathType: Prefix}}]
  tls:
    - secretName: gw-tls
      hosts: [gw.example.com]
autoscaling:
  enabled: true
  minReplicas: 3
podDisruptionBudget:
  enabled: true
serviceMonitor:
  enabled: true
persistence:
  apps:
    existingClaim: shared-apps
    accessModes: [ReadWriteMany]
"
    );
    helm::lint("buntime", &values);
    let (text, d) = render(&values);
    helm::validate(&text);

    let spec = &deployment(&d)["spec"];
    assert!(
        spec.get("replicas").is_none(),
        "the autoscaler owns the count"
    );
    assert!(
        spec.get("strategy").is_none(),
        "rolling: the database is shared"
    );
    let hpa = find(&d, "HorizontalPodAutoscaler", None);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "gw-buntime");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(
        find(&d, "PodDisruptionBudget", None)["spec"]["minAvailable"],
        1
    );
    let ing = find(&d, "Ingress", None);
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"],
        "http"
    );

    // Metrics on their own port, scraped with the token from the Secret.
    let c = container(&d);
    assert_eq!(
        c["ports"][1],
        json!({"name": "metrics", "containerPort": 9100, "protocol": "TCP"})
    );
    let svc = find(&d, "Service", Some("gw-buntime"));
    assert_eq!(svc["spec"]["ports"][1]["targetPort"], "metrics");
    let sm = find(&d, "ServiceMonitor", None);
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "metrics");
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(
        ep["authorization"]["credentials"],
        json!({"name": "gw-buntime", "key": "METRICS_TOKEN", "optional": false})
    );

    // The database is remote: no claim for a local one; apps on the existing claim.
    assert_eq!(count(&d, "PersistentVolumeClaim"), 1);
    find(&d, "PersistentVolumeClaim", Some("gw-buntime-plugins"));
    let volumes = deployment(&d)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let vol = |n: &str| volumes.iter().find(|v| v["name"] == n).unwrap();
    assert_eq!(
        vol("apps")["persistentVolumeClaim"]["claimName"],
        "shared-apps"
    );
    assert_eq!(vol("data")["emptyDir"], json!({}));
    let env = container_env(&d);
    assert_eq!(
        env["DATABASE_LIBSQL_REPLICAS_1"],
        "http://db-libsql-replica-0.db-libsql-replica.apps.svc:8080"
    );
    assert_eq!(env["DATABASE_LIBSQL_AUTH_TOKEN"], "a.b.c");

    // A private CA bundle, mounted from a ConfigMap and named by SSL_CERT_FILE.
    let (text, d) = render(&format!(
        "{IMAGE}
extraEnv:
  - {{name: SSL_CERT_FILE, value: /etc/ssl/company/ca.pem}}
extraVolumes:
  - name: company-ca
    configMap: {{name: company-ca}}
extraVolumeMounts:
  - {{name: company-ca, mountPath: /etc/ssl/company, readOnly: true}}
"
    ));
    helm::validate(&text);
    let pod = &deployment(&d)["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.contains(&json!({"name": "company-ca", "configMap": {"name": "company-ca"}})),
        "{volumes:?}"
    );
    let mounts = container(&d)["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(
            &json!({"name": "company-ca", "mountPath": "/etc/ssl/company", "readOnly": true})
        ),
        "{mounts:?}"
    );
    assert!(mounts.iter().any(|m| m["name"] == "tmp"), "{mounts:?}");
    assert_eq!(
        container(&d)["env"],
        json!([{"name": "SSL_CERT_FILE", "value": "/etc/ssl/company/ca.pem"}])
    );

    // A Secret of one's own replaces the chart's.
    let (text, d) = render(&format!("{IMAGE}secrets:\n  existingSecret: mine\n"));
    helm::validate(&text);
    assert_eq!(count(&d, "Secret"), 0);
    assert_eq!(container(&d)["envFrom"][1]["secretRef"]["name"], "mine");
}

#[test]
fn buntime_chart_refuses_what_cannot_work() {
    require_helm!();
    let refused = |values: &str, expect: &str| {
        let err = helm::template("buntime", "gw", values).expect_err(values);
        assert!(err.contains(expect), "{expect:?} not in {err}");
    };
    refused("", "image.repository is required");
    refused(
        &format!("{IMAGE}replicaCount: 2\n"),
        "config.DATABASE_LIBSQL_URL",
    );
    refused(
        &format!("{IMAGE}autoscaling:\n  enabled: true\n"),
        "config.DATABASE_LIBSQL_URL",
    );
    // A misspelt variable would be ignored by the gateway: the chart names it.
    refused(
        &format!("{IMAGE}config:\n  RUNTIME_LOG_LEVL: debug\n"),
        "RUNTIME_LOG_LEVL",
    );
    refused(&format!("{IMAGE}secrets:\n  MASTER_KEY: x\n"), "MASTER_KEY");
    refused(&format!("{IMAGE}replicaCounts: 2\n"), "replicaCounts");
    refused(
        &format!("{IMAGE}config:\n  RUNTIME_SHUTDOWN_GRACE: 30 sec\n"),
        "\"30 sec\" is not a duration",
    );
    refused(
        &format!("{IMAGE}config:\n  RUNTIME_DATA_DIR: ./data\n"),
        "RUNTIME_DATA_DIR must be an absolute path",
    );
}

/// Every variable the README documents is a key of the chart's values, and the other
/// way round, so that the ConfigMap and Secret can set each one (SPEC 12).
#[test]
fn buntime_chart_has_every_variable() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Configuration").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let full = regex::Regex::new(r"`([A-Z][A-Z0-9_]*)`").unwrap();
    let suffix = regex::Regex::new(r"`(_[A-Z0-9_]+)`").unwrap();
    let mut documented = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap();
        let names: Vec<&str> = full
            .captures_iter(cell)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        // `GATEWAY_CORS_CREDENTIALS`, `_METHODS`: the others share the first's prefix.
        let prefix = names[0].rsplit_once('_').map_or(names[0], |(p, _)| p);
        let more = suffix
            .captures_iter(cell)
            .map(|c| format!("{prefix}{}", c.get(1).unwrap().as_str()));
        for name in names.iter().map(|n| n.to_string()).chain(more) {
            // Numbered ones (DATABASE_LIBSQL_REPLICAS_1, _2, ...) match a pattern instead.
            if !name.ends_with(|c: char| c.is_ascii_digit()) {
                documented.insert(name);
            }
        }
    }
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(helm::chart("buntime").join("values.yaml")).unwrap(),
    )
    .unwrap();
    let mut chart: BTreeSet<String> = values["config"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    chart.extend(
        values["secrets"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "existingSecret")
            .cloned(),
    );
    assert_eq!(
        documented, chart,
        "README variables vs charts/buntime values"
    );
    assert!(documented.len() > 40, "{documented:?}");

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(helm::chart("buntime").join("values.schema.json")).unwrap(),
    )
    .unwrap();
    let props = |s: &str| -> BTreeSet<String> {
        schema["properties"][s]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let mut allowed = props("config");
    allowed.extend(
        props("secrets")
            .into_iter()
            .filter(|k| k != "existingSecret"),
    );
    assert_eq!(allowed, chart, "values.schema.json vs values.yaml");
}

/// A process started from a chart's container command, stopped on drop.
struct Pod(Child, tempfile::TempDir);

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts sqld with the arguments the StatefulSet gives it, container addresses mapped
/// to this machine: each `0.0.0.0:<port>` to a free 127.0.0.1 port, the primary's pod
/// name to the primary started before (`primary_grpc`), and paths into a temp dir (the key
/// file from the chart's Secret). Returns it and its HTTP and gRPC ports.
fn start_sqld(
    sts: &Value,
    primary_grpc: Option<u16>,
    files: &BTreeMap<String, String>,
) -> (Pod, u16, u16) {
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["/bin/sqld"]));
    let dir = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    let given: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let mut args = Vec::new();
    let mut flag = "";
    for a in given {
        args.push(match flag {
            "--http-listen-addr" => format!("127.0.0.1:{http}"),
            "--grpc-listen-addr" => format!("127.0.0.1:{grpc}"),
            "--primary-grpc-url" => {
                // The primary's pod, through its headless Service, on its gRPC port.
                assert_eq!(a, "http://db-libsql-0.db-libsql:5001");
                format!(
                    "http://127.0.0.1:{}",
                    primary_grpc.expect("a primary first")
                )
            }
            "--db-path" => host_path(dir.path(), a).display().to_string(),
            "--auth-jwt-key-file" => {
                let name = Path::new(a).file_name().unwrap().to_str().unwrap();
                let p = dir.path().join(name);
                std::fs::write(&p, &files[name]).unwrap();
                p.display().to_string()
            }
            _ => a.to_string(),
        });
        flag = if a.starts_with("--") { a } else { "" };
    }
    let log = std::fs::File::create(dir.path().join("sqld.log")).unwrap();
    let child = Command::new(common::sqld::bin().unwrap())
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sqld");
    let pod = Pod(child, dir);
    let probe = c["readinessProbe"]["httpGet"]["path"].as_str().unwrap();
    let up = eventually(Duration::from_secs(20), || {
        ureq::get(&format!("http://127.0.0.1:{http}{probe}"))
            .call()
            .ok()
    });
    let log = std::fs::read_to_string(pod.1.path().join("sqld.log")).unwrap_or_default();
    assert!(up.is_some(), "sqld {args:?}:\n{log}");
    (pod, http, grpc)
}

#[test]
fn libsql_chart_primary_and_replica_serve_gateways() {
    require_helm!();
    require_sqld!();
    let key = common::sqld::JWT_PUBLIC_PEM;
    let values = format!(
        "auth:\n  jwtPublicKey: |\n{}replicas:\n  count: 1\n",
        key.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    helm::lint("libsql", &values);
    let text = helm::template("libsql", "db", &values).unwrap_or_else(|e| panic!("{e}"));
    helm::validate(&text);
    let d = docs(&text);
    let primary = find(&d, "StatefulSet", Some("db-libsql"));
    let replica = find(&d, "StatefulSet", Some("db-libsql-replica"));
    assert_eq!(primary["spec"]["replicas"], 1);
    assert_eq!(replica["spec"]["replicas"], 1);
    for (sts, svc) in [(primary, "db-libsql"), (replica, "db-libsql-replica")] {
        assert_eq!(sts["spec"]["serviceName"], svc);
        let s = find(&d, "Service", Some(svc));
        assert_eq!(s["spec"]["clusterIP"], "None");
        assert_eq!(
            s["spec"]["selector"],
            sts["spec"]["selector"]["matchLabels"]
        );
        let claim = &sts["spec"]["volumeClaimTemplates"][0];
        assert_eq!(claim["metadata"]["name"], "data");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    }
    let secret = find(&d, "Secret", Some("db-libsql-auth"));
    let files: BTreeMap<String, String> = secret["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(files["jwt-public-key.pem"], key);

    let (_p, primary_http, primary_grpc) = start_sqld(primary, None, &files);
    let (_r, replica_http, _) = start_sqld(replica, Some(primary_grpc), &files);

    // Auth is on: no token, no database.
    let pipeline =
        json!({"requests": [{"type": "execute", "stmt": {"sql": "select 1"}}, {"type": "close"}]});
    let err =
        ureq::post(&format!("http://127.0.0.1:{primary_http}/v2/pipeline")).send_json(&pipeline);
    assert!(matches!(err, Err(ureq::Error::StatusCode(401))), "{err:?}");

    // Two gateways on the chart's primary and replica, as charts/buntime would run them
    // (with the address its NOTES print, mapped here): a rule written through one reaches
    // the other.
    let token = common::sqld::token("rw");
    let start = || {
        Gateway::start(
            Options::default()
                .env(
                    "DATABASE_LIBSQL_URL",
                    &format!("http://127.0.0.1:{primary_http}"),
                )
                .env(
                    "DATABASE_LIBSQL_REPLICAS",
                    &format!("http://127.0.0.1:{replica_http}"),
                )
                .env("DATABASE_LIBSQL_AUTH_TOKEN", &token)
                .ready(),
        )
    };
    let (a, b) = (start(), start());
    let rule = json!({"pattern": "^/charted/(.*)$", "target": "http://127.0.0.1:9"});
    let made = a.json("POST", "/redirects/api/rules", &[], &rule);
    assert_eq!(made.status, 201, "{made:?}");
    let id = made.json()["id"].as_str().unwrap().to_string();
    let seen = eventually(Duration::from_secs(15), || {
        let r = b.get(&format!("/redirects/api/rules/{id}"));
        (r.status == 200).then_some(r)
    });
    assert!(
        seen.is_some(),
        "rule {id} never reached the second gateway:\n{}",
        b.logs()
    );

    // The replica follows the primary, with the same key: the rule's row is there too.
    let count = json!({"requests": [
        {"type": "execute", "stmt": {"sql": "SELECT count(*) FROM kv_entries WHERE instr(key, CAST(? AS BLOB)) > 0",
            "args": [{"type": "text", "value": id}]}},
        {"type": "close"}]});
    let replicated = eventually(Duration::from_secs(15), || {
        let mut r = ureq::post(&format!("http://127.0.0.1:{replica_http}/v2/pipeline"))
            .header("authorization", &format!("Bearer {token}"))
            .send_json(&count)
            .ok()?;
        let v: Value = r.body_mut().read_json().ok()?;
        let n = &v["results"][0]["response"]["result"]["rows"][0][0]["value"];
        (n != "0").then(|| n.clone())
    });
    assert_eq!(
        replicated,
        Some(json!("1")),
        "the replica never had rule {id}"
    );
}

#[test]
fn libsql_chart_wants_auth() {
    require_helm!();
    let err = helm::template("libsql", "db", "").expect_err("no key");
    assert!(
        err.contains("auth.jwtPublicKey (or auth.existingSecret) is required"),
        "{err}"
    );
    let misspelt = "auth:\n  allowUnauthenticated: true\nreplica:\n  count: 1\n";
    let err = helm::template("libsql", "db", misspelt).expect_err("a misspelt key");
    assert!(err.contains("replica is not allowed"), "{err}");
    let err =
        helm::template("libsql", "db", "auth:\n  jwtPublicKey: not-a-key\n").expect_err("bad key");
    assert!(err.contains("must be a PEM public key"), "{err}");
    let text = helm::template("libsql", "db", "auth:\n  allowUnauthenticated: true\n").unwrap();
    helm::validate(&text);
    let d = docs(&text);
    assert_eq!(count(&d, "Secret"), 0);
    assert_eq!(count(&d, "StatefulSet"), 1, "no replicas by default");
    let args = &find(&d, "StatefulSet", None)["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        !args
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--auth-jwt-key-file")
    );
    let text = helm::template("libsql", "db", "auth:\n  existingSecret: my-key\n").unwrap();
    let d = docs(&text);
    assert_eq!(count(&d, "Secret"), 0);
    let vols = &find(&d, "StatefulSet", None)["spec"]["template"]["spec"]["volumes"];
    assert!(
        vols.as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "my-key")
    );
}

/// Each chart's values.schema.json names every top-level value of its values.yaml (and
/// nothing else but Helm's `global`), so that a misspelt value is refused, not ignored.
#[test]
fn schemas_name_every_value() {
    for name in ["buntime", "libsql"] {
        let dir = helm::chart(name);
        let values: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("values.yaml")).unwrap())
                .unwrap();
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).unwrap())
                .unwrap();
        let mut keys: BTreeSet<&str> = values
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.insert("global");
        let named: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, named, "{name}: values.yaml vs values.schema.json");
        assert_eq!(schema["additionalProperties"], false, "{name}");
    }
}
