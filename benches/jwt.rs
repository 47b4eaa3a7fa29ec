//! JWT check cost: a token seen before (the verified-token cache) and a new one (full
//! parse and signature check), for HS256 and EdDSA. Run: `cargo bench --bench jwt`.

use std::hint::black_box;

use buntime_auth_token::{AuthPlugin, Verifier};
use buntime_plugin_sdk::{Problems, Settings};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn verifier() -> Verifier {
    let manifest: serde_yaml::Mapping =
        serde_yaml::from_str(buntime_auth_token::SPEC.manifest).unwrap();
    let mut s = Settings::new("plugins.auth-token", manifest);
    s.set_from_env(
        "secret",
        "AUTH_JWT_SECRET",
        "bench-secret-bench-secret-bench-secret".into(),
    );
    s.set_from_env("publicKey", "AUTH_JWT_PUBLIC_KEY", fixture("ed1.pub"));
    Verifier::new(AuthPlugin::parse(&s, &mut Problems::default()).unwrap())
}

fn token(alg: Algorithm) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(b"bench-secret-bench-secret-bench-secret"),
        _ => EncodingKey::from_ed_pem(fixture("ed1.key").as_bytes()).unwrap(),
    };
    let claims = serde_json::json!({"sub": "user-42", "roles": ["reader", "writer"], "tenant": "acme", "exp": 4_102_444_800u64});
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
}

fn bench(c: &mut Criterion) {
    let v = verifier();
    for alg in [Algorithm::HS256, Algorithm::EdDSA] {
        let t = token(alg);
        v.verify(&t).unwrap();
        c.bench_function(&format!("jwt/{alg:?}/cached"), |b| {
            b.iter(|| black_box(v.verify(black_box(&t)).unwrap()))
        });
        c.bench_function(&format!("jwt/{alg:?}/uncached"), |b| {
            b.iter(|| {
                v.clear_cache();
                black_box(v.verify(black_box(&t)).unwrap())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
