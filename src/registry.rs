//! The persistent set registry: `iifs.yaml` in the state dir, listing every set and the
//! volumes it is made of. Rewritten atomically (temp file, fsync, rename, fsync of the dir) on
//! every change and read back at start. Each set's own state lives on its bitmap volume.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::engine::error::{Error, Kind, Result};
use crate::engine::{
    Direction, GroupIntent, GroupRecord, OverflowRecord, SetRecord, UnrecordedOffline,
};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    sets: Vec<SetEntry>,
    /// Overflow volumes (the sets attached to one say so in their bitmap volumes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    overflows: Vec<OverflowEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<GroupEntry>,
    /// A group operation in progress: rolled forward at start (see `engine::groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_op: Option<GroupOpEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupOpEntry {
    group: String,
    /// update|copy shadow|master
    op: String,
    seq: u64,
    members: Vec<String>,
}

impl GroupOpEntry {
    fn of(i: &GroupIntent) -> GroupOpEntry {
        GroupOpEntry {
            group: i.group.clone(),
            op: format!(
                "{} {}",
                if i.full { "copy" } else { "update" },
                i.dir.word()
            ),
            seq: i.seq,
            members: i.members.clone(),
        }
    }

    fn intent(&self) -> Option<GroupIntent> {
        let (verb, dir) = self.op.split_once(' ')?;
        Some(GroupIntent {
            group: self.group.clone(),
            dir: match dir {
                "shadow" => Direction::Shadow,
                "master" => Direction::Master,
                _ => return None,
            },
            full: match verb {
                "copy" => true,
                "update" => false,
                _ => return None,
            },
            seq: self.seq,
            members: self.members.clone(),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverflowEntry {
    name: String,
    volume: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetEntry {
    name: String,
    master: String,
    shadow: String,
    bitmap: String,
    /// The bitmap volume's generation at this save (an older bitmap volume is refused).
    #[serde(default, skip_serializing_if = "is_zero")]
    generation: u64,
    /// An offline state the bitmap volume could not record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offline: Option<OfflineEntry>,
    /// Suspended by the administrator.
    #[serde(default, skip_serializing_if = "is_false")]
    suspended: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineEntry {
    flags: u32,
    reason: String,
    seq: u64,
}

/// Why the registry cannot be read at start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot create state dir {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is not a valid iifs registry: {}",
        path.display(),
        crate::engine::header::one_line(&source.to_string())
    )]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub struct Registry {
    dir: PathBuf,
    /// The records read at start.
    initial: Vec<SetRecord>,
    /// Records of sets that could not be restored, with the reason: kept in the file until
    /// disabled, shown in the control tree meanwhile.
    stale: Mutex<Vec<(SetRecord, String)>>,
    /// The overflow volumes, as the next save writes them.
    overflows: Mutex<Vec<OverflowRecord>>,
    /// The groups, as the next save writes them.
    groups: Mutex<Vec<GroupRecord>>,
    /// A group operation in progress, as the next save writes it.
    group_op: Mutex<Option<GroupIntent>>,
}

impl Registry {
    pub const FILE: &'static str = "iifs.yaml";

    /// Open (creating the state dir if needed) and read the registry.
    pub fn open(dir: &Path) -> std::result::Result<Registry, RegistryError> {
        private_dir(dir).map_err(|source| RegistryError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(Self::FILE);
        let file: RegistryFile = match fs::read_to_string(&path) {
            Ok(text) => serde_norway::from_str(&text).map_err(|source| RegistryError::Invalid {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        let overflows = file
            .overflows
            .into_iter()
            .map(|o| OverflowRecord {
                name: o.name,
                path: o.volume,
            })
            .collect();
        let groups = file
            .groups
            .iter()
            .map(|g| GroupRecord {
                name: g.name.clone(),
                members: g.members.clone(),
            })
            .collect();
        let group_op = file.group_op.as_ref().and_then(GroupOpEntry::intent);
        let initial = file
            .sets
            .into_iter()
            .map(|s| SetRecord {
                name: s.name,
                master: s.master,
                shadow: s.shadow,
                bitmap: s.bitmap,
                generation: s.generation,
                offline: s.offline.map(|o| UnrecordedOffline {
                    flags: o.flags,
                    reason: o.reason,
                    seq: o.seq,
                }),
                suspended: s.suspended,
            })
            .collect();
        Ok(Registry {
            dir: dir.to_path_buf(),
            initial,
            stale: Mutex::new(Vec::new()),
            overflows: Mutex::new(overflows),
            groups: Mutex::new(groups),
            group_op: Mutex::new(group_op),
        })
    }

    pub fn records(&self) -> Vec<SetRecord> {
        self.initial.clone()
    }

    /// The overflow volumes recorded (read at start, then as last set).
    pub fn overflows(&self) -> Vec<OverflowRecord> {
        lock(&self.overflows).clone()
    }

    /// The groups recorded (read at start, then as last set).
    pub fn groups(&self) -> Vec<GroupRecord> {
        lock(&self.groups).clone()
    }

    /// The groups the next save writes.
    pub fn set_groups(&self, groups: Vec<GroupRecord>) {
        *lock(&self.groups) = groups;
    }

    /// The group operation recorded as in progress (read at start, then as last set).
    pub fn group_op(&self) -> Option<GroupIntent> {
        lock(&self.group_op).clone()
    }

    /// The group operation the next save records as in progress (None: none).
    pub fn set_group_op(&self, op: Option<GroupIntent>) {
        *lock(&self.group_op) = op;
    }

    /// The overflow volumes the next save writes.
    pub fn set_overflows(&self, overflows: Vec<OverflowRecord>) {
        *lock(&self.overflows) = overflows;
    }

    fn stale(&self) -> MutexGuard<'_, Vec<(SetRecord, String)>> {
        lock(&self.stale)
    }

    /// Keep a record whose set could not be restored, and why.
    pub fn keep_stale(&self, rec: SetRecord, reason: String) {
        self.stale().push((rec, reason));
    }

    /// The records of sets that could not be restored, with the reason.
    pub fn stale_sets(&self) -> Vec<(SetRecord, String)> {
        self.stale().clone()
    }

    /// The record and reason of the set named `name`, if it could not be restored.
    pub fn stale_set(&self, name: &str) -> Option<(SetRecord, String)> {
        self.stale().iter().find(|(r, _)| r.name == name).cloned()
    }

    /// Drop a stale record (the administrator disabled it); false if there is none by that name.
    pub fn forget(&self, name: &str) -> bool {
        let mut stale = self.stale();
        let before = stale.len();
        stale.retain(|(r, _)| r.name != name);
        stale.len() != before
    }

    /// Write the registry: the live sets plus the stale records, atomically and durably.
    pub fn save(&self, live: &[SetRecord]) -> Result<()> {
        let stale = self.stale();
        let file = RegistryFile {
            sets: live
                .iter()
                .chain(
                    stale
                        .iter()
                        .map(|(s, _)| s)
                        .filter(|s| !live.iter().any(|l| l.name == s.name)),
                )
                .map(|r| SetEntry {
                    name: r.name.clone(),
                    master: r.master.clone(),
                    shadow: r.shadow.clone(),
                    bitmap: r.bitmap.clone(),
                    generation: r.generation,
                    offline: r.offline.as_ref().map(|o| OfflineEntry {
                        flags: o.flags,
                        reason: o.reason.clone(),
                        seq: o.seq,
                    }),
                    suspended: r.suspended,
                })
                .collect(),
            overflows: self
                .overflows()
                .into_iter()
                .map(|o| OverflowEntry {
                    name: o.name,
                    volume: o.path,
                })
                .collect(),
            groups: self
                .groups()
                .into_iter()
                .map(|g| GroupEntry {
                    name: g.name,
                    members: g.members,
                })
                .collect(),
            group_op: self.group_op().as_ref().map(GroupOpEntry::of),
        };
        let text = serde_norway::to_string(&file)
            .map_err(|e| Error::new(Kind::Io, format!("cannot encode the registry: {e}")))?;
        self.write_atomically(&text)
            .map_err(|e| self.write_error(&e, ""))
    }

    /// Whether the registry can be written, without changing it: the temporary file a save
    /// writes is made, synced and removed. Lets a command refuse before it changes anything.
    pub fn check_writable(&self) -> Result<()> {
        self.write_temp("").and_then(fs::remove_file).map_err(|e| {
            let _ = fs::remove_file(self.temp_path());
            self.write_error(&e, "; free space or fix the state directory first")
        })
    }

    fn write_error(&self, e: &std::io::Error, advice: &str) -> Error {
        Error::new(
            Kind::Io,
            format!(
                "cannot write the registry in {}: {e}{advice}",
                self.dir.display()
            ),
        )
        .with_source_said(crate::engine::error::copy_of(e))
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.tmp", Self::FILE))
    }

    /// The registry text written to the temporary file and made durable; returns its path.
    fn write_temp(&self, text: &str) -> std::io::Result<PathBuf> {
        let tmp = self.temp_path();
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        // A temp file left by an older daemon keeps its mode: the registry is the daemon's.
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(b"# iifs set registry: rewritten by the daemon on every change\n")?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(tmp)
    }

    fn write_atomically(&self, text: &str) -> std::io::Result<()> {
        let tmp = self.write_temp(text)?;
        fs::rename(&tmp, self.dir.join(Self::FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

/// Make the state dir (and its missing parents) readable by the daemon's user alone.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> SetRecord {
        SetRecord {
            name: name.into(),
            master: "/m".into(),
            shadow: format!("/s-{name}"),
            bitmap: format!("/b-{name}"),
            ..SetRecord::default()
        }
    }

    #[test]
    fn saves_and_reads_back_keeping_stale_records() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        assert!(r.records().is_empty());
        r.keep_stale(rec("old"), "gone".into());
        r.save(&[rec("a"), rec("b")]).unwrap();
        let back = Registry::open(dir.path()).unwrap().records();
        assert_eq!(back, vec![rec("a"), rec("b"), rec("old")]);
        assert!(r.forget("old"));
        r.save(&[rec("a")]).unwrap();
        assert_eq!(
            Registry::open(dir.path()).unwrap().records(),
            vec![rec("a")]
        );
    }

    #[test]
    fn generation_and_unrecorded_offline_state_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let mut a = rec("a");
        a.generation = 7;
        a.offline = Some(UnrecordedOffline {
            flags: 0x41,
            reason: "write of /b-a: EIO".into(),
            seq: 9,
        });
        r.save(&[a.clone(), rec("b")]).unwrap();
        assert_eq!(
            Registry::open(dir.path()).unwrap().records(),
            vec![a, rec("b")]
        );
        let text = fs::read_to_string(dir.path().join(Registry::FILE)).unwrap();
        assert_eq!(text.matches("generation").count(), 1, "{text}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(Registry::FILE), "sets: []\nbogus: 1\n").unwrap();
        let err = Registry::open(dir.path()).err().unwrap();
        assert!(matches!(err, RegistryError::Invalid { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
