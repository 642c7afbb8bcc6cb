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
