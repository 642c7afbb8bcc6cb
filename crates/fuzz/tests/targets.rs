//! One test per fuzz target: a short, deterministic run by default; a long one with
//! `TIDEWIRE_FUZZ_CASES` (see docs/fuzzing.md). A finding fails the test with the
//! input; a hang or runaway allocation ends the process from the watchdog.

#![forbid(unsafe_code)]

use tidewire_fuzz::{driver, targets, Settings, Target};

fn fuzz(target: &Target) {
    let settings = Settings::from_env();
    match driver::run(target, &settings) {
        Ok(report) => {
            assert_eq!(report.inputs, settings.cases, "every input ran");
            println!("{report}");
        }
        Err(finding) => panic!("{finding}"),
    }
}

#[test]
fn resp_request() {
    fuzz(&targets::resp_request::STREAM);
}

#[test]
fn resp_request_roundtrip() {
    fuzz(&targets::resp_request::ROUNDTRIP);
}

#[test]
fn resp_reply_decode() {
    fuzz(&targets::resp_reply::DECODE);
}

#[test]
fn resp_reply_roundtrip() {
    fuzz(&targets::resp_reply::ROUNDTRIP);
}

#[test]
fn ably_json() {
    fuzz(&targets::ably_codec::JSON);
}

#[test]
fn ably_msgpack() {
    fuzz(&targets::ably_codec::MSGPACK);
}

#[test]
fn upstash_json() {
    fuzz(&targets::upstash_body::TARGET);
}

#[test]
fn realtime_jwt() {
    fuzz(&targets::token::JWT);
}

#[test]
fn realtime_token_request() {
    fuzz(&targets::token::TOKEN_REQUEST);
}

#[test]
fn realtime_capability() {
    fuzz(&targets::capability::TARGET);
}

/// Every target has a test above and a corpus folder: none can be skipped silently.
#[test]
fn every_target_has_a_test_and_a_corpus() {
    let source = include_str!("targets.rs");
    for t in targets::ALL {
        assert!(
            source.contains(&format!("fn {}()", t.name)),
            "no test for {}",
            t.name
        );
        let seeds = tidewire_fuzz::corpus::load(t.name).unwrap_or_else(|e| panic!("{e}"));
        assert!(!seeds.is_empty());
    }
}

/// The token targets' strongest checks run only on accepted tokens and requests; a
/// clock or policy change that refused every seed would leave them vacuous.
#[test]
fn token_seeds_reach_the_accepting_paths() {
    use tidewire_fuzz::targets::token::{keyring, NOW_MS};
    use tidewire_realtime::token::TokenRequest;

    let dir = tidewire_fuzz::corpus::dir("realtime_token_request");
    let req: TokenRequest =
        serde_json::from_slice(&std::fs::read(dir.join("signed-replayed")).unwrap()).unwrap();
    let ring = keyring();
    assert!(ring.issue_token("app.full", &req, None, NOW_MS).is_ok());

    let dir = tidewire_fuzz::corpus::dir("realtime_jwt");
    let jwt = std::fs::read_to_string(dir.join("one-hour-sub-key")).unwrap();
    assert!(ring.principal_for_token(&jwt, NOW_MS).is_ok());
    // The 10-year and future-iat seeds are refused since the realtime hardening.
    for name in ["ten-year-lifetime", "future-iat"] {
        let jwt = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(ring.principal_for_token(&jwt, NOW_MS).is_err(), "{name}");
    }
}

#[test]
fn dump_payload() {
    fuzz(&targets::dump_payload::TARGET);
}

#[test]
fn rdb_value() {
    fuzz(&targets::rdb_value::TARGET);
}
