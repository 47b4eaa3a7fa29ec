//! `buntime worker static`: the worker that serves a static app (SPEC 8.2), started by the
//! pool like any command app: it listens on `PORT` (127.0.0.1) or `BUNTIME_SOCKET`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use buntime_plugin_sdk::percent::percent_decode;
use http::{Method, Response, StatusCode, header};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::conditional::{self, Part, Validators};
use crate::inject::Inject;

/// Files up to this size are read without leaving the worker's thread (see `reply`);
/// larger ones are sent in chunks of this size.
const INLINE_READ_MAX: u64 = 256 << 10;

/// HTML pages up to this size get the manifest's additions (they are read whole for it);
/// larger ones are sent as they are.
const INJECT_MAX: u64 = 8 << 20;

/// What a request path names in the folder.
#[derive(Debug, PartialEq)]
enum Lookup {
    File(PathBuf),
    Missing,
    /// A folder asked for without the trailing slash: redirected to it.
    AddSlash,
}

pub struct StaticFiles {
    /// The entry's own folder, canonical (`<app>/dist` for `dist/index.html`): nothing
    /// outside it is served.
    root: PathBuf,
    entry: PathBuf,
    /// What the manifest adds to HTML pages, if anything.
    inject: Option<Inject>,
}

impl StaticFiles {
    pub fn new(
        dir: &Path,
        entrypoint: &str,
        inject: Option<Inject>,
    ) -> std::io::Result<StaticFiles> {
        let folder = dir.canonicalize()?;
        let entry = folder.join(entrypoint);
        // As the original served: from the entry's folder, so a build's assets are found
        // where its page asks for them (`/app/assets/x.js` in `dist/assets/`), and the rest
        // of the app folder (its sources, `package.json`) is not served at all. A folder
        // that does not exist yet serves nothing (every lookup misses).
        let parent = entry.parent().unwrap_or(&folder);
        let root = parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf());
        Ok(StaticFiles {
            entry,
            root,
            inject,
        })
    }

    /// The file for a request path; `Err(403)` when the path leaves the folder.
    fn file_for(&self, path: &str) -> Result<Lookup, StatusCode> {
        let decoded = decode_path(path).ok_or(StatusCode::BAD_REQUEST)?;
        let rel = Path::new(decoded.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(StatusCode::FORBIDDEN);
        }
        if hidden(rel) {
            return Ok(Lookup::Missing);
        }
        let mut candidate = self.root.join(rel);
        if candidate.is_dir() {
            if candidate == self.root {
                candidate = self.entry.clone();
            } else if !path.ends_with('/') {
                // Served at `/docs`, the folder's page would resolve its relative links
                // against the parent folder.
                return Ok(Lookup::AddSlash);
            } else {
                candidate = candidate.join("index.html");
            }
        }
        match candidate.canonicalize() {
            // A symlink may point anywhere: only what resolves inside the folder is served.
            Ok(real) if real.starts_with(&self.root) && real.is_file() => Ok(Lookup::File(real)),
            Ok(real) if real.starts_with(&self.root) => Ok(Lookup::Missing),
            Ok(_) => Err(StatusCode::FORBIDDEN),
            Err(_) => Ok(Lookup::Missing),
        }
    }
}

