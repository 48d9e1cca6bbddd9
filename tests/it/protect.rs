//! Protected tags (`[[protect]]`) against the real registry: an immutable tag
//! is never moved to another manifest (a push of another image to it gets 409
//! DENIED saying why, over HTTP/1.1 and HTTP/2; skopeo fails with that
//! message; the same manifest again is accepted) and never deleted (tag
//! delete, batch delete, digest delete that would untag it), while other
//! tags and other repositories are untouched by the rules.

use crate::common;

use common::images::{push_blob, put_manifest, ACCEPT_ALL};
use common::skopeo::{copy, try_skopeo};
use common::{storage, Image, Regate, Registry};

const RULES: &str = "[[protect]]\nrepository = \"rel/*\"\ntags = \"^v[0-9]\"\n[[protect]]\nrepository = \"rel/*\"\ntags = \"^stable$\"\nimmutable = false\n";

fn client(regate: &Regate, http1: bool) -> reqwest::Client {
    let pem = std::fs::read(&regate.certs.files.ca_cert).unwrap();
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .no_proxy();
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

async fn digest_of(c: &reqwest::Client, base: &str, repo: &str, tag: &str) -> Option<String> {
    let r = c
        .head(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    (r.status() == 200).then(|| {
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_is_never_moved_but_the_same_push_again_passes() {
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, RULES).await;
    let c = regate.client();
    let repo = "rel/app";
    let a = Image::oci("protect-a", 2000);
    let b = Image::oci("protect-b", 2000);
    a.push(&c, &regate.url, repo, "v1").await;
    // b's blobs are in the repository: only the rule can refuse its manifest.
    for blob in b.all_blobs() {
        push_blob(&c, &regate.url, repo, &blob.bytes).await;
    }
    for (http1, version) in [
        (true, reqwest::Version::HTTP_11),
        (false, reqwest::Version::HTTP_2),
    ] {
        let r = client(&regate, http1)
            .put(format!("{}/v2/{repo}/manifests/v1", regate.url))
            .header("content-type", &b.media_type)
            .body(b.manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 409);
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        let e = &v["errors"][0];
        assert_eq!(e["code"], "DENIED", "{v}");
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains("rel/app:v1 is immutable") && msg.contains("protect[0]"),
            "{msg}"
        );
        assert_eq!(e["detail"]["digest"], a.digest.as_str(), "{v}");
    }
    assert_eq!(
        digest_of(&c, &regate.url, repo, "v1").await,
        Some(a.digest.clone())
    );

    // skopeo: another image to the tag fails with the reason; the same one passes.
    let dir = tempfile::tempdir().unwrap();
    b.write_oci_layout(&dir.path().join("b"), "v1");
    a.write_oci_layout(&dir.path().join("a"), "v1");
    let trust = regate.certs.trust_dir.display().to_string();
    let dest = format!("docker://{}/{repo}:v1", regate.host);
    let err = try_skopeo(&[
        "copy",
        "--retry-times",
        "0",
        "--preserve-digests",
        "--dest-cert-dir",
        &trust,
        &format!("oci:{}:v1", dir.path().join("b").display()),
        &dest,
    ])
    .unwrap_err();
    assert!(err.contains("immutable"), "{err}");
    copy(
        &format!("oci:{}:v1", dir.path().join("a").display()),
        &dest,
        &regate.certs.trust_dir,
        false,
    );
    // A new tag matching the rule may be created; then it is fixed too.
    put_manifest(&c, &regate.url, repo, "v2", &b).await;
    assert_eq!(
        digest_of(&c, &regate.url, repo, "v2").await,
        Some(b.digest.clone())
    );
    // Not immutable: `stable` moves; other repositories are not protected.
    put_manifest(&c, &regate.url, repo, "stable", &a).await;
    put_manifest(&c, &regate.url, repo, "stable", &b).await;
    a.push(&c, &regate.url, "other/app", "v1").await;
    b.push(&c, &regate.url, "other/app", "v1").await;
    let mut tags = storage::tags(&registry.storage, repo);
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("stable".to_owned(), b.digest.clone()),
            ("v1".to_owned(), a.digest.clone()),
            ("v2".to_owned(), b.digest.clone()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_tag_is_never_deleted() {
    let registry = Registry::start();
    let regate = Regate::start_with(&registry.url, RULES).await;
    let c = regate.client();
    let repo = "rel/app";
    let a = Image::oci("protect-del-a", 2000);
    let b = Image::docker("protect-del-b", 2000);
    a.push(&c, &regate.url, repo, "v1").await;
    put_manifest(&c, &regate.url, repo, "dev", &a).await;
    b.push(&c, &regate.url, repo, "stable").await;
    put_manifest(&c, &regate.url, repo, "old", &b).await;

    for tag in ["v1", "stable"] {
        for http1 in [true, false] {
            let r = client(&regate, http1)
                .delete(format!("{}/v2/{repo}/manifests/{tag}", regate.url))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 409, "{tag}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
            assert!(
                v["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("is protected by protect["),
                "{v}"
            );
        }
    }
    // A batch removes what is not protected and refuses the rest.
    let r = c
        .post(format!("{}/v2/{repo}/_regate/delete", regate.url))
        .json(&serde_json::json!({"tags": ["v1", "dev", "stable"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let status: Vec<(String, u64)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tag"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        vec![
            ("dev".into(), 202),
            ("stable".into(), 409),
            ("v1".into(), 409)
        ],
        "{v}"
    );
    // A digest delete that would untag a protected tag.
    for (digest, tag) in [(&a.digest, "v1"), (&b.digest, "stable")] {
        let r = c
            .delete(format!("{}/v2/{repo}/manifests/{digest}", regate.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        let v: serde_json::Value = r.json().await.unwrap();
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{repo}:{tag}")) && msg.contains("would untag it"),
            "{msg}"
        );
    }
    let mut tags = storage::tags(&registry.storage, repo);
    tags.sort();
    assert_eq!(
        tags,
        vec![
            ("old".to_owned(), b.digest.clone()),
            ("stable".to_owned(), b.digest.clone()),
            ("v1".to_owned(), a.digest.clone()),
        ]
    );
    // Nothing protected here: the digest delete goes through.
    let other = Image::oci("protect-del-other", 500);
    other.push(&c, &regate.url, repo, "tmp").await;
    let r = c
        .delete(format!(
            "{}/v2/{repo}/manifests/{}",
            regate.url, other.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}
