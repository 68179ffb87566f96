//! The daemon's start-up: arguments as mount.fuse3 passes them, settings, detaching with a
//! readiness handshake, the mount itself, signals and a clean unmount.

mod mount;
mod process;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::config::{split_mount_options, Settings, SYSTEM_CONFIG};
use crate::control::exec::SetDefaults;
use crate::control::Controller;
use crate::engine::{Engine, FileOpener};
use crate::fs::IifsFs;
use crate::registry::Registry;

/// Instant point-in-time images of volumes, served as a FUSE control tree.
///
/// Mounts the control tree at MOUNTPOINT: write commands to MOUNTPOINT/ctl and
/// MOUNTPOINT/sets/NAME/ctl, read MOUNTPOINT/sets/NAME/status. See iifs(7).
#[derive(Parser, Debug)]
#[command(name = "iifs", version, about, long_about = None)]
pub struct Args {
    /// [SOURCE] MOUNTPOINT: SOURCE is ignored (mount(8) passes "none")
    #[arg(value_name = "MOUNTPOINT", num_args = 1..=2, required = true)]
    pub paths: Vec<PathBuf>,
    /// Settings and mount options, comma-separated: state_dir=, config=, chunk_size=,
    /// durability=, threads=, allow_other, log_level=
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Stay in the foreground and log to stderr
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Where the set registry is kept [default: /var/lib/iifs as root]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A YAML settings file (read after /etc/iifs/iifs.yaml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Default chunk size for new sets (4K..1M, power of two) [default: 64K]
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<String>,
    /// Default durability for new sets: strict or relaxed [default: strict]
    #[arg(long, value_name = "MODE")]
    pub durability: Option<String>,
    /// FUSE threads [default: 2]
    #[arg(long, value_name = "N")]
    pub threads: Option<String>,
    /// Let users other than the mounting one use the tree
    #[arg(long)]
    pub allow_other: bool,
    /// error, warn, info, debug or trace [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Settings from every layer: defaults < system config < --config < -o < flags.
pub fn settings(args: &Args) -> Result<Settings, String> {
    let mut s = Settings::default();
    let system = std::path::Path::new(SYSTEM_CONFIG);
    if system.exists() {
        s.apply_file(system)?;
    }
    let mount_opts = split_mount_options(&args.options)?;
    if let Some(c) = args.config.as_ref().or(mount_opts.config.as_ref()) {
        s.apply_file(c)?;
    }
    for (k, v) in &mount_opts.settings {
        s.set(k, v)?;
    }
    let flags = [
        ("chunk_size", &args.chunk_size),
        ("durability", &args.durability),
        ("threads", &args.threads),
        ("log_level", &args.log_level),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            s.set(k, v)?;
        }
    }
    if let Some(d) = &args.state_dir {
        s.state_dir = d.clone();
    }
    if args.allow_other {
        s.allow_other = true;
    }
    Ok(s)
}

pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iifs: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(mountpoint) = args.paths.last().cloned() else {
        eprintln!("iifs: no mountpoint given");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::create_dir_all(&mountpoint) {
        eprintln!(
            "iifs: cannot create mountpoint {}: {e}",
            mountpoint.display()
        );
        return ExitCode::from(1);
    }
    // Detach before any thread exists; the parent returns once the mount is live.
    let ready = if args.foreground {
        process::Readiness::foreground()
    } else {
        match process::detach() {
            Ok(process::Detached::Parent(code)) => return code,
            Ok(process::Detached::Child(r)) => r,
            Err(e) => {
                eprintln!("iifs: cannot start in the background: {e}");
                return ExitCode::from(1);
            }
        }
    };
    process::init_logging(&settings, args.foreground);
    match serve(&settings, &mountpoint, &ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ready.failed(&e);
            ExitCode::from(1)
        }
    }
}

fn serve(
    settings: &Settings,
    mountpoint: &std::path::Path,
    ready: &process::Readiness,
) -> Result<(), String> {
    process::become_io_flusher();
    let signals = process::block_signals()?;
    let registry = Registry::open(&settings.state_dir)?;
    let engine = Engine::new(Box::new(FileOpener));
    let controller = Arc::new(Controller::new(
        engine,
        registry,
        SetDefaults {
            chunk_size: settings.chunk_size,
            durability: settings.durability,
        },
    ));
    let failures = controller.restore_all();
    for (name, e) in &failures {
        log::error!("set {name} stays unavailable: {e}");
    }
    let fs = IifsFs::new(controller.clone());
    let session = mount::mount(fs, mountpoint, settings)?;
    process::watch_signals(signals, mountpoint.to_path_buf());
    log::info!(
        "iifs mounted at {} ({} sets)",
        mountpoint.display(),
        controller.engine.sets().len()
    );
    ready.ready();
    let result = session
        .run()
        .map_err(|e| format!("FUSE session ended: {e}"));
    controller.engine.shutdown();
    log::info!("iifs unmounted from {}", mountpoint.display());
    result
}
