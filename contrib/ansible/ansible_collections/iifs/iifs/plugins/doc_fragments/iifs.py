# -*- coding: utf-8 -*-
# Copyright: iifs contributors
# MIT License (see the iifs Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The options every iifs.iifs module takes.
    DOCUMENTATION = r'''
options:
  mount:
    description:
      - The iifs mount to manage (passed to C(iiadm --mount)).
      - By default, as with iiadm, C($IIFS_MOUNT) or the only C(fuse.iifs) mount of the host;
        with none or several the module fails and says so.
    type: path
  executable:
    description:
      - Path of the C(iiadm) command on the managed host.
      - By default C(iiadm) is looked up on C($PATH), then in C(/usr/local/bin),
        C(/usr/local/sbin), C(/usr/bin) and C(/usr/sbin).
    type: path
requirements:
  - iifs and iiadm installed on the managed host, an iifs daemon mounted there.
  - Python 3 on the managed host.
notes:
  - The module runs on the managed host and drives its local C(iiadm) with C(--json).
    A refusal of the daemon fails the task with the daemon's own sentence in C(msg).
'''
