//! `regate fsck` against a real registry behind a real regate: clean, then
//! broken through the storage in each way it must name, through the library
//! and the binary (exit codes, table and JSON).

use crate::common;

use std::process::Command;

use common::auth::{password, AuthFiles};
use common::images::{push_blob, ACCEPT_ALL};
use common::storage::{remove_blob_data, remove_revision_link};
use common::{Image, Regate, Registry};
use indicatif::ProgressBar;
use regate::client::{RegistryClient, Scheme};
use regate::fsck::{Finding, Options, Problem, Report, Severity};
use regate::tag_delete::{Dummy, Family};

const SBOM: &str = "application/vnd.example.sbom.v1+json";

fn regate_client(regate: &Regate) -> RegistryClient {
    RegistryClient::with_scheme(
        Scheme::Https,
        &regate.host,
        Some(&regate.certs.files.ca_cert),
        None,
    )
    .unwrap()
}

async fn fsck(client: &RegistryClient, options: &Options) -> Report {
    regate::fsck::run(client, options, &ProgressBar::hidden())
        .await
        .unwrap()
}

/// Runs the binary off the async threads (regate serves on this runtime).
async fn fsck_cli(args: Vec<String>, stdin: Option<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
            .arg("fsck")
            .args(&args)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("REGATE_USERNAME")
            .env_remove("REGATE_PASSWORD")
            .env("HOME", home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn ca_args(regate: &Regate) -> Vec<String> {
    vec![
        regate.host.clone(),
        "--cacert".into(),
        regate.certs.files.ca_cert.display().to_string(),
    ]
}

/// The findings of `problem` in `repo`.
fn found<'a>(report: &'a Report, repo: &str, problem: Problem) -> Vec<&'a Finding> {
    report
        .findings()
        .filter(|(r, f)| *r == repo && f.problem == problem)
        .map(|(_, f)| f)
        .collect()
}

