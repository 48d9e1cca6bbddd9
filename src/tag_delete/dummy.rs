//! The unique dummy manifest a tag is overwritten with before it is deleted
//! by digest. Its config blob carries a random nonce, the tag and the time,
//! so the dummy's digest is unique to this delete and can never be shared
//! with a real image (deleting it by digest removes only this tag).

use bytes::Bytes;
use serde_json::json;

use crate::route::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

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

impl Dummy {
    pub fn new(family: Family, repo: &str, tag: &str) -> Dummy {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let config = Bytes::from(
            serde_json::to_vec(&json!({
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Labels": {
                    "io.regate.tag-delete": format!("{repo}:{tag}"),
                    "io.regate.nonce": nonce,
                    "io.regate.time": time,
                }},
            }))
            .expect("JSON of strings"),
        );
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
            manifest["annotations"] = json!({"io.regate.dummy": "tag-delete"});
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
}
