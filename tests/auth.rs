//! SPEC 6 (JWT auth) end to end: tokens minted here for every algorithm family, every
//! rejection reason, public routes, admin by role, identity forwarding, JWKS rotation.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::upstream::{JwksServer, Upstream};
use common::{Gateway, Options, eventually};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-long-shared-secret-for-the-hs-tests";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_for(alg: Algorithm) -> EncodingKey {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => EncodingKey::from_secret(SECRET.as_bytes()),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            EncodingKey::from_rsa_pem(fixture("rsa.key").as_bytes()).unwrap()
        }
        ES256 => EncodingKey::from_ec_pem(fixture("ec256.key").as_bytes()).unwrap(),
        ES384 => EncodingKey::from_ec_pem(fixture("ec384.key").as_bytes()).unwrap(),
        EdDSA => EncodingKey::from_ed_pem(fixture("ed1.key").as_bytes()).unwrap(),
        other => panic!("no test key for {other:?}"),
    }
}

fn mint(alg: Algorithm, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, &key_for(alg)).unwrap()
}

fn mint_kid(key: &str, kid: &str, claims: Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(
        &h,
        &claims,
        &EncodingKey::from_ed_pem(fixture(key).as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims() -> Value {
    json!({"sub": "user-1", "roles": ["reader"], "exp": now() + 300, "tenant": "acme"})
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A file holding every public key (one PEM block each).
fn all_public_keys(dir: &std::path::Path) -> String {
    let path = dir.join("keys.pem");
    let all = ["rsa.pub", "ec256.pub", "ec384.pub", "ed1.pub"]
        .map(fixture)
        .join("");
    std::fs::write(&path, all).unwrap();
    path.display().to_string()
}

struct Setup {
    gw: Gateway,
    up: Upstream,
    _keys: tempfile::TempDir,
}

fn setup(extra: &[(&str, &str)]) -> Setup {
    let up = Upstream::http();
    let keys = tempfile::tempdir().unwrap();
    let mut opts = Options::default()
        .env("AUTH_JWT_SECRET", SECRET)
        .env("AUTH_JWT_PUBLIC_KEY", &all_public_keys(keys.path()))
        .env("RUNTIME_MASTER_KEY", "mk")
        .env("GATEWAY_RATE_LIMIT_REQUESTS", "100000");
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    let gw = Gateway::start(opts.ready());
    let r = gw.json(
        "POST",
        "/redirects/api/rules",
        &[("x-api-key", "mk")],
        &json!({
            "pattern": "^/app(/.*)?$", "target": up.url(), "publicRoutes": {"GET": ["/app/pub/**"]}
        }),
    );
    assert_eq!(r.status, 201, "{r:?}");
    Setup {
        gw,
        up,
        _keys: keys,
    }
}

fn call(gw: &Gateway, token: &str) -> common::Resp {
    gw.get_with(
        "/app/data",
        &[("authorization", &format!("Bearer {token}"))],
    )
}

fn reason(r: &common::Resp) -> String {
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error"], "Unauthorized");
    r.json()["reason"].as_str().unwrap().to_string()
}

#[test]
fn every_algorithm_family_verifies() {
    let s = setup(&[]);
    use Algorithm::*;
    for alg in [
        HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA,
    ] {
        let r = call(&s.gw, &mint(alg, claims()));
        assert_eq!(r.status, 200, "{alg:?}: {r:?}");
    }
    let seen = s.up.last();
    let identity: Value = serde_json::from_str(&seen.headers["x-identity"]).unwrap();
    assert_eq!(identity["sub"], "user-1");
    assert_eq!(identity["roles"], json!(["reader"]));
    assert_eq!(identity["claims"]["tenant"], "acme");
    assert_eq!(seen.headers["x-auth-subject"], "user-1");
}

/// `X-Identity` is ASCII: characters beyond it are JSON escapes, which every JSON parser
/// reads back whole. Raw UTF-8 in a header is read as Latin-1 by Node's and Python's
/// servers, so `José` reached such an app as `JosÃ©`.
#[test]
fn identity_claims_beyond_ascii_arrive_whole() {
    let s = setup(&[]);
    let name = "Zoë 日本 🙂";
    let c = json!({"sub": "user-1", "name": name, "exp": now() + 300});
    assert_eq!(call(&s.gw, &mint(Algorithm::HS256, c)).status, 200);
    let seen = s.up.last();
    let header = &seen.headers["x-identity"];
    assert!(header.is_ascii(), "{header}");
    let identity: Value = serde_json::from_str(header).unwrap();
    assert_eq!(identity["claims"]["name"], name);
    assert_eq!(seen.headers["x-auth-subject"], "user-1");
    // A `sub` beyond ASCII goes in X-Identity only.
    let c = json!({"sub": "josé", "exp": now() + 300});
    assert_eq!(call(&s.gw, &mint(Algorithm::HS256, c)).status, 200);
    let seen = s.up.last();
    let identity: Value = serde_json::from_str(&seen.headers["x-identity"]).unwrap();
    assert_eq!(identity["sub"], "josé");
    assert!(!seen.headers.contains_key("x-auth-subject"), "{seen:?}");
}

#[test]
fn every_rejection_reason() {
    let s = setup(&[
        ("AUTH_JWT_ISSUER", "https://issuer.test"),
        ("AUTH_JWT_AUDIENCE", "gateway"),
    ]);
    let gw = &s.gw;
    let good = json!({"sub": "u", "iss": "https://issuer.test", "aud": ["other", "gateway"], "exp": now() + 300});
    assert_eq!(call(gw, &mint(Algorithm::HS256, good.clone())).status, 200);

    let missing = gw.get("/app/data");
    assert_eq!(reason(&missing), "missing_token");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    // Never from the query string.
    let q = gw.get(&format!(
        "/app/data?access_token={}",
        mint(Algorithm::HS256, good.clone())
    ));
    assert_eq!(reason(&q), "missing_token");

    let header = b64(&json!({"alg": "HS256", "typ": "JWT"}));
    let body = b64(&good);
    // Over the verifier's 16 KiB, under the gateway's 64 KiB header limit (a 431).
    let huge = format!("{header}.{}.sig", "a".repeat(32 * 1024));
    for bad in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.x.y",
        &format!("{}.{body}.", b64(&json!("not an object"))),
        &format!("{header}.{}.", b64(&json!({"exp": "soon"}))),
        &huge,
    ] {
        let r = call(gw, bad);
        assert_eq!(reason(&r), "malformed", "{bad:.60}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
    }
    // alg none: its empty signature part is not malformed.
    let none = format!("{}.{body}.", b64(&json!({"alg": "none"})));
    assert_eq!(reason(&call(gw, &none)), "algorithm_not_allowed");
    let unknown_alg = format!("{}.{body}.c2ln", b64(&json!({"alg": "XY999"})));
    assert_eq!(reason(&call(gw, &unknown_alg)), "algorithm_not_allowed");

    // Tampered payload: the signature no longer matches.
    let real = mint(Algorithm::RS256, good.clone());
    let parts: Vec<&str> = real.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(
            &json!({"sub": "admin", "iss": "https://issuer.test", "aud": "gateway", "exp": now() + 300})
        ),
        parts[2]
    );
    assert_eq!(reason(&call(gw, &forged)), "bad_signature");
    let wrong_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    assert_eq!(reason(&call(gw, &wrong_secret)), "bad_signature");

    let mut c = good.clone();
    c["exp"] = json!(now() - 120);
    assert_eq!(reason(&call(gw, &mint(Algorithm::ES256, c))), "expired");
    let mut c = good.clone();
    c["exp"] = json!(now() - 10);
    assert_eq!(
        call(gw, &mint(Algorithm::ES256, c)).status,
        200,
        "within the 30 s leeway"
    );
    let mut c = good.clone();
    c["nbf"] = json!(now() + 120);
    assert_eq!(
        reason(&call(gw, &mint(Algorithm::EdDSA, c))),
        "not_yet_valid"
    );
    let mut c = good.clone();
    c["iss"] = json!("https://evil.test");
    assert_eq!(reason(&call(gw, &mint(Algorithm::PS256, c))), "bad_issuer");
    let mut c = good.clone();
    c["aud"] = json!("someone-else");
    assert_eq!(
        reason(&call(gw, &mint(Algorithm::HS512, c))),
        "bad_audience"
    );
    // A key without the right type for the token: an unknown kid with no JWKS.
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("k9".into());
    let with_kid = jsonwebtoken::encode(&h, &good, &key_for(Algorithm::EdDSA)).unwrap();
    assert_eq!(
        call(gw, &with_kid).status,
        200,
        "PEM keys have no kid: they are tried"
    );
}

#[test]
fn rs256_public_key_as_hs256_secret_is_refused() {
    // Only an RSA key is configured: HS tokens have no key type to fit.
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("rsa.pub");
    std::fs::write(&pem, fixture("rsa.pub")).unwrap();
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env("AUTH_JWT_PUBLIC_KEY", pem.to_str().unwrap())
            .env("RUNTIME_MASTER_KEY", "mk")
            .ready(),
    );
    gw.json(
        "POST",
        "/redirects/api/rules",
        &[("x-api-key", "mk")],
        &json!({"pattern": "^/app", "target": up.url()}),
    );
    let attack = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(fixture("rsa.pub").as_bytes()),
    )
    .unwrap();
    assert_eq!(reason(&call(&gw, &attack)), "algorithm_not_allowed");
    assert_eq!(call(&gw, &mint(Algorithm::RS256, claims())).status, 200);
    // The allow-list narrows further.
    let narrow = Gateway::start(
        Options::default()
            .env("AUTH_JWT_PUBLIC_KEY", pem.to_str().unwrap())
            .env("AUTH_JWT_ALGORITHMS", "RS512")
            .env("RUNTIME_MASTER_KEY", "mk")
            .ready(),
    );
    narrow.json(
        "POST",
        "/redirects/api/rules",
        &[("x-api-key", "mk")],
        &json!({"pattern": "^/app", "target": up.url()}),
    );
    assert_eq!(
        reason(&call(&narrow, &mint(Algorithm::RS256, claims()))),
        "algorithm_not_allowed"
    );
    assert_eq!(call(&narrow, &mint(Algorithm::RS512, claims())).status, 200);
}

#[test]
fn cookie_tokens_and_public_routes() {
    let s = setup(&[
        ("AUTH_JWT_COOKIE", "session"),
        ("AUTH_PUBLIC_ROUTES", "/app/open/**,/app/docs"),
    ]);
    let gw = &s.gw;
    let token = mint(Algorithm::HS256, claims());
    let r = gw.get_with(
        "/app/data",
        &[("cookie", &format!("theme=dark; session={token}"))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // A password a proxy in front asked for is no token: the cookie is read.
    let basic = [
        ("authorization", "Basic dXNlcjpwdw=="),
        ("cookie", &format!("session={token}")),
    ];
    assert_eq!(gw.get_with("/app/data", &basic).status, 200);
    // Every token present must verify, not only the one the gateway reads first: an app
    // may read another (the last header or cookie, its cookie over the bearer) unchecked.
    let forged = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "HS256"})),
        b64(&json!({"sub": "admin", "roles": ["admin"]})),
        b64(&json!("x"))
    );
    let bearer = format!("Bearer {token}");
    let both = |forged: &str| {
        [
            vec![
                ("authorization", bearer.clone()),
                ("authorization", format!("Bearer {forged}")),
            ],
            vec![("cookie", format!("session={token}; session={forged}"))],
            vec![
                ("cookie", format!("session={token}")),
                ("cookie", format!("session={forged}")),
            ],
            vec![
                ("authorization", bearer.clone()),
                ("cookie", format!("session={forged}")),
            ],
            vec![
                ("cookie", format!("session={forged}")),
                ("authorization", bearer.clone()),
            ],
        ]
    };
    for headers in both(&forged) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = gw.get_with("/app/data", &headers);
        assert_eq!(reason(&r), "bad_signature", "{headers:?}");
    }
    // Two good tokens pass; the identity is the first's (the bearer's over the cookie's).
    let other = mint(
        Algorithm::HS256,
        json!({"sub": "user-2", "exp": now() + 300}),
    );
    for headers in both(&other) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = gw.get_with("/app/data", &headers);
        assert_eq!(r.status, 200, "{headers:?}: {r:?}");
        let seen = s.up.last();
        assert_eq!(seen.headers["x-auth-subject"], "user-1", "{headers:?}");
    }
    // RFC 6265 allows a quoted value; the quotes are not the token's.
    let r = gw.get_with("/app/data", &[("cookie", &format!("session=\"{token}\""))]);
    assert_eq!(r.status, 200, "{r:?}");
    // Public by AUTH_PUBLIC_ROUTES, by the rule's publicRoutes (GET only), by the runtime.
    assert_eq!(gw.get("/app/open/a/b").status, 200);
    assert_eq!(gw.get("/app/docs").status, 200);
    assert_eq!(gw.get("/app/docsx").status, 401);
    assert_eq!(gw.get("/app/pub/x").status, 200);
    assert_eq!(gw.send("POST", "/app/pub/x", &[], Some(b"")).status, 401);
    // A method-override header names the method an app acts on: public only if that
    // method is public too.
    for (header, method, status) in [
        ("x-http-method-override", "DELETE", 401),
        ("X-HTTP-Method", "post", 401),
        ("x-method-override", "GET", 200),
        ("x-http-method-override", "get", 200),
    ] {
        let r = gw.get_with("/app/pub/x", &[(header, method)]);
        assert_eq!(r.status, status, "{header}: {method}");
    }
    assert_eq!(gw.get("/api/health").status, 200);
    // A public prefix does not carry a path that an upstream would resolve out of it.
    for sneaky in [
        "/app/open/..;/data",
        "/app/open/..%2fdata",
        "/app/open/%2e%2e%5cdata",
    ] {
        let r = gw.get(sneaky);
        assert_eq!(r.status, 400, "{sneaky}: {r:?}");
        assert_eq!(r.json()["error"], "Invalid path");
    }
    // A path no route serves is protected too.
    assert_eq!(reason(&gw.get("/nothing/here")), "missing_token");
    // The test endpoint says what is public.
    let t = gw.json(
        "POST",
        "/redirects/api/rules/test",
        &[("x-api-key", "mk")],
        &json!({"method": "GET", "path": "/app/open/x"}),
    );
    assert_eq!(t.json()["public"], true);
}

