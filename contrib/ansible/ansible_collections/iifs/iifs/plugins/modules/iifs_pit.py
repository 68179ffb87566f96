#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: iifs_pit
short_description: Take a point in time of an iifs set or group, or hold and release its writes
description:
  - C(update) and C(copy) run C(iiadm -u) and C(iiadm -c) on a set, or on a group (every
    member at one point in time). They always report C(changed), since each takes a new
    point in time (towards the shadow) or rewrites the master (towards the master). In check
    mode nothing is run and the task reports that it would change.
  - C(hold) makes new writes to the masters of the set (or of every member of the group) wait
    until C(release) or until I(lease) seconds have passed (C(iiadm --hold)). It returns once
    the writes in flight have ended. One instant across hosts is a C(hold) of the group on
    every host, then C(update) on every host, then C(release) on every host; see the playbook
    C(iifs.iifs.cross_host_instant).
  - C(release) ends a hold; it reports C(changed) only when a hold was in force.
  - C(wait) only waits, up to I(timeout), until no copy runs (the first copy of a new
    independent set, for example); it changes nothing.
version_added: 0.1.0
author:
  - iifs maintainers (!UNKNOWN)
extends_documentation_fragment:
  - iifs.iifs.iifs
attributes:
  check_mode:
    support: full
    description: Nothing is run; C(update), C(copy) and C(hold) report that they would change.
  diff_mode:
    support: none
    description: A point in time has no before and after to show; see the returned C(previous_pit_time) and C(pit_time).
options:
  set:
    description: The set to act on. Exactly one of I(set) and I(group).
    type: str
  group:
    description: The group to act on, every member at once. Exactly one of I(set) and I(group).
    type: str
  action:
    description:
      - C(update) copies only the chunks that differ, C(copy) every chunk, in the I(direction).
        C(update) towards the shadow is the usual new point in time.
      - C(hold) and C(release) hold and release the writes to the masters.
      - C(wait) waits for the copy in progress to end.
    type: str
    choices: [update, copy, hold, release, wait]
    default: update
  direction:
    description:
      - C(shadow) (a new image of the master) or C(master) (restore the master from the
        shadow, which overwrites the master without asking).
    type: str
    choices: [shadow, master]
    default: shadow
  force:
    description:
      - Update or copy even while the target file is open through the mount (a mounted file
        system, a loop device), which the daemon otherwise refuses.
    type: bool
    default: false
  wait:
    description:
      - After C(update) or C(copy), wait until the background copy has ended.
      - A dependent set's C(update) towards the shadow copies nothing and ends at once.
    type: bool
    default: false
  timeout:
    description:
      - With I(wait) or I(action=wait), how many seconds to wait; the task fails after it
        (the copy goes on).
    type: int
    default: 600
  lease:
    description:
      - With C(hold), the hold's lease in seconds (1 to 3600); the writes go on after it even
        without a C(release), so a forgotten hold cannot stop an application for good.
      - Required with I(action=hold).
    type: int
  require_held:
    description:
      - With C(update) or C(copy), refuse unless every set acted on is held now (a C(hold)
        earlier in the play), and fail if a hold's lease ended before the command did; the new
        point in time would then not be the held instant shared with the other hosts.
    type: bool
    default: false
notes:
  - On an iiadm without C(--hold), C(hold) and C(release) write C(hold SECONDS) and C(release)
    to the C(ctl) file of the set or group in the mount directly.
'''

EXAMPLES = r'''
- name: New point in time of set db, and wait for the copy
  iifs.iifs.iifs_pit:
    set: db
    wait: true
    timeout: 300

- name: New point in time of every set of group app at one instant
  iifs.iifs.iifs_pit:
    group: app

- name: Restore the masters of group app from their shadows
  iifs.iifs.iifs_pit:
    group: app
    action: update
    direction: master
    wait: true

- name: Wait (at most 10 minutes) for the first copy of a new independent set
  iifs.iifs.iifs_pit:
    set: big
    action: wait
    timeout: 600

- name: Hold the writes of group app for at most 10 seconds
  iifs.iifs.iifs_pit:
    group: app
    action: hold
    lease: 10

- name: Release them
  iifs.iifs.iifs_pit:
    group: app
    action: release
