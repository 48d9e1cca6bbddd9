//! Reading the counts out of `garbage-collect` output (distribution 2.8):
//! the summary `N blobs marked, M blobs and K manifests eligible for
//! deletion` and one `Deleting blob: <path>` line per blob removed.

/// What a GC run printed about its work.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcCounts {
    pub marked: Option<u64>,
    pub blobs_eligible: Option<u64>,
    pub manifests_eligible: Option<u64>,
    /// `Deleting blob:` lines seen.
    pub blobs_deleted: u64,
}

impl GcCounts {
    /// Takes one line of output into account.
    pub fn observe(&mut self, line: &str) {
        if line.contains("Deleting blob: ") {
            self.blobs_deleted += 1;
            return;
        }
        if let Some((marked, rest)) = line.trim().split_once(" blobs marked, ") {
            let Some((blobs, rest)) = rest.split_once(" blobs and ") else {
                return;
            };
            let Some((manifests, _)) = rest.split_once(" manifests eligible for deletion") else {
                return;
            };
            self.marked = marked.trim().parse().ok();
            self.blobs_eligible = blobs.trim().parse().ok();
            self.manifests_eligible = manifests.trim().parse().ok();
        }
    }

    /// Blobs deleted (or, in a dry run, that would be). garbage-collect
    /// deletes every eligible blob or stops with an error, and its
    /// `Deleting blob` lines only show at log level info; so the summary's
    /// count wins over the lines counted.
    pub fn deleted(&self, dry_run: bool) -> u64 {
        match (dry_run, self.blobs_eligible) {
            (_, Some(n)) => n.max(if dry_run { 0 } else { self.blobs_deleted }),
            (true, None) => 0,
            (false, None) => self.blobs_deleted,
        }
    }

    /// Whether the summary line was seen (the mark phase completed).
    pub fn has_summary(&self) -> bool {
        self.blobs_eligible.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_and_counts_deletions() {
        let out = "demo\ndemo: marking manifest sha256:01 \n\n5 blobs marked, 2 blobs and 0 manifests eligible for deletion\nblob eligible for deletion: sha256:88\ntime=\"x\" level=info msg=\"Deleting blob: /docker/registry/v2/blobs/sha256/88/88\" go.version=go1.19.8\ntime=\"x\" level=info msg=\"Deleting blob: /docker/registry/v2/blobs/sha256/99/99\"\n";
        let mut c = GcCounts::default();
        for l in out.lines() {
            c.observe(l);
        }
        assert_eq!(
            c,
            GcCounts {
                marked: Some(5),
                blobs_eligible: Some(2),
                manifests_eligible: Some(0),
                blobs_deleted: 2
            }
        );
        assert!(c.has_summary());
    }
}