#[test]
fn admin_by_role_and_master_key() {
    let s = setup(&[]);
    let gw = &s.gw;
    let bearer = |t: &str| format!("Bearer {t}");
    let admin = mint(
        Algorithm::EdDSA,
        json!({"sub": "root", "roles": ["admin"], "exp": now() + 300}),
    );
    let reader = mint(Algorithm::EdDSA, claims());
    assert_eq!(
        gw.get_with("/api/plugins", &[("authorization", &bearer(&admin))])
            .status,
        200
    );
    let r = gw.get_with(
        "/database/api/tables",
        &[("authorization", &bearer(&reader))],
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"code": "PERMISSION_DENIED", "error": "Admin role required"})
    );
    let r = gw.get_with("/api/plugins", &[("authorization", "Bearer garbage")]);
    assert_eq!(
        r.json(),
        json!({"code": "AUTH_REQUIRED", "error": "Unauthorized"})
    );
    assert_eq!(
        gw.get("/api/plugins").status,
        401,
        "loopback is not enough once auth is on"
    );
    // The master key is an admin credential, as a bearer too, but never a JWT elsewhere.
    assert_eq!(
        gw.get_with("/api/plugins", &[("authorization", "Bearer mk")])
            .status,
        200
    );
    assert_eq!(
        reason(&gw.get_with("/app/data", &[("authorization", "Bearer mk")])),
        "malformed"
    );
}

