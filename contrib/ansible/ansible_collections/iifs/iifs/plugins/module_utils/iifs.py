# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)
"""Shared code of the iifs.iifs modules: run the local iiadm, read its JSON, find the mount.

Every module drives the iiadm of the managed host, never the control tree by hand (except
for the hold/release fallback below), so a module does exactly what an administrator's
iiadm command would do, and a refusal reaches the user as the daemon's own sentence.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import time

# The options every module takes (see plugins/doc_fragments/iifs.py).
COMMON_ARGS = dict(
    mount=dict(type='path'),
    executable=dict(type='path'),
)

# The file system type iifs mounts carry in /proc/self/mounts (src/mounts.rs FSTYPE).
FSTYPE = 'fuse.iifs'

# Set states in which a copy is still running (README "Status").
COPYING_STATES = ('copying', 'updating')


def sentence(stderr, stdout=''):
    """The one-line reason iiadm printed (its last non-empty stderr line, without the
    'iiadm: ' prefix), or stdout's when stderr is empty."""
    for text in (stderr, stdout):
        lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
        if lines:
            last = lines[-1]
            if last.startswith('iiadm: '):
                last = last[len('iiadm: '):]
            return last
    return 'iiadm failed without saying why'


def _unescape_mount_field(field):
    """/proc/self/mounts escapes space, tab, newline and backslash as octal (\\040 ...)."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == '\\' and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return ''.join(out)


def iifs_mounts(text):
    """The mountpoints of type fuse.iifs in a /proc/self/mounts text."""
    found = []
    for line in text.splitlines():
        fields = line.split(' ')
        if len(fields) >= 3 and fields[2] == FSTYPE:
            found.append(_unescape_mount_field(fields[1]))
    return found


def set_fields(status):
    """The configuration of a set as the modules compare and diff it (status JSON -> dict)."""
    if status is None:
        return {}
    kind = status.get('type')
    return dict(
        name=status.get('name'),
        type={'independent': 'ind', 'dependent': 'dep', 'compact': 'dep'}.get(kind, kind),
        master=status.get('master'),
        shadow=status.get('shadow'),
        bitmap=status.get('bitmap'),
        chunk_size=status.get('chunk_size'),
        durability=status.get('durability'),
        group=none_if_dash(status.get('group')),
        overflow=none_if_dash(status.get('overflow')),
    )


def same_volume(a, b):
    """Whether two paths name the same volume: the same path, or the same file (a link)."""
    if a is None or b is None:
        return a == b
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino, sa.st_rdev) == (sb.st_dev, sb.st_ino, sb.st_rdev)


def none_if_dash(value):
    """Status files say '-' for 'none'; modules return null."""
    return None if value in (None, '-', '') else value


class Iiadm(object):
    """The local iiadm, run for one module invocation."""

    def __init__(self, module):
        self.module = module
        self.commands = []
        # Whether a command that changes the host has run: a task that fails after one did
        # (a set enabled, then its group refused) still reports changed.
        self.changed = False
        path = module.params.get('executable')
        if path:
            if not os.access(path, os.X_OK):
                module.fail_json(msg='iiadm executable %s is missing or not executable' % path)
            self.path = path
        else:
            # Root's PATH over ssh may lack /usr/local/bin (non-login shells): look there too.
            self.path = module.get_bin_path(
                'iiadm', required=True,
                opt_dirs=['/usr/local/bin', '/usr/local/sbin', '/usr/bin', '/usr/sbin'])
        self.mount_option = module.params.get('mount')
        self._help = None

    def argv(self, args):
        argv = [self.path]
        if self.mount_option:
            argv += ['--mount', self.mount_option]
        return argv + [str(a) for a in args]

    def run(self, args, record=True, fail=True):
        """Run iiadm ARGS; on failure the module fails with the daemon's sentence.

        Returns (rc, stdout, stderr). `record` lists the command in the module's result
        (`commands`): the commands that changed something, or would have in check mode."""
        argv = self.argv(args)
        if record:
            self.commands.append(' '.join(argv))
        rc, out, err = self.module.run_command(argv, environ_update=dict(LC_ALL='C'))
        if rc != 0 and fail:
            self.fail(sentence(err, out), argv, rc, out, err)
        if rc == 0 and record:
            self.changed = True
        return rc, out, err

    def would(self, args):
        """Record a command that check mode does not run."""
        self.commands.append(' '.join(self.argv(args)))

    def fail(self, msg, argv=None, rc=None, out=None, err=None, **extra):
        result = dict(msg=msg, commands=self.commands, changed=self.changed)
        if argv is not None:
            result.update(cmd=' '.join(argv), rc=rc, stdout=out, stderr=err)
        result.update(extra)
        self.module.fail_json(**result)

    def json(self, args):
        """Run a read-only iiadm command with --json and parse its output."""
        argv_args = list(args) + ['--json']
        rc, out, err = self.run(argv_args, record=False)
        try:
            return json.loads(out)
        except ValueError as e:
            self.fail('iiadm printed output that is not JSON (%s): %s' % (e, out[:200]),
                      self.argv(argv_args), rc, out, err)
        return None

    # --- the state of the host -----------------------------------------------------------

    def sets(self):
        """Every set's status (the status file's keys), by name."""
        return dict((s['name'], s) for s in self.json(['-i', 'all']))

    def groups(self):
        """Every group's status (`members` a list of names), by name."""
        return dict((g['name'], g) for g in self.json(['-G']))

    def overflows(self):
        """Every overflow volume's status (`sets` a dict of set -> chunks), by name."""
        return dict((o['name'], o) for o in self.json(['-L']))

    def set_status(self, name):
        return self.sets().get(name)

    def group_status(self, name):
        return self.groups().get(name)

    def supports(self, option):
        """Whether this iiadm knows a long option (checked once in its --help)."""
        if self._help is None:
            rc, out, err = self.module.run_command([self.path, '--help'],
                                                   environ_update=dict(LC_ALL='C'))
            self._help = out if rc == 0 else ''
        return option in self._help

    # --- the mount and its ctl files (fallback for words iiadm lacks) ----------------------

    def mountpoint(self):
        """The mount iiadm would talk to: --mount, IIFS_MOUNT, or the only iifs mount."""
        if self.mount_option:
            return self.mount_option
        env = os.environ.get('IIFS_MOUNT')
        if env:
            return env
        try:
            with open('/proc/self/mounts') as f:
                found = iifs_mounts(f.read())
        except (IOError, OSError) as e:
            self.fail('cannot read /proc/self/mounts: %s' % e)
        if len(found) == 1:
            return found[0]
        if not found:
            self.fail("no iifs mount found: start one with 'iifs none /mnt/ii', "
                      "or name it with the mount option")
        self.fail('several iifs mounts (%s): choose one with the mount option' % ', '.join(found))
        return None

    def write_ctl(self, rel, words):
        """Write one command to MOUNT/REL (a ctl file) with a single write; on refusal read
        the daemon's reply back on the same open file and fail with it."""
        path = os.path.join(self.mountpoint(), rel)
        self.commands.append('echo %s > %s' % (words, path))
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self.fail('%s does not exist (no such set or group)' % path)
            self.fail('cannot open %s: %s' % (path, e))
        try:
            try:
                os.write(fd, (words + '\n').encode())
            except OSError as e:
                try:
                    reply = os.read(fd, 65536).decode('utf-8', 'replace')
                except OSError:
                    reply = ''
                reply = reply.strip()
                if reply.startswith('error: '):
                    reply = reply[len('error: '):]
                self.fail(reply or '%s: %s' % (words, os.strerror(e.errno)))
            self.changed = True
        finally:
            os.close(fd)

    # --- waiting ---------------------------------------------------------------------------

    def wait_idle(self, read_status, busy, what, timeout):
        """Poll READ_STATUS() (a set's or a group's status) until BUSY(status) is false;
        fail on timeout (the copy goes on). Polling rather than `iiadm -w` keeps the
        timeout exact and leaves no waiting process behind."""
        deadline = time.time() + timeout
        while True:
            st = read_status()
            if st is None:
                self.fail('%s disappeared while waiting for its copy' % what)
            if not busy(st):
                return st
            if time.time() >= deadline:
                self.fail('%s: timed out after %s s waiting for the copy (%s%% done); '
                          'the copy goes on' % (what, timeout, st.get('progress')), status=st)
            time.sleep(0.2)
