//! Fuzzes the token verifier with arbitrary bytes: never panics, never
//! verifies (as an access token or as a refresh token).
#![no_main]

use libfuzzer_sys::fuzz_target;
use regate_fuzz::fixture;

fuzz_target!(|bytes: &[u8]| {
    let f = fixture();
    let text = String::from_utf8_lossy(bytes);
    assert!(f.tokens.verify(&text).is_err(), "{text:?} verified");
    assert!(
        f.tokens.verify_refresh(&text).is_err(),
        "{text:?} verified as refresh"
    );
});
