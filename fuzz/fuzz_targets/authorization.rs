//! Fuzzes the `Authorization` header reader: never panics, and Basic
//! credentials it reads encode back to a header that reads the same.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use regate::auth::credentials::{parse, presented, Presented, MAX_USER_LEN};

fuzz_target!(|bytes: &[u8]| {
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(bytes) {
        headers.insert(http::header::AUTHORIZATION, v);
        let _ = presented(&headers);
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match parse(text) {
        Ok(Presented::Basic { user, password }) => {
            assert!(!user.is_empty() && user.len() <= MAX_USER_LEN);
            assert!(!user.contains(':') && !user.chars().any(char::is_control));
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            assert_eq!(
                parse(&format!("Basic {b64}")).unwrap(),
                Presented::Basic { user, password }
            );
        }
        Ok(Presented::Bearer(t)) => assert!(!t.is_empty() && !t.contains(char::is_whitespace)),
        Ok(Presented::Nothing) | Err(_) => {}
    }
});
