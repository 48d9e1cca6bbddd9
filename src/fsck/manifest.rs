//! What a manifest refers to, for the walk: the blobs to HEAD (config and
//! layers, leaving out foreign and non-distributable ones, which live
//! elsewhere), the child manifests of an index or manifest list, and the
//! `subject`. Works from the JSON alone, whatever the declared media type.

use serde_json::Value;

use crate::route::Digest;

/// The references of one manifest.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct References {
    /// Config and layer blobs the registry must hold.
    pub blobs: Vec<String>,
    /// Manifests of an index or manifest list.
    pub children: Vec<String>,
    pub subject: Option<String>,
    /// An index or manifest list (children, no blobs of its own).
    pub is_index: bool,
}

/// Reads the references of a manifest; an error says why it is not one.
pub(crate) fn references(bytes: &[u8]) -> Result<References, String> {
    let m: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    if !m.is_object() {
        return Err("not a JSON object".into());
    }
    let mut r = References::default();
    if let Some(list) = m.get("manifests") {
        let list = list.as_array().ok_or("`manifests` is not an array")?;
        r.is_index = true;
        for d in list {
            r.children.push(digest_of(d, "manifests[]")?);
        }
    } else if let Some(config) = m.get("config") {
        if distributable(config) {
            r.blobs.push(digest_of(config, "config")?);
        }
        let layers = match m.get("layers") {
            None | Some(Value::Null) => &[][..],
            Some(l) => l.as_array().ok_or("`layers` is not an array")?.as_slice(),
        };
        for l in layers {
            if distributable(l) {
                r.blobs.push(digest_of(l, "layers[]")?);
            }
        }
    } else if let Some(fs) = m.get("fsLayers") {
        // Docker schema 1.
        for l in fs.as_array().ok_or("`fsLayers` is not an array")? {
            let d = l["blobSum"].as_str().ok_or("fsLayers[] without blobSum")?;
            r.blobs.push(checked(d, "fsLayers[].blobSum")?);
        }
    } else {
        return Err("neither `manifests`, `config` nor `fsLayers`: not a manifest".into());
    }
    if let Some(s) = m.get("subject").filter(|s| !s.is_null()) {
        r.subject = Some(digest_of(s, "subject")?);
    }
    r.blobs.dedup();
    Ok(r)
}

fn digest_of(descriptor: &Value, field: &str) -> Result<String, String> {
    let d = descriptor["digest"]
        .as_str()
        .ok_or_else(|| format!("{field} has no digest"))?;
    checked(d, field)
}

fn checked(d: &str, field: &str) -> Result<String, String> {
    Digest::parse(d)
        .map(|d| d.as_str().to_owned())
        .map_err(|_| format!("{field} digest {d:?} is malformed"))
}

/// Whether the registry is expected to hold a descriptor's blob: not when it
/// names `urls` to fetch it from, nor for foreign / non-distributable layers.
fn distributable(d: &Value) -> bool {
    let has_urls = d["urls"].as_array().is_some_and(|u| !u.is_empty());
    let media_type = d["mediaType"].as_str().unwrap_or("");
    !has_urls && !media_type.contains("nondistributable") && !media_type.contains(".foreign.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_index_and_subject() {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d('a'), "size": 1},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d('b'), "size": 1},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": d('c'), "size": 1},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest": d('e'), "size": 1},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d('f'), "size": 1, "urls": ["https://x/y"]},
            ],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d('9'), "size": 1},
        });
        let r = references(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(r.blobs, vec![d('a'), d('b')]);
        assert_eq!(r.subject, Some(d('9')));
        assert!(!r.is_index);

        let i = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": d('1')}, {"digest": d('2')}]});
        let r = references(&serde_json::to_vec(&i).unwrap()).unwrap();
        assert_eq!(r.children, vec![d('1'), d('2')]);
        assert!(r.is_index && r.blobs.is_empty());
    }

    #[test]
    fn broken_manifests_say_why() {
        assert!(references(b"{").unwrap_err().contains("not JSON"));
        assert!(references(b"[]").is_err());
        assert!(references(br#"{"schemaVersion":2}"#)
            .unwrap_err()
            .contains("not a manifest"));
        let bad = br#"{"config":{"digest":"sha256:xyz"},"layers":[]}"#;
        assert!(references(bad).unwrap_err().contains("malformed"));
        assert!(references(br#"{"manifests":[{"size":1}]}"#)
            .unwrap_err()
            .contains("no digest"));
    }
}
