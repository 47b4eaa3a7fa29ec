//! Upstream servers for proxy tests: an HTTP (or HTTPS, self-signed) echo server and a
//! WebSocket echo server, each on a free 127.0.0.1 port, stopped when dropped.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub url: String,
    pub headers: HashMap<String, String>,
    /// Header names in the case they arrived in, in order.
    pub names: Vec<String>,
    pub body: Vec<u8>,
}

pub struct Upstream {
    pub port: u16,
    pub tls: bool,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub fn http() -> Upstream {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        Self::run(server, false)
    }

    /// HTTPS with a self-signed certificate for `localhost` and 127.0.0.1.
    pub fn https() -> Upstream {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let config = tiny_http::SslConfig {
            certificate: cert.cert.pem().into_bytes(),
            private_key: cert.signing_key.serialize_pem().into_bytes(),
        };
        let server = tiny_http::Server::https("127.0.0.1:0", config).unwrap();
        Self::run(server, true)
    }

    fn run(server: tiny_http::Server, tls: bool) -> Upstream {
        let port = server.server_addr().to_ip().unwrap().port();
        let server = Arc::new(server);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, log) = (server.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for req in s.incoming_requests() {
                let log = log.clone();
                std::thread::spawn(move || respond(req, &log));
            }
        });
        Upstream {
            port,
            tls,
            server,
            thread: Some(thread),
            seen,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(mut req: tiny_http::Request, log: &Mutex<Vec<Seen>>) {
    let mut body = Vec::new();
    let _ = req.as_reader().read_to_end(&mut body);
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let url = req.url().to_string();
    let seen = Seen {
        method: req.method().as_str().to_string(),
        url: url.clone(),
        headers: headers.clone(),
        names: req
            .headers()
            .iter()
            .map(|h| h.field.as_str().to_string())
            .collect(),
        body: body.clone(),
    };
    log.lock().unwrap().push(seen);
    let path = url.split('?').next().unwrap_or("");
    // Behaviours are chosen by the path's tail, whatever prefix a rule put before it.
    let tail = |marker: &str| path.rfind(marker).map(|i| &path[i + marker.len()..]);
    let mut status = 200;
    let mut extra: Vec<tiny_http::Header> = Vec::new();
    if let Some(ms) = tail("/delay/").and_then(|m| m.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    } else if let Some(code) = tail("/status/").and_then(|c| c.parse().ok()) {
        status = code;
    } else if path.ends_with("/redirect") {
        status = 302;
        extra.push("Location: /elsewhere".parse().unwrap());
    } else if let Some(prefix) = path.strip_suffix("/redirect-self") {
        // An absolute URL from the Host it was given, as Tomcat and Spring build them.
        status = 302;
        let host = headers.get("host").cloned().unwrap_or_default();
        let location = format!("Location: http://{host}{prefix}/landed?from=1");
        extra.push(location.parse().unwrap());
    } else if path.ends_with("/folder") {
        // A folder asked for without its slash, sent to itself with one, as Tomcat, nginx
        // and most static servers do.
        status = 301;
        let host = headers.get("host").cloned().unwrap_or_default();
        extra.push(format!("Location: http://{host}{path}/").parse().unwrap());
    } else if path.ends_with("/header-case") {
        extra.push("X-Upstream-Case: Mixed".parse().unwrap());
    } else if path.ends_with("/vary") {
        extra.push("Vary: Accept-Encoding".parse().unwrap());
    } else if path.ends_with("/own-cors") {
        // An app with CORS of its own that allows every origin, with credentials.
        let origin = headers.get("origin").cloned().unwrap_or_default();
        for h in [
            format!("Access-Control-Allow-Origin: {origin}"),
            "Access-Control-Allow-Credentials: true".into(),
            "Access-Control-Expose-Headers: X-Private".into(),
        ] {
            extra.push(h.parse().unwrap());
        }
    }
    let echo = json!({
        "method": req.method().as_str(),
        "url": url,
        "headers": headers,
        "bodyLength": body.len(),
    });
    let mut resp = tiny_http::Response::from_string(echo.to_string())
        .with_status_code(status)
        .with_header(
            "Content-Type: application/json"
                .parse::<tiny_http::Header>()
                .unwrap(),
        );
    for h in extra {
        resp = resp.with_header(h);
    }
    let _ = req.respond(resp);
}

/// The echo body an upstream answered with.
pub fn echo(resp: &super::Resp) -> Value {
    resp.json()
}

/// A WebSocket server that echoes every message and records each handshake's path.
pub struct WsEcho {
    pub port: u16,
    pub paths: Arc<Mutex<Vec<String>>>,
}

impl WsEcho {
    pub fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let log = paths.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    // tungstenite's callback signature has a large error type; not ours to shrink.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &tungstenite::handshake::server::Request, resp| {
                        log.lock().unwrap().push(req.uri().to_string());
                        Ok(resp)
                    };
                    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
                        return;
                    };
                    while let Ok(msg) = ws.read() {
                        if msg.is_close() {
                            break;
                        }
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsEcho { port, paths }
    }
}

/// A WebSocket echo server behind TLS (self-signed), for `wss://` targets.
pub struct WssEcho {
    pub port: u16,
}

impl WssEcho {
    pub fn start() -> WssEcho {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let tls = rustls::StreamOwned::new(conn, stream);
                    let Ok(mut ws) = tungstenite::accept(tls) else {
                        return;
                    };
                    while let Ok(msg) = ws.read() {
                        if msg.is_close() || ws.send(msg).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WssEcho { port }
    }
}

/// A JWKS endpoint whose document (and status) the test can change at any time.
pub struct JwksServer {
    pub port: u16,
    pub body: Arc<Mutex<(u16, String)>>,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    server: Arc<tiny_http::Server>,
    tls: bool,
}

impl JwksServer {
    pub fn start(body: &str) -> JwksServer {
        Self::start_on("127.0.0.1:0", body)
    }

    pub fn start_on(addr: &str, body: &str) -> JwksServer {
        Self::serve(tiny_http::Server::http(addr).unwrap(), body, false)
    }

    /// Over HTTPS, with a certificate for `localhost` from a CA of its own, whose PEM
    /// comes back with it (no system store trusts it).
    pub fn https(body: &str) -> (JwksServer, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = tiny_http::SslConfig {
            certificate: cert.pem().into_bytes(),
            private_key: key.serialize_pem().into_bytes(),
        };
        let server = tiny_http::Server::https("127.0.0.1:0", config).unwrap();
        (Self::serve(server, body, true), ca.pem())
    }

    fn serve(server: tiny_http::Server, body: &str, tls: bool) -> JwksServer {
        let server = Arc::new(server);
        let port = server.server_addr().to_ip().unwrap().port();
        let state = Arc::new(Mutex::new((200u16, body.to_string())));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, st, h) = (server.clone(), state.clone(), hits.clone());
        std::thread::spawn(move || {
            for req in s.incoming_requests() {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (status, body) = st.lock().unwrap().clone();
                let _ =
                    req.respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        });
        JwksServer {
            port,
            body: state,
            hits,
            server,
            tls,
        }
    }

    pub fn url(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}/.well-known/jwks.json", self.port),
            false => format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port),
        }
    }

    pub fn set(&self, status: u16, body: &str) {
        *self.body.lock().unwrap() = (status, body.to_string());
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
