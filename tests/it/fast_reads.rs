//! Fast reads (`[storage] fast_reads`): manifest and blob reads answered from
//! the registry's storage give the answer the registry gives, status and the
//! headers clients use, over HTTP/1.1 and HTTP/2, for GET and HEAD; the
//! reads regate cannot answer exactly are forwarded. A relay between regate
//! and the registry tells which was which, so each case also checks that it
//! took the path it should (and the same table passes with fast reads off,
//! everything forwarded). Then: a tag deleted through regate is never served
//! again, a push is seen at once, auth still applies, and a blob removed by
//! GC while it is served arrives whole.

use crate::common;

use common::auth::{basic_header, password, AuthFiles};
use common::images::{self, ACCEPT_ALL};
use common::relay::Relay;
use common::{Image, Regate, Registry};
use reqwest::{Method, Version};

const DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The headers clients read, compared between the two answers.
const COMPARED: [&str; 9] = [
    "content-type",
    "content-length",
    "docker-content-digest",
    "etag",
    "accept-ranges",
    "content-range",
    "cache-control",
    "docker-distribution-api-version",
    "x-content-type-options",
];

struct Setup {
    registry: Registry,
    relay: Relay,
    regate: Regate,
}

/// A registry, a relay in front of it, and regate in front of the relay
/// reading the registry's storage (`fast`) or not.
async fn setup(fast: bool, extra: &str) -> Setup {
    let registry = Registry::start();
    let relay = Relay::start(registry.url.trim_start_matches("http://")).await;
    let storage = format!(
        "[storage]\nroot = {:?}\nfast_reads = {fast}\n{extra}",
        registry.storage.display().to_string()
    );
    let regate = Regate::start_with(&relay.url, &storage).await;
    Setup {
        registry,
        relay,
        regate,
    }
}

fn client(ca: &std::path::Path, version: Version) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy();
    let b = if version == Version::HTTP_11 {
        b.http1_only()
    } else {
        b
    };
    b.build().unwrap()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Result<Vec<u8>, &'static str>,
}

async fn send(
    c: &reqwest::Client,
    method: &Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (Answer, Version) {
    let mut r = c.request(method.clone(), url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let version = resp.version();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // The registry's own 416 to a malformed range declares 16 bytes and
    // sends fewer (Go's http.Error after its Content-Length): compared as
    // "cut short", on both sides.
    let body = resp
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|_| "cut short");
    (
        Answer {
            status,
            headers,
            body,
        },
        version,
    )
}

/// How a case is compared.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Status, the compared headers and the body.
    All,
    /// Status and `Content-Type` only: the registry's answer differs from
    /// call to call (schema 1 signatures, multipart boundaries).
    StatusOnly,
    /// The registry's 416 to a blob GET declares the blob's size and sends
    /// a short text (`range_refusal`): regate sends the same status and
    /// headers but the length, and its body whole.
    RefusedRange,
}

struct Case {
    what: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    /// Answered from the storage when fast reads are on.
    from_storage: bool,
    compare: Compare,
}

