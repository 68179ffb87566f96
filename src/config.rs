//! Daemon settings: built-in defaults < /etc/iifs/iifs.yaml < --config FILE < flags and `-o`.
//! Unknown keys are errors that name the key and where it came from.

use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::control::parse::parse_size;
use crate::engine::header::one_line;
use crate::engine::{check_chunk_size, Durability};

pub const SYSTEM_CONFIG: &str = "/etc/iifs/iifs.yaml";

/// A setting, config file or mount option the daemon refuses; the sentence names the key and
/// where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not YAML, or a key or value the file format does not know.
    #[error("config {}: {}", path.display(), one_line(&source.to_string()))]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    /// A bad value in config file `path`.
    #[error("config {}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<ConfigError>,
    },
    #[error("chunk_size '{}' is not a size (65536 or 64K)", one_line(.0))]
    NotASize(String),
    /// A size the engine refuses as a chunk size.
    #[error(transparent)]
    ChunkSize(#[from] crate::engine::Error),
    #[error("durability must be strict or relaxed, not '{}'", one_line(.0))]
    Durability(String),
    #[error("threads must be a number from 1 to 64, not '{}'", one_line(.0))]
    Threads(String),
    #[error("allow_other must be true or false, not '{}'", one_line(.0))]
    AllowOther(String),
    #[error("passthrough must be on or off (true, false, yes, no, 1, 0), not '{}'", one_line(.0))]
    Passthrough(String),
    #[error("log_level must be error, warn, info, debug, trace or off, not '{}'", one_line(.0))]
    LogLevel(String),
    #[error("space_warning must be a percent from 1 to 100, not '{}'", one_line(.0))]
    SpaceWarning(String),
    #[error(
        "volume_dirs must be absolute directories separated by ':' (/srv/images:/dev), not \
         '{}': name each directory from /", one_line(.0)
    )]
    VolumeDir(String),
    #[error("unknown setting '{}'", one_line(.0))]
    UnknownSetting(String),
    #[error(
        "iifs cannot be mounted read-only ('ro'): its control tree takes commands; use 'rw' or \
         leave it out"
    )]
    ReadOnly,
    #[error("unknown mount option '{}' in -o {}", one_line(key), one_line(list))]
    UnknownMountOption { key: String, list: String },
    #[error(
        "two config files given ({} with --config, {} with -o config=): use one",
        flag.display(),
        option.display()
    )]
    TwoConfigFiles { flag: PathBuf, option: PathBuf },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub chunk_size: u64,
    pub durability: Durability,
    pub threads: usize,
    pub allow_other: bool,
    pub log_level: String,
    /// Percent of a compact set's shadow and overflow space from which it warns.
    pub space_warning: u64,
    /// Directories whose regular files and block devices `volumes` offers as candidates.
    pub volume_dirs: Vec<PathBuf>,
    /// Let the kernel serve the reads of settled independent shadows and of bitmap files
    /// itself (FUSE passthrough), where it can; see `crate::fs::passthrough`.
    pub passthrough: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// An on/off setting in a file: a YAML boolean, `on`/`off` and the other words `-o` takes, or
/// 1/0.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SwitchValue {
    Bool(bool),
    Number(u64),
    Text(String),
}

impl SwitchValue {
    fn text(self) -> String {
        match self {
            SwitchValue::Bool(b) => b.to_string(),
            SwitchValue::Number(n) => n.to_string(),
            SwitchValue::Text(t) => t,
        }
    }
}

/// `volume_dirs` in a file: a YAML list, or one string separated by ':' as `-o` takes it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DirsValue {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    state_dir: Option<PathBuf>,
    chunk_size: Option<SizeValue>,
    durability: Option<String>,
    threads: Option<usize>,
    allow_other: Option<bool>,
    log_level: Option<String>,
    space_warning: Option<u64>,
    volume_dirs: Option<DirsValue>,
    passthrough: Option<SwitchValue>,
}

/// Mount options that mount(8) and fstab pass along and that mean nothing to iifs.
const GENERIC_MOUNT_OPTIONS: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "nodiratime",
    "async",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "defaults",
    "_netdev",
    "nofail",
    "default_permissions",
    "sync",
    "dirsync",
    "lazytime",
    "nolazytime",
    "strictatime",
    "nostrictatime",
    "silent",
    "loud",
    "iversion",
    "noiversion",
    "mand",
    "nomand",
    "owner",
    "group",
];

pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/iifs");
    }
    match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("iifs"),
        _ => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".local/state/iifs"),
            None => PathBuf::from("/tmp/iifs-state"),
        },
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            state_dir: default_state_dir(),
            chunk_size: 65536,
            durability: Durability::Strict,
            threads: 2,
            allow_other: false,
            log_level: "info".into(),
            space_warning: crate::engine::set::DEFAULT_SPACE_WARNING,
            volume_dirs: Vec::new(),
            passthrough: true,
        }
    }
}

