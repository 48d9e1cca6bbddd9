//! Hostile input against the regate binary (TLS, real registry behind a
//! recording relay), in basic and in token mode: every case gets a clean OCI
//! error with the right status, nothing regate should stop reaches the
//! registry, regate never panics, and the image pushed first still pulls
//! whole. Slow and silent connections are dropped on time while normal
//! requests go on.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth::{basic_header, password};
use common::hostile::{
    b64json, refused, sign_es256, upstream_refused, Expect, Mode, Rig, ISSUER, SERVICE,
    SLOW_TIMEOUT_SECS,
};
use common::images::{sha256, ACCEPT_ALL, OCI_INDEX, OCI_MANIFEST};
use common::raw_http::{self, request};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const OK: Expect = Expect {
    status: 200,
    code: None,
    forwarded: true,
};

fn header(name: &str, value: &str) -> Vec<u8> {
    format!("{name}: {value}").into_bytes()
}

/// Requests whose path must never reach the registry, as `(what, target, status, code)`.
fn hostile_paths(digest: &str) -> Vec<(String, Vec<u8>, u16, &'static str)> {
    let long_name = "a".repeat(256);
    let long_tag = "t".repeat(129);
    let mut v: Vec<(String, Vec<u8>, u16, &str)> = [
        ("dot dot", "/v2/alice/../bob/secret/manifests/v1", 400, "NAME_INVALID"),
        ("encoded dot dot", "/v2/alice/%2e%2e/bob/secret/manifests/v1", 400, "NAME_INVALID"),
        ("mixed-case encoded dot dot", "/v2/alice/%2E%2e/manifests/v1", 400, "NAME_INVALID"),
        ("double-encoded dot dot", "/v2/alice/%252e%252e/manifests/v1", 400, "NAME_INVALID"),
        ("encoded slash in a name", "/v2/alice%2fapp/manifests/v1", 400, "NAME_INVALID"),
        ("encoded backslash", "/v2/alice%5capp/manifests/v1", 400, "NAME_INVALID"),
        ("encoded NUL", "/v2/alice/app%00/manifests/v1", 400, "NAME_INVALID"),
        ("empty segment", "/v2/alice//app/manifests/v1", 400, "NAME_INVALID"),
        ("leading empty segment", "/v2//alice/app/manifests/v1", 400, "NAME_INVALID"),
        ("uppercase name", "/v2/Alice/app/manifests/v1", 400, "NAME_INVALID"),
        ("dot segment in a name", "/v2/alice/./app/manifests/v1", 400, "NAME_INVALID"),
        ("bad tag", "/v2/alice/app/manifests/-v1", 400, "TAG_INVALID"),
        ("encoded tag", "/v2/alice/app/manifests/v%31", 400, "TAG_INVALID"),
        ("short digest", "/v2/alice/app/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("uppercase digest", "/v2/alice/app/blobs/sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789", 400, "DIGEST_INVALID"),
        ("digest with a path", "/v2/alice/app/blobs/sha256:..", 400, "DIGEST_INVALID"),
        ("not the API", "/v2/alice/app/nothing", 404, "UNSUPPORTED"),
        ("outside /v2", "/../etc/passwd", 404, "UNSUPPORTED"),
        ("encoded outside /v2", "/v2/%2e%2e/%2e%2e/etc/passwd", 404, "UNSUPPORTED"),
    ]
    .into_iter()
    .map(|(w, p, s, c)| (w.to_owned(), p.as_bytes().to_vec(), s, c))
    .collect();
    v.push((
        "name over 255".into(),
        format!("/v2/{long_name}/manifests/v1").into_bytes(),
        400,
        "NAME_INVALID",
    ));
    v.push((
        "tag over 128".into(),
        format!("/v2/alice/app/manifests/{long_tag}").into_bytes(),
        400,
        "TAG_INVALID",
    ));
    v.push((
        "digest with a trailing byte".into(),
        format!("/v2/alice/app/blobs/{digest}x").into_bytes(),
        400,
        "DIGEST_INVALID",
    ));
    v.push((
        "long path under the head limit".into(),
        format!("/v2/{}/manifests/v1", vec!["a"; 16_000].join("/")).into_bytes(),
        400,
        "NAME_INVALID",
    ));
    v
}

async fn paths_and_headers(rig: &Rig) {
    let me = rig
        .credentials(
            "alice",
            &["repository:alice/app:pull,push", "registry:catalog:*"],
        )
        .await;
    let auth = header("Authorization", &me);
    let digest = rig.image.blobs[0].digest.clone();
    // The control: the same credentials fetch the manifest.
    let r = rig
        .send(&request(
            "GET",
            b"/v2/alice/app/manifests/v1",
            &[&auth, &header("Accept", ACCEPT_ALL)],
            b"",
        ))
        .await;
    rig.check("control", &r, &OK);
    assert_eq!(r.body, rig.image.manifest);

    for (what, target, status, code) in hostile_paths(&digest) {
        for method in ["GET", "HEAD", "PUT", "DELETE"] {
            let r = rig.send(&request(method, &target, &[&auth], b"")).await;
            let what = format!("{method} {what}");
            // A read by a reference that is no tag finds no manifest (404,
            // as 2.8 and the OCI suite say); writes are told what is wrong.
            let (status, code) = match (method, code) {
                ("GET" | "HEAD", "TAG_INVALID") => (404, "MANIFEST_UNKNOWN"),
                _ => (status, code),
            };
            if method == "HEAD" {
                // No body on a HEAD: status and headers only.
                assert_eq!(r.status, status, "{what}");
                rig.check(
                    &what,
                    &r,
                    &Expect {
                        status,
                        code: None,
                        forwarded: false,
                    },
                );
            } else {
                rig.check(&what, &r, &refused(status, code));
            }
        }
    }

    // Pagination of the lists regate answers itself (tags) or filters (catalog).
    for (list, code) in [
        ("/v2/alice/app/tags/list", "PAGINATION_NUMBER_INVALID"),
        ("/v2/_catalog", "UNSUPPORTED"),
    ] {
        for (query, status) in [
            ("n=-1", 400),
            ("n=abc", 400),
            ("n=99999999999999999999999", 400),
            ("n=", 400),
            ("n=0", 200),
            ("n=1&last=%00%ff", 200),
            ("last=..%2F..%2Fetc", 200),
        ] {
            let target = format!("{list}?{query}");
            let r = rig
                .send(&request("GET", target.as_bytes(), &[&auth], b""))
                .await;
            let want = if status == 200 {
                Expect {
                    status,
                    code: None,
                    forwarded: true,
                }
            } else {
                refused(status, code)
            };
            rig.check(&target, &r, &want);
        }
    }

    // Raw bytes in the target: what the http crate accepts reaches the route
    // parser (an OCI 400); what it cannot parse gets hyper's bare 400. Either
    // way nothing is forwarded.
    for (what, target, code) in [
        (
            "raw backslash",
            &b"/v2/alice\\app/manifests/v1"[..],
            Some("NAME_INVALID"),
        ),
        (
            "raw backslash dot dot",
            b"/v2/alice/..\\..\\bob/manifests/v1",
            Some("NAME_INVALID"),
        ),
        (
            "raw non-ASCII",
            b"/v2/alice/\xc3\xa4pp/manifests/v1",
            Some("NAME_INVALID"),
        ),
        ("raw NUL", b"/v2/alice/app\x00/manifests/v1", None),
        ("raw space", b"/v2/alice/a pp/manifests/v1", None),
        (
            "raw quote and angle brackets",
            b"/v2/alice/\"<app>\"/manifests/v1",
            None,
        ),
    ] {
        let r = rig.send(&request("GET", target, &[&auth], b"")).await;
        rig.check(
            what,
            &r,
            &Expect {
                status: 400,
                code,
                forwarded: false,
            },
        );
    }

    // Heads: over the configured limit (32 KiB; HTTP/1.1 here, HTTP/2 below)
    // get an OCI 431. A long path counts towards the limit. Past hyper's own
    // head buffer (twice the limit) the answer is a bare 431 (before the http
    // crate's 65,534-byte URI limit could answer 414). Nothing is forwarded.
    let bare_431 = || Expect {
        status: 431,
        code: None,
        forwarded: false,
    };
    let manifest = "/v2/alice/app/manifests/v1".to_owned();
    let many: Vec<Vec<u8>> = (0..150).map(|i| header(&format!("X-N{i}"), "v")).collect();
    let junk = |n: usize| vec![header("X-Junk", &"j".repeat(n))];
    let long_path = format!("/v2/alice/app/manifests/{}", "v".repeat(30_000));
    let too_long = format!("/v2/alice/app/manifests/{}", "v".repeat(70_000));
    let cases: Vec<(&str, &str, Vec<Vec<u8>>, Expect)> = vec![
        (
            "one huge header",
            &manifest,
            junk(50_000),
            refused(431, "SIZE_INVALID"),
        ),
        (
            "a header just under hyper's backstop",
            &manifest,
            junk(60_000),
            refused(431, "SIZE_INVALID"),
        ),
        ("150 headers", &manifest, many, refused(431, "SIZE_INVALID")),
        (
            "a long path and a header, over the limit together",
            &long_path,
            junk(4_000),
            refused(431, "SIZE_INVALID"),
        ),
        (
            "a path past the head backstop",
            &too_long,
            Vec::new(),
            bare_431(),
        ),
        (
            "a header past the backstop",
            &manifest,
            junk(100_000),
            bare_431(),
        ),
    ];
    for (what, path, extra, want) in &cases {
        let mut hs: Vec<&[u8]> = extra.iter().map(Vec::as_slice).collect();
        hs.push(&auth);
        let r = rig.send(&request("GET", path.as_bytes(), &hs, b"")).await;
        rig.check(what, &r, want);
    }

    // Non-UTF-8 bytes in an ordinary header pass (HTTP allows them); in
    // Authorization they are a 400.
    let r = rig
        .send(&request(
            "GET",
            b"/v2/alice/app/manifests/v1",
            &[
                &auth,
                b"X-Bytes: \xff\xfe\x80",
                &header("Accept", ACCEPT_ALL),
            ],
            b"",
        ))
        .await;
    rig.check("non-UTF-8 in an ordinary header", &r, &OK);

    // HTTP/2: the same limit, the same OCI answer.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&rig.certs.files.ca_cert).unwrap())
                .unwrap(),
        )
        .tls_built_in_root_certs(false)
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = h2
        .get(format!("{}/v2/alice/app/manifests/v1", rig.regate.url))
        .header("authorization", &me)
        .header("x-junk", "j".repeat(50_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 431);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "SIZE_INVALID");
    let many = (0..150).fold(
        h2.get(format!("{}/v2/alice/app/manifests/v1", rig.regate.url)),
        |b, i| b.header(format!("x-n{i}"), "v"),
    );
    let r = many.header("authorization", &me).send().await.unwrap();
    assert_eq!(r.status(), 431);
    // Past the HTTP/2 backstop (twice the limit): the h2 layer refuses the
    // stream (or the client will not send it); never forwarded.
    let r = h2
        .get(format!("{}/v2/alice/app/manifests/v1", rig.regate.url))
        .header("authorization", &me)
        .header("x-junk", "j".repeat(300_000))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }
    let seen = rig.relay.requests();
    assert!(
        seen.is_empty(),
        "oversized HTTP/2 heads reached the registry: {seen:?}"
    );
    let r = h2
        .head(format!("{}/v2/alice/app/manifests/v1", rig.regate.url))
        .header("authorization", &me)
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "HTTP/2 is served after a refused header list"
    );
    rig.relay.clear();
}

