//! GC in managed mode: regate runs the registry, so it knows the GC command
//! (`docker-registry garbage-collect <its config>`) and the storage root
//! without any `[gc]` key.

use crate::common;

use common::gc::{blob_on_disk, start_gc};
use common::images::ACCEPT_ALL;
use common::Regate;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_registry_gc_and_untagged_cleanup_need_no_configuration() {
    common::require_tool("docker-registry");
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let regate = Regate::start_with(
        &format!("http://127.0.0.1:{port}"),
        &format!(
            "[upstream.managed]\ndata_dir = {:?}\n[gc]\npush_window = \"1s\"\n",
            data.path().display().to_string()
        ),
    )
    .await;
    // The generated registry config has no blob descriptor cache: after GC it
    // would keep claiming deleted blobs exist.
    let registry_yml = std::fs::read_to_string(data.path().join("registry.yml")).unwrap();
    assert!(!registry_yml.contains("cache"), "{registry_yml}");
    let storage = data.path().join("storage");

    // GC on a storage that holds nothing yet succeeds without running the command.
    let run = start_gc(&regate.admin_url, false, false, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");

    let client = regate.client();
    let old = common::Image::oci("managed-old", 50_000);
    old.push(&client, &regate.url, "m/app", "v1").await;
    let new = common::Image::oci("managed-new", 5_000);
    new.push(&client, &regate.url, "m/app", "v1").await;

    let run = start_gc(&regate.admin_url, false, true, true).await["run"].clone();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["exit_code"], 0, "{run}");
    assert_eq!(run["manifests_deleted"], 1, "{run}");
    // The managed registry logs at info: each deleted blob is a line.
    assert_eq!(run["blobs_deleted"], 3, "{run}");
    let log = std::fs::read_to_string(run["log_path"].as_str().unwrap()).unwrap();
    assert_eq!(log.matches("Deleting blob: ").count(), 3, "{log}");
    for b in old.all_blobs() {
        assert!(!blob_on_disk(&storage, &b.digest));
    }
    assert!(!blob_on_disk(&storage, &old.digest));
    for b in new.all_blobs() {
        assert!(blob_on_disk(&storage, &b.digest));
    }
    let r = client
        .get(format!("{}/v2/m/app/manifests/v1", regate.url))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), new.manifest.as_slice());
    regate.stop().await;
}
