//! Running the real skopeo against regate, trusting only the test CA.

use std::path::Path;
use std::process::Command;

/// Runs skopeo with `args`; panics with its output when it fails.
pub fn skopeo(args: &[&str]) -> String {
    try_skopeo(args).unwrap_or_else(|e| panic!("skopeo {} failed:\n{e}", args.join(" ")))
}

pub fn try_skopeo(args: &[&str]) -> Result<String, String> {
    super::require_tool("skopeo");
    let out = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .expect("run skopeo");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `skopeo copy [--all] SRC DEST` with the CA for any docker:// side.
pub fn copy(src: &str, dest: &str, trust: &Path, all: bool) -> String {
    let trust = trust.display().to_string();
    let mut args = vec!["copy", "--retry-times", "0"];
    // Pushes must not be rewritten by skopeo itself; a pull into a local OCI
    // layout may convert (a Docker list cannot be stored there unchanged).
    if dest.starts_with("docker://") {
        args.push("--preserve-digests");
    }
    if all {
        args.push("--all");
    }
    args.extend([
        "--src-cert-dir",
        &trust,
        "--dest-cert-dir",
        &trust,
        src,
        dest,
    ]);
    skopeo(&args)
}

/// `skopeo inspect --raw` of a docker:// reference.
pub fn inspect_raw(reference: &str, trust: &Path) -> Vec<u8> {
    let trust = trust.display().to_string();
    skopeo(&["inspect", "--raw", "--cert-dir", &trust, reference]).into_bytes()
}