async fn basic_credentials(rig: &Rig) {
    let target = b"/v2/alice/app/manifests/v1";
    let b64 = |s: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let unauthorized = refused(401, "UNAUTHORIZED");
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "only the scheme",
            b"Authorization: Basic".to_vec(),
            unauthorized,
        ),
        (
            "scheme and a space",
            b"Authorization: Basic ".to_vec(),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "not base64",
            b"Authorization: Basic !!!!".to_vec(),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "no colon",
            header("Authorization", &format!("Basic {}", b64(b"alice"))),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "empty user",
            header("Authorization", &format!("Basic {}", b64(b":alice-pw"))),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "not UTF-8 inside",
            header("Authorization", &format!("Basic {}", b64(b"alice\xff:pw"))),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "control character in the user",
            header(
                "Authorization",
                &format!("Basic {}", b64(b"al\x01ice:alice-pw")),
            ),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "wrong password",
            header("Authorization", &basic_header("alice", "nope")),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "unknown scheme",
            b"Authorization: Digest username=alice".to_vec(),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "a bearer token in basic mode",
            b"Authorization: Bearer abc.def.ghi".to_vec(),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "anonymous (skopeo's empty pair)",
            b"Authorization: Basic Og==".to_vec(),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "non-UTF-8 bytes",
            b"Authorization: Basic \xff\xfe".to_vec(),
            refused(400, "UNAUTHORIZED"),
        ),
        (
            "huge",
            header("Authorization", &format!("Basic {}", "A".repeat(20_000))),
            refused(400, "UNAUTHORIZED"),
        ),
        (
            "bob on alice's repository",
            header("Authorization", &basic_header("bob", &password("bob"))),
            refused(403, "DENIED"),
        ),
    ];
    for (what, h, want) in cases {
        let r = rig.send(&request("GET", target, &[&h], b"")).await;
        rig.check(what, &r, &want);
        if want.status == 401 {
            let ch = r.header("www-authenticate").unwrap_or_default();
            assert!(ch.starts_with("Basic realm="), "{what}: {ch:?}");
        }
    }
    let twice = header("Authorization", &basic_header("alice", &password("alice")));
    let r = rig
        .send(&request("GET", target, &[&twice, &twice], b""))
        .await;
    rig.check(
        "two Authorization headers",
        &r,
        &refused(400, "UNAUTHORIZED"),
    );
}

