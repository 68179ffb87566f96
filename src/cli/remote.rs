//! `-H` and `--hosts-file`: the same command on other hosts. One host named plainly: the
//! command runs there and its output comes back as it is (with a terminal when iiadm has one).
//! Several hosts, a hosts file or an inventory group: every host at once (`fanout`), or the
//! cross-host point in time (`pit`).

use std::io::IsTerminal;
use std::process::ExitCode;

use super::hosts::{self, Target};
use super::ssh::{self, Ssh, SSH_FAILED};
use super::{fanout, pit, Args};

/// Run `argv`'s command on the hosts `args` names.
pub fn main(args: &Args, argv: &[String]) -> ExitCode {
    let targets = match hosts::targets(
        args.host.as_deref(),
        args.hosts_file.as_deref(),
        args.inventory.as_deref(),
    ) {
        Ok(t) => t,
        Err(f) => {
            eprintln!("iiadm: {}", f.message);
            return ExitCode::from(2);
        }
    };
    let targets = match &args.only {
        Some(only) => match hosts::only(targets, only) {
            Ok(t) => t,
            Err(f) => {
                eprintln!("iiadm: {}", f.message);
                return ExitCode::from(2);
            }
        },
        None => targets,
    };
    let ssh = Ssh::from_env();
    if let Some(group) = &args.group_pit {
        return pit::across(&ssh, &targets, group, args);
    }
    let rest = without_host(argv);
    // One host named as such (by -H HOST, or picked by --only): its output as it is.
    let one_named = targets.len() == 1
        && (args.only.is_some()
            || args.hosts_file.is_none()
                && !args
                    .host
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .any(|e| e.trim().starts_with('@')));
    match (one_named, targets.first()) {
        (true, Some(t)) => on_host(&ssh, t, &rest),
        _ => {
            // Each host's iiadm runs without a terminal and would not ask: ask here, once.
            if let Err(f) = confirm_masters(args, &targets) {
                eprintln!("iiadm: {}", f.message);
                return ExitCode::from(1);
            }
            fanout::run(&ssh, &targets, &rest, args.json, args.watch)
        }
    }
}

/// `-u m` / `-c m` on several hosts overwrite a master on each: on a terminal, unless -n,
/// ask once, naming the hosts.
fn confirm_masters(args: &Args, targets: &[Target]) -> Result<(), super::Failure> {
    let to_master = [&args.update, &args.copy]
        .into_iter()
        .flatten()
        .any(|v| matches!(v.first().map(String::as_str), Some("m" | "master")));
    if !to_master || args.no_confirm || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let what = match (
        &args.group,
        [&args.update, &args.copy].into_iter().flatten().next(),
    ) {
        (Some(g), _) => format!("every master of group {g}"),
        (None, Some(v)) => format!(
            "the master of set {}",
            v.get(1).map(String::as_str).unwrap_or("?")
        ),
        (None, None) => "the master".to_string(),
    };
    let hosts: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    super::ask(&format!(
        "Overwrite {what} with its shadow on {} host(s): {}?",
        hosts.len(),
        hosts.join(", ")
    ))
    .map_err(|_| super::Failure::new("not confirmed; nothing was done"))
}

/// The options of `argv` (past the program name) without the options that choose hosts, in
/// any of their spellings: `-H HOST`, `-HHOST`, `--host HOST`, `--host=HOST`, after flags
/// that take no value in one cluster (`-lH HOST`, `-lHHOST`), and `--hosts-file`,
/// `--inventory` and `--only` with their values. Left in, they would make the remote iiadm ssh again.
pub(crate) fn without_host(argv: &[String]) -> Vec<String> {
    // The short options that take no value, which may share a cluster with -H.
    const FLAGS: &str = "lvhGLVn";
    const LONG: [&str; 4] = ["--host", "--hosts-file", "--inventory", "--only"];
    let mut rest = Vec::new();
    let mut skip = false;
    for a in argv.iter().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if LONG.contains(&a.as_str()) {
            skip = true;
            continue;
        }
        if LONG.iter().any(|l| a.starts_with(&format!("{l}="))) {
            continue;
        }
        let cluster = a.strip_prefix('-').filter(|c| !c.starts_with('-'));
        if let Some((flags, host)) = cluster.and_then(|c| c.split_once('H')) {
            if flags.chars().all(|f| FLAGS.contains(f)) {
                if !flags.is_empty() {
                    rest.push(format!("-{flags}"));
                }
                skip = host.is_empty();
                continue;
            }
        }
        rest.push(a.clone());
    }
    rest
}

/// One host: the command runs there over ssh, its output and exit status passed through
/// (ssh's own 255 when ssh fails).
fn on_host(ssh: &Ssh, t: &Target, rest: &[String]) -> ExitCode {
    // With a terminal on both ends the remote iiadm can ask before overwriting a master and
    // draw -w's progress; without one (a pipe, cron) ssh must not allocate one, or the
    // output would carry the terminal's line endings.
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let status = ssh.command(t, false, tty, &ssh::iiadm_line(rest)).status();
    match status {
        Ok(s) => ExitCode::from(ssh::exit_code(s)),
        Err(e) => {
            eprintln!(
                "iiadm: cannot run {} to reach {}: {e}",
                ssh.program(),
                t.name
            );
            ExitCode::from(SSH_FAILED)
        }
    }
}
