//! Grants and scope coverage.

use super::*;
use crate::route::RepoName;
use std::collections::BTreeMap;

fn rules() -> RuleSet {
    let r = |account: &str, repository: &str, actions: &[&str]| crate::rules::RuleText {
        account: account.into(),
        repository: repository.into(),
        actions: actions.iter().map(|s| s.to_string()).collect(),
    };
    RuleSet::compile(
        &[
            r("ci", "apps/*", &["pull", "push"]),
            r("anonymous", "public/*", &["pull"]),
        ],
        &BTreeMap::new(),
    )
    .unwrap()
}

#[test]
fn grant_is_the_intersection_of_asked_and_allowed() {
    let scopes = Scope::parse_all([
        "repository:apps/web:pull,push,delete repository:other/x:pull registry:catalog:*",
    ])
    .unwrap();
    let got = grant(&rules(), Some("ci"), &scopes);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].name, "apps/web");
    assert_eq!(got[0].actions, ["pull", "push"]);
    assert_eq!(
        (got[1].kind.as_str(), got[1].name.as_str()),
        ("registry", "catalog")
    );
    // Anonymous: no catalog, public pull only, and nothing at all is still a grant.
    let anon = grant(
        &rules(),
        None,
        &Scope::parse_all(["repository:public/a:* registry:catalog:*"]).unwrap(),
    );
    assert_eq!(anon.len(), 1);
    assert_eq!(anon[0].actions, ["pull"]);
    assert!(grant(&rules(), None, &[]).is_empty());
}

#[test]
fn coverage_is_per_repository() {
    let access = vec![AccessEntry {
        kind: "repository".into(),
        name: "a".into(),
        actions: vec!["pull".into()],
    }];
    let need = |n: &str, a: &[Action]| {
        Need::Repositories(vec![(RepoName::parse(n).unwrap(), ActionSet::of(a))])
    };
    assert!(covers(&access, &need("a", &[Action::Pull])));
    assert!(!covers(&access, &need("a", &[Action::Pull, Action::Push])));
    assert!(!covers(&access, &need("b", &[Action::Pull])));
    assert!(!covers(&access, &Need::Catalog));
    assert!(covers(&access, &Need::Authenticated));
}

mod mutations {
    //! Random mutations of a valid token are refused; the token itself passes.

    use std::sync::OnceLock;
    use std::time::Duration;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use proptest::prelude::*;

    use super::super::{AccessEntry, Tokens};
    use crate::config::TokenSettings;

