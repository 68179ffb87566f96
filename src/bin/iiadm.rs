//! iiadm: administer iifs point-in-time copy sets through the control tree.

use std::process::ExitCode;

fn main() -> ExitCode {
    iifs::cli::main()
}
