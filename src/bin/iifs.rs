//! The iifs daemon: mounts the control tree and serves it.

use std::process::ExitCode;

fn main() -> ExitCode {
    iifs::daemon::main()
}
