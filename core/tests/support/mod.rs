//! What both property-test files need: the runner's settings, and tokens in and out.
#![allow(dead_code)]

use lock_core::compact::INLINE_TEXT_MAX;
use lock_core::lock::Lock;
use lock_core::token::Token;
use proptest::test_runner::Config;

/// Moderate case counts, and no regression files written beside the tests.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn token(bytes: &[u8]) -> Token {
    Token::parse(bytes).expect("a valid token")
}

/// The token a lock holds, as the owner gave it.
pub fn spelled(lock: &Lock) -> Vec<u8> {
    let mut buf = [0u8; INLINE_TEXT_MAX];
    lock.token(&mut buf).to_vec()
}
