//! `-w`: wait for a set's copy to end. On a terminal, a progress bar with rate and time left;
//! elsewhere silence until done (scripts and cron get only the exit status).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::tree::{get, Tree};
use super::Failure;
use crate::control::parse::SetCommand;

pub fn wait(tree: &Tree, set: &str) -> Result<(), Failure> {
    if std::io::stderr().is_terminal() {
        show_progress(tree, set)?;
    }
    // The daemon's own wait: returns when the copy ends, and says so if the set went offline.
    tree.set(set, &SetCommand::Wait)
}

fn show_progress(tree: &Tree, set: &str) -> Result<(), Failure> {
    let s = tree.status(set)?;
    let active = |s: &super::tree::StatusLines| matches!(get(s, "state"), "copying" | "updating");
    if !active(&s) {
        return Ok(());
    }
    let chunk: u64 = get(&s, "chunk_size").parse().unwrap_or(1);
    let left: u64 = get(&s, "chunks_to_copy").parse().unwrap_or(0);
    let progress: u64 = get(&s, "progress").parse().unwrap_or(0);
    // The copy's total, from what is left and how far it has come.
    let total = if progress < 100 {
        left * 100 / (100 - progress)
    } else {
        left
    }
    .max(left);
    let bar = ProgressBar::new(total * chunk);
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:40}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .map(|st| st.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("{set}: {}", get(&s, "state")));
    loop {
        let s = tree.status(set)?;
        let left: u64 = get(&s, "chunks_to_copy").parse().unwrap_or(0);
        bar.set_position(total.saturating_sub(left) * chunk);
        if !active(&s) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish();
    Ok(())
}
