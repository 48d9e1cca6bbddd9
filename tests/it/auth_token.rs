//! Docker token auth: regate's issuer and verifier, against a real registry
//! and a real client (skopeo), with the example ACL of issue 3.

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::auth::{claims_of, fetch_token, password, push_with_skopeo, skopeo_async, AuthFiles};
use common::images::ACCEPT_ALL;
use common::{Image, Regate, Registry};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SERVICE: &str = "registry.test";
const ISSUER: &str = "regate-test";

async fn start(files: &AuthFiles) -> (Registry, Regate) {
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, &files.token_toml("")).await;
    (registry, regate)
}

fn creds(user: &str) -> String {
    format!("{user}:{}", password(user))
}

async fn token_for(regate: &Regate, user: Option<&str>, scopes: &[&str]) -> String {
    let pw = user.map(password);
    let c = user.zip(pw.as_deref());
    let r = fetch_token(&regate.client(), &regate.url, c, SERVICE, scopes).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_logs_in_pushes_and_pulls_with_tokens() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files).await;
    let work = tempfile::tempdir().unwrap();
    let trust = regate.certs.trust_dir.display().to_string();
    let authfile = work.path().join("auth.json").display().to_string();

    // GET /v2/ challenges with the Bearer realm of this listener.
    let r = regate
        .client()
        .get(format!("{}/v2/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!(
            "Bearer realm=\"{}/auth/token\",service=\"{SERVICE}\"",
            regate.url
        )
        .as_str()
    );

    let login = |pw: &str| {
        skopeo_async(
            vec![
                "login".into(),
                "--authfile".into(),
                authfile.clone(),
                "--cert-dir".into(),
                trust.clone(),
                "-u".into(),
                "alice".into(),
                "--password-stdin".into(),
                regate.host.clone(),
            ],
            Some(pw.to_owned()),
        )
    };
    let out = login(&password("alice")).await.unwrap();
    assert!(out.contains("Login Succeeded"), "{out}");
    assert!(login("wrong").await.is_err());

    let image = Image::oci("token-push", 40_000);
    push_with_skopeo(
        &image,
        work.path(),
        &regate.certs.trust_dir,
        &format!("docker://{}/alice/app:v1", regate.host),
        Some(&creds("alice")),
    )
    .await
    .unwrap();
    let raw = skopeo_async(
        vec![
            "inspect".into(),
            "--raw".into(),
            "--authfile".into(),
            authfile,
            "--cert-dir".into(),
            trust.clone(),
            format!("docker://{}/alice/app:v1", regate.host),
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        common::images::sha256(raw.trim_end().as_bytes()),
        image.digest
    );

    // ci cannot push outside apps/*; bob cannot push into alice/*.
    assert!(push_with_skopeo(
        &image,
        work.path(),
        &regate.certs.trust_dir,
        &format!("docker://{}/other/app:v1", regate.host),
        Some(&creds("ci"))
    )
    .await
    .is_err());
    assert!(push_with_skopeo(
        &image,
        work.path(),
        &regate.certs.trust_dir,
        &format!("docker://{}/alice/app:v2", regate.host),
        Some(&creds("bob"))
    )
    .await
    .is_err());
    push_with_skopeo(
        &image,
        work.path(),
        &regate.certs.trust_dir,
        &format!("docker://{}/apps/web:v1", regate.host),
        Some(&creds("ci")),
    )
    .await
    .unwrap();
    push_with_skopeo(
        &image,
        work.path(),
        &regate.certs.trust_dir,
        &format!("docker://{}/public/tool:v1", regate.host),
        Some(&creds("admin")),
    )
    .await
    .unwrap();

    // Anonymous skopeo pulls public/* (with an anonymous token), nothing else.
    let inspect = |repo: &str| {
        skopeo_async(
            vec![
                "inspect".into(),
                "--raw".into(),
                "--cert-dir".into(),
                trust.clone(),
                format!("docker://{}/{repo}:v1", regate.host),
            ],
            None,
        )
    };
    assert!(inspect("public/tool").await.is_ok());
    assert!(inspect("apps/web").await.is_err());
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grant_the_intersection_and_only_their_repositories() {
    let files = AuthFiles::new();
    let (registry, regate) = start(&files).await;
    let image = Image::oci("token-scope", 512);
    let direct = reqwest::Client::new();
    for r in ["alice/a", "alice/b", "bob/c", "public/p"] {
        image.push(&direct, &registry.url, r, "v1").await;
    }
    let c = regate.client();

    // ci asks for more than it may: it gets the intersection only.
    let t = token_for(
        &regate,
        Some("ci"),
        &[
            "repository:apps/web:pull,push,delete",
            "repository:other/x:pull",
            "registry:catalog:*",
        ],
    )
    .await;
    let claims = claims_of(&t);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "ci");
    assert_eq!(claims["aud"], SERVICE);
    for k in ["exp", "nbf", "iat", "jti"] {
        assert!(!claims[k].is_null(), "{k} missing");
    }
    assert_eq!(
        claims["access"],
        serde_json::json!([
            {"type": "repository", "name": "apps/web", "actions": ["pull", "push"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ])
    );
    let header = jsonwebtoken::decode_header(&t).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert!(header.kid.is_some());

    // A user asking only for things they may not do still gets a token (empty access).
    let t = token_for(&regate, Some("bob"), &["repository:alice/a:pull"]).await;
    assert_eq!(claims_of(&t)["access"], serde_json::json!([]));

    // A token for alice/a is refused on alice/b: 401 insufficient_scope with the scope to ask for.
    let t = token_for(&regate, Some("alice"), &["repository:alice/a:pull"]).await;
    let get = |repo: &str, token: &str| {
        c.get(format!("{}/v2/{repo}/manifests/v1", regate.url))
            .header("accept", ACCEPT_ALL)
            .bearer_auth(token)
    };
    assert_eq!(get("alice/a", &t).send().await.unwrap().status(), 200);
    let r = get("alice/b", &t).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("scope=\"repository:alice/b:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    // pull does not cover push.
    let r = c
        .post(format!("{}/v2/alice/a/blobs/uploads/", regate.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"repository:alice/a:pull,push\""));

    // Anonymous tokens: public/* only.
    let anon = token_for(
        &regate,
        None,
        &["repository:public/p:pull", "repository:alice/a:pull"],
    )
    .await;
    assert_eq!(claims_of(&anon)["sub"], "");
    assert_eq!(get("public/p", &anon).send().await.unwrap().status(), 200);
    assert_eq!(get("alice/a", &anon).send().await.unwrap().status(), 401);

    // Catalog: needs registry:catalog:*, then filtered to what alice may pull.
    let r = c
        .get(format!("{}/v2/_catalog", regate.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"registry:catalog:*\""));
    let t = token_for(&regate, Some("alice"), &["registry:catalog:*"]).await;
    let v: serde_json::Value = c
        .get(format!("{}/v2/_catalog", regate.url))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["alice/a", "alice/b"]));
    regate.stop().await;
}

/// Signs `claims` with `key` and `alg`, with `kid`.
fn sign(
    claims: &serde_json::Value,
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    let files = AuthFiles::new();
    let (registry, regate) = start(&files).await;
    Image::oci("forged", 256)
        .push(&reqwest::Client::new(), &registry.url, "alice/a", "v1")
        .await;
    let c = regate.client();
    let pem = std::fs::read(&files.signing_key).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let good = token_for(&regate, Some("alice"), &["repository:alice/a:pull"]).await;
    let kid = jsonwebtoken::decode_header(&good).unwrap().kid.unwrap();
    let access =
        serde_json::json!([{"type": "repository", "name": "alice/a", "actions": ["pull"]}]);
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let t = now();
        let mut v = serde_json::json!({"iss": ISSUER, "sub": "alice", "aud": SERVICE, "exp": t + 300, "nbf": t, "iat": t, "jti": "x", "access": access});
        f(&mut v);
        v
    };
    let get = |token: String| {
        c.get(format!("{}/v2/alice/a/manifests/v1", regate.url))
            .header("accept", ACCEPT_ALL)
            .bearer_auth(token)
            .send()
    };

    // The control: a token made the same way with the right claims passes.
    assert_eq!(
        get(sign(&claims(&|_| {}), Algorithm::ES256, Some(&kid), &key))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(get(good.clone()).await.unwrap().status(), 200);

    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let other_dir = tempfile::tempdir().unwrap();
    let other_path = other_dir.path().join("other.key");
    regate::auth::token::keys::generate(regate::auth::token::keys::KeyKind::Es256, &other_path)
        .unwrap();
    let other = EncodingKey::from_ec_pem(&std::fs::read(&other_path).unwrap()).unwrap();
    let public_pem = std::fs::read(files.signing_key.with_extension("pub")).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut tampered_claims = claims_of(&good);
    tampered_claims["access"][0]["name"] = "bob/c".into();
    tampered_claims["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);

    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(
                &claims(&|v| {
                    v["exp"] = (now() - 3600).into();
                    v["nbf"] = (now() - 7200).into();
                }),
                Algorithm::ES256,
                Some(&kid),
                &key,
            ),
        ),
        (
            "not yet valid",
            sign(
                &claims(&|v| {
                    v["nbf"] = (now() + 3600).into();
                    v["exp"] = (now() + 7200).into();
                }),
                Algorithm::ES256,
                Some(&kid),
                &key,
            ),
        ),
        (
            "wrong audience",
            sign(
                &claims(&|v| v["aud"] = "other-registry".into()),
                Algorithm::ES256,
                Some(&kid),
                &key,
            ),
        ),
        (
            "wrong issuer",
            sign(
                &claims(&|v| v["iss"] = "evil".into()),
                Algorithm::ES256,
                Some(&kid),
                &key,
            ),
        ),
        (
            "no exp",
            sign(
                &claims(&|v| {
                    v.as_object_mut().unwrap().remove("exp");
                }),
                Algorithm::ES256,
                Some(&kid),
                &key,
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64(&claims(&|_| {}))
            ),
        ),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], b64(&tampered_claims), parts[2]),
        ),
        ("tampered signature", {
            // Change a character in the middle (the last one carries
            // padding bits, and may already be the replacement).
            let mut sig: Vec<u8> = parts[2].as_bytes().to_vec();
            let mid = sig.len() / 2;
            sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                String::from_utf8(sig).unwrap()
            )
        }),
        (
            "wrongly signed, same kid",
            sign(&claims(&|_| {}), Algorithm::ES256, Some(&kid), &other),
        ),
        (
            "wrongly signed, no kid",
            sign(&claims(&|_| {}), Algorithm::ES256, None, &other),
        ),
        (
            "HMAC keyed with the public key",
            sign(
                &claims(&|_| {}),
                Algorithm::HS256,
                Some(&kid),
                &EncodingKey::from_secret(&public_pem),
            ),
        ),
        ("garbage", "not-a-jwt".into()),
    ];
    for (what, token) in cases {
        let r = get(token).await.unwrap();
        assert_eq!(r.status(), 401, "{what} was accepted");
        let ch = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            ch.starts_with("Bearer ") && ch.contains("error=\"invalid_token\""),
            "{what}: {ch}"
        );
    }
    // The tampered token would have reached bob/c: check it was the signature that stopped it.
    let r = c
        .get(format!("{}/v2/bob/c/manifests/v1", regate.url))
        .bearer_auth(format!(
            "{}.{}.{}",
            parts[0],
            b64(&tampered_claims),
            parts[2]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Refusals are audited, without the token.
    let text = std::fs::read_to_string(&files.audit).unwrap();
    assert!(text.contains("auth_failure"));
    assert!(
        !text.contains(parts[2]),
        "a token signature reached the audit log"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_form_refresh_tokens_and_wrong_passwords() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files).await;
    let c = regate.client();
    let url = format!("{}/auth/token", regate.url);

    let r = fetch_token(
        &c,
        &regate.url,
        Some(("alice", "wrong")),
        SERVICE,
        &["repository:alice/a:pull"],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("UNAUTHORIZED"));
    let r = fetch_token(
        &c,
        &regate.url,
        Some(("alice", &password("alice"))),
        "other-service",
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);

    // GET with offline_token gives a refresh token too.
    let r = c.get(format!("{url}?service={SERVICE}&scope=repository:alice/a:pull&offline_token=true&client_id=test")).basic_auth("alice", Some(password("alice"))).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["expires_in"].as_u64().unwrap() >= 60);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["token"], v["access_token"]);
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();

    // POST grant_type=password.
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", &password("alice")),
        ("service", SERVICE),
        ("client_id", "test"),
        (
            "scope",
            "repository:alice/a:pull,push repository:bob/b:pull",
        ),
        ("access_type", "offline"),
    ];
    let v: serde_json::Value = c
        .post(&url)
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["access"],
        serde_json::json!([{"type": "repository", "name": "alice/a", "actions": ["pull", "push"]}])
    );
    assert!(v["refresh_token"].is_string());
    let bad = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "nope"),
        ("service", SERVICE),
    ];
    assert_eq!(c.post(&url).form(&bad).send().await.unwrap().status(), 401);

    // POST grant_type=refresh_token.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", SERVICE),
        ("client_id", "test"),
        ("scope", "repository:alice/a:pull"),
    ];
    let r = c.post(&url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        claims_of(v["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
    // A refresh token is not an access token, and an access token is not a refresh token.
    let r = c
        .get(format!("{}/v2/alice/a/tags/list", regate.url))
        .bearer_auth(&refresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let access = v["access_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", access),
        ("service", SERVICE),
    ];
    assert_eq!(c.post(&url).form(&form).send().await.unwrap().status(), 401);
    // A removed user's refresh token stops working.
    regate::auth::htpasswd::edit(
        &files.htpasswd,
        regate::auth::htpasswd::Edit::Remove { user: "alice" },
    )
    .unwrap();
    common::auth::htpasswd_seen().await;
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("service", SERVICE),
    ];
    assert_eq!(c.post(&url).form(&form).send().await.unwrap().status(), 401);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_ends_when_the_password_changes() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files).await;
    let c = regate.client();
    let url = format!("{}/auth/token", regate.url);
    let login = |pw: String| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let form = [
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", pw.as_str()),
                ("service", SERVICE),
                ("client_id", "test"),
                ("access_type", "offline"),
            ];
            let r = c.post(&url).form(&form).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            v["refresh_token"].as_str().unwrap().to_owned()
        }
    };
    let refresh = |token: String| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("service", SERVICE),
                ("client_id", "test"),
            ];
            let r = c.post(&url).form(&form).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let old = login(password("alice")).await;
    assert_eq!(refresh(old.clone()).await.0, 200);

    // The password changes: the old refresh token is refused, with a reason.
    regate::auth::htpasswd::edit(
        &files.htpasswd,
        regate::auth::htpasswd::Edit::Set {
            user: "alice",
            password: "alice-new-pw",
            cost: 4,
        },
    )
    .unwrap();
    // regate looks at the file once a second at most.
    common::auth::htpasswd_seen().await;
    let (status, body) = refresh(old).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("password changed"), "{body}");

    // A token from a login with the new password works.
    let new = login("alice-new-pw".into()).await;
    assert_eq!(refresh(new).await.0, 200);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keygen_token_and_passwd_work_with_a_running_regate() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_regate");
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args);
        common::run_captured(cmd, stdin)
    };
    let key = dir.path().join("keys/token.key");
    let htpasswd = dir.path().join("htpasswd");
    let (code, out, err) = run(&["keygen", "--out", key.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kid "), "{out}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_ne!(
        run(&["keygen", "--out", key.to_str().unwrap()], None).0,
        0,
        "keygen overwrote a key"
    );
    let (code, _, err) = run(
        &[
            "passwd",
            "add",
            "alice",
            "--password-stdin",
            "--cost",
            "4",
            "--file",
            htpasswd.to_str().unwrap(),
        ],
        Some("s3cret\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        run(
            &[
                "passwd",
                "add",
                "anonymous",
                "--password-stdin",
                "--file",
                htpasswd.to_str().unwrap()
            ],
            Some("x\n")
        )
        .0,
        2
    );
    let text = std::fs::read_to_string(&htpasswd).unwrap();
    assert!(text.starts_with("alice:$2"), "{text}");
    assert!(!text.contains("s3cret"));

    // regate with these files; `regate token` mints a token it accepts.
    let files_toml = format!(
        "[auth]\nmode = \"token\"\nhtpasswd = {:?}\n[auth.token]\nservice = \"{SERVICE}\"\nsigning_key = {:?}\n{}",
        htpasswd.display().to_string(),
        key.display().to_string(),
        common::auth::EXAMPLE_ACL
    );
    let regate = Regate::start_with(&registry.url, &files_toml).await;
    let config = dir.path().join("regate.toml");
    std::fs::write(
        &config,
        common::regate::config_toml(
            &registry.url,
            &regate.certs,
            regate.state_dir.path(),
            &files_toml,
        ),
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "token",
            "--config",
            config.to_str().unwrap(),
            "--user",
            "alice",
            "--scope",
            "repository:alice/x:pull,push",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let token = out.trim();
    let c = regate.client();
    let r = c
        .post(format!("{}/v2/alice/x/blobs/uploads/", regate.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let r = c
        .post(format!("{}/v2/bob/x/blobs/uploads/", regate.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The password written by `passwd add` logs in at the token endpoint.
    let r = fetch_token(&c, &regate.url, Some(("alice", "s3cret")), SERVICE, &[]).await;
    assert_eq!(r.status(), 200);
    let (code, _, _) = run(
        &[
            "passwd",
            "rm",
            "alice",
            "--file",
            htpasswd.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0);
    common::auth::htpasswd_seen().await;
    let r = fetch_token(&c, &regate.url, Some(("alice", "s3cret")), SERVICE, &[]).await;
    assert_eq!(r.status(), 401);
    regate.stop().await;
}

use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_an_external_issuer_are_verified_by_pem_key_or_jwks() {
    let registry = Registry::start();
    Image::oci("external", 256)
        .push(&reqwest::Client::new(), &registry.url, "apps/web", "v1")
        .await;
    let files = AuthFiles::new();
    let idp = files.dir.path().join("idp.key");
    regate::auth::token::keys::generate(regate::auth::token::keys::KeyKind::Es256, &idp).unwrap();
    let idp_key = EncodingKey::from_ec_pem(&std::fs::read(&idp).unwrap()).unwrap();
    // The same public key as a JWKS document (P-256: the SPKI ends with 04 || X || Y).
    let pem = std::fs::read_to_string(idp.with_extension("pub")).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let xy = &der[der.len() - 64..];
    let b64u = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = files.dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64u(&xy[..32]), "y": b64u(&xy[32..]), "kid": "idp-1", "alg": "ES256", "use": "sig"}]})).unwrap()).unwrap();

    let t = now();
    // `ci` may pull apps/* by the rules: external tokens get no more than that.
    let claims = |iss: &str| serde_json::json!({"iss": iss, "sub": "ci", "aud": SERVICE, "exp": t + 300, "nbf": t, "iat": t, "jti": "j", "access": [{"type": "repository", "name": "apps/web", "actions": ["pull"]}]});
    let own = EncodingKey::from_ec_pem(&std::fs::read(&files.signing_key).unwrap()).unwrap();
    for (extra, kid) in [
        (
            format!(
                "external_issuer = \"corp-idp\"\nexternal_keys = [{:?}]",
                idp.with_extension("pub").display().to_string()
            ),
            None,
        ),
        (
            format!(
                "external_issuer = \"corp-idp\"\nexternal_jwks = {:?}",
                jwks.display().to_string()
            ),
            Some("idp-1"),
        ),
    ] {
        let regate = Regate::start_with(&registry.url, &files.token_toml(&extra)).await;
        let c = regate.client();
        let get = |token: String| {
            c.get(format!("{}/v2/apps/web/manifests/v1", regate.url))
                .header("accept", ACCEPT_ALL)
                .bearer_auth(token)
                .send()
        };
        assert_eq!(
            get(sign(&claims("corp-idp"), Algorithm::ES256, kid, &idp_key))
                .await
                .unwrap()
                .status(),
            200,
            "{extra}"
        );
        // The external key cannot speak for regate's own issuer, nor regate's key for the external one.
        assert_eq!(
            get(sign(&claims(ISSUER), Algorithm::ES256, kid, &idp_key))
                .await
                .unwrap()
                .status(),
            401,
            "{extra}"
        );
        assert_eq!(
            get(sign(&claims("corp-idp"), Algorithm::ES256, None, &own))
                .await
                .unwrap()
                .status(),
            401,
            "{extra}"
        );
        regate.stop().await;
    }

    // A JWKS with a symmetric key is refused at start-up.
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#,
    )
    .unwrap();
    let certs = common::regate::TestCerts::new();
    let state = tempfile::tempdir().unwrap();
    let text = common::regate::config_toml(
        &registry.url,
        &certs,
        state.path(),
        &files.token_toml(&format!(
            "external_issuer = \"corp-idp\"\nexternal_jwks = {:?}",
            jwks.display().to_string()
        )),
    );
    let settings = regate::config::Settings::from_toml(&text, "t", std::iter::empty()).unwrap();
    let err = regate::server::start(settings)
        .await
        .err()
        .expect("start-up must fail");
    assert!(err.to_string().contains("symmetric"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_delete_and_restore_follow_the_rules_with_regate_tags_client() {
    let files = AuthFiles::new();
    let (registry, regate) = start(&files).await;
    let direct = reqwest::Client::new();
    let img = Image::oci("tags-auth", 1000);
    for repo in ["alice/app", "bob/app"] {
        img.push(&direct, &registry.url, repo, "v1").await;
        common::images::put_manifest(&direct, &registry.url, repo, "v2", &img).await;
    }
    let home = tempfile::tempdir().unwrap();
    let cli = |args: Vec<String>, user: &'static str| {
        let ca = regate.certs.files.ca_cert.clone();
        let home = home.path().to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
                .args(&args)
                .args([
                    "--cacert",
                    ca.to_str().unwrap(),
                    "--user",
                    user,
                    "--password-stdin",
                ])
                .env_remove("REGISTRY_AUTH_FILE")
                .env_remove("REGATE_PASSWORD")
                .env("HOME", &home)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{}\n", password(user)).as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    };
    let r = |s: &str| format!("{}/{s}", regate.host);
    // alice removes a tag in her namespace; bob cannot remove hers.
    let (code, out) = cli(vec!["tags".into(), "rm".into(), r("bob/app:v1")], "alice")
        .await
        .unwrap();
    assert_ne!(code, 0, "alice removed bob's tag: {out}");
    let (code, out) = cli(vec!["tags".into(), "rm".into(), r("alice/app:v1")], "alice")
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(vec!["tags".into(), "ls".into(), r("alice/app")], "alice")
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("v2") && !out.contains("v1 "), "{out}");
    // bob's tags are all still there.
    let tags: serde_json::Value = direct
        .get(format!("{}/v2/bob/app/tags/list", registry.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 2);
    // Restoring is a write: bob may not, alice may.
    let (code, out) = cli(
        vec!["tags".into(), "restore".into(), r("alice/app:v1")],
        "bob",
    )
    .await
    .unwrap();
    assert_ne!(code, 0, "bob restored alice's tag: {out}");
    let (code, out) = cli(
        vec!["tags".into(), "restore".into(), r("alice/app:v1")],
        "alice",
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&img.digest), "{out}");
    // The delete is audited with the account.
    let lines = files.audit_lines();
    assert!(
        lines.iter().any(|l| l["event"] == "delete"
            && l["account"] == "alice"
            && l["repository"] == "alice/app"
            && l["reference"] == "v1"
            && l["status"] == 202),
        "{lines:?}"
    );
    regate.stop().await;
}

/// An external issuer's key (PEM) and the `[auth.token]` lines that trust it.
fn external_idp(files: &AuthFiles) -> (EncodingKey, String) {
    let idp = files.dir.path().join("idp.key");
    regate::auth::token::keys::generate(regate::auth::token::keys::KeyKind::Es256, &idp).unwrap();
    let key = EncodingKey::from_ec_pem(&std::fs::read(&idp).unwrap()).unwrap();
    let toml = format!(
        "external_issuer = \"corp-idp\"\nexternal_keys = [{:?}]\n",
        idp.with_extension("pub").display().to_string()
    );
    (key, toml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_get_no_more_than_the_rules_give_their_sub_unless_trusted() {
    let registry = Registry::start();
    for repo in ["secret/db", "alice/app", "bob/app", "public/x"] {
        Image::oci("ext-rules", 128)
            .push(&reqwest::Client::new(), &registry.url, repo, "v1")
            .await;
    }
    let files = AuthFiles::new();
    let (idp, external) = external_idp(&files);
    let t = now();
    let token = |sub: &str, name: &str, actions: &[&str]| {
        let claims = serde_json::json!({"iss": "corp-idp", "sub": sub, "aud": SERVICE, "exp": t + 300, "nbf": t, "iat": t, "jti": "j",
            "access": [{"type": "repository", "name": name, "actions": actions}, {"type": "registry", "name": "catalog", "actions": ["*"]}]});
        sign(&claims, Algorithm::ES256, None, &idp)
    };
    let regate = Regate::start_with(&registry.url, &files.token_toml(&external)).await;
    let c = regate.client();
    let send = |method: reqwest::Method, path: String, token: String| {
        c.request(method, format!("{}{path}", regate.url))
            .header("accept", ACCEPT_ALL)
            .bearer_auth(token)
            .send()
    };
    let get = |repo: &str, token: String| {
        send(
            reqwest::Method::GET,
            format!("/v2/{repo}/manifests/v1"),
            token,
        )
    };
    // The rules give `mallory` nothing on secret/db: the token's access is not enough.
    let r = get(
        "secret/db",
        token("mallory", "secret/db", &["pull", "push"]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));
    // alice: her own namespace by the rules, not bob's.
    assert_eq!(
        get("alice/app", token("alice", "alice/app", &["pull"]))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("bob/app", token("alice", "bob/app", &["pull"]))
            .await
            .unwrap()
            .status(),
        401
    );
    let r = send(
        reqwest::Method::DELETE,
        "/v2/bob/app/manifests/v1".into(),
        token("alice", "bob/app", &["delete"]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    // A `sub` that is not one path component gets no `${account}` rule.
    assert_eq!(
        get("alice/app", token("alice/x", "alice/app", &["pull"]))
            .await
            .unwrap()
            .status(),
        401
    );
    // An empty `sub` is anonymous: public pulls, but no catalog.
    assert_eq!(
        get("public/x", token("", "public/x", &["pull"]))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = send(
        reqwest::Method::GET,
        "/v2/_catalog".into(),
        token("", "public/x", &["pull"]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        send(
            reqwest::Method::GET,
            "/v2/_catalog".into(),
            token("alice", "alice/app", &["pull"])
        )
        .await
        .unwrap()
        .status(),
        200
    );
    regate.stop().await;

    // With trust_external_access the issuer alone decides.
    let regate = Regate::start_with(
        &registry.url,
        &files.token_toml(&format!("{external}trust_external_access = true\n")),
    )
    .await;
    let c = regate.client();
    let r = c
        .get(format!("{}/v2/secret/db/manifests/v1", regate.url))
        .header("accept", ACCEPT_ALL)
        .bearer_auth(token("mallory", "secret/db", &["pull"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_living_longer_than_max_lifetime_are_refused() {
    let registry = Registry::start();
    Image::oci("ext-life", 128)
        .push(&reqwest::Client::new(), &registry.url, "apps/web", "v1")
        .await;
    let files = AuthFiles::new();
    let (idp, external) = external_idp(&files);
    let regate = Regate::start_with(
        &registry.url,
        &files.token_toml(&format!("{external}max_lifetime = \"2h\"\n")),
    )
    .await;
    let c = regate.client();
    let t = now();
    let status = |exp: u64, iat: Option<u64>| {
        let mut claims = serde_json::json!({"iss": "corp-idp", "sub": "ci", "aud": SERVICE, "exp": exp, "nbf": t, "jti": "j",
            "access": [{"type": "repository", "name": "apps/web", "actions": ["pull"]}]});
        if let Some(iat) = iat {
            claims["iat"] = iat.into();
        }
        let token = sign(&claims, Algorithm::ES256, None, &idp);
        let req = c
            .get(format!("{}/v2/apps/web/manifests/v1", regate.url))
            .header("accept", ACCEPT_ALL)
            .bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), challenge)
        }
    };
    assert_eq!(status(t + 3600, Some(t)).await.0, 200);
    assert_eq!(status(t + 3600, None).await.0, 200);
    for (exp, iat) in [
        (u64::MAX, Some(t)),
        (u64::MAX, None),
        (t + 3 * 3600, None),
        // Issued long ago, still within its `exp`: it lived too long anyway.
        (t + 600, Some(t - 3 * 3600)),
    ] {
        let (s, challenge) = status(exp, iat).await;
        assert_eq!(s, 401, "exp {exp} iat {iat:?}");
        assert!(
            challenge.as_deref().unwrap_or("").contains("invalid_token"),
            "{challenge:?}"
        );
    }
    // regate's own tokens live auth.token.ttl (300 s): they pass.
    let own = token_for(&regate, Some("ci"), &["repository:apps/web:pull"]).await;
    let r = c
        .get(format!("{}/v2/apps/web/manifests/v1", regate.url))
        .header("accept", ACCEPT_ALL)
        .bearer_auth(own)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_work_on_the_api_in_token_mode_with_the_same_rules() {
    common::require_tool("curl");
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files).await;
    let alice = token_for(&regate, Some("alice"), &["repository:alice/app:pull,push"]).await;
    let c = regate.client();
    let image = Image::oci("token-basic", 2000);
    for tag in ["v1", "v2"] {
        let pusher =
            common::regate::client_sending(&regate.certs.files.ca_cert, &format!("Bearer {alice}"));
        image.push(&pusher, &regate.url, "alice/app", tag).await;
    }
    let curl = |user: &str, pw: &str, method: &str, tag: &str| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(&regate.certs.files.ca_cert)
            .args(["-u", &format!("{user}:{pw}")])
            .arg(format!("{}/v2/alice/app/manifests/{tag}", regate.url));
        common::run_captured(cmd, None)
    };
    // The mission's one-liner, in token mode.
    let (code, out, err) = curl("alice", &password("alice"), "DELETE", "v1");
    assert_eq!((code, out.as_str()), (0, "202"), "{err}");
    // The same rules: bob may not delete in alice/; a wrong password is 401.
    let (_, out, _) = curl("bob", &password("bob"), "DELETE", "v2");
    assert_eq!(out, "403");
    let (_, out, _) = curl("alice", "wrong", "DELETE", "v2");
    assert_eq!(out, "401");
    // v1 is gone, v2 still there; a client without credentials still gets
    // the Bearer challenge.
    let r = c
        .get(format!("{}/v2/alice/app/manifests/v1", regate.url))
        .header("accept", ACCEPT_ALL)
        .basic_auth("alice", Some(password("alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{}/v2/alice/app/manifests/v2", regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    regate.stop().await;
}

/// Token mode: regate's own endpoints answer OPTIONS and unserved methods to
/// any valid token, whatever its scope; without one, the Bearer challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_endpoints_answer_options_and_unserved_methods_to_any_valid_token() {
    let files = AuthFiles::new();
    let (_registry, regate) = start(&files).await;
    let c = regate.client();
    // ci's token grants nothing on alice/x.
    let r = fetch_token(
        &c,
        &regate.url,
        Some(("ci", &password("ci"))),
        SERVICE,
        &["repository:alice/x:pull,push,delete"],
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&token)["access"], serde_json::json!([]));
    for (method, tail, want, allow) in [
        (
            reqwest::Method::OPTIONS,
            "tags/reference/v1",
            200,
            "DELETE, OPTIONS",
        ),
        (reqwest::Method::GET, "_regate/delete", 405, "POST"),
        (reqwest::Method::PUT, "tags/list", 405, "GET"),
    ] {
        let url = format!("{}/v2/alice/x/{tail}", regate.url);
        let r = c
            .request(method.clone(), &url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{method} {tail}");
        assert_eq!(r.headers()["allow"], allow, "{method} {tail}");
        let r = c.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {tail} without a token");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
    }
    // A served method still needs its scope.
    let r = c
        .delete(format!("{}/v2/alice/x/tags/reference/v1", regate.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    regate.stop().await;
}