fn case(
    what: &'static str,
    path: String,
    headers: &[(&'static str, &str)],
    from_storage: bool,
) -> Case {
    Case {
        what,
        path,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        from_storage,
        compare: Compare::All,
    }
}

/// Pushes the images of the table straight to the registry; the cases.
async fn table(registry: &Registry) -> Vec<Case> {
    let direct = reqwest::Client::new();
    let base = &registry.url;
    let docker = Image::docker("fr-docker", 2000);
    let oci = Image::oci("fr-oci", 70_000);
    let index = Image::oci_index("fr-index", &["amd64", "arm64"]);
    let list = Image::docker_list("fr-list", &["amd64", "arm64"]);
    docker.push(&direct, base, "fr/app", "docker").await;
    oci.push(&direct, base, "fr/app", "oci").await;
    index.push(&direct, base, "fr/app", "index").await;
    list.push(&direct, base, "fr/app", "list").await;
    // In another repository only: not linked in fr/app.
    let elsewhere = images::push_blob(&direct, base, "fr/other", b"only in fr/other").await;
    let layer = &oci.blobs[1];
    let m = |r: &str| format!("/v2/fr/app/manifests/{r}");
    let b = |d: &str| format!("/v2/fr/app/blobs/{d}");
    let unknown = images::sha256(b"nobody pushed this");
    let etag = format!("\"{}\"", oci.digest);
    let mut cases = vec![
        case(
            "docker by tag, all types",
            m("docker"),
            &[("accept", ACCEPT_ALL)],
            true,
        ),
        case(
            "docker by tag, docker type",
            m("docker"),
            &[("accept", DOCKER)],
            true,
        ),
        case("docker by digest, no accept", m(&docker.digest), &[], true),
        case(
            "oci by tag, all types",
            m("oci"),
            &[("accept", ACCEPT_ALL)],
            true,
        ),
        case(
            "oci by tag, q and odd parameters",
            m("oci"),
            &[(
                "accept",
                "application/json;q=0.1, application/vnd.oci.image.manifest.v1+json ; q",
            )],
            true,
        ),
        case(
            "oci by tag, other case: 404",
            m("oci"),
            &[("accept", "Application/VND.oci.image.manifest.v1+json")],
            false,
        ),
        case(
            "oci by tag, two accept headers",
            m("oci"),
            &[("accept", DOCKER), ("accept", OCI)],
            true,
        ),
        case(
            "oci by digest, oci type",
            m(&oci.digest),
            &[("accept", OCI)],
            true,
        ),
        case(
            "oci by tag, docker type only: 404",
            m("oci"),
            &[("accept", DOCKER)],
            false,
        ),
        case("oci by digest, no accept: 404", m(&oci.digest), &[], false),
        case(
            "index by tag, all types",
            m("index"),
            &[("accept", ACCEPT_ALL)],
            true,
        ),
        case(
            "index by digest, index type",
            m(&index.digest),
            &[("accept", OCI_INDEX)],
            true,
        ),
        case(
            "index child by digest",
            m(&index.children[0].digest),
            &[("accept", OCI)],
            true,
        ),
        case(
            "index by tag, manifest type only: 404",
            m("index"),
            &[("accept", OCI)],
            false,
        ),
        case(
            "list by tag, all types",
            m("list"),
            &[("accept", ACCEPT_ALL)],
            true,
        ),
        case(
            "list by tag, list type",
            m("list"),
            &[("accept", DOCKER_LIST)],
            true,
        ),
        case("list by digest, no accept", m(&list.digest), &[], true),
        case("unknown tag", m("nope"), &[("accept", ACCEPT_ALL)], false),
        case(
            "unknown digest",
            m(&unknown),
            &[("accept", ACCEPT_ALL)],
            false,
        ),
        case(
            "if-none-match: 304",
            m("oci"),
            &[("accept", ACCEPT_ALL), ("if-none-match", &etag)],
            false,
        ),
        case("blob", b(&layer.digest), &[], true),
        case("config blob", b(&oci.blobs[0].digest), &[], true),
        case(
            "range first bytes",
            b(&layer.digest),
            &[("range", "bytes=0-99")],
            true,
        ),
        case(
            "range open end",
            b(&layer.digest),
            &[("range", "bytes=69000-")],
            true,
        ),
        case(
            "range suffix",
            b(&layer.digest),
            &[("range", "bytes=-10")],
            true,
        ),
        case(
            "range past the end",
            b(&layer.digest),
            &[("range", "bytes=10-999999")],
            true,
        ),
        case(
            "range beyond the blob: 416",
            b(&layer.digest),
            &[("range", "bytes=999999-")],
            false,
        ),
        case(
            "range reversed: 416",
            b(&layer.digest),
            &[("range", "bytes=9-2")],
            false,
        ),
        case(
            "range garbage: 416",
            b(&layer.digest),
            &[("range", "bytes=abc")],
            false,
        ),
        case(
            "range zero suffix",
            b(&layer.digest),
            &[("range", "bytes=-0")],
            false,
        ),
        case(
            "if-none-match on a blob: 304",
            b(&layer.digest),
            &[("if-none-match", &format!("\"{}\"", layer.digest))],
            false,
        ),
        case("unknown blob", b(&unknown), &[], false),
        case(
            "blob not linked in the repository",
            b(&elsewhere),
            &[],
            false,
        ),
    ];
    let mut volatile = vec![
        case(
            "docker by tag, no accept: schema 1",
            m("docker"),
            &[],
            false,
        ),
        case(
            "list by tag, no accept: schema 1 child",
            m("list"),
            &[],
            false,
        ),
        case(
            "several ranges: multipart",
            b(&layer.digest),
            &[("range", "bytes=0-1,5-9")],
            false,
        ),
    ];
    for c in &mut volatile {
        c.compare = Compare::StatusOnly;
    }
    for c in &mut cases {
        if c.what.ends_with(": 416") {
            c.compare = Compare::RefusedRange;
        }
    }
    cases.extend(volatile);
    cases
}

/// Every case of the table, both ways, GET and HEAD, over HTTP/1.1 and HTTP/2.
async fn same_answers_as_the_registry(fast: bool) {
    let s = setup(fast, "").await;
    let cases = table(&s.registry).await;
    let direct = reqwest::Client::new();
    let mut failures = Vec::new();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let through = client(&s.regate.certs.files.ca_cert, version);
        for c in &cases {
            for method in [Method::GET, Method::HEAD] {
                let headers: Vec<(&str, &str)> =
                    c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let what = format!("{} ({method}, {version:?})", c.what);
                let (want, _) = send(
                    &direct,
                    &method,
                    &format!("{}{}", s.registry.url, c.path),
                    &headers,
                )
                .await;
                s.relay.clear();
                let (got, v) = send(
                    &through,
                    &method,
                    &format!("{}{}", s.regate.url, c.path),
                    &headers,
                )
                .await;
                assert_eq!(v, version, "{what}");
                let forwarded = s.relay.requests().iter().any(|r| r.contains(&c.path));
                if forwarded == (fast && c.from_storage) {
                    failures.push(format!(
                        "{what}: {} (fast reads {})",
                        if forwarded {
                            "forwarded, should come from the storage"
                        } else {
                            "answered by regate, should be forwarded"
                        },
                        if fast { "on" } else { "off" }
                    ));
                }
                if got.status != want.status {
                    failures.push(format!(
                        "{what}: status {} != registry's {}",
                        got.status, want.status
                    ));
                    continue;
                }
                let compare = match c.compare {
                    Compare::RefusedRange if method == Method::HEAD => Compare::All,
                    other => other,
                };
                let names: &[&str] = match compare {
                    Compare::All | Compare::RefusedRange => &COMPARED,
                    Compare::StatusOnly => &["content-type"],
                };
                for name in names {
                    let (g, w) = (got.headers.get(*name), want.headers.get(*name));
                    let same = match compare {
                        Compare::All => g == w,
                        Compare::RefusedRange if *name == "content-length" => {
                            let len = got.body.as_ref().map(Vec::len).ok();
                            g.and_then(|v| v.to_str().ok()?.parse().ok()) == len
                        }
                        Compare::RefusedRange => g == w,
                        // The type without its parameters (a boundary).
                        Compare::StatusOnly => {
                            let t = |h: Option<&reqwest::header::HeaderValue>| {
                                h.map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
                            };
                            t(g) == t(w)
                        }
                    };
                    if !same {
                        failures.push(format!("{what}: {name}: {g:?} != registry's {w:?}"));
                    }
                }
                if compare == Compare::RefusedRange && got.body.is_err() {
                    failures.push(format!("{what}: the 416's body is cut short"));
                }
                if compare == Compare::All && got.body != want.body {
                    let len = |b: &Result<Vec<u8>, &'static str>| b.as_ref().map(Vec::len).ok();
                    failures.push(format!(
                        "{what}: body of {:?} bytes != registry's {:?} bytes",
                        len(&got.body),
                        len(&want.body)
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_the_storage_answer_as_the_registry_does() {
    same_answers_as_the_registry(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fast_reads_off_every_read_is_forwarded_and_the_answers_are_the_same() {
    same_answers_as_the_registry(false).await;
}

/// The bytes of the registry's answer to `GET path` with `range`, read
/// from the socket to its end (its body is shorter than it declares).
fn raw_registry_answer(registry: &Registry, path: &str, range: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = registry.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nRange: {range}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    (head, raw[end..].to_vec())
}

/// The registry's 416 to a blob GET declares the blob's size and sends a
/// few bytes: forwarded as is, HTTP/1.1 clients saw the connection cut and
/// HTTP/2 clients a stream reset (INTERNAL_ERROR), sometimes without the
/// answer's headers. regate sends it whole, with its real length, on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrys_416_to_a_blob_get_arrives_whole_over_both_protocols() {
    for fast in [true, false] {
        let s = setup(fast, "").await;
        let bytes = images::pseudo_random("fr-416", 50_000);
        let digest =
            images::push_blob(&reqwest::Client::new(), &s.registry.url, "fr/range", &bytes).await;
        let path = format!("/v2/fr/range/blobs/{digest}");
        for range in ["bytes=abc", "bytes=9-2", "bytes=60000-"] {
            let (head, sent) = raw_registry_answer(&s.registry, &path, range);
            assert!(head.starts_with("HTTP/1.1 416"), "{head}");
            assert!(
                head.contains("Content-Length: 50000"),
                "2.8 declares the blob's size: {head}"
            );
            for version in [Version::HTTP_11, Version::HTTP_2] {
                let c = client(&s.regate.certs.files.ca_cert, version);
                // The reset raced with the headers: several tries each.
                for _ in 0..10 {
                    let r = c
                        .get(format!("{}{path}", s.regate.url))
                        .header("range", range)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{range} {version:?}: {e:?}"));
                    assert_eq!(r.version(), version);
                    assert_eq!(r.status(), 416, "{range} {version:?}");
                    assert_eq!(
                        r.headers()["content-length"],
                        sent.len().to_string().as_str(),
                        "{range} {version:?}"
                    );
                    let body = r
                        .bytes()
                        .await
                        .unwrap_or_else(|e| panic!("{range} {version:?} body: {e:?}"));
                    assert_eq!(&body[..], &sent[..], "{range} {version:?}");
                }
            }
        }
    }
}

/// The registry unreachable: what the storage holds is still served (proof
/// that it is read from there); anything else is the usual 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_answers_while_the_registry_is_unreachable_and_misses_are_forwarded() {
    let s = setup(true, "").await;
    let image = Image::oci("fr-down", 5000);
    image
        .push(&reqwest::Client::new(), &s.registry.url, "fr/down", "v1")
        .await;
    s.relay.set_down(true);
    let c = s.regate.client();
    let r = c
        .get(format!("{}/v2/fr/down/manifests/v1", s.regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
    let layer = &image.blobs[1];
    let r = c
        .get(format!(
            "{}/v2/fr/down/blobs/{}",
            s.regate.url, layer.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), layer.bytes);
    let r = c
        .get(format!("{}/v2/fr/down/manifests/v2", s.regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "a miss is never a 404 of regate's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_deleted_through_regate_is_never_served_afterwards() {
    let s = setup(true, "").await;
    let direct = reqwest::Client::new();
    let image = Image::docker("fr-delete", 3000);
    image.push(&direct, &s.registry.url, "fr/del", "v1").await;
    images::put_manifest(&direct, &s.registry.url, "fr/del", "keep", &image).await;
    let c = s.regate.client();
    let url = |tag: &str| format!("{}/v2/fr/del/manifests/{tag}", s.regate.url);

    // Readers hammer the tag while it is deleted: each sees the image or a
    // 404, never the dummy manifest the delete puts there for a moment.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (c, url, digest) = (c.clone(), url("v1"), image.digest.clone());
            tokio::spawn(async move {
                let mut gone = 0;
                for _ in 0..150 {
                    let r = c
                        .get(&url)
                        .header("accept", ACCEPT_ALL)
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 => assert_eq!(r.headers()["docker-content-digest"], digest.as_str()),
                        404 => gone += 1,
                        other => panic!("GET during the delete: {other}"),
                    }
                }
                gone
            })
        })
        .collect();
    let r = c.delete(url("v1")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    for r in readers {
        r.await.unwrap();
    }
    for method in [Method::GET, Method::HEAD] {
        let r = c
            .request(method.clone(), url("v1"))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} of the deleted tag");
    }
    let r = c
        .get(url("keep"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());

    // Deleted by digest through regate: neither the digest nor its last tag
    // is served from the storage again.
    let r = c.delete(url(&image.digest)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    for reference in [image.digest.as_str(), "keep"] {
        let r = c
            .get(url(reference))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{reference} after the digest delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_seen_at_once_through_regate_or_behind_its_back() {
    let s = setup(true, "").await;
    let c = s.regate.client();
    let url = |tag: &str| format!("{}/v2/fr/push/manifests/{tag}", s.regate.url);
    let r = c
        .head(url("v1"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let image = Image::oci("fr-push", 4000);
    image.push(&c, &s.regate.url, "fr/push", "v1").await;
    let r = c
        .head(url("v1"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());

    // Retagged straight on the registry: the next read through regate sees it.
    let other = Image::oci("fr-push-2", 4000);
    other
        .push(&reqwest::Client::new(), &s.registry.url, "fr/push", "v1")
        .await;
    s.relay.clear();
    let r = c
        .get(url("v1"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], other.digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), other.manifest);
    assert!(s.relay.requests().is_empty(), "{:?}", s.relay.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_still_applies_to_reads_from_the_storage() {
    let files = AuthFiles::new();
    let s = setup(true, &files.basic_toml("")).await;
    let image = Image::oci("fr-auth", 3000);
    image
        .push(&reqwest::Client::new(), &s.registry.url, "alice/app", "v1")
        .await;
    let c = s.regate.client();
    let manifest = format!("{}/v2/alice/app/manifests/v1", s.regate.url);
    let blob = format!(
        "{}/v2/alice/app/blobs/{}",
        s.regate.url, image.blobs[1].digest
    );
    for url in [&manifest, &blob] {
        for method in [Method::GET, Method::HEAD] {
            let r = c
                .request(method.clone(), url)
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {url} anonymous");
            let r = c
                .request(method.clone(), url)
                .header("accept", ACCEPT_ALL)
                .header("authorization", basic_header("bob", &password("bob")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{method} {url} without pull");
            s.relay.clear();
            let r = c
                .request(method.clone(), url)
                .header("accept", ACCEPT_ALL)
                .header("authorization", basic_header("alice", &password("alice")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{method} {url} with pull");
            assert!(
                s.relay.requests().is_empty(),
                "from the storage: {:?}",
                s.relay.requests()
            );
        }
    }
}

/// GC removes a blob while it is being downloaded: the download, served from
/// the open file, finishes whole; the next request is the registry's 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_removed_by_gc_while_served_arrives_whole() {
    let s = setup(true, "").await;
    let bytes = images::pseudo_random("fr-gc", 24 * 1024 * 1024);
    let digest = images::push_blob(&reqwest::Client::new(), &s.registry.url, "fr/gc", &bytes).await;
    let url = format!("{}/v2/fr/gc/blobs/{digest}", s.regate.url);
    let c = s.regate.client();
    let mut r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut got = r.chunk().await.unwrap().unwrap().to_vec();
    assert!(
        got.len() < bytes.len(),
        "the first chunk is not the whole blob"
    );
    common::storage::remove_blob_data(&s.registry.storage, &digest);
    while let Some(chunk) = r.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(images::sha256(&got), digest);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// curl fails an HTTP/2 HEAD answer that carries DATA (exit 92): the
/// storage's HEAD answers carry none, on either protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_takes_the_head_answers_over_both_protocols() {
    common::require_tool("curl");
    let s = setup(true, "").await;
    let image = Image::oci("fr-curl", 5000);
    image
        .push(&reqwest::Client::new(), &s.registry.url, "fr/curl", "v1")
        .await;
    let ca = s.regate.certs.files.ca_cert.display().to_string();
    for path in [
        "/v2/fr/curl/manifests/v1".to_owned(),
        format!("/v2/fr/curl/blobs/{}", image.blobs[1].digest),
    ] {
        for proto in ["--http1.1", "--http2"] {
            s.relay.clear();
            let mut cmd = std::process::Command::new("curl");
            cmd.args(["-sS", "-I", proto, "--cacert", &ca, "-H"])
                .arg(format!("accept: {ACCEPT_ALL}"))
                .arg(format!("{}{path}", s.regate.url));
            let (code, out, err) = common::run_captured(cmd, None);
            assert_eq!(code, 0, "curl -I {proto} {path}: {out}{err}");
            assert!(out.starts_with("HTTP/"), "{out}");
            assert!(out.contains(" 200"), "{out}");
            assert!(s.relay.requests().is_empty(), "{:?}", s.relay.requests());
        }
    }
}

/// The `regate_fast_reads_total` series on the admin listener's `/metrics`.
async fn fast_read_series(regate: &Regate) -> Vec<String> {
    let text = reqwest::get(format!("{}/metrics", regate.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut series: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("regate_fast_reads_total{"))
        .map(str::to_owned)
        .collect();
    series.sort();
    series
}

/// Reads answered from the storage and forwarded ones are counted by kind
/// and outcome (the reason class of a forward); with fast reads off there
/// is no such series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_reads_served_from_the_storage_and_why_others_were_forwarded() {
    let s = setup(true, "").await;
    let image = Image::oci("fr-metrics", 5000);
    image
        .push(&reqwest::Client::new(), &s.registry.url, "fr/metrics", "v1")
        .await;
    let layer = &image.blobs[1];
    let c = s.regate.client();
    let m = |r: &str| format!("{}/v2/fr/metrics/manifests/{r}", s.regate.url);
    let b = |d: &str| format!("{}/v2/fr/metrics/blobs/{d}", s.regate.url);
    let etag = format!("\"{}\"", layer.digest);
    let unknown = images::sha256(b"never pushed");
    type Read<'a> = (Method, String, Vec<(&'a str, &'a str)>, u16);
    let reads: Vec<Read> = vec![
        (Method::GET, m("v1"), vec![("accept", ACCEPT_ALL)], 200),
        (Method::HEAD, m("v1"), vec![("accept", ACCEPT_ALL)], 200),
        (Method::GET, m(&image.digest), vec![("accept", OCI)], 200),
        (Method::GET, m("v1"), vec![("accept", DOCKER)], 404),
        (Method::GET, m("v2"), vec![("accept", ACCEPT_ALL)], 404),
        (Method::GET, b(&layer.digest), vec![], 200),
        (Method::HEAD, b(&layer.digest), vec![], 200),
        (
            Method::GET,
            b(&layer.digest),
            vec![("range", "bytes=0-9")],
            206,
        ),
        (
            Method::GET,
            b(&layer.digest),
            vec![("range", "bytes=0-1,4-5")],
            206,
        ),
        (
            Method::GET,
            b(&layer.digest),
            vec![("if-none-match", &etag)],
            304,
        ),
        (Method::GET, b(&unknown), vec![], 404),
    ];
    for (method, url, headers, status) in &reads {
        let mut r = c.request(method.clone(), url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{method} {url} {headers:?}");
        r.bytes().await.unwrap();
    }
    let series = fast_read_series(&s.regate).await;
    let want = [
        r#"regate_fast_reads_total{kind="blob",outcome="conditional"} 1"#,
        r#"regate_fast_reads_total{kind="blob",outcome="miss"} 1"#,
        r#"regate_fast_reads_total{kind="blob",outcome="range"} 1"#,
        r#"regate_fast_reads_total{kind="blob",outcome="served"} 3"#,
        r#"regate_fast_reads_total{kind="manifest",outcome="accept"} 1"#,
        r#"regate_fast_reads_total{kind="manifest",outcome="miss"} 1"#,
        r#"regate_fast_reads_total{kind="manifest",outcome="served"} 3"#,
    ];
    assert_eq!(series, want, "{series:#?}");

    let off = setup(false, "").await;
    image
        .push(
            &reqwest::Client::new(),
            &off.registry.url,
            "fr/metrics",
            "v1",
        )
        .await;
    let r = off
        .regate
        .client()
        .get(format!("{}/v2/fr/metrics/manifests/v1", off.regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(fast_read_series(&off.regate).await.is_empty());
}
