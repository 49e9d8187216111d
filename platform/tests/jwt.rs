//! Bearer tokens of the identity provider: the ones to accept and every
//! kind to refuse, with a static key and with a JWKS served over HTTP. The
//! RSA key pair in `fixtures/` was made for these tests with
//! `openssl genpkey -algorithm RSA` and protects nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::auth::jwt::{JwtError, JwtSettings, JwtVerifier};
use platform::auth::{Role, Roles};
use serde_json::{Value, json};

const PRIVATE: &str = include_str!("fixtures/jwt-test-private.pem");
const PUBLIC: &str = include_str!("fixtures/jwt-test-public.pem");
const MODULUS: &str = include_str!("fixtures/jwt-test-modulus.hex");
const ISSUER: &str = "https://login.example.com/realms/erp";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": "erp-stock", "sub": "alice@example.com",
        "exp": now() + 300, "nbf": now() - 10, "iat": now(),
        "roles": ["reader", "analyst", "not-a-role-here"], "warehouses": ["WH-NORTH"],
    })
}

fn sign(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(PRIVATE.as_bytes()).unwrap()).unwrap()
}

fn with(change: impl FnOnce(&mut Value)) -> Value {
    let mut claims = claims();
    change(&mut claims);
    claims
}

fn settings() -> JwtSettings {
    JwtSettings { issuer: ISSUER.into(), static_key: PUBLIC.into(), ..JwtSettings::default() }
}

#[tokio::test]
async fn a_valid_token_gives_its_subject_known_roles_and_warehouses() {
    let verifier = JwtVerifier::new(&settings()).unwrap().expect("configured");
    let claims = verifier.verify(&sign(&claims(), None)).await.unwrap();
    assert_eq!(claims.subject, "alice@example.com");
    assert_eq!(claims.roles, [Role::Reader, Role::Analyst].into_iter().collect::<Roles>());
    assert_eq!(claims.warehouses, Some(vec!["WH-NORTH".to_owned()]));
    // Roles from a nested claim, as some providers put them.
    let nested = JwtSettings { roles_claim: "realm_access.roles".into(), ..settings() };
    let verifier = JwtVerifier::new(&nested).unwrap().unwrap();
    let token = sign(&with(|c| c["realm_access"] = json!({ "roles": "writer admin" })), None);
    assert_eq!(verifier.verify(&token).await.unwrap().roles, [Role::Writer, Role::Admin].into_iter().collect::<Roles>());
}

#[tokio::test]
async fn expired_early_foreign_unsigned_and_confused_tokens_are_refused() {
    let verifier = JwtVerifier::new(&settings()).unwrap().unwrap();
    let refused = [
        ("expired", sign(&with(|c| c["exp"] = json!(now() - 120)), None)),
        ("not yet valid", sign(&with(|c| c["nbf"] = json!(now() + 600)), None)),
        ("wrong audience", sign(&with(|c| c["aud"] = json!("another-api")), None)),
        ("wrong issuer", sign(&with(|c| c["iss"] = json!("https://evil.example.com")), None)),
        ("no subject", sign(&with(|c| c.as_object_mut().unwrap().remove("sub").map(|_| ()).unwrap()), None)),
        ("no expiry", sign(&with(|c| c.as_object_mut().unwrap().remove("exp").map(|_| ()).unwrap()), None)),
    ];
    for (what, token) in refused {
        assert!(verifier.verify(&token).await.is_err(), "{what} was accepted");
    }
    // alg none: no signature at all.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let unsigned = format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT" })), b64(&claims()));
    assert!(verifier.verify(&unsigned).await.is_err(), "alg none was accepted");
    // HMAC with the provider's public key as the secret (the classic confusion).
    let confused = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(PUBLIC.as_bytes())).unwrap();
    assert!(matches!(verifier.verify(&confused).await, Err(JwtError::Algorithm(Algorithm::HS256))));
    // Tampered: the claims changed after signing.
    let token = sign(&claims(), None);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&with(|c| c["roles"] = json!(["admin"]))), parts[2]);
    assert!(verifier.verify(&tampered).await.is_err(), "a tampered token was accepted");
    // Symmetric algorithms cannot even be configured.
    assert!(JwtVerifier::new(&JwtSettings { algorithms: "HS256".into(), ..settings() }).is_err());
}

/// Serves a JWKS with the test key under the ids in `kids`, counting requests.
async fn jwks_server(kids: Arc<std::sync::Mutex<Vec<String>>>, fetches: Arc<AtomicUsize>) -> String {
    let bytes: Vec<u8> = (0..MODULUS.trim().len()).step_by(2).map(|i| u8::from_str_radix(&MODULUS.trim()[i..i + 2], 16).unwrap()).collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (kids, fetches, n) = (kids.clone(), fetches.clone(), n.clone());
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let keys: Vec<Value> = kids
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|kid| json!({ "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB" }))
                    .collect();
                axum::Json(json!({ "keys": keys }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

#[tokio::test]
async fn keys_come_from_the_jwks_which_is_fetched_again_for_an_unknown_kid_at_most_once_per_interval() {
    let kids = Arc::new(std::sync::Mutex::new(vec!["k1".to_owned()]));
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(kids.clone(), fetches.clone()).await;
    let jwks = JwtSettings { issuer: ISSUER.into(), jwks_url: url.clone(), jwks_refetch_secs: 60, ..JwtSettings::default() };
    let verifier = JwtVerifier::new(&jwks).unwrap().unwrap();
    assert_eq!(verifier.verify(&sign(&claims(), Some("k1"))).await.unwrap().subject, "alice@example.com");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // A token without a kid, and unknown kids: refused, and the provider is
    // not asked again within the interval however many arrive.
    assert!(matches!(verifier.verify(&sign(&claims(), None)).await, Err(JwtError::NoKid)));
    for _ in 0..5 {
        assert!(matches!(verifier.verify(&sign(&claims(), Some("k2"))).await, Err(JwtError::UnknownKey(_))));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // After the interval (0 here), a rotated key is fetched and accepted.
    kids.lock().unwrap().push("k2".to_owned());
    let eager = JwtVerifier::new(&JwtSettings { jwks_refetch_secs: 0, ..jwks }).unwrap().unwrap();
    assert!(eager.verify(&sign(&claims(), Some("k1"))).await.is_ok());
    assert!(eager.verify(&sign(&claims(), Some("k2"))).await.is_ok());
}
