//! `Registry::open` on a registry file of any bytes: no panic, a refusal on one line, and a
//! registry that opens saves and reads back the same records.
#![no_main]

use std::sync::OnceLock;

use iifs::registry::Registry;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let dir = dir().path();
    std::fs::write(dir.join(Registry::FILE), data).unwrap();
    match Registry::open(dir) {
        Ok(r) => {
            let records = r.records();
            r.save(&records).unwrap();
            let again = Registry::open(dir).expect("a saved registry opens");
            assert_eq!(again.records(), records);
            assert_eq!(again.overflows(), r.overflows());
            assert_eq!(again.groups(), r.groups());
            assert_eq!(again.group_op(), r.group_op());
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
        }
    }
});
