#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: iifs_set
short_description: Manage an iifs point-in-time set
description:
  - Makes sure a point-in-time set (a master, a shadow and a bitmap volume) exists with the
    given volumes, or does not exist.
  - A set that exists with other volumes, another type, chunk size or durability is never
    disabled and enabled again behind your back (its point in time and its shadow would be
    lost); the module fails and says what differs. Remove it with I(state=absent) first if
    that is what you want.
  - Group membership and the attached overflow volume are brought to what is asked when the
    options are given, and left alone when they are not.
version_added: 0.1.0
author:
  - iifs maintainers (!UNKNOWN)
extends_documentation_fragment:
  - iifs.iifs.iifs
attributes:
  check_mode:
    support: full
    description: Reports what would change, and the commands it would run, without running them.
  diff_mode:
    support: full
    description: Shows the set's configuration before and after.
options:
  name:
    description: The set's name.
    type: str
    required: true
  state:
    description:
      - C(present) enables the set if it does not exist (C(iiadm -e)).
      - C(absent) disables it (C(iiadm -d)); its volumes are left where they are. The daemon
        refuses while a copy runs or a file of the set is open, and the task fails with its reason.
    type: str
    choices: [present, absent]
    default: present
  type:
    description:
      - C(ind) (independent, a full copy of the master) or C(dep) (dependent; a shadow smaller
        than the master makes a compact set).
      - Required with I(state=present).
    type: str
    choices: [ind, dep]
  master:
    description: Absolute path of the master volume (file or block device). Required with I(state=present).
    type: path
  shadow:
    description: Absolute path of the shadow volume. Required with I(state=present).
    type: path
  bitmap:
    description:
      - Absolute path of the bitmap volume. Required with I(state=present).
      - A missing bitmap file is made by the daemon in its existing directory.
    type: path
  chunk_size:
    description:
      - The chunk size in bytes (a power of two from 4096 to 1048576) for a new set.
      - Default, the daemon's. An existing set with another chunk size fails the task.
    type: int
  durability:
    description:
      - C(strict) or C(relaxed) for a new set. Default, the daemon's. An existing set with
        the other durability fails the task.
    type: str
    choices: [strict, relaxed]
  group:
    description:
      - The group the set belongs to (the group must exist, see M(iifs.iifs.iifs_group)).
        An empty string takes it out of any group. Left alone when not given.
      - A set in another group is taken out of it first.
    type: str
  overflow:
    description:
      - The overflow volume attached to this compact set (its name, or the path of its volume).
        An empty string detaches it. Left alone when not given.
      - Another overflow attached is detached first, which the daemon refuses while the set
        holds chunks in it.
    type: str
'''

EXAMPLES = r'''
- name: A dependent set for the database volume
  iifs.iifs.iifs_set:
    name: db
    type: dep
    master: /srv/vol/db.img
    shadow: /srv/vol/db-shadow.img
    bitmap: /srv/vol/db-bitmap.img
    group: app

- name: A compact set (small shadow) with an overflow volume, relaxed durability
  iifs.iifs.iifs_set:
    name: logs
    type: dep
    master: /srv/vol/logs.img
    shadow: /srv/vol/logs-shadow-small.img
    bitmap: /srv/vol/logs-bitmap.img
    chunk_size: 65536
    durability: relaxed
    overflow: pool

- name: Remove set db (its volumes stay)
  iifs.iifs.iifs_set:
    name: db
    state: absent
'''

RETURN = r'''
set:
  description: The set's status after the task (the keys of its status file), null when absent.
  returned: always
  type: dict
  sample:
    name: db
    type: dependent
    state: idle
    master: /srv/vol/db.img
    shadow: /srv/vol/db-shadow.img
    bitmap: /srv/vol/db-bitmap.img
    group: app
    pit_time: 1796600149
commands:
  description: The iiadm commands run (in check mode, that would have been run).
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/bin/iiadm -e dep /srv/vol/db.img /srv/vol/db-shadow.img /srv/vol/db-bitmap.img db"]
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iifs.iifs.plugins.module_utils.iifs import (
    COMMON_ARGS, Iiadm, same_volume, set_fields)


