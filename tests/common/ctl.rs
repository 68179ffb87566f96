//! One ctl command, as a script writes it: the tests' shared way to drive a ctl file.

use std::fs::File;
use std::io::{Read, Write};

/// Write one command to an open ctl file with a single write(2); on refusal, the errno and
/// the transaction reply read back on the same open file.
pub fn write_ctl(f: &mut File, cmd: &str) -> Result<(), (i32, String)> {
    // One write(2): a command is one write; a short write would be a daemon bug.
    match f.write(cmd.as_bytes()) {
        Ok(n) => {
            assert_eq!(n, cmd.len(), "short write of a ctl command");
            Ok(())
        }
        Err(e) => {
            let mut reply = String::new();
            let _ = f.read_to_string(&mut reply);
            Err((e.raw_os_error().unwrap_or(0), reply))
        }
    }
}