async fn bearer_tokens(rig: &Rig) {
    let good = rig
        .token(Some("alice"), &["repository:alice/app:pull"])
        .await;
    let kid = jsonwebtoken::decode_header(&good).unwrap().kid.unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::json!({"iss": ISSUER, "sub": "alice", "aud": SERVICE, "exp": now + 300, "nbf": now, "iat": now, "jti": "j",
            "access": [{"type": "repository", "name": "alice/app", "actions": ["pull"]}]});
        f(&mut v);
        v
    };
    let key = &rig.files.signing_key;
    let public_pem = std::fs::read(key.with_extension("pub")).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.{}", parts[2])),
        ("empty segments", "..".into()),
        ("not base64", "!!!.???.***".into()),
        ("base64 of nothing", "e30.e30.e30".into()),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64json(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid})),
                b64json(&claims(&|_| {}))
            ),
        ),
        (
            "HS256 keyed with the public key",
            jsonwebtoken::encode(
                &hs,
                &claims(&|_| {}),
                &jsonwebtoken::EncodingKey::from_secret(&public_pem),
            )
            .unwrap(),
        ),
        (
            "expired",
            sign_es256(
                &claims(&|v| {
                    v["exp"] = (now - 3600).into();
                    v["nbf"] = (now - 7200).into();
                }),
                Some(&kid),
                key,
            ),
        ),
        (
            "nbf in the future",
            sign_es256(
                &claims(&|v| {
                    v["nbf"] = (now + 3600).into();
                    v["exp"] = (now + 7200).into();
                }),
                Some(&kid),
                key,
            ),
        ),
        (
            "wrong audience",
            sign_es256(&claims(&|v| v["aud"] = "elsewhere".into()), Some(&kid), key),
        ),
        (
            "wrong issuer",
            sign_es256(&claims(&|v| v["iss"] = "mallory".into()), Some(&kid), key),
        ),
        (
            "claims swapped under the signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64json(&claims(
                    &|v| v["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"])
                )),
                parts[2]
            ),
        ),
        (
            "huge, under the header limit",
            format!("{}.{}.{}", parts[0], "A".repeat(12_000), parts[2]),
        ),
        (
            "huge, over the Authorization limit",
            format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
        ),
        ("bad characters", format!("{good}\"")),
    ];
    for (what, token) in cases {
        let h = header("Authorization", &format!("Bearer {token}"));
        let r = rig
            .send(&request("GET", b"/v2/alice/app/manifests/v1", &[&h], b""))
            .await;
        rig.check(what, &r, &refused(401, "UNAUTHORIZED"));
        rig.check_bearer_error(what, &r, "invalid_token");
    }
    // A good token, for another repository or action: insufficient scope.
    let h = header("Authorization", &format!("Bearer {good}"));
    for (what, method, target) in [
        (
            "a token for alice/app used on alice/other",
            "GET",
            &b"/v2/alice/other/manifests/v1"[..],
        ),
        (
            "a token for alice/app used on bob/secret",
            "GET",
            b"/v2/bob/secret/manifests/v1",
        ),
        (
            "a pull token used to push",
            "PUT",
            b"/v2/alice/app/manifests/v2",
        ),
        (
            "a pull token used to delete",
            "DELETE",
            b"/v2/alice/app/manifests/v1",
        ),
    ] {
        let r = rig.send(&request(method, target, &[&h], b"")).await;
        rig.check(what, &r, &refused(401, "UNAUTHORIZED"));
        rig.check_bearer_error(what, &r, "insufficient_scope");
    }
    // The token endpoint itself.
    let alice = header("Authorization", &basic_header("alice", &password("alice")));
    let form = header("Content-Type", "application/x-www-form-urlencoded");
    let big_form = format!(
        "grant_type=password&service={SERVICE}&username=alice&password=alice-pw&scope={}",
        "x".repeat(100_000)
    );
    for (what, method, target, body, status, code) in [
        (
            "a scope that does not parse",
            "GET",
            format!("/auth/token?service={SERVICE}&scope=%00:%00"),
            Vec::new(),
            400,
            "UNSUPPORTED",
        ),
        (
            "a form over 64 KiB",
            "POST",
            "/auth/token".to_owned(),
            big_form.into_bytes(),
            400,
            "UNSUPPORTED",
        ),
        (
            "a refresh token that is garbage",
            "POST",
            "/auth/token".to_owned(),
            format!("grant_type=refresh_token&service={SERVICE}&refresh_token=x.y.z").into_bytes(),
            401,
            "UNAUTHORIZED",
        ),
    ] {
        let r = rig
            .send(&request(method, target.as_bytes(), &[&alice, &form], &body))
            .await;
        rig.check(what, &r, &refused(status, code));
    }

    // Basic credentials work on the API in token mode (same htpasswd, same
    // rules): a wrong password is 401 with the Bearer challenge, bob's right
    // one is refused in alice's namespace, alice's own is let through.
    for (what, user, pw, want) in [
        (
            "a wrong password in token mode",
            "alice",
            "nope".to_owned(),
            refused(401, "UNAUTHORIZED"),
        ),
        (
            "basic credentials of another account in token mode",
            "bob",
            password("bob"),
            rig.denied_basic(),
        ),
    ] {
        let basic = header("Authorization", &basic_header(user, &pw));
        let r = rig
            .send(&request(
                "GET",
                b"/v2/alice/app/manifests/v1",
                &[&basic],
                b"",
            ))
            .await;
        rig.check(what, &r, &want);
    }
    let basic = header("Authorization", &basic_header("alice", &password("alice")));
    let accept = header("Accept", ACCEPT_ALL);
    let r = rig
        .send(&request(
            "GET",
            b"/v2/alice/app/manifests/v1",
            &[&basic, &accept],
            b"",
        ))
        .await;
    assert_eq!(r.status, 200, "alice's basic credentials in token mode");
    // The control: the good token still works.
    let r = rig
        .send(&request(
            "GET",
            b"/v2/alice/app/manifests/v1",
            &[&h, &header("Accept", ACCEPT_ALL)],
            b"",
        ))
        .await;
    rig.check("the good token", &r, &OK);
}

