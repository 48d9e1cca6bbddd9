//! Images built in memory: OCI and Docker schema2 manifests, OCI indexes and
//! Docker manifest lists, with their blobs. They can be written as an OCI
//! layout (for skopeo) or pushed over HTTP (monolithic uploads).

use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a client must send to get any manifest back unchanged.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic bytes that do not compress, from a seed.
pub fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state =
        u64::from_le_bytes(Sha256::digest(seed.as_bytes())[..8].try_into().unwrap()) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Real gzip, so clients that sniff compression leave layers as they are.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub media_type: String,
}

impl Blob {
    pub fn new(bytes: Vec<u8>, media_type: &str) -> Self {
        Blob {
            digest: sha256(&bytes),
            bytes,
            media_type: media_type.into(),
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    /// Config and layers (for an index: none of its own).
    pub blobs: Vec<Blob>,
    /// Platform manifests of an index or manifest list.
    pub children: Vec<Image>,
}

fn single(
    seed: &str,
    layer_size: usize,
    arch: &str,
    docker: bool,
    extra: Option<(&str, serde_json::Value)>,
) -> Image {
    let layer_type = if docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    let config_type = if docker {
        "application/vnd.docker.container.image.v1+json"
    } else {
        "application/vnd.oci.image.config.v1+json"
    };
    let content = pseudo_random(&format!("{seed}/layer/{arch}"), layer_size);
    let diff_id = sha256(&content);
    let layer = Blob::new(gzip(&content), layer_type);
    let config = Blob::new(
        serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "created": "2026-11-23T00:00:00Z",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap(),
        config_type,
    );
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": if docker { DOCKER_MANIFEST } else { OCI_MANIFEST },
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    if let Some((k, v)) = extra {
        m[k] = v;
    }
    let manifest = serde_json::to_vec_pretty(&m).unwrap();
    Image {
        digest: sha256(&manifest),
        manifest,
        media_type: if docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        }
        .into(),
        blobs: vec![config, layer],
        children: vec![],
    }
}

fn list(seed: &str, archs: &[&str], docker: bool) -> Image {
    let children: Vec<Image> = archs
        .iter()
        .map(|a| single(seed, 1024, a, docker, None))
        .collect();
    let manifests: Vec<_> = children
        .iter()
        .zip(archs)
        .map(|(c, a)| json!({"mediaType": c.media_type, "digest": c.digest, "size": c.manifest.len(), "platform": {"architecture": a, "os": "linux"}}))
        .collect();
    let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
    let manifest = serde_json::to_vec_pretty(
        &json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}),
    )
    .unwrap();
    Image {
        digest: sha256(&manifest),
        manifest,
        media_type: media_type.into(),
        blobs: vec![],
        children,
    }
}

impl Image {
    pub fn oci(seed: &str, layer_size: usize) -> Image {
        single(seed, layer_size, "amd64", false, None)
    }

    pub fn docker(seed: &str, layer_size: usize) -> Image {
        single(seed, layer_size, "amd64", true, None)
    }

    pub fn oci_index(seed: &str, archs: &[&str]) -> Image {
        list(seed, archs, false)
    }

    pub fn docker_list(seed: &str, archs: &[&str]) -> Image {
        list(seed, archs, true)
    }

    /// An OCI artifact manifest whose `subject` is `subject`.
    pub fn artifact_for(seed: &str, subject: &Image, artifact_type: &str) -> Image {
        let subject_desc = json!({"mediaType": subject.media_type, "digest": subject.digest, "size": subject.manifest.len()});
        let mut img = single(seed, 64, "amd64", false, Some(("subject", subject_desc)));
        let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        m["artifactType"] = json!(artifact_type);
        img.manifest = serde_json::to_vec_pretty(&m).unwrap();
        img.digest = sha256(&img.manifest);
        img
    }

    /// Every blob of this image and its children.
    pub fn all_blobs(&self) -> Vec<&Blob> {
        let mut v: Vec<&Blob> = self.blobs.iter().collect();
        for c in &self.children {
            v.extend(c.all_blobs());
        }
        v
    }

    /// Writes an OCI image layout with this image under `tag`.
    pub fn write_oci_layout(&self, dir: &std::path::Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let write = |digest: &str, bytes: &[u8]| {
            std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        };
        for b in self.all_blobs() {
            write(&b.digest, &b.bytes);
        }
        for c in &self.children {
            write(&c.digest, &c.manifest);
        }
        write(&self.digest, &self.manifest);
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": self.media_type,
                "digest": self.digest,
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Pushes blobs, children and the manifest to `base/v2/<repo>/...`,
    /// tagging it `reference`.
    pub async fn push(&self, client: &reqwest::Client, base: &str, repo: &str, reference: &str) {
        for b in self.all_blobs() {
            push_blob(client, base, repo, &b.bytes).await;
        }
        for c in &self.children {
            put_manifest(client, base, repo, &c.digest, c).await;
        }
        put_manifest(client, base, repo, reference, self).await;
    }
}

/// A monolithic upload: POST a session, PUT the bytes with the digest.
pub async fn push_blob(client: &reqwest::Client, base: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "start upload: {}", r.text().await.unwrap());
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let url = absolute(base, &location);
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = client
        .put(format!("{url}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "finish upload: {}",
        r.text().await.unwrap()
    );
    digest
}

pub async fn put_manifest(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    reference: &str,
    img: &Image,
) {
    let r = client
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", &img.media_type)
        .body(img.manifest.clone())
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(
        status,
        201,
        "manifest PUT {repo}:{reference}: {}",
        r.text().await.unwrap()
    );
}

/// Resolves a Location header against `base`.
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

impl Image {
    /// An OCI image whose one layer is a real gzipped tar holding
    /// `hello.txt` = `seed`, so clients that unpack layers (ctr) can.
    pub fn oci_unpackable(seed: &str) -> Image {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), seed).unwrap();
        let tar = dir.path().join("layer.tar");
        let ok = std::process::Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args(["--owner=0", "--group=0", "--mtime=@0", "-cf"])
            .arg(&tar)
            .arg("hello.txt")
            .status()
            .expect("run tar")
            .success();
        assert!(ok, "tar of the layer");
        let content = std::fs::read(&tar).unwrap();
        let layer = Blob::new(
            gzip(&content),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        );
        // The platform clients pull by default.
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = Blob::new(
            serde_json::to_vec(&json!({
                "architecture": arch,
                "os": "linux",
                "created": "2026-11-23T00:00:00Z",
                "config": {"Labels": {"seed": seed}},
                "rootfs": {"type": "layers", "diff_ids": [sha256(&content)]},
            }))
            .unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }))
        .unwrap();
        Image {
            digest: sha256(&manifest),
            manifest,
            media_type: OCI_MANIFEST.into(),
            blobs: vec![config, layer],
            children: vec![],
        }
    }
}

/// Reads `repo:tag` through `url` again and again until `stop`, counting the
/// 200s in `seen`; its result is every digest served that is not in
/// `allowed` (a dummy, or a manifest some other write left). A 404 is fine;
/// any other status fails the test.
pub fn watch_tag(
    client: reqwest::Client,
    url: String,
    repo: &'static str,
    tag: &'static str,
    allowed: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let mut foreign = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let r = client
                .get(format!("{url}/v2/{repo}/manifests/{tag}"))
                .header("accept", ACCEPT_ALL)
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => {
                    let d = r.headers()["docker-content-digest"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    if !allowed.contains(&d) {
                        foreign.push(d);
                    }
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                404 => {}
                s => panic!("reader got {s}: {}", r.text().await.unwrap()),
            }
        }
        foreign
    })
}
