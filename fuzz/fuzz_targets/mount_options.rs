//! `-o` lists (the input, split at NUL bytes, as UTF-8 text) and each setting they carry: no
//! panic, refusals on one line.
#![no_main]

use iifs::config::{split_mount_options, Settings};
use libfuzzer_sys::fuzz_target;

fn one_line(msg: &str) {
    assert!(
        !msg.trim().is_empty() && !msg.contains('\n') && !msg.contains('\r'),
        "{msg:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lists: Vec<String> = text.split('\0').map(str::to_string).collect();
    match split_mount_options(&lists) {
        Ok(o) => {
            let mut s = Settings::default();
            for (k, v) in &o.settings {
                if let Err(e) = s.set(k, v) {
                    one_line(&e.to_string());
                }
            }
        }
        Err(e) => one_line(&e.to_string()),
    }
});
