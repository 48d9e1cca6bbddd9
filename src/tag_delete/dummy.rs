//! The unique dummy manifest a tag is overwritten with before it is deleted
//! by digest. Its config blob carries a random nonce, the time and what it
//! was made for, so the dummy's digest is unique to one delete and can never
//! be shared with a real image (deleting it by digest removes only the tags
//! of that delete).
//!
//! Also owns recognising a dummy again ([`evidence`], [`is_dummy_config`]),
//! for `regate fsck` and the tests: one definition of what a dummy looks like.

use bytes::Bytes;
use serde_json::json;

use crate::route::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The config label naming the tag a dummy was made for (both families).
const LABEL_TAG_DELETE: &str = "io.regate.tag-delete";
/// The annotation of an OCI dummy manifest, and its value.
const ANNOTATION_DUMMY: &str = "io.regate.dummy";
const ANNOTATION_DUMMY_VALUE: &str = "tag-delete";

/// The manifest family of the original: the dummy uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Oci,
    Docker,
}

impl Family {
    pub fn of(media_type: &str) -> Family {
        if media_type.starts_with("application/vnd.oci.") {
            Family::Oci
        } else {
            Family::Docker
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dummy {
    pub config: Bytes,
    pub config_digest: String,
    pub manifest: Bytes,
    pub media_type: &'static str,
    pub digest: String,
}

/// A dummy's config blob: unique (a random nonce and the time) and labelled
/// with what it was made for, `repo:tag`, or just `repo` when it is staged
/// ahead of the delete that will use it (see `staged`).
pub fn new_config(made_for: &str) -> Bytes {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Bytes::from(
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {
                LABEL_TAG_DELETE: made_for,
                "io.regate.nonce": nonce,
                "io.regate.time": time,
            }},
        }))
        .expect("JSON of strings"),
    )
}

impl Dummy {
    /// A dummy with a fresh config made for `repo:tag`.
    pub fn new(family: Family, repo: &str, tag: &str) -> Dummy {
        Dummy::with_config(family, new_config(&format!("{repo}:{tag}")))
    }

    /// A dummy of `family` around a config from [`new_config`].
    pub fn with_config(family: Family, config: Bytes) -> Dummy {
        let config_digest = Digest::sha256_of(&config).to_string();
        let (media_type, config_type) = match family {
            Family::Oci => (OCI_MANIFEST, OCI_CONFIG),
            Family::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        };
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": [],
        });
        if family == Family::Oci {
            manifest["annotations"] = json!({ ANNOTATION_DUMMY: ANNOTATION_DUMMY_VALUE });
        }
        let manifest = Bytes::from(serde_json::to_vec(&manifest).expect("JSON"));
        let digest = Digest::sha256_of(&manifest).to_string();
        Dummy {
            config,
            config_digest,
            manifest,
            media_type,
            digest,
        }
    }
}

/// What a manifest's own bytes say about being a tag-delete dummy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DummyEvidence {
    /// An OCI dummy: its annotation says so.
    Dummy,
    /// Shaped like a dummy (no layers, an image config): it is one if this
    /// config blob is a dummy config ([`is_dummy_config`]).
    IfConfigIs(String),
    NotDummy,
}

/// Looks at a manifest (any type) for the marks [`Dummy::new`] leaves.
pub fn evidence(manifest: &[u8]) -> DummyEvidence {
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return DummyEvidence::NotDummy;
    };
    if m["annotations"][ANNOTATION_DUMMY] == ANNOTATION_DUMMY_VALUE {
        return DummyEvidence::Dummy;
    }
    let no_layers = m["layers"].as_array().is_some_and(Vec::is_empty);
    let config_type = m["config"]["mediaType"].as_str();
    match m["config"]["digest"].as_str() {
        Some(d) if no_layers && matches!(config_type, Some(OCI_CONFIG | DOCKER_CONFIG)) => {
            DummyEvidence::IfConfigIs(d.to_owned())
        }
        _ => DummyEvidence::NotDummy,
    }
}

/// Whether a config blob is the config of a dummy (it carries the label).
pub fn is_dummy_config(config: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(config)
        .is_ok_and(|c| c["config"]["Labels"][LABEL_TAG_DELETE].is_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dummy_is_unique_and_of_the_family() {
        let a = Dummy::new(
            Family::of("application/vnd.oci.image.index.v1+json"),
            "r",
            "t",
        );
        let b = Dummy::new(Family::of(OCI_MANIFEST), "r", "t");
        assert_ne!(a.digest, b.digest);
        assert_eq!(a.media_type, OCI_MANIFEST);
        let d = Dummy::new(
            Family::of("application/vnd.docker.distribution.manifest.list.v2+json"),
            "r",
            "t",
        );
        assert_eq!(d.media_type, DOCKER_MANIFEST);
        let v: serde_json::Value = serde_json::from_slice(&d.manifest).unwrap();
        assert_eq!(v["config"]["digest"], d.config_digest.as_str());
        assert_eq!(v["layers"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn dummies_are_recognised_and_images_are_not() {
        let oci = Dummy::new(Family::Oci, "r", "t");
        assert_eq!(evidence(&oci.manifest), DummyEvidence::Dummy);
        assert!(is_dummy_config(&oci.config));
        let docker = Dummy::new(Family::Docker, "r", "t");
        assert_eq!(
            evidence(&docker.manifest),
            DummyEvidence::IfConfigIs(docker.config_digest.clone())
        );
        assert!(is_dummy_config(&docker.config));

        let image = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:00", "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:01", "size": 3}],
        });
        let image = serde_json::to_vec(&image).unwrap();
        assert_eq!(evidence(&image), DummyEvidence::NotDummy);
        assert_eq!(evidence(b"not json"), DummyEvidence::NotDummy);
        assert!(!is_dummy_config(br#"{"config":{"Labels":{"app":"x"}}}"#));
    }
}
