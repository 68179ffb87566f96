//! `Settings::apply_file` on a config file of any bytes: no panic, a refusal on one line, and
//! what is taken is within bounds.
#![no_main]

use std::sync::OnceLock;

use iifs::config::Settings;
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("iifs.yaml");
    std::fs::write(&path, data).unwrap();
    let mut s = Settings::default();
    match s.apply_file(&path) {
        Ok(()) => {
            assert!(iifs::engine::check_chunk_size(s.chunk_size).is_ok());
            assert!((1..=64).contains(&s.threads));
            assert!((1..=100).contains(&s.space_warning));
            assert!(s.volume_dirs.iter().all(|d| d.is_absolute()));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
        }
    }
});