    struct Fixture {
        tokens: Tokens,
        valid: String,
        private_pem: Vec<u8>,
        public_pem: Vec<u8>,
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let key = dir.path().join("token.key");
            super::super::keys::generate(super::super::keys::KeyKind::Es256, &key).unwrap();
            let tokens = Tokens::load(&TokenSettings {
                issuer: "iss".into(),
                service: "svc".into(),
                signing_key: key.clone(),
                ttl: Duration::from_secs(600),
                leeway: Duration::from_secs(60),
                refresh_ttl: Duration::from_secs(3600),
                external_issuer: None,
                external_keys: Vec::new(),
                external_jwks: None,
                trust_external_access: false,
                max_lifetime: Duration::from_secs(24 * 3600),
            })
            .unwrap();
            let access = [AccessEntry {
                kind: "repository".into(),
                name: "a/b".into(),
                actions: vec!["pull".into()],
            }];
            let valid = tokens.issue(Some("alice"), &access).unwrap().token;
            Fixture {
                tokens,
                valid,
                private_pem: std::fs::read(&key).unwrap(),
                public_pem: std::fs::read(key.with_extension("pub")).unwrap(),
            }
        })
    }

    fn json(seg: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).unwrap()).unwrap()
    }

    fn now() -> i64 {
        crate::auth::token::now_secs() as i64
    }

    #[test]
    fn the_unmutated_token_passes() {
        let f = fixture();
        assert_eq!(
            f.tokens.verify(&f.valid).unwrap().account.as_deref(),
            Some("alice")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn a_changed_byte_is_refused(seg in 0usize..3, pos in any::<prop::sample::Index>(), xor in 1u8..) {
            let f = fixture();
            let mut parts: Vec<Vec<u8>> = f.valid.split('.').map(|p| p.as_bytes().to_vec()).collect();
            let i = pos.index(parts[seg].len());
            parts[seg][i] ^= xor;
            let t = String::from_utf8_lossy(&parts.join(&b'.')).into_owned();
            prop_assert!(f.tokens.verify(&t).is_err(), "{}", t);
        }

        #[test]
        fn a_truncated_or_extended_token_is_refused(cut in any::<prop::sample::Index>(), tail in "[A-Za-z0-9_.=-]{1,8}") {
            let f = fixture();
            let n = cut.index(f.valid.len());
            prop_assert!(f.tokens.verify(&f.valid[..n]).is_err());
            let longer = format!("{}{tail}", f.valid);
            prop_assert!(f.tokens.verify(&longer).is_err());
        }

        #[test]
        fn changed_claims_are_refused_signed_or_not(
            field in prop::sample::select(vec!["sub", "aud", "iss", "exp", "nbf", "access"]),
            text in "[a-z]{0,6}",
            by in 70i64..100_000,
        ) {
            let f = fixture();
            let parts: Vec<&str> = f.valid.split('.').collect();
            let mut claims = json(parts[1]);
            let original = claims.clone();
            match field {
                "exp" => claims["exp"] = (now() - by).into(),
                "nbf" => claims["nbf"] = (now() + by).into(),
                "access" => claims["access"][0]["actions"] = serde_json::json!(["pull", "push", text]),
                k => claims[k] = format!("{}{text}x", original[k].as_str().unwrap()).into(),
            }
            // Not re-signed: the signature no longer fits.
            let unsigned = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()), parts[2]);
            prop_assert!(f.tokens.verify(&unsigned).is_err());
            // HMAC keyed with the public key: the classic confusion.
            let mut hs = Header::new(Algorithm::HS256);
            hs.kid = Some(f.tokens.kid().to_owned());
            let confused = jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&f.public_pem)).unwrap();
            prop_assert!(f.tokens.verify(&confused).is_err());
            // Re-signed with the real key: only the time and audience checks can refuse it.
            if matches!(field, "exp" | "nbf" | "aud" | "iss") {
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some(f.tokens.kid().to_owned());
                let key = EncodingKey::from_ec_pem(&f.private_pem).unwrap();
                let signed = jsonwebtoken::encode(&h, &claims, &key).unwrap();
                prop_assert!(f.tokens.verify(&signed).is_err(), "{} {}", field, signed);
            }
        }

        #[test]
        fn another_algorithm_in_the_header_is_refused(alg in prop::sample::select(vec!["none", "None", "HS256", "HS512", "ES384", "RS256", "EdDSA", "PS256", "x"])) {
            let f = fixture();
            let parts: Vec<&str> = f.valid.split('.').collect();
            let mut header = json(parts[0]);
            header["alg"] = alg.into();
            let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
            for sig in [parts[2], ""] {
                let t = format!("{h}.{}.{sig}", parts[1]);
                prop_assert!(f.tokens.verify(&t).is_err(), "{}", t);
            }
        }
    }
}

mod properties {
    //! A grant against the rules it comes from, on the rules' own strategies.

    use proptest::prelude::*;

    use super::super::{grant, Scope};
    use crate::rules::tests::properties::{action, groups, rule};
    use crate::rules::{Action, ActionSet, RuleSet};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn a_grant_never_exceeds_the_rules_or_the_request(
            rules in proptest::collection::vec(rule(), 0..5),
            account in proptest::option::of("[ab]{1,2}"),
            asked in proptest::collection::vec(("[ab]{1,2}(/[ab]{1,2})?", proptest::collection::vec(action(), 0..3)), 0..4),
        ) {
            let set = RuleSet::compile(&rules, &groups()).unwrap();
            let scopes: Vec<Scope> = asked
                .iter()
                .map(|(name, actions)| Scope::parse(&format!("repository:{name}:{}", actions.join(","))).unwrap())
                .collect();
            for e in grant(&set, account.as_deref(), &scopes) {
                let got: ActionSet = e.actions.iter().filter_map(|a| Action::parse(a)).collect();
                prop_assert_eq!(got.iter().count(), e.actions.len());
                prop_assert!(!got.is_empty());
                prop_assert!(set.allowed(account.as_deref(), &e.name).covers(got), "{:?}", e);
                let requested = asked.iter().filter(|(n, _)| *n == e.name).fold(ActionSet::NONE, |acc, (_, a)| {
                    if a.iter().any(|x| x == "*") { ActionSet::all() } else { acc.union(a.iter().filter_map(|x| Action::parse(x)).collect()) }
                });
                prop_assert!(requested.covers(got), "{:?} was not asked", e);
            }
        }
    }
}
