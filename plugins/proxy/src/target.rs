//! A rule's target: `http(s)://host[:port][/base]` or `ws(s)://...` (SPEC 4.1).

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Ws,
    Wss,
}

impl Scheme {
    /// A URL's scheme, if a target may have it.
    fn of(scheme: &str) -> Option<Scheme> {
        match scheme {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            "ws" => Some(Scheme::Ws),
            "wss" => Some(Scheme::Wss),
            _ => None,
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Wss)
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Host name or IP, without brackets.
    pub host: String,
    pub port: u16,
    /// Whether the URL named the port (then it is part of Host for changeOrigin).
    pub explicit_port: bool,
    /// The path prefix, without a trailing slash; empty for none.
    pub base_path: String,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| e.to_string())?;
        let scheme = Scheme::of(url.scheme())
            .ok_or_else(|| format!("unsupported scheme {:?}", url.scheme()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials are not allowed in the target".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("a query or fragment is not allowed in the target".into());
        }
        let host = host_of(&url).ok_or("the target has no host")?;
        if url.port() == Some(0) {
            return Err("port 0 is no port to connect to".into());
        }
        let default_port = if scheme.tls() { 443 } else { 80 };
        Ok(Target {
            scheme,
            host,
            port: url.port().unwrap_or(default_port),
            explicit_port: url.port().is_some(),
            base_path: url.path().trim_end_matches('/').to_string(),
        })
    }

    /// Whether `url` is on this target's server: the same scheme family (http and ws, or
    /// https and wss), host and port, and no credentials.
    pub fn serves(&self, url: &url::Url) -> bool {
        Scheme::of(url.scheme()).is_some_and(|s| s.tls() == self.scheme.tls())
            && host_of(url).is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port)
            && url.username().is_empty()
            && url.password().is_none()
    }

    /// `host[:port]` as the Host header names it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }

    /// `https://host[:port]`, for `Origin` under changeOrigin (ws targets as http).
    pub fn origin(&self) -> String {
        let scheme = if self.scheme.tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// `scheme://authority` as written (for `upstreamUrl` in `POST /rules/test`).
    pub fn url_prefix(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }

    /// The upstream path: the base path, then the (rewritten) request path as it is, so
    /// a trailing slash stays (`/app/` is `/base/`, a folder to most servers, which would
    /// redirect `/base` back to it). An empty path, a rewrite that wrote nothing, is the
    /// base path alone.
    pub fn join(&self, path: &str) -> String {
        match (self.base_path.is_empty(), path.is_empty()) {
            (true, true) => "/".to_string(),
            (true, false) => path.to_string(),
            (false, true) => self.base_path.clone(),
            (false, false) => format!("{}{path}", self.base_path),
        }
    }
}

/// A URL's host as a target keeps it: a name, or an IP address without brackets.
fn host_of(url: &url::Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain(d) if !d.is_empty() => Some(d.to_string()),
        url::Host::Domain(_) => None,
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parts() {
        let t = Target::parse("https://api.example.com:8443/v2/").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port, t.explicit_port),
            (Scheme::Https, "api.example.com", 8443, true)
        );
        assert_eq!(t.base_path, "/v2");
        assert_eq!(t.authority(), "api.example.com:8443");
        assert_eq!(t.join("/users"), "/v2/users");
        assert_eq!(t.join("/"), "/v2/");
        assert_eq!(t.join(""), "/v2");
        let plain = Target::parse("http://10.0.0.5").unwrap();
        assert_eq!(
            (plain.port, plain.explicit_port, plain.base_path.as_str()),
            (80, false, "")
        );
        assert_eq!(plain.join("/x"), "/x");
        assert_eq!(plain.join(""), "/");
        assert_eq!(Target::parse("wss://h").unwrap().port, 443);
        let v6 = Target::parse("http://[::1]:9000").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:9000");
        assert_eq!(Target::parse("ws://h:1").unwrap().origin(), "http://h:1");
    }

    #[test]
    fn refuses_what_is_not_a_target() {
        for bad in [
            "",
            "not a url",
            "ftp://h",
            "/relative",
            "http://",
            "http://u:p@h",
            "http://h/?q=1",
            "http://h/#f",
            "file:///etc/passwd",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