#[async_trait]
impl HttpServerApp for StaticFiles {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                log::debug!("static: reading a request: {e}");
                return None;
            }
        }
        http.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let reply = self.reply(http.req_header());
        if let Err(e) = send(&mut http, reply).await {
            // The client went away, or the file shrank while it was sent.
            log::debug!("static: {e}");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

/// An answer: its head, and where its body comes from.
struct Reply {
    head: http::response::Parts,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    /// `len` bytes of the file from `start`, read as they are sent: a large file is never
    /// held whole in memory.
    File {
        path: PathBuf,
        start: u64,
        len: u64,
    },
}

impl StaticFiles {
    fn reply(&self, req: &RequestHeader) -> Reply {
        let head = req.method == Method::HEAD;
        if req.method != Method::GET && !head {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        let path = req.uri.path();
        let file = match self.file_for(path) {
            Ok(Lookup::File(f)) => f,
            Ok(Lookup::AddSlash) => return add_slash(req),
            // SPA fallback: a path without an extension is a client-side route (as decoded:
            // `/app%2Ejs` names a script).
            Ok(Lookup::Missing)
                if !last_segment(&decode_path(path).unwrap_or_default()).contains('.') =>
            {
                self.entry.clone()
            }
            Ok(Lookup::Missing) => return text(StatusCode::NOT_FOUND, "Not Found"),
            Err(status) => return text(status, status.canonical_reason().unwrap_or("Error")),
        };
        let content_type = content_type(&file);
        if let Some(inject) = &self.inject
            && content_type.starts_with("text/html")
            && let Ok(meta) = std::fs::metadata(&file)
            && meta.len() <= INJECT_MAX
        {
            return injected(req, &file, &meta, inject);
        }
        // `no-cache`: browsers keep the file but ask each time, which costs a 304 when it
        // did not change. Without it, `Last-Modified` invites heuristic caching, and after
        // a deploy a browser could run an old entry page for hours.
        let mut builder = Response::builder().header(header::CACHE_CONTROL, "no-cache");
        let (file, encoding, vary) = self.representation(req, file);
        if let Some(name) = encoding {
            builder = builder.header(header::CONTENT_ENCODING, name);
        }
        if vary {
            builder = builder.header(header::VARY, "Accept-Encoding");
        }
        let Ok(meta) = std::fs::metadata(&file) else {
            return text(StatusCode::NOT_FOUND, "Not Found");
        };
        let validators = Validators::of(&meta, encoding);
        let builder = match validated(builder, &validators, req) {
            Ok(builder) => builder,
            Err(not_modified) => return *not_modified,
        };
        let size = meta.len();
        let builder = builder
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT_RANGES, "bytes");
        // Ranges are defined for GET only (RFC 9110 14.2): a HEAD describes the whole file.
        let part = if head {
            Part::Whole
        } else {
            conditional::part(&req.headers, size, &validators)
        };
        let (builder, start, len) = match part {
            Part::Whole => (builder.status(StatusCode::OK), 0, size),
            Part::Range(r) => {
                let range = format!("bytes {}-{}/{size}", r.start(), r.end());
                let builder = builder
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, range);
                (builder, *r.start(), r.end() - r.start() + 1)
            }
            Part::Unsatisfiable => {
                let builder = builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .header(header::CONTENT_LENGTH, 0);
                return reply(builder, Body::Bytes(Vec::new()));
            }
        };
        let builder = builder.header(header::CONTENT_LENGTH, len);
        if head {
            return reply(builder, Body::Bytes(Vec::new()));
        }
        // Small files are read on the worker's one thread: from the page cache that takes
        // microseconds, while tokio's file reads hop to its blocking pool and back, whose
        // threads it stops after 10 s idle and starts again for the next burst (measured:
        // 19,000 -> 23,300 req/s through the gateway, and no 60 ms p99 in a burst's first
        // seconds). Larger ones are read in chunks on the pool as they are sent.
        if len > INLINE_READ_MAX {
            return reply(
                builder,
                Body::File {
                    path: file,
                    start,
                    len,
                },
            );
        }
        match read_part(&file, start, len) {
            Ok(body) => reply(builder, Body::Bytes(body)),
            Err(_) => text(StatusCode::NOT_FOUND, "Not Found"),
        }
    }
}

/// An HTML page with the manifest's additions (`inject.rs`), read and sent whole: no
/// ranges and no precompressed variant, which would lack them. Its entity tag is the
/// file's and the additions' (they change with the app's base and variables).
fn injected(req: &RequestHeader, file: &Path, meta: &std::fs::Metadata, inject: &Inject) -> Reply {
    let base = req.headers.get("x-base").and_then(|v| v.to_str().ok());
    let mut validators = Validators::of(meta, None);
    validators.etag = format!(
        "{}-{:x}\"",
        validators.etag.trim_end_matches('"'),
        inject.tag(base)
    );
    let builder = Response::builder().header(header::CACHE_CONTROL, "no-cache");
    let builder = match validated(builder, &validators, req) {
        Ok(builder) => builder,
        Err(not_modified) => return *not_modified,
    };
    let Ok(html) = std::fs::read(file) else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let page = inject.page(&html, base);
    let builder = builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type(file))
        .header(header::CONTENT_LENGTH, page.len());
    let body = if req.method == Method::HEAD {
        Vec::new()
    } else {
        page
    };
    reply(builder, Body::Bytes(body))
}

