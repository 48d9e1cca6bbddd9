//! Fuzzes the htpasswd parser: never panics, and every user it accepts has a
//! name the writer could have written and a bcrypt-shaped hash.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use regate::auth::htpasswd::{parse, valid_user};

fuzz_target!(|text: &str| {
    if let Ok(users) = parse(text, Path::new("fuzz/htpasswd")) {
        for (user, hash) in users.iter() {
            assert!(valid_user(user), "{user:?}");
            assert_eq!(hash.len(), 60);
            assert!(hash.starts_with("$2"));
        }
    }
});
