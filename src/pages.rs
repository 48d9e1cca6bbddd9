//! Paged registry listings (`/v2/_catalog`, `/v2/<name>/tags/list`), walked
//! page by page: [`Pages`] hands out the path and query of the next page to
//! GET and reads each answer's `Link: <...>; rel="next"` header (relative, as
//! 2.8 sends it, or absolute), until a page has no next one, links back to a
//! page already read, or [`MAX_PAGES`] were read.
//!
//! Owns only the walk, not the fetching: the filtered catalog (through the
//! proxy's upstream) and fsck (as a client) each GET with their own client.
//! Calls nothing in the crate.

use std::collections::HashSet;

use http::{header, HeaderMap};

/// A guard against a registry that links its pages in a circle forever.
pub const MAX_PAGES: usize = 100_000;

/// The pages of one listing still to read.
#[derive(Debug)]
pub struct Pages {
    next: Option<String>,
    seen: HashSet<String>,
}

impl Pages {
    /// A walk that starts at `first` (a path and query such as
    /// `/v2/_catalog?n=100`).
    pub fn starting_at(first: impl Into<String>) -> Self {
        Pages {
            next: Some(first.into()),
            seen: HashSet::new(),
        }
    }

    /// The path and query to GET next; `None` once the walk is over.
    pub fn next_path(&mut self) -> Option<String> {
        let path = self.next.take()?;
        (self.seen.len() < MAX_PAGES && self.seen.insert(path.clone())).then_some(path)
    }

    /// Reads the answer to the last page's GET: its `Link` header names the
    /// page after it, or there is none.
    pub fn follow(&mut self, headers: &HeaderMap) {
        self.next = headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
    }
}

/// The path and query of a `Link` header's `rel="next"` target, when it is a
/// registry API path.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        if !is_next {
            return None;
        }
        let path = match url.split_once("://") {
            Some((_, rest)) => &rest[rest.find('/')?..],
            None => url,
        };
        path.starts_with("/v2/").then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r.example:5443/v2/a/tags/list?n=1&last=v1>; rel="next""#)
                .as_deref(),
            Some("/v2/a/tags/list?n=1&last=v1")
        );
        assert_eq!(
            next_link(r#"</v2/x?n=1>; rel="prev", </v2/y?n=1>; rel=next"#).as_deref(),
            Some("/v2/y?n=1")
        );
        assert_eq!(next_link(r#"</v2/x>; rel="prev""#), None);
        assert_eq!(next_link(r#"<https://elsewhere/other>; rel="next""#), None);
    }

    fn link(to: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_str(&format!("<{to}>; rel=\"next\"")).unwrap(),
        );
        h
    }

    #[test]
    fn a_walk_follows_links_to_the_last_page() {
        let mut p = Pages::starting_at("/v2/_catalog?n=2");
        assert_eq!(p.next_path().as_deref(), Some("/v2/_catalog?n=2"));
        p.follow(&link("/v2/_catalog?last=b&n=2"));
        assert_eq!(p.next_path().as_deref(), Some("/v2/_catalog?last=b&n=2"));
        p.follow(&HeaderMap::new());
        assert_eq!(p.next_path(), None);
    }

    #[test]
    fn a_walk_stops_where_a_page_links_back() {
        let mut p = Pages::starting_at("/v2/a/tags/list?n=1");
        assert!(p.next_path().is_some());
        p.follow(&link("/v2/a/tags/list?n=1&last=x"));
        assert!(p.next_path().is_some());
        p.follow(&link("/v2/a/tags/list?n=1"));
        assert_eq!(p.next_path(), None);
    }
}