/// `builder` with the validators; `Err`, the `304`, when the client's copy is current.
fn validated(
    builder: http::response::Builder,
    validators: &Validators,
    req: &RequestHeader,
) -> Result<http::response::Builder, Box<Reply>> {
    let builder = builder
        .header(header::ETAG, &validators.etag)
        .header(header::LAST_MODIFIED, validators.last_modified());
    if validators.not_modified(&req.headers) {
        return Err(Box::new(reply(
            builder.status(StatusCode::NOT_MODIFIED),
            Body::Bytes(Vec::new()),
        )));
    }
    Ok(builder)
}

/// Encodings a build may store next to a file (`app.js.br`, `app.js.gz`), best first.
const PRECOMPRESSED: [(&str, &str); 2] = [("br", "br"), ("gzip", "gz")];

impl StaticFiles {
    /// The file to send for `file`: itself, or the best precompressed variant the client's
    /// `Accept-Encoding` allows, found in the folder as the file itself is (no symlink out
    /// of it). Also its content coding, and whether the answer varies by encoding (some
    /// variant exists). Without `Accept-Encoding` nothing is looked for.
    fn representation(
        &self,
        req: &RequestHeader,
        file: PathBuf,
    ) -> (PathBuf, Option<&'static str>, bool) {
        let Some(accepted) = req
            .headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
        else {
            return (file, None, false);
        };
        let mut vary = false;
        for (name, ext) in PRECOMPRESSED {
            let mut variant = file.as_os_str().to_owned();
            variant.push(".");
            variant.push(ext);
            let variant = PathBuf::from(variant);
            // One stat for the usual case, no variant; the full resolution only for one.
            if !variant.is_file() {
                continue;
            }
            let Ok(real) = variant.canonicalize() else {
                continue;
            };
            if !real.starts_with(&self.root) {
                continue;
            }
            if accepts(accepted, name) {
                return (real, Some(name), true);
            }
            vary = true;
        }
        (file, None, vary)
    }
}

/// Whether an `Accept-Encoding` value allows `coding`: named with a q-value above 0, or
/// not named while `*` is allowed.
fn accepts(accept_encoding: &str, coding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let q = parts
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = q > 0.0;
        }
    }
    star
}

/// `301` to the path with a trailing slash, under the app's base (the gateway's `x-base`;
/// the path here has the app segment stripped), query kept.
fn add_slash(req: &RequestHeader) -> Reply {
    let base = req
        .headers
        .get("x-base")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let location = slash_location(base, req.uri.path(), req.uri.query());
    let builder = Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, location)
        .header(header::CONTENT_LENGTH, 0);
    reply(builder, Body::Bytes(Vec::new()))
}

/// Where a folder asked for without its trailing slash moves to: `base` + `path` + `/`,
/// `query` kept. One leading slash, whatever the path has: `//host/` would send the
/// browser to another site. The gateway uses it for a static app's root.
pub fn slash_location(base: &str, path: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let path = path.trim_start_matches('/');
    match query {
        Some(q) => format!("{base}/{path}/?{q}"),
        None => format!("{base}/{path}/"),
    }
}

fn reply(builder: http::response::Builder, body: Body) -> Reply {
    let (head, ()) = builder.body(()).unwrap_or_default().into_parts();
    Reply { head, body }
}

/// `len` bytes of `file` from `start`.
fn read_part(file: &Path, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(file)?;
    f.seek(SeekFrom::Start(start))?;
    let mut body = vec![0; len as usize];
    f.read_exact(&mut body)?;
    Ok(body)
}

async fn send(http: &mut ServerSession, reply: Reply) -> pingora::Result<()> {
    let Reply { head, body } = reply;
    http.write_response_header(Box::new(ResponseHeader::from(head)))
        .await?;
    match body {
        Body::Bytes(bytes) if bytes.is_empty() => Ok(()),
        Body::Bytes(bytes) => http.write_response_body(bytes.into(), true).await,
        Body::File { path, start, len } => {
            let mut file = tokio::fs::File::open(&path)
                .await
                .or_err(ReadError, "opening the file")?;
            file.seek(SeekFrom::Start(start))
                .await
                .or_err(ReadError, "seeking in the file")?;
            let mut left = len;
            while left > 0 {
                let mut chunk = vec![0; left.min(INLINE_READ_MAX) as usize];
                let n = file
                    .read(&mut chunk)
                    .await
                    .or_err(ReadError, "reading the file")?;
                if n == 0 {
                    return Error::e_explain(ReadError, "the file shrank while it was sent");
                }
                chunk.truncate(n);
                left -= n as u64;
                http.write_response_body(chunk.into(), left == 0).await?;
            }
            Ok(())
        }
    }
}