impl Settings {
    /// Apply a YAML settings file.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let f: FileSettings =
            serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let at = |e: ConfigError| ConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        if let Some(d) = f.state_dir {
            self.state_dir = d;
        }
        if let Some(c) = f.chunk_size {
            let text = match c {
                SizeValue::Bytes(n) => n.to_string(),
                SizeValue::Text(t) => t,
            };
            self.set("chunk_size", &text).map_err(at)?;
        }
        if let Some(d) = f.durability {
            self.set("durability", &d).map_err(at)?;
        }
        if let Some(t) = f.threads {
            self.set("threads", &t.to_string()).map_err(at)?;
        }
        if let Some(a) = f.allow_other {
            self.allow_other = a;
        }
        if let Some(l) = f.log_level {
            self.set("log_level", &l).map_err(at)?;
        }
        if let Some(w) = f.space_warning {
            self.set("space_warning", &w.to_string()).map_err(at)?;
        }
        match f.volume_dirs {
            Some(DirsValue::Text(t)) => self.set("volume_dirs", &t).map_err(at)?,
            Some(DirsValue::List(l)) => self.volume_dirs = volume_dirs(&l).map_err(at)?,
            None => {}
        }
        if let Some(p) = f.passthrough {
            self.set("passthrough", &p.text()).map_err(at)?;
        }
        Ok(())
    }

    /// Set one setting from its text form (as `-o key=value` gives it).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "state_dir" => self.state_dir = PathBuf::from(value),
            "chunk_size" => {
                let n = parse_size(value).ok_or_else(|| ConfigError::NotASize(value.into()))?;
                check_chunk_size(n)?;
                self.chunk_size = n;
            }
            "durability" => {
                self.durability =
                    Durability::parse(value).ok_or_else(|| ConfigError::Durability(value.into()))?
            }
            "threads" => {
                self.threads = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| ConfigError::Threads(value.into()))?
            }
            "allow_other" => {
                self.allow_other = match value {
                    "" | "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(ConfigError::AllowOther(value.into())),
                }
            }
            "log_level" => {
                if !["error", "warn", "info", "debug", "trace", "off"].contains(&value) {
                    return Err(ConfigError::LogLevel(value.into()));
                }
                self.log_level = value.into();
            }
            "space_warning" => {
                self.space_warning = value
                    .trim_end_matches('%')
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ConfigError::SpaceWarning(value.into()))?
            }
            "volume_dirs" => {
                let dirs: Vec<&str> = value.split(':').collect();
                self.volume_dirs = volume_dirs(&dirs)?;
            }
            "passthrough" => {
                self.passthrough = match value {
                    "" | "on" | "true" | "yes" | "1" => true,
                    "off" | "false" | "no" | "0" => false,
                    _ => return Err(ConfigError::Passthrough(value.into())),
                }
            }
            _ => return Err(ConfigError::UnknownSetting(key.into())),
        }
        Ok(())
    }
}

/// The `volume_dirs` directories, each absolute (the daemon's working directory is `/` once
/// it runs in the background, so a relative one would not mean what it meant to the writer).
/// Empty entries (`/a::/b`, or an empty value: no directories) are skipped.
fn volume_dirs<S: AsRef<str>>(dirs: &[S]) -> Result<Vec<PathBuf>, ConfigError> {
    dirs.iter()
        .map(AsRef::as_ref)
        .filter(|d| !d.is_empty())
        .map(|d| match d.starts_with('/') {
            true => Ok(PathBuf::from(d)),
            false => Err(ConfigError::VolumeDir(d.to_string())),
        })
        .collect()
}

/// What a `-o` list holds for iifs: settings as (key, value) and the config file it names.
#[derive(Debug, Default, PartialEq)]
pub struct MountOptions {
    pub settings: Vec<(String, String)>,
    pub config: Option<PathBuf>,
}

