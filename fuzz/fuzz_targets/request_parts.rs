//! Fuzzes the small parsers of request parts regate reads itself: the
//! `Content-Range` of a chunk, the `n`/`last` page of a tag list (and the
//! page it cuts), and the manifest check before a PUT. Never panics; a page
//! is sorted, at most `n` long, and strictly after `last`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regate::tag_list::Page;

fuzz_target!(|input: (&str, &str, Vec<String>, &str, &[u8])| {
    let (range, query, tags, content_type, body) = input;
    if let Ok(v) = http::HeaderValue::from_str(range) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_RANGE, v);
        let _ = regate::upload_check::content_range_start(&h);
    }
    if let Ok(page) = Page::from_query(Some(query)) {
        let (got, _more) = page.apply(tags.clone());
        assert!(got.windows(2).all(|w| w[0] < w[1]), "not sorted and unique");
        if let Some(n) = page.n {
            assert!(got.len() <= n);
        }
        if let Some(last) = &page.last {
            assert!(got.iter().all(|t| t > last));
        }
        assert!(got.iter().all(|t| tags.contains(t)));
    }
    let _ = regate::manifest_check::check(Some(content_type), body);
});
