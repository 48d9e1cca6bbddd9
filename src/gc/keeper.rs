//! Keeps the blobs of a push the drain could not wait for (it hit
//! `drain_timeout`): before the GC command, regate stores one "keeper"
//! manifest per such repository, by digest, referring to every blob the push
//! has stored; GC marks them; afterwards the keeper is deleted and the push's
//! own manifest PUT (held until the gate opens) finds its blobs. A keeper left
//! by a crash is an ordinary untagged manifest that untagged cleanup removes.

use serde_json::json;

use crate::registry_api::RegistryApi;

/// A keeper manifest stored in `repository`.
#[derive(Debug, Clone)]
pub struct Keeper {
    pub repository: String,
    pub digest: String,
}

const KEEPER_CONFIG: &str = "application/vnd.dev.regate.gc-keeper.v1+json";

/// Stores a keeper for each `(repository, blobs)`; failures are logged (the
/// push may then have to be retried, as without a keeper).
pub async fn protect(
    pending: Vec<(String, Vec<String>)>,
    api: &RegistryApi,
    run_id: i64,
) -> Vec<Keeper> {
    let mut keepers = Vec::new();
    for (repo, blobs) in pending {
        let mut descriptors = Vec::new();
        for digest in &blobs {
            match api.blob_size(&repo, digest).await {
                Ok(Some(size)) => descriptors.push((digest.clone(), size)),
                Ok(None) => {
                    tracing::warn!(target: "regate::gc", repository = %repo, %digest, "a pending blob is not in the registry; not kept")
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
        let bytes = bytes::Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
        let digest = crate::route::Digest::sha256_of(&bytes).to_string();
        match api
            .put_manifest(
                &repo,
                &digest,
                "application/vnd.oci.image.manifest.v1+json",
                bytes,
            )
            .await
        {
            Ok(_) => {
                tracing::info!(target: "regate::gc", repository = %repo, blobs = descriptors.len(), %digest, "kept the blobs of a push under way through GC");
                keepers.push(Keeper {
                    repository: repo,
                    digest,
                });
            }
            Err(e) => {
                tracing::warn!(target: "regate::gc", repository = %repo, error = %e, "cannot store a keeper manifest; that push may need a retry")
            }
        }
    }
    keepers
}

/// Deletes the keepers (their blobs stay until a later GC finds them unused).
pub async fn release(keepers: &[Keeper], api: &RegistryApi) {
    for k in keepers {
        match api.delete_manifest(&k.repository, &k.digest).await {
            // Deleted, or already gone.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "regate::gc", repository = %k.repository, digest = %k.digest, error = %e, "cannot delete a keeper manifest; untagged cleanup will remove it")
            }
        }
    }
}
