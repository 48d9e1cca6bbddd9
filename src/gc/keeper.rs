//! Keeps the blobs of a push the drain could not wait for (it hit
//! `drain_timeout`): before the GC command, regate stores one "keeper"
//! manifest per such repository, by digest, referring to every blob the push
//! has stored; GC marks them; afterwards the keeper is deleted and the push's
//! own manifest PUT (held until the gate opens) finds its blobs. A keeper left
//! by a crash is an ordinary untagged manifest that untagged cleanup removes.

use std::time::Duration;

use serde_json::json;

/// A keeper manifest stored in `repository`.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub repository: String,
    pub digest: String,
}

const KEEPER_CONFIG: &str = "application/vnd.dev.regate.gc-keeper.v1+json";

fn client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .ok()
}

/// Stores a keeper for each `(repository, blobs)`; failures are logged (the
/// push may then have to be retried, as without a keeper).
pub async fn protect(
    pending: Vec<(String, Vec<String>)>,
    origin: &str,
    run_id: i64,
) -> Vec<Keeper> {
    let Some(client) = client() else {
        return Vec::new();
    };
    let mut keepers = Vec::new();
    for (repo, blobs) in pending {
        let mut descriptors = Vec::new();
        for digest in &blobs {
            let url = format!("{origin}/v2/{repo}/blobs/{digest}");
            match client.head(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    let size = r
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    descriptors.push((digest.clone(), size));
                }
                Ok(r) => {
                    tracing::warn!(target: "regate::gc", repository = %repo, %digest, status = %r.status(), "a pending blob is not in the registry; not kept")
                }
                Err(e) => {
                    tracing::warn!(target: "regate::gc", repository = %repo, %digest, error = %e, "cannot check a pending blob; not kept")
                }
            }
        }
        let Some(((config, config_size), layers)) = descriptors.split_first() else {
            continue;
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": KEEPER_CONFIG, "digest": config, "size": config_size},
            "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/octet-stream", "digest": d, "size": s})).collect::<Vec<_>>(),
            "annotations": {"dev.regate.gc-keeper": format!("run {run_id}: blobs of a push under way")},
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        let url = format!("{origin}/v2/{repo}/manifests/{digest}");
        match client
            .put(&url)
            .header(
                http::header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )
            .body(bytes)
            .send()
            .await
        {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                tracing::info!(target: "regate::gc", repository = %repo, blobs = descriptors.len(), %digest, "kept the blobs of a push under way through GC");
                keepers.push(Keeper {
                    repository: repo,
                    digest,
                });
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::warn!(target: "regate::gc", repository = %repo, %status, body = %body.trim(), "cannot store a keeper manifest; that push may need a retry");
            }
            Err(e) => {
                tracing::warn!(target: "regate::gc", repository = %repo, error = %e, "cannot store a keeper manifest; that push may need a retry")
            }
        }
    }
    keepers
}

/// Deletes the keepers (their blobs stay until a later GC finds them unused).
pub async fn release(keepers: &[Keeper], origin: &str) {
    let Some(client) = client() else {
        return;
    };
    for k in keepers {
        let url = format!("{origin}/v2/{}/manifests/{}", k.repository, k.digest);
        match client.delete(&url).send().await {
            Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) => {
                tracing::warn!(target: "regate::gc", repository = %k.repository, digest = %k.digest, status = %r.status(), "cannot delete a keeper manifest; untagged cleanup will remove it")
            }
            Err(e) => {
                tracing::warn!(target: "regate::gc", repository = %k.repository, digest = %k.digest, error = %e, "cannot delete a keeper manifest; untagged cleanup will remove it")
            }
        }
    }
}
