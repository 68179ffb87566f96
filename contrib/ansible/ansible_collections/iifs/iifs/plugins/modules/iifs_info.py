#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: iifs_info
short_description: Read the state of an iifs host (sets, groups, overflow volumes)
description:
  - Reads the point-in-time sets, groups and overflow volumes of the iifs mount of the
    managed host with C(iiadm -i all --json), C(iiadm -G --json) and C(iiadm -L --json).
  - Changes nothing. Register the result to use it in later tasks.
version_added: 0.1.0
author:
  - iifs maintainers (!UNKNOWN)
extends_documentation_fragment:
  - iifs.iifs.iifs
options:
  gather:
    description:
      - What to read. Leave out what you do not need to save the C(iiadm) runs.
    type: list
    elements: str
    choices: [sets, groups, overflows]
    default: [sets, groups, overflows]
'''

EXAMPLES = r'''
- name: Read the iifs state of the host
  iifs.iifs.iifs_info:
  register: iifs

- name: Show when set db took its point in time
  ansible.builtin.debug:
    msg: "{{ iifs.sets.db.pit_time }}"

- name: Only the groups, of a given mount
  iifs.iifs.iifs_info:
    mount: /mnt/ii
    gather: [groups]
  register: iifs_groups
'''

RETURN = r'''
sets:
  description:
    - Every set, by name, with the keys of its status file (C(iiadm -i NAME --json)).
    - Counts are numbers; C(-) means none (for example C(group), C(overflow), C(hold_until)).
  returned: when sets are gathered
  type: dict
  sample:
    db:
      name: db
      type: dependent
      state: idle
      status: normal
      master: /srv/vol/master.img
      shadow: /srv/vol/shadow.img
      bitmap: /srv/vol/bitmap.img
      group: app
      overflow: "-"
      chunk_size: 65536
      durability: strict
      pit_time: 1796600149
      hold_until: "-"
groups:
  description:
    - Every group, by name, as C(iiadm -G --json) shows it; C(members) is a list of set names,
      C(member) a list of objects with C(name), C(status), C(progress) and C(state).
  returned: when groups are gathered
  type: dict
  sample:
    app:
      name: app
      state: idle
      status: normal
      members: [db, logs]
overflows:
  description:
    - Every overflow volume, by name, as C(iiadm -L --json) shows it; C(sets) maps each set
      attached to its chunks in the volume.
  returned: when overflows are gathered
  type: dict
  sample:
    pool:
      name: pool
      volume: /srv/vol/overflow.img
      chunk_size: 65536
      chunks_total: 63
      chunks_used: 0
      sets: {logs: 0}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iifs.iifs.plugins.module_utils.iifs import COMMON_ARGS, Iiadm


def main():
    argument_spec = dict(
        gather=dict(type='list', elements='str', choices=['sets', 'groups', 'overflows'],
                    default=['sets', 'groups', 'overflows']),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    iiadm = Iiadm(module)
    result = dict(changed=False)
    gather = module.params['gather']
    if 'sets' in gather:
        result['sets'] = iiadm.sets()
    if 'groups' in gather:
        result['groups'] = iiadm.groups()
    if 'overflows' in gather:
        result['overflows'] = iiadm.overflows()
    module.exit_json(**result)


if __name__ == '__main__':
    main()
