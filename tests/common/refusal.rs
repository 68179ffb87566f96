//! Refused commands: the errno of the write(2), the `error: SENTENCE` reply read back on the
//! same open file, and a snapshot of everything the refusal must leave as it was.

use super::Mount;

/// `cmd` written to ctl file `rel` of `m` must fail with `errno`; returns the reply read back.
#[track_caller]
pub fn refusal(m: &Mount, rel: &str, cmd: &str, errno: i32) -> String {
    let what = format!("'{cmd}' on {rel}");
    match m.ctl(rel, cmd) {
        Ok(()) => panic!(
            "{what} succeeded; expected errno {errno}\nlog:\n{}",
            m.log()
        ),
        Err((e, reply)) => {
            assert_eq!(
                e,
                errno,
                "{what}: errno {e} ({}), expected {errno} ({}); reply {reply:?}",
                std::io::Error::from_raw_os_error(e),
                std::io::Error::from_raw_os_error(errno)
            );
            reply
        }
    }
}

/// The reply starts `error: ` and names each of `mentions`.
#[track_caller]
pub fn assert_names(reply: &str, mentions: &[&str], what: &str) {
    assert!(
        reply.starts_with("error: "),
        "{what}: reply {reply:?} does not start with 'error: '"
    );
    for w in mentions {
        assert!(
            reply.contains(w),
            "{what}: reply {reply:?} does not mention {w:?}"
        );
    }
}

/// The reply starts `error:` and says why in a sentence: at least `words` words, with letters.
#[track_caller]
pub fn assert_says_why(reply: &str, words: usize, what: &str) {
    assert!(reply.starts_with("error:"), "{what}: reply {reply:?}");
    let sentence = reply["error:".len()..].trim();
    assert!(
        sentence.split_whitespace().count() >= words && sentence.chars().any(char::is_alphabetic),
        "{what}: the reply should say why in a sentence: {reply:?}"
    );
}

/// How long the sentence of a reply must at least be.
#[derive(Clone, Copy, Debug)]
pub enum Sentence {
    Words(usize),
    Chars(usize),
}

/// The reply must be one line `error: SENTENCE\n` naming each of `mentions`.
#[track_caller]
pub fn assert_reply(reply: &str, mentions: &[&str], what: &str, sentence: Sentence) {
    assert_names(reply, mentions, what);
    assert!(
        reply.ends_with('\n'),
        "{what}: reply {reply:?} does not end with a newline"
    );
    let body = reply["error: ".len()..].trim_end();
    assert!(
        !body.contains('\n'),
        "{what}: reply {reply:?} is more than one line"
    );
    let long_enough = match sentence {
        Sentence::Words(n) => body.split_whitespace().count() >= n,
        Sentence::Chars(n) => body.len() >= n,
    };
    assert!(long_enough, "{what}: reply {reply:?} is not a sentence");
}

/// Everything a refused command must leave as it was: named pieces (control files, lists,
/// volume files), each its bytes, or None where it does not exist.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot(Vec<(String, Option<Vec<u8>>)>);

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// A piece: its bytes, or None where it does not exist.
    pub fn add(&mut self, name: impl Into<String>, value: Option<Vec<u8>>) -> &mut Snapshot {
        self.0.push((name.into(), value));
        self
    }

    /// A piece that is text.
    pub fn text(&mut self, name: impl Into<String>, text: impl Into<String>) -> &mut Snapshot {
        self.add(name, Some(text.into().into_bytes()))
    }

    /// A file of the control tree of `m`, which must read.
    pub fn tree_file(&mut self, m: &Mount, name: impl Into<String>, rel: &str) -> &mut Snapshot {
        let text =
            std::fs::read_to_string(m.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        self.text(name, text)
    }

    /// The set list of `m` and the status text of every set (`of`: which daemon, for the
    /// messages; "" for one).
    pub fn sets(&mut self, m: &Mount, of: &str) -> &mut Snapshot {
        let names = m.set_names();
        self.text(format!("the set list{of}"), names.join("\n"));
        for s in names {
            self.tree_file(
                m,
                format!("the status of set {s}{of}"),
                &format!("sets/{s}/status"),
            );
        }
        self
    }

    /// Files outside the mount (volume files): their bytes, or None where they do not exist.
    pub fn files(&mut self, files: &[&str]) -> &mut Snapshot {
        for f in files {
            self.add(*f, std::fs::read(f).ok());
        }
        self
    }

    /// `after` holds every piece as it was, piece by piece; a difference names the piece.
    #[track_caller]
    pub fn assert_unchanged(&self, after: &Snapshot, what: &str) {
        for ((name, b), (other, a)) in self.0.iter().zip(&after.0) {
            assert_eq!(name, other, "{what}: what there is changed");
            match (b, a) {
                (None, None) => {}
                (None, Some(_)) => panic!("{what}: {name} was made"),
                (Some(_), None) => panic!("{what}: {name} was removed"),
                (Some(b), Some(a)) if b == a => {}
                (Some(b), Some(a)) => match (std::str::from_utf8(b), std::str::from_utf8(a)) {
                    (Ok(b), Ok(a))
                        if b.len() + a.len() < 1 << 16
                            && !(b.contains('\0') || a.contains('\0')) =>
                    {
                        panic!("{what}: {name} changed:\n{b}\n---\n{a}")
                    }
                    _ => panic!(
                        "{what}: {name} changed (sizes {} and {}, first difference at byte {:?})",
                        b.len(),
                        a.len(),
                        b.iter().zip(a).position(|(x, y)| x != y)
                    ),
                },
            }
        }
        assert_eq!(self.0.len(), after.0.len(), "{what}: what there is changed");
    }
}

/// `cmd` on ctl file `rel` of `on` must be refused with `errno` and change nothing that
/// `snapshot` takes; returns the reply, for the caller to check.
#[track_caller]
pub fn refused_unchanged(
    on: &Mount,
    rel: &str,
    cmd: &str,
    errno: i32,
    snapshot: impl Fn() -> Snapshot,
) -> String {
    let before = snapshot();
    let reply = refusal(on, rel, cmd, errno);
    before.assert_unchanged(&snapshot(), &format!("'{cmd}' on {rel}"));
    reply
}
