//! Every ctl parser on any bytes: no panic, one-line refusals, and an accepted command prints
//! back as words that parse to the same command.
#![no_main]

use iifs::control::parse::{parse_global, parse_group, parse_overflow_ctl, parse_set, parse_size};
use libfuzzer_sys::fuzz_target;

fn one_line(msg: &str) {
    assert!(!msg.trim().is_empty(), "empty refusal");
    assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "refusal spans lines: {msg:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    match parse_global(data) {
        Ok(c) => assert_eq!(parse_global(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => one_line(&e.to_string()),
    }
    match parse_set(data) {
        Ok(c) => assert_eq!(parse_set(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => one_line(&e.to_string()),
    }
    match parse_group(data) {
        Ok(c) => assert_eq!(parse_group(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => one_line(&e.to_string()),
    }
    match parse_overflow_ctl(data) {
        Ok(c) => assert_eq!(parse_overflow_ctl(c.to_string().as_bytes()).ok(), Some(c)),
        Err(e) => one_line(&e.to_string()),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(n) = parse_size(text) {
            assert_eq!(parse_size(&n.to_string()), Some(n));
        }
    }
});
