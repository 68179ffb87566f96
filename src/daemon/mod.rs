//! The daemon's start-up: arguments as mount.fuse3 passes them, settings, detaching with a
//! readiness handshake, the mount itself, signals and a clean unmount.

mod error;
mod lock;
mod mount;
mod process;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, ValueHint};

pub use self::error::DaemonError;
use crate::config::{split_mount_options, ConfigError, Settings, SYSTEM_CONFIG};
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
#[command(name = "iifs", version, about)]
pub struct Args {
    /// [SOURCE] MOUNTPOINT: SOURCE is ignored (mount(8) passes "none")
    #[arg(value_name = "MOUNTPOINT", num_args = 1..=2, required = true,
          value_hint = ValueHint::DirPath)]
    pub paths: Vec<PathBuf>,
    /// Settings and mount options, comma-separated: state_dir=, config=, chunk_size=,
    /// durability=, threads=, allow_other, log_level=, space_warning=, volume_dirs=DIR:DIR,
    /// passthrough=on|off
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,
    /// Stay in the foreground and log to stderr
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Where the set registry is kept [default: /var/lib/iifs as root]
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub state_dir: Option<PathBuf>,
    /// A YAML settings file (read after /etc/iifs/iifs.yaml)
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Default chunk size for new sets (4K..1M, power of two) [default: 64K]
    #[arg(long, value_name = "BYTES")]
    pub chunk_size: Option<String>,
    /// Default durability for new sets [default: strict]
    #[arg(long, value_name = "MODE", value_parser = ["strict", "relaxed"])]
    pub durability: Option<String>,
    /// FUSE threads [default: 2]
    #[arg(long, value_name = "N")]
    pub threads: Option<String>,
    /// Let users other than the mounting one use the tree
    #[arg(long)]
    pub allow_other: bool,
    /// Log level [default: info]
    #[arg(long, value_name = "LEVEL",
          value_parser = ["error", "warn", "info", "debug", "trace", "off"])]
    pub log_level: Option<String>,
}

/// Settings from every layer: defaults < /etc/iifs/iifs.yaml < --config < -o < flags.
pub fn settings(args: &Args) -> Result<Settings, ConfigError> {
    settings_with(args, Path::new(SYSTEM_CONFIG))
}

