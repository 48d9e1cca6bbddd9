//! A 256 MiB blob streams up and down through the regate binary while its
//! resident memory stays bounded.

use crate::common;

use common::regate::{config_toml, RegateProcess, TestCerts};
use common::Registry;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

const SIZE: usize = 256 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
/// Generous: regate holds no body in memory, so this is runtime plus buffers.
const RSS_BOUND_KIB: u64 = 96 * 1024;

fn chunk(i: usize) -> Vec<u8> {
    common::images::pseudo_random(&format!("big/{i}"), CHUNK)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_blob_streams_both_ways_with_bounded_memory() {
    let registry = Registry::start();
    let certs = TestCerts::new();
    let dir = tempfile::tempdir().unwrap();
    let regate = RegateProcess::spawn(
        dir.path(),
        &config_toml(&registry.url, &certs, &dir.path().join("state"), ""),
        &[],
    );
    let client = common::regate::client_trusting(&certs.files.ca_cert);
    let idle_kib = regate.rss_kib();

    let mut hasher = Sha256::new();
    for i in 0..SIZE / CHUNK {
        hasher.update(chunk(i));
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));

    let r = client
        .post(format!("{}/v2/big/blob/blobs/uploads/", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = common::images::absolute(&regate.url, r.headers()["location"].to_str().unwrap());
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..SIZE / CHUNK).map(|i| Ok::<_, std::io::Error>(chunk(i))),
    ));
    let r = client
        .put(format!("{location}&digest={digest}"))
        .header("content-type", "application/octet-stream")
        .header("content-length", SIZE.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let after_upload = regate.peak_rss_kib();

    let r = client
        .get(format!("{}/v2/big/blob/blobs/{digest}", regate.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut hasher = Sha256::new();
    let mut n = 0usize;
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        n += piece.len();
        hasher.update(&piece);
    }
    assert_eq!(n, SIZE);
    assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), digest);
    let peak = regate.peak_rss_kib();
    eprintln!("regate RSS: idle {idle_kib} KiB, peak after upload {after_upload} KiB, peak after download {peak} KiB");
    assert!(
        peak < RSS_BOUND_KIB,
        "regate peak RSS {peak} KiB for a {} MiB blob",
        SIZE >> 20
    );
}