/// Identity providers put roles in different places: Keycloak under
/// `realm_access.roles`, Auth0 in a claim named by a URL (dots and all).
#[test]
fn roles_come_from_the_configured_claim() {
    for (claim, roles) in [
        (
            "realm_access.roles",
            json!({"realm_access": {"roles": ["admin"]}}),
        ),
        (
            "https://buntime.example/roles",
            json!({"https://buntime.example/roles": ["admin"]}),
        ),
    ] {
        let s = setup(&[("AUTH_JWT_ROLES_CLAIM", claim)]);
        let mut admin = json!({"sub": "root", "exp": now() + 300});
        admin
            .as_object_mut()
            .unwrap()
            .extend(roles.as_object().unwrap().clone());
        let admin = mint(Algorithm::EdDSA, admin);
        let r = s.gw.get_with(
            "/api/plugins",
            &[("authorization", &format!("Bearer {admin}"))],
        );
        assert_eq!(r.status, 200, "{claim}: {r:?}");
        assert_eq!(call(&s.gw, &admin).status, 200);
        let identity: Value = serde_json::from_str(&s.up.last().headers["x-identity"]).unwrap();
        assert_eq!(identity["roles"], json!(["admin"]), "{claim}");
        // The default claim is not read when another is configured.
        let plain = mint(
            Algorithm::EdDSA,
            json!({"sub": "root", "roles": ["admin"], "exp": now() + 300}),
        );
        let r = s.gw.get_with(
            "/api/plugins",
            &[("authorization", &format!("Bearer {plain}"))],
        );
        assert_eq!(r.status, 403, "{claim}: {r:?}");
    }
}

