use proptest::prelude::*;
use rstest::rstest;

use super::*;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[rstest]
#[case::base("/v2/", Route::Base)]
#[case::base_no_slash("/v2", Route::Base)]
#[case::catalog("/v2/_catalog", Route::Catalog)]
#[case::manifest_tag("/v2/a/b/manifests/latest", Route::Manifest { name: RepoName("a/b".into()), reference: Reference::Tag(Tag("latest".into())) })]
#[case::repo_named_manifests("/v2/x/manifests/manifests/v1", Route::Manifest { name: RepoName("x/manifests".into()), reference: Reference::Tag(Tag("v1".into())) })]
#[case::blob(&format!("/v2/lib/alpine/blobs/{D}"), Route::Blob { name: RepoName("lib/alpine".into()), digest: Digest(D.into()) })]
#[case::upload_start("/v2/a/blobs/uploads/", Route::UploadStart { name: RepoName("a".into()) })]
#[case::upload_start_no_slash("/v2/a/blobs/uploads", Route::UploadStart { name: RepoName("a".into()) })]
#[case::upload_session("/v2/a/blobs/uploads/7c4e0f3a-1b2c-4d5e-8f90-123456789abc", Route::Upload { name: RepoName("a".into()), session: "7c4e0f3a-1b2c-4d5e-8f90-123456789abc".into() })]
#[case::tags_list("/v2/a-b/c__d/tags/list", Route::TagsList { name: RepoName("a-b/c__d".into()) })]
#[case::referrers(&format!("/v2/a/referrers/{D}"), Route::Referrers { name: RepoName("a".into()), digest: Digest(D.into()) })]
#[case::gitlab_tag_reference("/v2/a/tags/reference/v1.0", Route::TagReference { name: RepoName("a".into()), tag: Tag("v1.0".into()) })]
#[case::regate_deleted("/v2/a/b/_regate/deleted", Route::DeletedTags { name: RepoName("a/b".into()) })]
#[case::regate_restore("/v2/a/_regate/restore/v1", Route::RestoreTag { name: RepoName("a".into()), tag: Tag("v1".into()) })]
fn parses_endpoints(#[case] path: &str, #[case] want: Route) {
    assert_eq!(Route::parse(path).unwrap(), want);
}

#[rstest]
#[case::outside_v2("/v1/foo", RouteError::NotFound)]
#[case::unknown_endpoint("/v2/foo/bar", RouteError::NotFound)]
#[case::uppercase_name("/v2/Foo/manifests/x", RouteError::NameInvalid("Foo".into()))]
#[case::dot_dot("/v2/../manifests/x", RouteError::NameInvalid("..".into()))]
#[case::percent_encoded("/v2/%2e%2e/manifests/x", RouteError::NameInvalid("%2e%2e".into()))]
#[case::empty_segment("/v2/a//b/manifests/x", RouteError::NameInvalid("a//b".into()))]
#[case::trailing_separator("/v2/a-/manifests/x", RouteError::NameInvalid("a-".into()))]
#[case::triple_underscore("/v2/a___b/manifests/x", RouteError::NameInvalid("a___b".into()))]
#[case::bad_tag("/v2/a/manifests/-x", RouteError::TagInvalid("-x".into()))]
#[case::short_digest("/v2/a/manifests/sha256:abc", RouteError::DigestInvalid("sha256:abc".into()))]
#[case::uppercase_hex("/v2/a/blobs/sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", RouteError::DigestInvalid("sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef".into()))]
#[case::no_name("/v2/manifests/x", RouteError::NotFound)]
#[case::manifest_digest_of_an_algorithm_the_registry_lacks("/v2/a/manifests/sha999:abc", RouteError::DigestInvalid("sha999:abc".into()))]
fn refuses_bad_paths(#[case] path: &str, #[case] want: RouteError) {
    assert_eq!(Route::parse(path).unwrap_err(), want);
}

#[test]
fn long_names_are_refused() {
    let name = "a".repeat(MAX_NAME_LEN + 1);
    assert!(matches!(
        Route::parse(&format!("/v2/{name}/tags/list")),
        Err(RouteError::NameInvalid(_))
    ));
    let tag = "t".repeat(129);
    assert!(Tag::parse(&tag).is_err());
    assert!(Tag::parse(&tag[..128]).is_ok());
}

#[rstest]
#[case("a", true)]
#[case("a.b", true)]
#[case("a_b", true)]
#[case("a__b", true)]
#[case("a---b", true)]
#[case("a.-b", false)]
#[case("a..b", false)]
#[case(".a", false)]
#[case("a_", false)]
#[case("", false)]
fn name_components(#[case] c: &str, #[case] ok: bool) {
    assert_eq!(valid_path_component(c), ok, "{c}");
}

/// A simple restatement of the distribution grammar, to check the hand-written matcher against.
fn grammar_component(c: &str) -> bool {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut seps = Vec::new();
    let mut sep = String::new();
    for ch in c.chars() {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            if !sep.is_empty() {
                seps.push(std::mem::take(&mut sep));
            }
            cur.push(ch);
        } else {
            if !cur.is_empty() {
                parts.push(std::mem::take(&mut cur));
            }
            sep.push(ch);
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    let trailing_sep = !sep.is_empty();
    let first_alnum = c
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit());
    first_alnum
        && !trailing_sep
        && seps.len() + 1 == parts.len()
        && seps
            .iter()
            .all(|s| s == "." || s == "_" || s == "__" || s.chars().all(|ch| ch == '-'))
}

#[test]
fn upload_sessions_from_locations() {
    assert_eq!(
        upload_session_of("https://r/v2/a/b/blobs/uploads/abc-123?_state=x").as_deref(),
        Some("abc-123")
    );
    assert_eq!(
        upload_session_of("/v2/a/blobs/uploads/7c4e0f3a-1b2c?_state=x").as_deref(),
        Some("7c4e0f3a-1b2c")
    );
    assert_eq!(upload_session_of("/v2/a/blobs/uploads/"), None);
    assert_eq!(upload_session_of("/v2/a/blobs/sha256:ab"), None);
    assert_eq!(upload_session_of("not a url"), None);
}

proptest! {
    #[test]
    fn parser_never_panics(path in "/v2/[a-zA-Z0-9._/:%-]{0,80}") {
        let _ = Route::parse(&path);
    }

    #[test]
    fn component_matcher_agrees_with_grammar(c in "[a-z0-9._-]{0,12}") {
        prop_assert_eq!(valid_path_component(&c), grammar_component(&c));
    }

    #[test]
    fn valid_names_round_trip(parts in prop::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", 1..4), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
        let name = parts.join("/");
        let route = Route::parse(&format!("/v2/{name}/manifests/{tag}")).unwrap();
        prop_assert_eq!(route.repository().unwrap().as_str(), name.as_str());
    }
}