'''

RETURN = r'''
sets:
  description: The status of every set acted on (the set, or the group's members), after the task.
  returned: always
  type: dict
  sample:
    db: {name: db, state: idle, pit_time: 1796600149, hold_until: "-"}
pit_time:
  description: Each set's point in time after the task (seconds since the epoch).
  returned: always
  type: dict
  sample: {db: 1796600149}
previous_pit_time:
  description: Each set's point in time before the task.
  returned: always
  type: dict
  sample: {db: 1796600100}
hold_until:
  description:
    - Each set's end of hold after the task (milliseconds since the epoch), null when none.
  returned: always
  type: dict
  sample: {db: 1796600233631}
commands:
  description: The commands run (in check mode, that would have been run).
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/bin/iiadm -g app -u s"]
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iifs.iifs.plugins.module_utils.iifs import (
    COMMON_ARGS, COPYING_STATES, Iiadm, none_if_dash)


def hold_ms(status):
    """A set's hold_until as a number, None when no hold is in force."""
    value = none_if_dash((status or {}).get('hold_until'))
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class Target(object):
    """The set, or the group's members, the task acts on."""

    def __init__(self, iiadm, set_name, group):
        self.iiadm = iiadm
        self.set = set_name
        self.group = group
        self.what = 'group %s' % group if group else 'set %s' % set_name

    def statuses(self):
        """Status of every set acted on, by name (fails when the set or group is missing)."""
        sets = self.iiadm.sets()
        if self.group:
            g = self.iiadm.group_status(self.group)
            if g is None:
                self.iiadm.fail('no group named %s' % self.group)
            return dict((m, sets.get(m)) for m in g['members'])
        if self.set not in sets:
            self.iiadm.fail('no set named %s' % self.set)
        return {self.set: sets[self.set]}

    def args(self, *words):
        """iiadm arguments acting on the target: `-g GROUP WORDS` or `WORDS SET`."""
        if self.group:
            return ['-g', self.group] + list(words)
        return list(words) + [self.set]

    def ctl(self):
        if self.group:
            return 'groups/%s/ctl' % self.group
        return 'sets/%s/ctl' % self.set


def wait(iiadm, target, timeout):
    """Wait until no copy of the target runs; fail when one ended badly."""
    def busy(statuses):
        return any((s or {}).get('state') in COPYING_STATES for s in statuses.values())
    done = iiadm.wait_idle(target.statuses, busy, target.what, timeout)
    bad = ['%s: %s (%s)' % (n, s.get('state'), s.get('last_error'))
           for n, s in sorted(done.items())
           if s and s.get('state') in ('aborted', 'offline', 'out of space')]
    if bad:
        iiadm.fail('%s: the copy did not finish: %s' % (target.what, '; '.join(bad)), sets=done)


def main():
    argument_spec = dict(
        set=dict(type='str'),
        group=dict(type='str'),
        action=dict(type='str', choices=['update', 'copy', 'hold', 'release', 'wait'],
                    default='update'),
        direction=dict(type='str', choices=['shadow', 'master'], default='shadow'),
        force=dict(type='bool', default=False),
        wait=dict(type='bool', default=False),
        timeout=dict(type='int', default=600),
        lease=dict(type='int'),
        require_held=dict(type='bool', default=False),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[('set', 'group')],
        required_one_of=[('set', 'group')],
        required_if=[('action', 'hold', ('lease',))],
    )
    p = module.params
    iiadm = Iiadm(module)
    target = Target(iiadm, p['set'], p['group'])
    action = p['action']
    check = module.check_mode
    before = target.statuses()
    result = dict(previous_pit_time=dict((n, (s or {}).get('pit_time')) for n, s in before.items()))

    if action == 'hold':
        if not 1 <= p['lease'] <= 3600:
            iiadm.fail('lease must be from 1 to 3600 seconds, not %s' % p['lease'])
        changed = True
        if iiadm.supports('--hold'):
            # iiadm's --hold takes SECONDS then the set: `--hold 5 db`, `-g app --hold 5`.
            args = (['-g', p['group'], '--hold', p['lease']] if p['group']
                    else ['--hold', p['lease'], p['set']])
            (iiadm.would if check else iiadm.run)(args)
        elif check:
            iiadm.commands.append('echo hold %s > MOUNT/%s' % (p['lease'], target.ctl()))
        else:
            iiadm.write_ctl(target.ctl(), 'hold %d' % p['lease'])
        msg = '%s %s for at most %s s' % (target.what, 'would be held' if check else 'held',
                                          p['lease'])
    elif action == 'wait':
        changed = False
        if not check:
            wait(iiadm, target, p['timeout'])
        msg = '%s: no copy runs' % target.what
    elif action == 'release':
        held = [n for n, s in before.items() if hold_ms(s) is not None]
        changed = bool(held)
        # Sent even when no hold shows: a release with none in force does nothing, and a
        # hold taken since the status was read is ended too.
        if iiadm.supports('--release'):
            (iiadm.would if check else iiadm.run)(target.args('--release'))
        elif check:
            iiadm.commands.append('echo release > MOUNT/%s' % target.ctl())
        else:
            iiadm.write_ctl(target.ctl(), 'release')
        msg = '%s %s' % (target.what, 'released' if held else 'was not held')
    else:
        changed = True
        # In check mode the hold of an earlier task was not taken either: nothing to check.
        if p['require_held'] and not check:
            now_ms = time.time() * 1000
            unheld = [n for n, s in before.items() if (hold_ms(s) or 0) <= now_ms]
            if unheld:
                iiadm.fail('%s: not held (%s): the point in time would not be the held instant; '
                           'hold it first (action=hold)' % (target.what, ', '.join(sorted(unheld))),
                           sets=before)
        flag = {'update': '-u', 'copy': '-c'}[action]
        words = [flag, {'shadow': 's', 'master': 'm'}[p['direction']]]
        if p['direction'] == 'master':
            words = ['-n'] + words
        if p['force']:
            words = ['--force'] + words
        args = target.args(*words)
        if check:
            iiadm.would(args)
        else:
            iiadm.run(args)
            ended_ms = time.time() * 1000
            if p['require_held']:
                after = target.statuses()
                lapsed = [n for n, s in after.items() if (hold_ms(s) or 0) < ended_ms]
                if lapsed:
                    iiadm.fail('%s: the hold of %s ended before the %s did: this point in time '
                               'is not the held instant; use a longer lease'
                               % (target.what, ', '.join(sorted(lapsed)), action), sets=after)
            if p['wait']:
                wait(iiadm, target, p['timeout'])
        msg = '%s: %s %s%s' % (target.what, action, p['direction'],
                               ' (check mode: not run)' if check else '')

    after = before if check else target.statuses()
    result.update(
        changed=changed,
        msg=msg,
        commands=iiadm.commands,
        sets=after,
        pit_time=dict((n, (s or {}).get('pit_time')) for n, s in after.items()),
        hold_until=dict((n, hold_ms(s)) for n, s in after.items()),
    )
    module.exit_json(**result)


if __name__ == '__main__':
    main()
