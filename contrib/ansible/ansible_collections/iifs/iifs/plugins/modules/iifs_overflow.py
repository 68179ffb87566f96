#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: iifs_overflow
short_description: Manage an iifs overflow volume for compact sets
description:
  - Makes sure an overflow volume is known to the daemon under a name, or is not.
  - C(present) on a volume that is not an overflow yet initialises it (C(iiadm -O VOLUME NAME)),
    which writes a fresh overflow header on it. An overflow of that name on another volume, or
    with another chunk size, fails the task; it is never initialised again.
  - Attach it to a compact set with the I(overflow) option of M(iifs.iifs.iifs_set).
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
    description: Shows the overflow's name, volume and chunk size before and after.
options:
  name:
    description: The overflow volume's name.
    type: str
    required: true
  state:
    description:
      - C(present) initialises the volume as overflow I(name) if no overflow has that name.
      - C(absent) deletes it (C(iiadm -Z)); the daemon refuses while a set has it attached,
        and the task fails with its reason. The volume itself stays.
    type: str
    choices: [present, absent]
    default: present
  volume:
    description:
      - Absolute path of the volume (a file or block device of at least two chunks).
        Required with I(state=present).
    type: path
  chunk_size:
    description:
      - Its chunk size in bytes, that of the sets it will serve. Default, the daemon's.
    type: int
'''

EXAMPLES = r'''
- name: An overflow volume named pool
  iifs.iifs.iifs_overflow:
    name: pool
    volume: /srv/vol/overflow.img

- name: Delete overflow pool (no set may have it attached)
  iifs.iifs.iifs_overflow:
    name: pool
    state: absent
'''

RETURN = r'''
overflow:
  description: The overflow's status after the task (as C(iiadm -Q NAME --json)), null when absent.
  returned: always
  type: dict
  sample:
    name: pool
    volume: /srv/vol/overflow.img
    size: 4194304
    chunk_size: 65536
    chunks_total: 63
    chunks_used: 0
    chunks_free: 63
    sets: {}
commands:
  description: The iiadm commands run (in check mode, that would have been run).
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/bin/iiadm -O /srv/vol/overflow.img pool"]
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iifs.iifs.plugins.module_utils.iifs import (
    COMMON_ARGS, Iiadm, same_volume)


def fields(status):
    if not status:
        return {}
    return dict(name=status.get('name'), volume=status.get('volume'),
                chunk_size=status.get('chunk_size'))


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        volume=dict(type='path'),
        chunk_size=dict(type='int'),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[('state', 'present', ('volume',))],
    )
    p = module.params
    name = p['name']
    iiadm = Iiadm(module)
    act = iiadm.would if module.check_mode else iiadm.run
    current = iiadm.overflows().get(name)
    before = fields(current)

    if p['state'] == 'absent':
        if current is None:
            module.exit_json(changed=False, overflow=None, commands=[],
                             diff=dict(before={}, after={}))
        act(['-Z', name])
        module.exit_json(changed=True, overflow=None, commands=iiadm.commands,
                         diff=dict(before=before, after={}))

    if not os.path.isabs(p['volume']):
        module.fail_json(msg='volume must be an absolute path, not %s' % p['volume'])
    if current is not None:
        diffs = []
        if not same_volume(current['volume'], p['volume']):
            diffs.append('volume %s, not %s' % (current['volume'], p['volume']))
        if p['chunk_size'] is not None and p['chunk_size'] != current.get('chunk_size'):
            diffs.append('chunk size %s, not %s' % (current.get('chunk_size'), p['chunk_size']))
        if diffs:
            module.fail_json(
                msg='overflow %s exists with %s; iifs_overflow does not initialise an overflow '
                    'again: remove it with state=absent first if that is what you want'
                    % (name, '; '.join(diffs)),
                overflow=current, commands=[])
        module.exit_json(changed=False, overflow=current, commands=[],
                         diff=dict(before=before, after=before))

    args = ['-O', p['volume'], name]
    if p['chunk_size'] is not None:
        args += ['--chunk-size', p['chunk_size']]
    act(args)
    status = None
    after = dict(name=name, volume=p['volume'], chunk_size=p['chunk_size'])
    if not module.check_mode:
        status = iiadm.overflows().get(name)
        after = fields(status)
    module.exit_json(changed=True, overflow=status, commands=iiadm.commands,
                     diff=dict(before=before, after=after))


if __name__ == '__main__':
    main()