def overflow_name(iiadm, value):
    """The overflow option may name the volume by path: find its name."""
    if not value or '/' not in value:
        return value
    for name, ovf in iiadm.overflows().items():
        if same_volume(ovf.get('volume'), value):
            return name
    # Not an overflow yet (check mode before its iifs_overflow task ran): attach by path,
    # and the daemon says why when it is none.
    return value


def differences(p, before):
    """What the existing set has that the task asks otherwise (never changed by this module)."""
    diffs = []
    if before['type'] is not None and p['type'] != before['type']:
        diffs.append('type %s, not %s' % (before['type'], p['type']))
    for role in ('master', 'shadow', 'bitmap'):
        if before[role] is not None and not same_volume(p[role], before[role]):
            diffs.append('%s %s, not %s' % (role, before[role], p[role]))
    if p['chunk_size'] is not None and before['chunk_size'] is not None \
            and p['chunk_size'] != before['chunk_size']:
        diffs.append('chunk size %s, not %s' % (before['chunk_size'], p['chunk_size']))
    if p['durability'] is not None and before['durability'] is not None \
            and p['durability'] != before['durability']:
        diffs.append('durability %s, not %s' % (before['durability'], p['durability']))
    return diffs


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        type=dict(type='str', choices=['ind', 'dep']),
        master=dict(type='path'),
        shadow=dict(type='path'),
        bitmap=dict(type='path'),
        chunk_size=dict(type='int'),
        durability=dict(type='str', choices=['strict', 'relaxed']),
        group=dict(type='str'),
        overflow=dict(type='str'),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[('state', 'present', ('type', 'master', 'shadow', 'bitmap'))],
    )
    p = module.params
    name = p['name']
    iiadm = Iiadm(module)
    current = iiadm.set_status(name)
    before = set_fields(current)
    run = not module.check_mode

    if p['state'] == 'absent':
        if current is None:
            module.exit_json(changed=False, set=None, commands=[], diff=dict(before={}, after={}))
        if run:
            iiadm.run(['-d', name])
        else:
            iiadm.would(['-d', name])
        module.exit_json(changed=True, set=None, commands=iiadm.commands,
                         diff=dict(before=before, after={}))

    for role in ('master', 'shadow', 'bitmap'):
        if not os.path.isabs(p[role]):
            module.fail_json(msg='%s must be an absolute path, not %s' % (role, p[role]))
    want_overflow = overflow_name(iiadm, p['overflow'])

    if current is None:
        args = ['-e', p['type'], p['master'], p['shadow'], p['bitmap'], name]
        if p['chunk_size'] is not None:
            args += ['--chunk-size', p['chunk_size']]
        if p['durability'] is not None:
            args += ['--durability', p['durability']]
        if run:
            iiadm.run(args)
        else:
            iiadm.would(args)
        after = dict(name=name, type=p['type'], master=p['master'], shadow=p['shadow'],
                     bitmap=p['bitmap'], chunk_size=p['chunk_size'],
                     durability=p['durability'], group=None, overflow=None)
    else:
        diffs = differences(p, before)
        if diffs:
            module.fail_json(
                msg='set %s exists with %s; iifs_set does not disable and enable a set again '
                    '(its point in time would be lost): remove it with state=absent first if '
                    'that is what you want' % (name, '; '.join(diffs)),
                set=current, commands=[])
        after = dict(before)

    # Overflow before group: attach is what a compact set needs to take writes, and a
    # group's member is otherwise the same set.
    if want_overflow is not None and (after['overflow'] or '') != want_overflow:
        if after['overflow']:
            (iiadm.run if run else iiadm.would)(['-D', name])
        if want_overflow:
            (iiadm.run if run else iiadm.would)(['-A', name, want_overflow])
        after['overflow'] = want_overflow or None
    if p['group'] is not None and (after['group'] or '') != p['group']:
        if after['group']:
            (iiadm.run if run else iiadm.would)(['-B', name])
        if p['group']:
            (iiadm.run if run else iiadm.would)(['-M', name, p['group']])
        after['group'] = p['group'] or None

    changed = bool(iiadm.commands)
    status = current
    if run and changed:
        status = iiadm.set_status(name)
        after = set_fields(status)
    module.exit_json(changed=changed, set=status, commands=iiadm.commands,
                     diff=dict(before=before, after=after))


if __name__ == '__main__':
    main()