/// Pushes a tag-delete dummy of `family` to `repo:tag`, behind regate's back.
async fn push_dummy(registry: &str, repo: &str, tag: &str, family: Family) -> String {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let dummy = Dummy::new(family, repo, tag);
    push_blob(&client, registry, repo, &dummy.config).await;
    let r = client
        .put(format!("{registry}/v2/{repo}/manifests/{tag}"))
        .header("content-type", dummy.media_type)
        .body(dummy.manifest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    dummy.digest
}

struct Pushed {
    oci: Image,
    docker: Image,
    docker_other: Image,
    index: Image,
    list: Image,
}

async fn push_all(regate: &Regate) -> Pushed {
    let client = regate.client();
    let url = &regate.url;
    let oci = Image::oci("fsck-oci", 4000);
    oci.push(&client, url, "fsck/oci", "v1").await;
    common::images::put_manifest(&client, url, "fsck/oci", "v2", &oci).await;
    let sbom = Image::artifact_for("fsck-sbom", &oci, SBOM);
    sbom.push(&client, url, "fsck/oci", "sbom").await;
    let docker = Image::docker("fsck-docker", 3000);
    docker.push(&client, url, "fsck/docker", "v1").await;
    let docker_other = Image::docker("fsck-docker-2", 3000);
    docker_other.push(&client, url, "fsck/docker", "v2").await;
    let index = Image::oci_index("fsck-index", &["amd64", "arm64"]);
    index.push(&client, url, "fsck/index", "multi").await;
    common::images::put_manifest(&client, url, "fsck/index", "also", &index).await;
    let list = Image::docker_list("fsck-list", &["amd64", "arm64", "s390x"]);
    list.push(&client, url, "fsck/list", "multi").await;
    Pushed {
        oci,
        docker,
        docker_other,
        index,
        list,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_registry_is_clean_and_each_breakage_is_named() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let images = push_all(&regate).await;
    let client = regate_client(&regate);

    // Clean: every repository, tag, manifest and blob counted, nothing found.
    let report = fsck(&client, &Options::default()).await;
    assert!(report.clean, "{report:#?}");
    assert_eq!((report.errors, report.warnings), (0, 0), "{report:#?}");
    let counts: Vec<_> = report
        .repositories
        .iter()
        .map(|r| (r.repository.as_str(), r.tags, r.manifests, r.blobs))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("fsck/docker", 2, 2, 4),
            ("fsck/index", 2, 3, 4),
            ("fsck/list", 1, 4, 6),
            // v1 and v2 share a manifest: checked once; the artifact adds its own.
            ("fsck/oci", 3, 2, 4),
        ]
    );
    // Pages of two: the same walk (catalog and tag lists followed by Link).
    let paged = fsck(
        &client,
        &Options {
            page_size: Some(2),
            ..Options::default()
        },
    )
    .await;
    let paged_counts: Vec<_> = paged
        .repositories
        .iter()
        .map(|r| (r.repository.as_str(), r.tags, r.manifests, r.blobs))
        .collect();
    assert_eq!(paged_counts, counts);

    // The binary, on the regate: exit 0 and a table.
    let (code, out, err) = fsck_cli(ca_args(&regate), None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fsck/list") && out.contains("clean"), "{out}");

    // Break it.
    let storage = &registry.storage;
    let oci_layer = &images.oci.blobs[1].digest;
    remove_blob_data(storage, oci_layer);
    let arm64 = &images.index.children[1];
    remove_revision_link(storage, "fsck/index", &arm64.digest);
    let s390x = &images.list.children[2];
    remove_blob_data(storage, &s390x.digest);
    remove_revision_link(storage, "fsck/docker", &images.docker.digest);
    remove_blob_data(storage, &images.docker_other.digest);
    let docker_dummy = push_dummy(&registry.url, "fsck/dummy", "d", Family::Docker).await;
    let oci_dummy = push_dummy(&registry.url, "fsck/dummy", "o", Family::Oci).await;

    // What 2.8 answers for a listed tag whose manifest is gone: 404 for a
    // missing revision link and for missing manifest bytes alike.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    for tag in ["v1", "v2"] {
        let r = plain
            .get(format!("{}/v2/fsck/docker/manifests/{tag}", registry.url))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{tag}");
    }

    let report = fsck(&client, &Options::default()).await;
    assert!(!report.clean);
    let f = found(&report, "fsck/oci", Problem::MissingBlob);
    assert_eq!(f.len(), 1, "{report:#?}");
    assert_eq!(f[0].tags, ["v1", "v2"]);
    assert_eq!(f[0].manifest.as_deref(), Some(images.oci.digest.as_str()));
    assert_eq!(f[0].missing.as_deref(), Some(oci_layer.as_str()));

    let f = found(&report, "fsck/index", Problem::MissingChild);
    assert_eq!(f.len(), 1, "{report:#?}");
    assert_eq!(f[0].tags, ["also", "multi"]);
    assert_eq!(f[0].manifest.as_deref(), Some(images.index.digest.as_str()));
    assert_eq!(f[0].missing.as_deref(), Some(arm64.digest.as_str()));
    let f = found(&report, "fsck/list", Problem::MissingChild);
    assert_eq!(f.len(), 1, "{report:#?}");
    assert_eq!(f[0].missing.as_deref(), Some(s390x.digest.as_str()));

    let mut dangling: Vec<_> = found(&report, "fsck/docker", Problem::DanglingTag)
        .iter()
        .map(|f| f.tags.clone())
        .collect();
    dangling.sort();
    assert_eq!(dangling, [["v1"], ["v2"]], "{report:#?}");

    let mut dummies: Vec<_> = found(&report, "fsck/dummy", Problem::DummyTag)
        .iter()
        .map(|f| (f.tags.clone(), f.manifest.clone().unwrap()))
        .collect();
    dummies.sort();
    assert_eq!(
        dummies,
        [
            (vec!["d".to_owned()], docker_dummy),
            (vec!["o".to_owned()], oci_dummy)
        ]
    );
    // Nothing else: the breakages above and nothing invented.
    assert_eq!(report.errors, 7, "{report:#?}");

    // The binary, on the registry directly over plain HTTP, JSON, one repository.
    let (code, out, err) = fsck_cli(
        vec![
            format!("http://127.0.0.1:{}", registry.port),
            "--repo".into(),
            "fsck/index".into(),
            "--json".into(),
        ],
        None,
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["repositories"].as_array().unwrap().len(), 1);
    let finding = &v["repositories"][0]["findings"][0];
    assert_eq!(finding["problem"], "missing_child");
    assert_eq!(finding["missing"], arm64.digest.as_str());
    // And the table names repository, tag, problem and digest.
    let (code, out, err) = fsck_cli(ca_args(&regate), None).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().any(|l| l.contains("fsck/oci")
            && l.contains("tags=v1,v2")
            && l.contains("missing_blob")
            && l.contains(oci_layer.as_str())),
        "{out}"
    );
    assert!(out.contains("BROKEN"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_that_does_not_resolve_is_a_warning() {
    let registry = Registry::start();
    let regate = Regate::start(&registry.url).await;
    let never_pushed = Image::oci("fsck-absent", 100);
    let sig = Image::artifact_for("fsck-sig", &never_pushed, SBOM);
    sig.push(&regate.client(), &regate.url, "fsck/referrer", "sig")
        .await;
    let report = fsck(&regate_client(&regate), &Options::default()).await;
    assert!(report.clean, "{report:#?}");
    let f = found(&report, "fsck/referrer", Problem::MissingSubject);
    assert_eq!(f.len(), 1, "{report:#?}");
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].missing.as_deref(), Some(never_pushed.digest.as_str()));
    let (code, out, err) = fsck_cli(ca_args(&regate), None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("missing_subject"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_unauthenticated_exit_2_saying_what_to_do() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, _, err) = fsck_cli(vec![format!("http://127.0.0.1:{port}")], None).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cannot reach") && err.contains("http://HOST:PORT"),
        "{err}"
    );

    let registry = Registry::start();
    let files = AuthFiles::new();
    let regate = Regate::start_with(&registry.url, &files.basic_toml("")).await;
    let (code, _, err) = fsck_cli(ca_args(&regate), None).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("401") && err.contains("--user"), "{err}");

    let mut args = ca_args(&regate);
    args.extend(["--user".into(), "admin".into(), "--password-stdin".into()]);
    let (code, _, err) = fsck_cli(args.clone(), Some("wrong\n".into())).await;
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = fsck_cli(args, Some(format!("{}\n", password("admin")))).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("clean"), "{out}");
}
