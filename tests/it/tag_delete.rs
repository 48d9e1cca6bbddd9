//! DELETE by tag removes exactly that tag, on a real 2.8 registry, with real
//! clients (curl for the delete, skopeo for pulls).

use crate::common;

use std::process::Command;

use common::images::{sha256, ACCEPT_ALL};
use common::registry::RegistryOptions;
use common::{skopeo, storage, Image, Regate, Registry};

/// `curl -X DELETE` as a user would type it; returns (status, body).
fn curl_delete(regate: &Regate, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-X", "DELETE", "--cacert"])
        .arg(&regate.certs.files.ca_cert)
        .args(["-w", "\n%{http_code}", &format!("{}{path}", regate.url)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

async fn digest_of(regate: &Regate, repo: &str, reference: &str) -> Option<String> {
    let r = regate
        .client()
        .head(format!("{}/v2/{repo}/manifests/{reference}", regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => Some(
            r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_owned(),
        ),
        404 => None,
        s => panic!("HEAD {repo}:{reference}: {s}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_one_of_two_tags_keeps_the_other_for_every_manifest_kind() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let cases = [
        ("kinds/oci", Image::oci("k-oci", 4000)),
        ("kinds/docker", Image::docker("k-docker", 4000)),
        (
            "kinds/index",
            Image::oci_index("k-index", &["amd64", "arm64"]),
        ),
        (
            "kinds/list",
            Image::docker_list("k-list", &["amd64", "arm64"]),
        ),
    ];
    for (repo, img) in &cases {
        img.push(&client, &regate.url, repo, "keep").await;
        common::images::put_manifest(&client, &regate.url, repo, "drop", img).await;

        let (status, body) = curl_delete(&regate, &format!("/v2/{repo}/manifests/drop"));
        assert_eq!(status, 202, "{repo}: {body}");
        assert_eq!(
            digest_of(&regate, repo, "drop").await,
            None,
            "{repo}: the tag is gone"
        );
        assert_eq!(
            digest_of(&regate, repo, "keep").await.as_deref(),
            Some(img.digest.as_str()),
            "{repo}"
        );
        for child in &img.children {
            assert_eq!(
                digest_of(&regate, repo, &child.digest).await.as_deref(),
                Some(child.digest.as_str()),
                "{repo} child"
            );
        }
        // The registry holds exactly the image's manifests: no dummy left.
        let mut want: Vec<String> = img.children.iter().map(|c| c.digest.clone()).collect();
        want.push(img.digest.clone());
        want.sort();
        assert_eq!(storage::revisions(&registry.storage, repo), want, "{repo}");
        assert_eq!(
            storage::tags(&registry.storage, repo),
            vec![("keep".to_owned(), img.digest.clone())],
            "{repo}"
        );

        // skopeo still pulls the remaining tag, with every child.
        let work = tempfile::tempdir().unwrap();
        let trust = regate.certs.trust_dir.clone();
        let (s, d) = (
            format!("docker://{}/{repo}:keep", regate.host),
            format!("oci:{}:keep", work.path().display()),
        );
        tokio::task::spawn_blocking(move || skopeo::copy(&s, &d, &trust, true))
            .await
            .unwrap();
    }
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_deletes_exactly_t12_t22_and_t52() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let repos: [(&str, &[&str]); 5] = [
        ("i1", &["T11", "T12", "T13"]),
        ("i2", &["T21", "T22", "T23", "T24"]),
        ("i3", &["T31", "T32"]),
        ("i4", &["T41", "T42", "T43", "vT44"]),
        ("i5", &["T51", "T52"]),
    ];
    // Tags in one repository share manifests, as real tags often do.
    let mut digests = std::collections::HashMap::new();
    for (repo, tags) in repos {
        let a = Image::oci(&format!("{repo}-a"), 2000);
        let b = Image::docker(&format!("{repo}-b"), 2000);
        for (i, tag) in tags.iter().enumerate() {
            let img = if i % 2 == 0 { &a } else { &b };
            img.push(&client, &regate.url, repo, tag).await;
            digests.insert((repo, *tag), img.digest.clone());
        }
    }
    for (repo, tag) in [("i1", "T12"), ("i2", "T22"), ("i5", "T52")] {
        let (status, body) = curl_delete(&regate, &format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(status, 202, "{repo}:{tag}: {body}");
    }
    for (repo, tags) in repos {
        for tag in tags {
            let got = digest_of(&regate, repo, tag).await;
            if matches!((repo, *tag), ("i1", "T12") | ("i2", "T22") | ("i5", "T52")) {
                assert_eq!(got, None, "{repo}:{tag} deleted");
            } else {
                assert_eq!(
                    got.as_ref(),
                    digests.get(&(repo, *tag)),
                    "{repo}:{tag} intact"
                );
            }
        }
    }
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_unknown_tag_invalid_tag_and_digest_pass_through() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let img = Image::oci("errors", 1000);
    img.push(&client, &regate.url, "e/r", "a").await;
    common::images::put_manifest(&client, &regate.url, "e/r", "b", &img).await;

    let (status, body) = curl_delete(&regate, "/v2/e/r/manifests/nope");
    assert_eq!(status, 404);
    assert!(body.contains("MANIFEST_UNKNOWN"), "{body}");
    let (status, body) = curl_delete(&regate, "/v2/e/r/manifests/.bad");
    assert_eq!(status, 400);
    assert!(body.contains("TAG_INVALID"), "{body}");

    // A digest delete is the registry's own: it removes every tag of that digest.
    let (status, _) = curl_delete(&regate, &format!("/v2/e/r/manifests/{}", img.digest));
    assert_eq!(status, 202);
    assert_eq!(digest_of(&regate, "e/r", "a").await, None);
    assert_eq!(digest_of(&regate, "e/r", "b").await, None);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_disabled_upstream_is_405_and_the_tag_is_untouched() {
    let registry = Registry::start_with(RegistryOptions {
        delete_enabled: false,
    });
    let regate = Regate::start(&registry.url).await;
    let img = Image::oci("disabled", 1000);
    img.push(&regate.client(), &regate.url, "d/x", "t").await;
    let before = storage::revisions(&registry.storage, "d/x");
    let (status, body) = curl_delete(&regate, "/v2/d/x/manifests/t");
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("UNSUPPORTED"), "{body}");
    assert_eq!(
        digest_of(&regate, "d/x", "t").await.as_deref(),
        Some(img.digest.as_str())
    );
    assert_eq!(
        storage::revisions(&registry.storage, "d/x"),
        before,
        "nothing was written"
    );
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_brings_a_deleted_tag_back() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let img = Image::docker_list("restore", &["amd64", "arm64"]);
    img.push(&regate.client(), &regate.url, "r/s", "v1").await;
    assert_eq!(curl_delete(&regate, "/v2/r/s/manifests/v1").0, 202);
    assert_eq!(digest_of(&regate, "r/s", "v1").await, None);

    let tags = &regate.server.as_ref().unwrap().app.tags;
    let name = regate::route::RepoName::parse("r/s").unwrap();
    let tag = regate::route::Tag::parse("v1").unwrap();
    let restored = tags.restore(&name, &tag, "test").await.unwrap();
    assert_eq!(restored.digest, img.digest);
    assert_eq!(
        digest_of(&regate, "r/s", "v1").await.as_deref(),
        Some(img.digest.as_str())
    );
    // Nothing left to restore now.
    assert!(tags.restore(&name, &tag, "test").await.is_err());
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_is_sorted_and_paginated_with_link() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let client = regate.client();
    let img = Image::oci("list", 500);
    let names = ["v10", "latest", "v2", "a", "v1", "b"];
    img.push(&client, &regate.url, "l/t", names[0]).await;
    for t in &names[1..] {
        common::images::put_manifest(&client, &regate.url, "l/t", t, &img).await;
    }
    let r = client
        .get(format!("{}/v2/l/t/tags/list", regate.url))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["tags"],
        serde_json::json!(["a", "b", "latest", "v1", "v10", "v2"])
    );

    let mut url = format!("{}/v2/l/t/tags/list?n=4", regate.url);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = client.get(&url).send().await.unwrap();
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let v: serde_json::Value = r.json().await.unwrap();
        seen.extend(
            v["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned()),
        );
        match link {
            Some(l) => {
                let path = l.trim_start_matches('<').split('>').next().unwrap();
                assert!(l.ends_with("rel=\"next\""), "{l}");
                url = format!("{}{path}", regate.url);
            }
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "latest", "v1", "v10", "v2"]);
    let r = client
        .get(format!("{}/v2/l/t/tags/list?n=2&last=latest", regate.url))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tags"], serde_json::json!(["v1", "v10"]));
    let r = client
        .get(format!("{}/v2/no/such/tags/list", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_digest_delete_lists_the_tags_and_gitlab_route_works() {
    let registry = Registry::start();
    let regate =
        Regate::start_with(&registry.url, "[delete]\nprotect_shared_digests = true\n").await;
    let client = regate.client();
    let img = Image::oci("protect", 800);
    img.push(&client, &regate.url, "p/q", "one").await;
    common::images::put_manifest(&client, &regate.url, "p/q", "two", &img).await;

    let (status, body) = curl_delete(&regate, &format!("/v2/p/q/manifests/{}", img.digest));
    assert_eq!(status, 409, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["errors"][0]["detail"]["tags"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(
        digest_of(&regate, "p/q", "one").await.as_deref(),
        Some(img.digest.as_str())
    );

    // GitLab's client looks for DELETE in Allow, then deletes on this route.
    let r = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v2/p/q/tags/reference/one", regate.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["allow"].to_str().unwrap().contains("DELETE"));
    let (status, _) = curl_delete(&regate, "/v2/p/q/tags/reference/one");
    assert_eq!(status, 202);
    assert_eq!(digest_of(&regate, "p/q", "one").await, None);
    assert_eq!(
        digest_of(&regate, "p/q", "two").await.as_deref(),
        Some(img.digest.as_str())
    );
    // With one tag left, the digest delete goes through after all? No: "two" still points at it.
    assert_eq!(
        curl_delete(&regate, &format!("/v2/p/q/manifests/{}", img.digest)).0,
        409
    );
    assert_eq!(sha256(&img.manifest), img.digest);
    regate.stop().await;
}
