//! Images for the soak: OCI and Docker manifests with one layer of their own
//! and layers from a small shared pool (so GC sees blobs referenced by many
//! manifests, some of them deleted), and now and then an index or list.

use rand::Rng;
use serde_json::json;

use crate::common::images::{
    gzip, pseudo_random, sha256, Blob, Image, DOCKER_MANIFEST, OCI_MANIFEST,
};

/// Raw bytes of the shared layers, by seed.
pub fn shared_pool(seed: u64, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            gzip(&pseudo_random(
                &format!("soak-{seed}-shared-{i}"),
                2048 + i * 512,
            ))
        })
        .collect()
}

fn single(unique: &str, shared: &[&Vec<u8>], docker: bool) -> Image {
    let (layer_type, config_type, media_type) = if docker {
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.container.image.v1+json",
            DOCKER_MANIFEST,
        )
    } else {
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.config.v1+json",
            OCI_MANIFEST,
        )
    };
    let mut layers: Vec<Blob> = shared
        .iter()
        .map(|b| Blob::new((*b).clone(), layer_type))
        .collect();
    layers.push(Blob::new(
        gzip(&pseudo_random(&format!("{unique}/own"), 1500)),
        layer_type,
    ));
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"soak": unique}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        }))
        .unwrap(),
        config_type,
    );
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut blobs = vec![config];
    blobs.extend(layers);
    Image {
        digest: sha256(&manifest),
        manifest,
        media_type: media_type.into(),
        blobs,
        children: vec![],
    }
}

/// A new image named `unique`: single (OCI or Docker) mostly, an index or
/// list one time in five; shared layers from `pool` one time in two.
pub fn random_image(rng: &mut impl Rng, unique: &str, pool: &[Vec<u8>]) -> Image {
    let docker = rng.gen_bool(0.5);
    let mut shared = Vec::new();
    if rng.gen_bool(0.5) {
        for _ in 0..rng.gen_range(1..=2) {
            shared.push(&pool[rng.gen_range(0..pool.len())]);
        }
        shared.dedup();
    }
    if rng.gen_ratio(1, 5) {
        if docker {
            Image::docker_list(unique, &["amd64", "arm64"])
        } else {
            Image::oci_index(unique, &["amd64", "arm64"])
        }
    } else {
        single(unique, &shared, docker)
    }
}
