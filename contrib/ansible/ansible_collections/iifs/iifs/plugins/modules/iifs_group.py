#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: iifs_group
short_description: Manage an iifs group of sets (one point in time for all its members)
description:
  - Makes sure a group exists with the given members, or does not exist.
  - Members take C(update) and C(copy) together, at one point in time
    (see M(iifs.iifs.iifs_pit)). A group holds sets of one type; a set is in one group at most.
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
    description: Shows the group and its members before and after.
options:
  name:
    description: The group's name (letters, digits and C(. _ - + @ :), not starting with C(-)).
    type: str
    required: true
  state:
    description:
      - C(present) creates the group if it is missing (C(iiadm -C)) and brings its members
        to I(members).
      - C(absent) deletes the group (C(iiadm -X)); its sets stay, in no group.
    type: str
    choices: [present, absent]
    default: present
  members:
    description:
      - The sets of the group. Not given, membership is left alone.
      - With I(append=false) (the default) these are exactly the members afterwards; others
        are taken out of the group (C(iiadm -B)). With I(append=true) they are only added.
      - A listed set that belongs to another group fails the task (moving it would change
        the other group's point in time); take it out there first.
    type: list
    elements: str
  append:
    description: Only add the I(members) listed, take none out.
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Group app holds exactly db and logs
  iifs.iifs.iifs_group:
    name: app
    members: [db, logs]

- name: Add set cache to group app, keep the others
  iifs.iifs.iifs_group:
    name: app
    members: [cache]
    append: true

- name: Delete group app (its sets stay)
  iifs.iifs.iifs_group:
    name: app
    state: absent
'''

RETURN = r'''
group:
  description: The group's status after the task (as C(iiadm -g NAME -i --json)), null when absent.
  returned: always
  type: dict
  sample:
    name: app
    state: idle
    status: normal
    members: [db, logs]
commands:
  description: The iiadm commands run (in check mode, that would have been run).
  returned: always
  type: list
  elements: str
  sample: ["/usr/local/bin/iiadm -C app", "/usr/local/bin/iiadm -M db app"]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.iifs.iifs.plugins.module_utils.iifs import (
    COMMON_ARGS, Iiadm, none_if_dash)


def main():
    argument_spec = dict(
        name=dict(type='str', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        members=dict(type='list', elements='str'),
        append=dict(type='bool', default=False),
    )
    argument_spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    name = p['name']
    iiadm = Iiadm(module)
    act = iiadm.would if module.check_mode else iiadm.run
    current = iiadm.group_status(name)
    before = dict(name=name, members=sorted(current['members'])) if current else {}

    if p['state'] == 'absent':
        if current is None:
            module.exit_json(changed=False, group=None, commands=[], diff=dict(before={}, after={}))
        act(['-X', name])
        module.exit_json(changed=True, group=None, commands=iiadm.commands,
                         diff=dict(before=before, after={}))

    have = list(current['members']) if current else []
    if current is None:
        act(['-C', name])
    if p['members'] is not None:
        want = []
        for m in p['members']:
            if m not in want:
                want.append(m)
        sets = iiadm.sets()
        missing = [m for m in want if m not in sets]
        if missing and not module.check_mode:
            iiadm.fail('group %s: no set named %s (iifs.iifs.iifs_set makes sets)'
                       % (name, ', '.join(missing)))
        if missing:
            # A set that an earlier task would make in this check-mode run.
            module.warn('group %s: no set named %s yet' % (name, ', '.join(missing)))
        elsewhere = ['%s (in group %s)' % (m, none_if_dash(sets[m].get('group')))
                     for m in want
                     if m in sets and m not in have
                     and none_if_dash(sets[m].get('group')) not in (None, name)]
        if elsewhere:
            iiadm.fail('group %s: %s belong to another group; take them out of it first '
                       '(iifs.iifs.iifs_set with group: "")' % (name, ', '.join(elsewhere)))
        if not p['append']:
            for m in have:
                if m not in want:
                    act(['-B', m])
        for m in want:
            if m not in have:
                act(['-M', m, name])
        after_members = sorted(set(want) | set(have)) if p['append'] else sorted(want)
    else:
        after_members = sorted(have)

    changed = bool(iiadm.commands)
    status = current
    after = dict(name=name, members=after_members)
    if changed and not module.check_mode:
        status = iiadm.group_status(name)
        after = dict(name=name, members=sorted(status['members'])) if status else {}
    module.exit_json(changed=changed, group=status, commands=iiadm.commands,
                     diff=dict(before=before, after=after))


if __name__ == '__main__':
    main()