#[test]
fn client_identity_headers_are_replaced() {
    let s = setup(&[]);
    let r = s.gw.get_with(
        "/app/data",
        &[
            (
                "authorization",
                &format!("Bearer {}", mint(Algorithm::HS256, claims())),
            ),
            ("x-identity", "{\"sub\":\"root\"}"),
            ("x-auth-subject", "root"),
            ("x-auth-role", "admin"),
        ],
    );
    assert_eq!(r.status, 200);
    let h = s.up.last().headers;
    assert_eq!(h["x-auth-subject"], "user-1");
    assert!(!h.contains_key("x-auth-role"));
    assert_eq!(
        serde_json::from_str::<Value>(&h["x-identity"]).unwrap()["sub"],
        "user-1"
    );
}

#[test]
fn a_cached_token_still_expires() {
    let s = setup(&[("AUTH_JWT_LEEWAY", "0")]);
    // Seconds of margin for the two calls before it expires, on a loaded machine too.
    let token = mint(Algorithm::HS256, json!({"sub": "u", "exp": now() + 4}));
    assert_eq!(call(&s.gw, &token).status, 200);
    assert_eq!(call(&s.gw, &token).status, 200, "from the cache");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(reason(&call(&s.gw, &token)), "expired");
}

#[test]
fn a_cached_token_answers_for_itself_only() {
    let s = setup(&[]);
    let ann = mint(Algorithm::HS256, json!({"sub": "ann", "exp": now() + 300}));
    let bob = mint(Algorithm::HS256, json!({"sub": "bob", "exp": now() + 300}));
    for (token, sub) in [(&ann, "ann"), (&bob, "bob"), (&ann, "ann"), (&bob, "bob")] {
        assert_eq!(call(&s.gw, token).status, 200);
        assert_eq!(s.up.last().headers["x-auth-subject"], sub);
    }
    // The cached token with the first character of its signature changed: checked afresh.
    let sig = ann.rfind('.').unwrap() + 1;
    let mut tampered = ann.clone();
    let other = if ann[sig..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(sig..sig + 1, other);
    assert_eq!(reason(&call(&s.gw, &tampered)), "bad_signature");
}

/// `user` is the original's name for keying by the authenticated user (its `sub`): a
/// deployment that set it did not start.
#[test]
fn rate_limit_by_claim() {
    for key_by in ["claim:sub", "user"] {
        let s = setup(&[
            ("GATEWAY_RATE_LIMIT_REQUESTS", "2"),
            ("GATEWAY_RATE_LIMIT_KEY_BY", key_by),
        ]);
        let ann = mint(Algorithm::HS256, json!({"sub": "ann", "exp": now() + 300}));
        let bob = mint(Algorithm::HS256, json!({"sub": "bob", "exp": now() + 300}));
        assert_eq!(call(&s.gw, &ann).status, 200, "{key_by}");
        assert_eq!(call(&s.gw, &ann).status, 200);
        assert_eq!(call(&s.gw, &ann).status, 429);
        assert_eq!(call(&s.gw, &bob).status, 200, "{key_by}");
    }
}

/// A numeric claim keys as well as a string one; it used to fall back to the address,
/// so every user behind one NAT shared a count.
#[test]
fn rate_limit_by_numeric_claim() {
    let s = setup(&[
        ("GATEWAY_RATE_LIMIT_REQUESTS", "2"),
        ("GATEWAY_RATE_LIMIT_KEY_BY", "claim:uid"),
    ]);
    let one = mint(Algorithm::HS256, json!({"uid": 1, "exp": now() + 300}));
    let two = mint(Algorithm::HS256, json!({"uid": 2, "exp": now() + 300}));
    assert_eq!(call(&s.gw, &one).status, 200);
    assert_eq!(call(&s.gw, &one).status, 200);
    assert_eq!(call(&s.gw, &one).status, 429);
    assert_eq!(call(&s.gw, &two).status, 200);
    assert_eq!(call(&s.gw, &two).status, 200);
    assert_eq!(call(&s.gw, &two).status, 429);
}

fn jwk(key: &str, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": fixture(key).trim()})
}

fn jwks(keys: &[Value]) -> String {
    json!({"keys": keys}).to_string()
}

fn jwks_gateway(server: &JwksServer, extra: &[(&str, &str)], ready: bool) -> (Gateway, Upstream) {
    let up = Upstream::http();
    let mut opts = Options::default()
        .env("AUTH_JWT_JWKS_URL", &server.url())
        .env("RUNTIME_MASTER_KEY", "mk")
        .env("GATEWAY_RATE_LIMIT_REQUESTS", "100000");
    for (k, v) in extra {
        opts = opts.env(k, v);
    }
    if ready {
        opts = opts.ready();
    }
    let gw = Gateway::start(opts);
    let r = gw.json(
        "POST",
        "/redirects/api/rules",
        &[("x-api-key", "mk")],
        &json!({"pattern": "^/app", "target": up.url()}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    (gw, up)
}

#[test]
fn jwks_rotation_refetches_on_an_unknown_kid() {
    let server = JwksServer::start(&jwks(&[jwk("ed1.x", "k1")]));
    let (gw, _up) = jwks_gateway(&server, &[], true);
    let c = json!({"sub": "u", "exp": now() + 300});
    assert_eq!(call(&gw, &mint_kid("ed1.key", "k1", c.clone())).status, 200);
    // The issuer rotates to a new key.
    server.set(200, &jwks(&[jwk("ed2.x", "k2")]));
    let new_token = mint_kid("ed2.key", "k2", c.clone());
    let first = call(&gw, &new_token);
    assert_eq!(reason(&first), "unknown_key");
    let accepted = eventually(Duration::from_secs(5), || {
        (call(&gw, &new_token).status == 200).then_some(())
    });
    assert!(
        accepted.is_some(),
        "the unknown kid made the gateway refetch"
    );
    // The old key is gone with the new document.
    assert_eq!(
        reason(&call(&gw, &mint_kid("ed1.key", "k1", c.clone()))),
        "unknown_key"
    );
    // Refetches for unknown kids are limited to one per 30 s.
    let hits = server.hits();
    for _ in 0..5 {
        call(&gw, &mint_kid("ed1.key", "k-unknown", c.clone()));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.hits(), hits, "no refetch storm");
}

/// A JWKS behind a private CA (an in-cluster identity provider) is trusted as the proxy
/// trusts https upstreams: through the system's store or `SSL_CERT_FILE`. The JWKS client
/// trusted only its own copy of Mozilla's roots, so such keys never loaded while proxy
/// rules to the same hosts worked.
#[test]
fn a_jwks_behind_a_private_ca_is_trusted_through_ssl_cert_file() {
    let (server, ca) = JwksServer::https(&jwks(&[jwk("ed1.x", "k1")]));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let (gw, _up) = jwks_gateway(
        &server,
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
        true,
    );
    let token = mint_kid("ed1.key", "k1", json!({"sub": "u", "exp": now() + 300}));
    assert_eq!(call(&gw, &token).status, 200);
    // Without it, the CA is unknown and no key loads.
    let (gw, _up) = jwks_gateway(&server, &[], false);
    let failed = eventually(Duration::from_secs(10), || {
        gw.stderr().contains("JWKS fetch from").then_some(())
    });
    assert!(failed.is_some(), "{}", gw.logs());
    assert_eq!(call(&gw, &token).status, 503);
}

#[test]
fn jwks_down_at_start_then_up() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env("AUTH_JWT_JWKS_URL", &url)
            .env("RUNTIME_MASTER_KEY", "mk"),
    );
    gw.json(
        "POST",
        "/redirects/api/rules",
        &[("x-api-key", "mk")],
        &json!({"pattern": "^/app", "target": up.url()}),
    );
    // Once the plugins have started (a loaded machine can be slower than this test),
    // readiness waits on the JWKS alone.
    let waiting = eventually(Duration::from_secs(10), || {
        let ready = gw.get("/api/health/ready");
        assert_eq!(ready.status, 503);
        let waiting = ready.json()["waiting"].to_string();
        (!waiting.contains("plugins are starting")).then_some(waiting)
    })
    .expect("the plugins start");
    assert!(waiting.contains("JWKS"), "{waiting}");
    let r = gw.get("/app/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), json!({"error": "Authentication unavailable"}));
    let _server = JwksServer::start_on(&format!("127.0.0.1:{port}"), &jwks(&[jwk("ed1.x", "k1")]));
    eventually(Duration::from_secs(40), || {
        (gw.get("/api/health/ready").status == 200).then_some(())
    })
    .expect("ready once the JWKS loads");
    assert_eq!(
        call(
            &gw,
            &mint_kid("ed1.key", "k1", json!({"sub": "u", "exp": now() + 300}))
        )
        .status,
        200
    );
}

#[test]
fn a_failed_refresh_keeps_the_keys() {
    let server = JwksServer::start(&jwks(&[jwk("ed1.x", "k1")]));
    let (gw, _up) = jwks_gateway(&server, &[("AUTH_JWT_JWKS_REFRESH", "1s")], true);
    let token = mint_kid("ed1.key", "k1", json!({"sub": "u", "exp": now() + 300}));
    assert_eq!(call(&gw, &token).status, 200);
    server.set(500, "boom");
    let before = server.hits();
    eventually(Duration::from_secs(5), || {
        (server.hits() >= before + 2).then_some(())
    })
    .expect("refreshes keep trying");
    assert_eq!(call(&gw, &token).status, 200, "the last good keys stay");
    assert!(gw.stderr().contains("keeping the keys already loaded"));
}

#[test]
fn bad_auth_config_is_named() {
    for (var, value, needle) in [
        ("AUTH_JWT_ALGORITHMS", "none", "never allowed"),
        ("AUTH_JWT_ALGORITHMS", "HS999", "not a JWT algorithm"),
        ("AUTH_JWT_PUBLIC_KEY", "/no/such/key.pem", "cannot read"),
        (
            "AUTH_JWT_PUBLIC_KEY",
            "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----",
            "public key",
        ),
        ("AUTH_JWT_JWKS_URL", "ftp://keys", "http"),
        ("AUTH_JWT_LEEWAY", "a while", "duration"),
    ] {
        let mut env = vec![(var, value)];
        if var != "AUTH_JWT_PUBLIC_KEY" && var != "AUTH_JWT_JWKS_URL" {
            env.push(("AUTH_JWT_SECRET", "s"));
        }
        let (ok, out) = common::check(None, &env);
        assert!(!ok, "{var}={value} accepted");
        assert!(out.contains(var) && out.contains(needle), "{var}: {out}");
    }
    let (ok, out) = common::check(
        None,
        &[("AUTH_JWT_SECRET", "s"), ("AUTH_JWT_ALGORITHMS", "RS256")],
    );
    assert!(
        !ok && out.contains("no configured key can verify it"),
        "{out}"
    );
}

#[test]
fn sighup_changes_jwt_settings_but_cannot_turn_auth_on_or_off() {
    let hs = |secret: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let auth = |secret: &str| format!("plugins:\n  auth-token:\n    secret: {secret}\n");
    let gw = Gateway::start(Options::default().config(&auth("first-secret")).ready());
    let status = |token: &str| {
        gw.get_with("/x", &[("authorization", &format!("Bearer {token}"))])
            .status
    };
    assert_eq!(status(&hs("first-secret")), 404, "accepted, then no route");
    let weak = |gw: &Gateway| gw.stderr().matches("the JWT secret is 13 bytes").count();
    assert_eq!(weak(&gw), 0, "{}", gw.stderr());
    gw.write_config(&auth("second-secret"));
    gw.signal("HUP");
    eventually(Duration::from_secs(5), || {
        (status(&hs("second-secret")) == 404).then_some(())
    })
    .expect("the new secret is used without a restart");
    // The new secret is short too, and the reload says so as start-up would.
    eventually(Duration::from_secs(5), || (weak(&gw) == 1).then_some(()))
        .unwrap_or_else(|| panic!("no weak-secret warning:\n{}", gw.stderr()));
    assert_eq!(
        status(&hs("first-secret")),
        401,
        "nor is the old one cached"
    );

    // Without a key source auth-token would be unloaded: refused, the running keys stay.
    gw.write_config("plugins:\n  auth-token:\n    issuer: someone\n");
    gw.signal("HUP");
    eventually(Duration::from_secs(5), || {
        gw.stderr()
            .contains("reload refused, keeping the running configuration: plugins.auth-token: would no longer be loaded (no key source")
            .then_some(())
    })
    .expect("the refusal is logged");
    assert_eq!(status(&hs("second-secret")), 404);
    assert_eq!(gw.get("/x").status, 401, "not 503, and not open");

    // Started without auth, a new secret is refused too, instead of ignored.
    let open = Gateway::start(Options::default().ready());
    open.write_config(&auth("late-secret"));
    open.signal("HUP");
    eventually(Duration::from_secs(5), || {
        open.stderr()
            .contains("plugins.auth-token: would now be loaded; loading a plugin needs a restart")
            .then_some(())
    })
    .expect("the refusal is logged");
    assert_eq!(open.get("/x").status, 404, "still running without auth");
}

/// Settings that only make sense with authentication, set without a key (a misspelled
/// `AUTH_JWT_SECRET`, say), leave every route open: `buntime check` and the start-up log
/// say so and name them. `check` counted auth-token among the enabled plugins.
#[test]
fn auth_settings_without_a_key_are_named_in_a_warning() {
    let (ok, out) = common::check(
        None,
        &[
            ("AUTH_JWT_ISSUER", "https://idp"),
            ("AUTH_JWT_SECRT", "typo"),
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("5 plugin(s) enabled"), "{out}");
    assert!(
        out.contains("auth-token is off") && out.contains("although AUTH_JWT_ISSUER is set"),
        "{out}"
    );
    let (_, out) = common::check(None, &[("AUTH_JWT_SECRET", &"k".repeat(32))]);
    assert!(
        out.contains("6 plugin(s) enabled") && !out.contains("warning"),
        "{out}"
    );
    let gw = Gateway::start(
        Options::default()
            .env("AUTH_JWT_ISSUER", "https://idp")
            .ready(),
    );
    assert!(
        gw.logs().contains("although AUTH_JWT_ISSUER is set"),
        "{}",
        gw.logs()
    );
    assert_eq!(gw.get("/anything").status, 404, "no token asked for");
}