async fn bodies_and_uploads(rig: &Rig) {
    let me = rig
        .credentials(
            "alice",
            &[
                "repository:alice/app:pull,push",
                "repository:alice/new:pull,push",
                // Asked for, never granted: the refusals below are the rules'.
                "repository:bob/x:pull,push",
                "repository:bob/secret:pull",
            ],
        )
        .await;
    let auth = header("Authorization", &me);
    let c = rig
        .client_as(
            "alice",
            &[
                "repository:alice/app:pull,push",
                "repository:alice/new:pull,push",
            ],
        )
        .await;
    let base = &rig.regate.url;

    // A manifest over 4 MiB, announced or chunked: 413 before the registry
    // sees it, with bounded memory.
    let huge = vec![b' '; 5 * 1024 * 1024];
    let ct = header("Content-Type", OCI_MANIFEST);
    let r = rig
        .send(&request(
            "PUT",
            b"/v2/alice/app/manifests/big",
            &[&auth, &ct],
            &huge,
        ))
        .await;
    rig.check("5 MiB manifest", &r, &refused(413, "SIZE_INVALID"));
    let peak_before = rig.regate.peak_rss_kib();
    let mut chunked = request(
        "PUT",
        b"/v2/alice/app/manifests/big",
        &[&auth, &ct, b"Transfer-Encoding: chunked"],
        b"",
    );
    let piece = vec![b' '; 1024 * 1024];
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = rig.send(&chunked).await;
    rig.check("64 MiB chunked manifest", &r, &refused(413, "SIZE_INVALID"));
    let grew = rig.regate.peak_rss_kib().saturating_sub(peak_before);
    assert!(
        grew < 24 * 1024,
        "regate grew by {grew} KiB on a 64 MiB manifest"
    );

    // Wrong Content-Type, and a body that is not what it says: the registry
    // refuses them (forwarded: only it knows), and no tag appears.
    let index = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    )
    .unwrap();
    for (what, ctype, body) in [
        (
            "a manifest sent as text/plain",
            "text/plain",
            rig.image.manifest.clone(),
        ),
        (
            "an index sent as an image manifest",
            OCI_MANIFEST,
            index.clone(),
        ),
        ("not JSON", OCI_MANIFEST, b"{{{{".to_vec()),
        // 2.8 answers these three with 500 UNKNOWN; regate refuses them first.
        ("empty", OCI_MANIFEST, b"{}".to_vec()),
        ("null", OCI_INDEX, b"null".to_vec()),
        (
            "schema version 1 as OCI",
            OCI_MANIFEST,
            br#"{"schemaVersion":1,"layers":[]}"#.to_vec(),
        ),
    ] {
        let r = rig
            .send(&request(
                "PUT",
                b"/v2/alice/app/manifests/bad",
                &[&auth, &header("Content-Type", ctype)],
                &body,
            ))
            .await;
        rig.check(
            what,
            &r,
            &upstream_refused(
                400,
                r.oci_code()
                    .map(|_| "MANIFEST_INVALID")
                    .unwrap_or("MANIFEST_INVALID"),
            ),
        );
    }
    let r = c
        .get(format!("{base}/v2/alice/app/manifests/bad"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a refused manifest left a tag");

    // A blob whose bytes do not match its digest: 400 DIGEST_INVALID, and
    // neither digest appears.
    let bytes = b"the real bytes".to_vec();
    let claimed = sha256(b"other bytes");
    let r = c
        .post(format!("{base}/v2/alice/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = common::images::absolute(base, r.headers()["location"].to_str().unwrap());
    let r = c
        .put(format!("{location}&digest={claimed}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DIGEST_INVALID");
    for d in [&claimed, &sha256(&bytes)] {
        let r = c
            .head(format!("{base}/v2/alice/app/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{d} appeared");
        assert!(!common::storage::layer_links(&rig.registry.storage, "alice/app").contains(d));
    }
    rig.relay.clear();

    // Chunks with a bad Content-Range: 416 from regate, not forwarded; the
    // session stays usable.
    let r = c
        .post(format!("{base}/v2/alice/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = common::images::absolute(base, r.headers()["location"].to_str().unwrap());
    let target = location.trim_start_matches(base).as_bytes().to_vec();
    rig.relay.clear();
    for (what, range, code) in [
        ("not a range", "abc", "RANGE_INVALID"),
        ("end before start", "10-5", "RANGE_INVALID"),
        ("negative", "-1-5", "RANGE_INVALID"),
        (
            "overflowing",
            "99999999999999999999-100000000000000000000",
            "RANGE_INVALID",
        ),
        ("a gap", "100-199", "BLOB_UPLOAD_INVALID"),
    ] {
        let r = rig
            .send(&request(
                "PATCH",
                &target,
                &[
                    &auth,
                    &header("Content-Range", range),
                    &header("Content-Type", "application/octet-stream"),
                ],
                &[7u8; 100],
            ))
            .await;
        rig.check(what, &r, &refused(416, code));
    }
    let r = c
        .patch(&location)
        .header("content-range", "0-4")
        .header("content-type", "application/octet-stream")
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "the session broke");
    rig.relay.clear();

    // Cross-repository mounts.
    let secret = rig.secret.blobs[1].digest.clone();
    let mine = rig.image.blobs[1].digest.clone();
    let r = rig
        .send(&request(
            "POST",
            format!("/v2/bob/x/blobs/uploads/?mount={mine}&from=alice/app").as_bytes(),
            &[&auth],
            b"",
        ))
        .await;
    rig.check(
        "a mount into a repository alice may not push",
        &r,
        &rig.denied(),
    );
    if rig.mode == Mode::Token && r.status == 401 {
        rig.check_bearer_error("a mount into bob/x", &r, "insufficient_scope");
    }
    // A mount alice may not do becomes a plain upload session (202, as the
    // spec allows): no refusal for containerd to abort on, no 201 that tells
    // her bob/secret holds the digest, and no `mount` or `from` upstream.
    let plain = Expect {
        status: 202,
        code: None,
        forwarded: true,
    };
    for (what, target) in [
        (
            "from a repository alice may not pull",
            format!("/v2/alice/new/blobs/uploads/?mount={secret}&from=bob/secret"),
        ),
        (
            "from a name that does not parse",
            format!("/v2/alice/new/blobs/uploads/?mount={secret}&from=..%2Fbob%2Fsecret"),
        ),
        (
            "from twice",
            format!("/v2/alice/new/blobs/uploads/?mount={secret}&from=alice/app&from=bob/secret"),
        ),
        (
            "from with an encoded key",
            format!("/v2/alice/new/blobs/uploads/?mount={secret}&fr%6Fm=bob/secret"),
        ),
    ] {
        rig.relay.clear();
        let r = rig
            .send(&request("POST", target.as_bytes(), &[&auth], b""))
            .await;
        rig.check(what, &r, &plain);
        let seen = rig.relay.requests();
        assert!(
            seen.iter()
                .all(|l| !l.contains("mount") && !l.contains("from") && !l.contains("fr%6F")),
            "{what}: the mount reached the registry: {seen:?}"
        );
    }
    // The registry reads `mount` and `from` from a form body too (Go's
    // FormValue, body before query): no such body reaches it, whatever the
    // query says and however the type is spelled.
    let form = format!("mount={secret}&from=bob%2Fsecret");
    let multipart = format!(
        "--b\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{secret}\r\n\
         --b\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nbob/secret\r\n--b--\r\n"
    );
    for (what, target, ctype, body) in [
        (
            "a form body",
            "/v2/alice/new/blobs/uploads/".to_owned(),
            "application/x-www-form-urlencoded",
            form.clone(),
        ),
        (
            "a form body under a query mount alice may do",
            format!("/v2/alice/new/blobs/uploads/?mount={secret}&from=alice/app"),
            "Application/X-WWW-Form-Urlencoded; charset=utf-8",
            "from=bob%2Fsecret".to_owned(),
        ),
        (
            "a multipart body",
            "/v2/alice/new/blobs/uploads/".to_owned(),
            "multipart/form-data; boundary=b",
            multipart.clone(),
        ),
        (
            "a form body completing an upload",
            "/v2/alice/new/blobs/uploads/x?digest=sha256%3Aab".to_owned(),
            "application/x-www-form-urlencoded",
            form.clone(),
        ),
    ] {
        for method in ["POST", "PUT", "PATCH"] {
            let r = rig
                .send(&request(
                    method,
                    target.as_bytes(),
                    &[&auth, &header("Content-Type", ctype)],
                    body.as_bytes(),
                ))
                .await;
            rig.check(
                &format!("{method} {what}"),
                &r,
                &refused(400, "UNSUPPORTED"),
            );
        }
    }
    // Without `from`, 2.8 starts an ordinary upload: forwarded, and the
    // secret blob is not obtained.
    let r = rig
        .send(&request(
            "POST",
            format!("/v2/alice/new/blobs/uploads/?mount={secret}").as_bytes(),
            &[&auth],
            b"",
        ))
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    rig.relay.clear();
    for repo in ["alice/new", "alice/app"] {
        let r = c
            .head(format!("{base}/v2/{repo}/blobs/{secret}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{repo} obtained the secret blob");
        let r = c
            .get(format!("{base}/v2/{repo}/blobs/{secret}"))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 404 || r.status() == 401,
            "{repo}: {}",
            r.status()
        );
        assert!(!common::storage::layer_links(&rig.registry.storage, repo).contains(&secret));
    }
    rig.relay.clear();
}

impl Rig {
    /// A refusal of an account that sent Basic credentials (any mode).
    fn denied_basic(&self) -> Expect {
        refused(403, "DENIED")
    }

    /// A refusal of an authenticated caller in this mode.
    fn denied(&self) -> Expect {
        match self.mode {
            Mode::Basic => refused(403, "DENIED"),
            Mode::Token => refused(401, "UNAUTHORIZED"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_mode_refuses_hostile_input_cleanly() {
    let rig = Rig::start(Mode::Basic).await;
    paths_and_headers(&rig).await;
    basic_credentials(&rig).await;
    bodies_and_uploads(&rig).await;
    rig.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_refuses_hostile_input_cleanly() {
    let rig = Rig::start(Mode::Token).await;
    paths_and_headers(&rig).await;
    bearer_tokens(&rig).await;
    bodies_and_uploads(&rig).await;
    rig.assert_intact().await;
}

/// Whether the peer closed `conn` (EOF or error) within `limit`.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(conn: &mut R, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (a 408 or similar) before closing is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_dropped_while_others_are_served() {
    let rig = Rig::start_with_timeout(Mode::Basic, SLOW_TIMEOUT_SECS).await;
    let host = rig.regate.host.clone();
    let ca = rig.certs.files.ca_cert.clone();
    let limit = Duration::from_secs(SLOW_TIMEOUT_SECS);

    // 200 slowloris connections: a request head, then one more byte every
    // 200 ms, never finished.
    let opened = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for i in 0..200 {
        let (host, ca, opened) = (host.clone(), ca.clone(), Arc::clone(&opened));
        slow.push(tokio::spawn(async move {
            let mut tls = raw_http::connect(&host, &ca).await;
            let t0 = Instant::now();
            let head = format!(
                "GET /v2/alice/app/manifests/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: "
            );
            tls.write_all(head.as_bytes())
                .await
                .expect("the head of a slow request is sent");
            opened.fetch_add(1, Ordering::SeqCst);
            loop {
                if tls.write_all(b"x").await.is_err() || tls.flush().await.is_err() {
                    return t0.elapsed();
                }
                if closed_within(&mut tls, Duration::from_millis(200)).await {
                    return t0.elapsed();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "a slow connection lived 60 s"
                );
            }
        }));
    }
    let t = Instant::now();
    while opened.load(Ordering::SeqCst) < 200 {
        assert!(
            t.elapsed() < limit,
            "200 connections took longer than the timeout to open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opening = t.elapsed();
    // Meanwhile a normal authenticated HEAD is served, while every slow
    // connection is still open (not queued behind them).
    let alice = rig.client_as("alice", &[]).await;
    let t = Instant::now();
    let r = alice
        .head(format!("{}/v2/alice/app/manifests/v1", rig.regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eprintln!(
        "200 slow connections opened in {opening:?}; HEAD took {:?}",
        t.elapsed()
    );
    let open = slow.iter().filter(|s| !s.is_finished()).count();
    assert_eq!(
        open,
        200,
        "the HEAD ({:?}) came after slow connections closed",
        t.elapsed()
    );
    for s in slow {
        let lived = s.await.unwrap();
        assert!(
            lived < limit + Duration::from_secs(3),
            "a slow connection lived {lived:?}"
        );
    }

    // TCP connections that never start the TLS handshake.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(&host).await.unwrap());
    }
    // A handshake begun and abandoned (a ClientHello prefix).
    let mut partial = tokio::net::TcpStream::connect(&host).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    idle.push(partial);
    // TLS done, then silence; and a few bytes of the HTTP/2 preface, then silence.
    let mut silent = raw_http::connect(&host, &ca).await;
    let mut preface = raw_http::connect(&host, &ca).await;
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let t = Instant::now();
    for (i, conn) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(conn, limit + Duration::from_secs(3)).await,
            "idle TCP connection {i} still open after {:?}",
            t.elapsed()
        );
    }
    assert!(
        closed_within(&mut silent, limit + Duration::from_secs(3)).await,
        "a silent TLS connection stayed open"
    );
    assert!(
        closed_within(&mut preface, limit + Duration::from_secs(3)).await,
        "a half-sent preface stayed open"
    );
    // Served after all that.
    let r = alice
        .head(format!("{}/v2/alice/app/manifests/v1", rig.regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = reqwest::get(format!(
        "{}/metrics",
        rig.regate.admin_url.as_ref().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let timeouts: f64 = metrics
        .lines()
        .find(|l| l.contains("tls_handshake_failures") && l.contains("reason=\"timeout\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        timeouts >= 50.0,
        "handshake timeouts counted: {timeouts}\n{metrics}"
    );
    rig.assert_intact().await;
}
