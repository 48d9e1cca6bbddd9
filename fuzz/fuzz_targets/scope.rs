//! Fuzzes the token scope grammar: never panics, and what parses prints back
//! to a string that parses to the same scope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regate::auth::token::Scope;

fuzz_target!(|s: &str| {
    if let Ok(scope) = Scope::parse(s) {
        let again = Scope::parse(&scope.to_string()).expect("a printed scope parses");
        assert_eq!(again, scope);
        assert!(!scope.name.is_empty() && !scope.kind.is_empty());
    }
    if let Ok(all) = Scope::parse_all([s]) {
        assert!(all.len() <= s.split_whitespace().count());
    }
});
