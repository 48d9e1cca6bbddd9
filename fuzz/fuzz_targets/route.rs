//! Fuzzes the path parser ([`Route::parse`]), the name, tag, digest and
//! reference grammars, and the actions a parsed request needs (including the
//! `?mount=&from=` query). Never panics; whatever parses is safe to hand to
//! the registry (no `..`, `%`, `\`, empty components, or over-long names).
#![no_main]

use libfuzzer_sys::fuzz_target;
use regate::route::{Digest, Reference, RepoName, Route, Tag, MAX_NAME_LEN};
use regate::rules::{mount_source, required, Mount, Need};

const METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::PUT,
    http::Method::POST,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::OPTIONS,
];

/// What any accepted repository name must look like, whatever the grammar.
fn safe_name(n: &str) -> bool {
    n.len() <= MAX_NAME_LEN
        && !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        && !n.contains("..")
        && !n.contains("//")
        && !n.starts_with(['/', '.', '_', '-'])
        && !n.ends_with(['/', '.', '_', '-'])
}

fuzz_target!(|input: (&str, &str, u8)| {
    let (path, query, m) = input;
    if let Ok(name) = RepoName::parse(path) {
        assert!(safe_name(name.as_str()), "{name:?}");
        assert_eq!(name.as_str(), path);
    }
    if let Ok(tag) = Tag::parse(path) {
        assert!(tag.as_str().len() <= 128 && !tag.as_str().contains([':', '/', '%', '\\']));
    }
    if let Ok(d) = Digest::parse(path) {
        assert!(d.as_str().contains(':') && !d.as_str().contains(['/', '%', '\\', '?', '#']));
    }
    if let Ok(r) = Reference::parse(path) {
        assert_eq!(r.as_str(), path);
    }
    let Ok(route) = Route::parse(path) else {
        return;
    };
    if let Some(name) = route.repository() {
        assert!(safe_name(name.as_str()), "{name:?} from {path:?}");
        assert!(path.starts_with(&format!("/v2/{name}/")), "{path:?}");
    }
    assert!(!path.contains(['%', '\\']), "{path:?} parsed as {route:?}");
    let method = &METHODS[usize::from(m) % METHODS.len()];
    let query = (!query.is_empty()).then_some(query);
    if let Need::Repositories(list) = required(method, &route) {
        assert_eq!(list.len(), 1);
        assert_eq!(Some(&list[0].0), route.repository());
        for (name, actions) in &list {
            assert!(safe_name(name.as_str()));
            assert!(!actions.is_empty());
        }
    }
    if let Mount::From(from) = mount_source(method, &route, query) {
        assert!(safe_name(from.as_str()));
    }
});