/// `settings` with the system config file at `system` (read only when it exists).
pub fn settings_with(args: &Args, system: &Path) -> Result<Settings, ConfigError> {
    let mut s = Settings::default();
    if system.exists() {
        s.apply_file(system)?;
    }
    let mount_opts = split_mount_options(&args.options)?;
    if let (Some(a), Some(b)) = (&args.config, &mount_opts.config) {
        if a != b {
            return Err(ConfigError::TwoConfigFiles {
                flag: a.clone(),
                option: b.clone(),
            });
        }
    }
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
    let mut settings = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            process::report_error(&e.to_string());
            return ExitCode::from(2);
        }
    };
    let Some(mountpoint) = args.paths.last() else {
        process::report_error("no mountpoint given");
        return ExitCode::from(2);
    };
    // The daemon moves to / when it detaches: relative paths are the caller's, resolve them now.
    let (mountpoint, state_dir) = match (
        std::path::absolute(mountpoint),
        std::path::absolute(&settings.state_dir),
    ) {
        (Ok(m), Ok(s)) => (m, s),
        (Err(e), _) | (_, Err(e)) => {
            process::report_error(&format!("cannot resolve the mountpoint or state dir: {e}"));
            return ExitCode::from(1);
        }
    };
    settings.state_dir = state_dir;
    clear_dead_mount(&mountpoint);
    if let Err(e) = std::fs::create_dir_all(&mountpoint) {
        process::report_error(&format!(
            "cannot create mountpoint {}: {e}",
            mountpoint.display()
        ));
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
                process::report_error(&format!("cannot start in the background: {e}"));
                return ExitCode::from(1);
            }
        }
    };
    process::init_logging(&settings, args.foreground);
    match serve(&settings, &mountpoint, &ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ready.failed(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// A daemon killed without unmounting (SIGKILL, a crash) leaves its mount behind, dead:
/// every access fails with ENOTCONN, so neither creating the mountpoint nor mounting on it
/// works. Detach such a mount, and only such a one (an iifs mount whose daemon is gone), so a
/// restart (systemd's Restart=, an administrator) just works.
fn clear_dead_mount(mountpoint: &Path) {
    match std::fs::metadata(mountpoint) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
        _ => return,
    }
    let target = mountpoint.to_path_buf();
    let ours = crate::mounts::current()
        .unwrap_or_default()
        .contains(&target);
    if !ours {
        return;
    }
    process::report_warning(&format!(
        "detaching the dead iifs mount at {} left by an earlier daemon",
        mountpoint.display()
    ));
    let Ok(c) = std::ffi::CString::new(target.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

fn serve(
    settings: &Settings,
    mountpoint: &Path,
    ready: &process::Readiness,
) -> Result<(), DaemonError> {
    process::become_io_flusher();
    let signals = process::block_signals()?;
    let _state_lock = lock::lock_state_dir(&settings.state_dir, mountpoint)?;
    let registry = Registry::open(&settings.state_dir)?;
    let engine = Engine::new(Box::new(FileOpener));
    crate::engine::set::set_space_warning(settings.space_warning);
    crate::control::discovery::set_volume_dirs(settings.volume_dirs.clone());
    let controller = Arc::new(Controller::new(
        engine,
        registry,
        SetDefaults {
            chunk_size: settings.chunk_size,
            durability: settings.durability,
        },
    ));
    controller.watch_offline();
    let failures = controller.restore_all();
    controller.watch_changes();
    for (name, e) in &failures {
        log::error!("set {name} stays unavailable: {e}");
    }
    let fs = IifsFs::new(controller.clone());
    let session = mount::mount(fs, mountpoint, settings)?;
    // Readers of the change stream wait for the next change for as long as the daemon runs:
    // their streams end first, or the unmount would find the mount busy.
    let streams = controller.clone();
    process::watch_signals(signals, mountpoint.to_path_buf(), move || {
        streams.end_event_streams(std::time::Duration::from_secs(1));
        streams.data_files_open()
    });
    log::info!(
        "iifs mounted at {} ({} sets)",
        mountpoint.display(),
        controller.set_count()
    );
    ready.ready();
    let result = session
        .run()
        .map_err(|source| DaemonError::SessionEnded { source });
    mount::session_ended();
    process::notify_stopping();
    controller.shutdown();
    log::info!("iifs unmounted from {}", mountpoint.display());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Durability;

    fn args(argv: &[&str]) -> Args {
        let mut full = vec!["iifs", "none", "/mnt/ii"];
        full.extend_from_slice(argv);
        Args::try_parse_from(full).expect("arguments parse")
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn without_files_or_options_the_defaults_hold() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings_with(&args(&[]), &dir.path().join("absent.yaml")).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(
            (s.chunk_size, s.durability, s.threads, s.allow_other),
            (65536, Durability::Strict, 2, false)
        );
        assert_eq!(s.log_level, "info");
    }

    #[test]
    fn layers_apply_defaults_system_config_options_flags() {
        let dir = tempfile::tempdir().unwrap();
        let system = write(
            dir.path(),
            "system.yaml",
            "state_dir: /from-system\nchunk_size: 4K\ndurability: relaxed\nthreads: 3\n\
             log_level: debug\nallow_other: true\n",
        );
        let config = write(
            dir.path(),
            "config.yaml",
            "state_dir: /from-config\nthreads: 4\nlog_level: warn\nallow_other: false\n",
        );
        let c = config.to_str().unwrap();

        // Each layer alone over the defaults.
        let s = settings_with(&args(&[]), &system).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/from-system"));
        assert_eq!(
            (s.chunk_size, s.durability, s.threads, s.allow_other),
            (4096, Durability::Relaxed, 3, true)
        );
        assert_eq!(s.log_level, "debug");

        // --config over the system file; what it leaves out stays from below.
        let s = settings_with(&args(&["--config", c]), &system).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/from-config"));
        assert_eq!((s.chunk_size, s.threads, s.allow_other), (4096, 4, false));
        assert_eq!(s.log_level, "warn");
        // -o config=FILE is the same layer.
        let o = format!("config={c}");
        assert_eq!(
            settings_with(&args(&["-o", &o]), &system).unwrap(),
            settings_with(&args(&["--config", c]), &system).unwrap()
        );

        // -o over --config.
        let s = settings_with(
            &args(&[
                "--config",
                c,
                "-o",
                "rw,threads=5,state_dir=/from-o,log_level=error",
            ]),
            &system,
        )
        .unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/from-o"));
        assert_eq!((s.chunk_size, s.threads), (4096, 5));
        assert_eq!(s.log_level, "error");

        // Flags over -o.
        let s = settings_with(
            &args(&[
                "--config",
                c,
                "-o",
                "threads=5,state_dir=/from-o,chunk_size=8K,allow_other=false",
                "--threads",
                "6",
                "--state-dir",
                "/from-flag",
                "--chunk-size",
                "1M",
                "--durability",
                "strict",
                "--log-level",
                "trace",
                "--allow-other",
            ]),
            &system,
        )
        .unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/from-flag"));
        assert_eq!(
            (s.chunk_size, s.durability, s.threads, s.allow_other),
            (1 << 20, Durability::Strict, 6, true)
        );
        assert_eq!(s.log_level, "trace");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good.yaml", "threads: 3\n");
        let bad_system = write(dir.path(), "bad-system.yaml", "chunk_sise: 4096\n");
        let bad_config = write(dir.path(), "bad-config.yaml", "treads: 3\n");

        let err = settings_with(&args(&[]), &bad_system)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chunk_sise") && err.contains(bad_system.to_str().unwrap()),
            "{err}"
        );
        let err = settings_with(&args(&["--config", bad_config.to_str().unwrap()]), &good)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("treads") && err.contains(bad_config.to_str().unwrap()),
            "{err}"
        );
        let o = format!("config={}", bad_config.display());
        let err = settings_with(&args(&["-o", &o]), &good)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("treads") && err.contains("bad-config.yaml"),
            "{err}"
        );
        let err = settings_with(&args(&["-o", "thread=3"]), &good)
            .unwrap_err()
            .to_string();
        assert!(err.contains("thread"), "{err}");

        // A bad value names the file too; a named config file must exist.
        let bad_value = write(dir.path(), "bad-value.yaml", "durability: sometimes\n");
        let err = settings_with(&args(&["--config", bad_value.to_str().unwrap()]), &good)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sometimes") && err.contains("bad-value.yaml"),
            "{err}"
        );
        let missing = dir.path().join("missing.yaml");
        let err = settings_with(&args(&["--config", missing.to_str().unwrap()]), &good)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.yaml"), "{err}");
    }
}