/// Split `-o` lists. Generic mount options are accepted and ignored; anything else is an error.
pub fn split_mount_options(opts: &[String]) -> Result<MountOptions, ConfigError> {
    let mut settings = Vec::new();
    let mut config = None;
    for list in opts {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            if k == "ro" {
                return Err(ConfigError::ReadOnly);
            } else if k == "config" {
                config = Some(PathBuf::from(v));
            } else if GENERIC_MOUNT_OPTIONS.contains(&k)
                || k.starts_with("x-")
                || k == "fsname"
                || k == "subtype"
            {
                continue;
            } else if [
                "state_dir",
                "chunk_size",
                "durability",
                "threads",
                "allow_other",
                "log_level",
                "space_warning",
                "volume_dirs",
                "passthrough",
            ]
            .contains(&k)
            {
                settings.push((k.to_string(), v.to_string()));
            } else {
                return Err(ConfigError::UnknownMountOption {
                    key: k.into(),
                    list: list.clone(),
                });
            }
        }
    }
    Ok(MountOptions { settings, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, "chunk_size: 4K\ndurability: relaxed\nthreads: 3\n").unwrap();
        let mut s = Settings::default();
        s.apply_file(&f).unwrap();
        assert_eq!(
            (s.chunk_size, s.durability, s.threads),
            (4096, Durability::Relaxed, 3)
        );
        s.set("chunk_size", "1M").unwrap();
        assert_eq!(s.chunk_size, 1 << 20);
        std::fs::write(&f, "chunk_sise: 4096\n").unwrap();
        let err = Settings::default().apply_file(&f).unwrap_err().to_string();
        assert!(
            err.contains("chunk_sise") && err.contains("c.yaml"),
            "{err}"
        );
        assert!(Settings::default().set("chunk_size", "3000").is_err());
        // The error behind keeps its type: the file's YAML error, the missing file's I/O error.
        let err = Settings::default().apply_file(&f).unwrap_err();
        let source = std::error::Error::source(&err).expect("source");
        assert!(source.is::<serde_norway::Error>(), "{source:?}");
        let err = Settings::default()
            .apply_file(&dir.path().join("missing.yaml"))
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
    }

    #[test]
    fn volume_dirs_are_absolute_from_a_file_or_an_option() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        let mut s = Settings::default();
        assert!(s.volume_dirs.is_empty());
        s.set("volume_dirs", "/srv/images::/dev").unwrap();
        assert_eq!(
            s.volume_dirs,
            [PathBuf::from("/srv/images"), PathBuf::from("/dev")]
        );
        s.set("volume_dirs", "").unwrap();
        assert!(s.volume_dirs.is_empty());
        let err = s.set("volume_dirs", "/a:images").unwrap_err().to_string();
        assert!(
            err.contains("'images'") && err.contains("absolute"),
            "{err}"
        );
        std::fs::write(&f, "volume_dirs: [/a, /b]\n").unwrap();
        s.apply_file(&f).unwrap();
        assert_eq!(s.volume_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        std::fs::write(&f, "volume_dirs: /c:/d\n").unwrap();
        s.apply_file(&f).unwrap();
        assert_eq!(s.volume_dirs, [PathBuf::from("/c"), PathBuf::from("/d")]);
        std::fs::write(&f, "volume_dirs: [rel]\n").unwrap();
        let err = s.apply_file(&f).unwrap_err().to_string();
        assert!(err.contains("c.yaml") && err.contains("'rel'"), "{err}");
        let o = split_mount_options(&["volume_dirs=/a:/b".into()]).unwrap();
        assert_eq!(o.settings, [("volume_dirs".into(), "/a:/b".into())]);
    }

    #[test]
    fn passthrough_is_on_by_default_and_takes_on_off_words() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        let mut s = Settings::default();
        assert!(s.passthrough);
        for (word, on) in [
            ("off", false),
            ("on", true),
            ("no", false),
            ("yes", true),
            ("0", false),
            ("1", true),
            ("false", false),
            ("true", true),
            ("", true),
        ] {
            s.set("passthrough", word).unwrap();
            assert_eq!(s.passthrough, on, "{word:?}");
        }
        let err = s.set("passthrough", "maybe").unwrap_err().to_string();
        assert!(
            err.contains("'maybe'") && err.contains("on or off"),
            "{err}"
        );
        for (text, on) in [
            ("passthrough: false\n", false),
            ("passthrough: true\n", true),
            ("passthrough: off\n", false),
            ("passthrough: on\n", true),
            ("passthrough: 0\n", false),
        ] {
            std::fs::write(&f, text).unwrap();
            s.apply_file(&f).unwrap();
            assert_eq!(s.passthrough, on, "{text:?}");
        }
        std::fs::write(&f, "passthrough: sometimes\n").unwrap();
        let err = s.apply_file(&f).unwrap_err().to_string();
        assert!(
            err.contains("c.yaml") && err.contains("'sometimes'"),
            "{err}"
        );
        let o = split_mount_options(&["passthrough=off".into()]).unwrap();
        assert_eq!(o.settings, [("passthrough".into(), "off".into())]);
    }

    #[test]
    fn mount_options_split() {
        let MountOptions {
            settings: s,
            config: c,
        } = split_mount_options(&["rw,nosuid,chunk_size=4096,config=/x.yaml,allow_other".into()])
            .unwrap();
        assert_eq!(
            s,
            vec![
                ("chunk_size".into(), "4096".into()),
                ("allow_other".into(), "".into())
            ]
        );
        assert_eq!(c, Some(PathBuf::from("/x.yaml")));
        assert!(split_mount_options(&["ro".into()])
            .unwrap_err()
            .to_string()
            .contains("read-only"));
        assert!(split_mount_options(&["sync,lazytime,silent".into()]).is_ok());
        assert!(split_mount_options(&["bogus=1".into()])
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }
}
