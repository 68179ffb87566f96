//! `-w`: wait for a set's copy (or, with -g, every copy of a group's sets) to end. On a
//! terminal, a progress bar with rate and time left; elsewhere silence until done (scripts and
//! cron get only the exit status).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::show::group_members;
use super::tree::{get, no_group, status_lines, StatusLines, Tree};
use super::Failure;
use crate::control::parse::{GroupCommand, SetCommand};

pub fn wait(tree: &Tree, set: &str) -> Result<(), Failure> {
    if std::io::stderr().is_terminal() {
        show_progress(tree, set)?;
    }
    // The daemon's own wait: returns when the copy ends, and says so if the set went offline.
    tree.set(set, &SetCommand::Wait)
}

/// `-g GROUP -w`: the daemon's group wait returns once every member's copy has ended.
pub fn wait_group(tree: &Tree, group: &str) -> Result<(), Failure> {
    if std::io::stderr().is_terminal() {
        show_group_progress(tree, group)?;
    }
    tree.group(group, &GroupCommand::Wait)
}

/// Whether a state is that of a copy running.
fn active(state: &str) -> bool {
    matches!(state, "copying" | "updating")
}

fn bar(len: u64, template: &str, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(template)
        .map(|st| st.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(prefix);
    bar
}

fn show_progress(tree: &Tree, set: &str) -> Result<(), Failure> {
    let s = tree.status(set)?;
    if !active(get(&s, "state")) {
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
    let bar = bar(
        total * chunk,
        "{prefix} [{bar:40}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        format!("{set}: {}", get(&s, "state")),
    );
    loop {
        let s = tree.status(set)?;
        let left: u64 = get(&s, "chunks_to_copy").parse().unwrap_or(0);
        bar.set_position(total.saturating_sub(left) * chunk);
        if !active(get(&s, "state")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish();
    Ok(())
}

fn group_status(tree: &Tree, group: &str) -> Result<StatusLines, Failure> {
    let text = tree.group_text(group)?.ok_or_else(|| no_group(group))?;
    Ok(status_lines(&text))
}

/// Whether a member of the group is copying.
fn group_active(s: &StatusLines) -> bool {
    group_members(s).iter().any(|[.., state]| active(state))
}

/// The group's bar counts chunks (its members' chunks may be of different sizes).
fn show_group_progress(tree: &Tree, group: &str) -> Result<(), Failure> {
    let s = group_status(tree, group)?;
    if !group_active(&s) {
        return Ok(());
    }
    let count = |s: &StatusLines, key: &str| get(s, key).parse::<u64>().unwrap_or(0);
    let bar = bar(
        count(&s, "chunks_to_do"),
        "{prefix} [{bar:40}] {percent:>3}% {pos}/{len} chunks {per_sec} eta {eta}",
        format!("{group}: {}", get(&s, "state")),
    );
    // The group may be deleted meanwhile: the daemon's wait says what became of it.
    while let Ok(s) = group_status(tree, group) {
        if !group_active(&s) {
            // Once every copy has ended the daemon counts none (0 of 0): the bar is full.
            bar.set_position(bar.length().unwrap_or(0));
            break;
        }
        // The daemon counts the copies still running: a member whose copy ended leaves both
        // counts. The bar keeps the largest total and counts the chunks that left as done,
        // so it never goes back.
        let to_do = count(&s, "chunks_to_do");
        let total = bar.length().unwrap_or(0).max(to_do);
        bar.set_length(total);
        bar.set_position(count(&s, "chunks_done") + (total - to_do));
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish();
    Ok(())
}
