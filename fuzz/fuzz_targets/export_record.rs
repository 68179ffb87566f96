//! `bundle::read` on an export record of any bytes: no panic, a refusal on one line, and a
//! record taken is whole (its format, a uuid, sizes).
#![no_main]

use std::sync::OnceLock;

use iifs::engine::bundle;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let shadow = dir().path().join("shadow");
    let shadow = shadow.to_str().unwrap();
    std::fs::write(bundle::path_of(shadow), data).unwrap();
    match bundle::read(shadow) {
        Ok(rec) => {
            assert_eq!(rec.format, bundle::FORMAT);
            assert!(rec.origin().is_some() && rec.size > 0 && rec.chunk_size > 0);
        }
        Err(msg) => assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}"),
    }
});