/// Files of the folder that are not content, answered as if absent: dotfiles and dot
/// folders anywhere (the app's `.env` holds its secrets, a deployed `.git` its history),
/// except `.well-known` at the top (ACME challenges, `security.txt`), and the app's own
/// manifest, whose `env` may hold secrets too.
fn hidden(rel: &Path) -> bool {
    let mut names = rel.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name),
        _ => None,
    });
    let dotted = |name: &std::ffi::OsStr| name.as_encoded_bytes().starts_with(b".");
    let Some(first) = names.next() else {
        return false;
    };
    let mut rest = names.peekable();
    if rest.peek().is_none() && (first == "manifest.yaml" || first == "manifest.yml") {
        return true;
    }
    (dotted(first) && first != ".well-known") || rest.any(dotted)
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

/// The path percent-decoded; `None` when it does not decode or holds a NUL.
fn decode_path(path: &str) -> Option<String> {
    percent_decode(path).ok().filter(|s| !s.contains('\0'))
}

fn text(status: StatusCode, body: &str) -> Reply {
    let builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len());
    reply(builder, Body::Bytes(body.as_bytes().to_vec()))
}

/// Content types by extension: the web's own here, with their charset.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        // The rest by mime_guess's table (audio, csv, webmanifest, archives ...). The
        // types above come first: it still names older ones for a few of them
        // (`application/javascript` for .mjs, `application/font-woff`).
        other => mime_guess::from_ext(other)
            .first_raw()
            .unwrap_or("application/octet-stream"),
    }
}

/// Runs the static worker until SIGTERM; the address comes from `PORT` or
/// `BUNTIME_SOCKET`, as for every worker.
pub fn serve(dir: &Path, entrypoint: &str) -> Result<(), String> {
    let manifest = crate::manifest::load(dir)
        .map_err(|why| format!("{}: invalid manifest: {why}", dir.display()))?;
    let app = StaticFiles::new(dir, entrypoint, Inject::new(&manifest))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        // As the gateway: timeouts on tokio's timer, and no timer thread waking 100 times
        // a second (gateway/server.rs, TOKIO_TIMER_ABOVE_SECS).
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = Service::new("static".to_string(), app);
    let listener = match (std::env::var("BUNTIME_SOCKET"), std::env::var("PORT")) {
        (Ok(sock), _) => ListenerConfig::uds(sock),
        (_, Ok(port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("PORT {port:?} is not a port"))?;
            ListenerConfig::tcp(format!("127.0.0.1:{port}"))
        }
        _ => return Err("set PORT or BUNTIME_SOCKET".into()),
    };
    // Without Pingora's 64 KiB read buffer per connection, which mimalloc touches whole
    // (as on the gateway's listener: gateway/server.rs): the gateway keeps a connection
    // open here per request in flight.
    service.add_listener(listener.l4_buffer(L4BufferSettings::default().read(0)));
    server.add_service(service);
    server.run(RunArgs::default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "no").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::create_dir(d.path().join("docs")).unwrap();
        std::fs::write(d.path().join("docs/index.html"), "docs").unwrap();
        std::fs::write(d.path().join("app.js"), "js").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), d.path().join("link.txt"))
            .unwrap();
        let s = StaticFiles::new(d.path(), "index.html", None).unwrap();
        let root = d.path().canonicalize().unwrap();
        assert_eq!(s.file_for("/"), Ok(Lookup::File(root.join("index.html"))));
        assert_eq!(s.file_for("/app.js"), Ok(Lookup::File(root.join("app.js"))));
        assert_eq!(
            s.file_for("/docs/"),
            Ok(Lookup::File(root.join("docs/index.html")))
        );
        assert_eq!(s.file_for("/docs"), Ok(Lookup::AddSlash));
        assert_eq!(s.file_for("/missing.js"), Ok(Lookup::Missing));
        assert_eq!(s.file_for("/../secret.txt"), Err(StatusCode::FORBIDDEN));
        assert_eq!(s.file_for("/%2e%2e/secret.txt"), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            s.file_for("/link.txt"),
            Err(StatusCode::FORBIDDEN),
            "a symlink out is refused"
        );
        assert_eq!(s.file_for("/a%00b"), Err(StatusCode::BAD_REQUEST));
        for (file, ty) in [
            ("x.JS", "text/javascript; charset=utf-8"),
            ("x.mjs", "text/javascript; charset=utf-8"),
            ("song.mp3", "audio/mpeg"),
            ("site.webmanifest", "application/manifest+json"),
            ("data.CSV", "text/csv"),
            ("blob.unknown", "application/octet-stream"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(file)), ty, "{file}");
        }
    }

    #[test]
    fn files_come_from_the_entrys_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dist/assets")).unwrap();
        std::fs::create_dir_all(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("dist/index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(d.path().join("dist/assets/app.js"), "js").unwrap();
        std::fs::write(d.path().join("src/config.ts"), "secret").unwrap();
        std::fs::write(d.path().join("package.json"), "{}").unwrap();
        let s = StaticFiles::new(d.path(), "dist/index.html", None).unwrap();
        let dist = d.path().join("dist").canonicalize().unwrap();
        assert_eq!(s.file_for("/"), Ok(Lookup::File(dist.join("index.html"))));
        assert_eq!(
            s.file_for("/assets/app.js"),
            Ok(Lookup::File(dist.join("assets/app.js")))
        );
        for outside in ["/src/config.ts", "/package.json", "/dist/index.html"] {
            assert_eq!(s.file_for(outside), Ok(Lookup::Missing), "{outside}");
        }
        assert_eq!(s.file_for("/../package.json"), Err(StatusCode::FORBIDDEN));
        // An entry whose folder is not there yet: nothing is served.
        let s = StaticFiles::new(d.path(), "build/index.html", None).unwrap();
        assert_eq!(s.file_for("/"), Ok(Lookup::Missing));
        assert_eq!(s.file_for("/package.json"), Ok(Lookup::Missing));
    }

    #[test]
    fn slash_locations() {
        assert_eq!(slash_location("/web", "/docs", None), "/web/docs/");
        assert_eq!(slash_location("/", "/docs", Some("a=1")), "/docs/?a=1");
        assert_eq!(slash_location("", "//evil.example", None), "/evil.example/");
        assert_eq!(slash_location("", "/web", Some("x")), "/web/?x");
    }

    #[test]
    fn accept_encoding() {
        for (header, coding, yes) in [
            ("gzip", "gzip", true),
            ("gzip, deflate, br, zstd", "br", true),
            ("GZIP", "gzip", true),
            ("br;q=0.9, gzip;q=0", "gzip", false),
            ("br; q=0", "br", false),
            ("*", "br", true),
            ("*;q=0, gzip", "br", false),
            ("identity;q=1, *;q=0", "gzip", false),
            ("gzip;q=oops", "gzip", false),
            ("deflate", "gzip", false),
        ] {
            assert_eq!(accepts(header, coding), yes, "{header} / {coding}");
        }
    }

    #[test]
    fn secrets_and_the_manifest_are_not_content() {
        let d = tempfile::tempdir().unwrap();
        for (file, body) in [
            ("index.html", "<h1>hi</h1>"),
            ("manifest.yaml", "env: {KEY: s3cret}"),
            ("manifest.yml", "env: {KEY: s3cret}"),
            (".env", "KEY=s3cret"),
            (".git/config", "[remote]"),
            ("assets/.hidden.js", "no"),
            ("docs/manifest.yaml", "a document"),
            (".well-known/security.txt", "Contact: x"),
            ("docs/.well-known/x.txt", "no"),
        ] {
            let path = d.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let s = StaticFiles::new(d.path(), "index.html", None).unwrap();
        let root = d.path().canonicalize().unwrap();
        for hidden in [
            "/manifest.yaml",
            "/manifest.yml",
            "/./manifest.yaml",
            "/.env",
            "/%2eenv",
            "/.git/config",
            "/assets/.hidden.js",
            "/docs/.well-known/x.txt",
        ] {
            assert_eq!(s.file_for(hidden), Ok(Lookup::Missing), "{hidden}");
        }
        for shown in [
            "/docs/manifest.yaml",
            "/.well-known/security.txt",
            "/index.html",
        ] {
            assert_eq!(
                s.file_for(shown),
                Ok(Lookup::File(root.join(&shown[1..]))),
                "{shown}"
            );
        }
    }
}
