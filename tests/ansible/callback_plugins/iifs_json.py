# tests/ansible_collection.rs: a stdout callback printing the whole run as one JSON document
# at its end, in the shape of ansible.posix's json callback (which ansible-core 2.14 does not
# ship): {"plays": [{"play": {...}, "tasks": [{"task": {"name"}, "hosts": {HOST: RESULT}}]}],
#  "stats": {HOST: {"ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored"}}}

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible.parsing.ajson import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'iifs_json'

    def __init__(self, display=None):
        super(CallbackModule, self).__init__(display)
        self.plays = []
        self.tasks = {}

    def v2_playbook_on_play_start(self, play):
        self.plays.append({'play': {'name': play.get_name()}, 'tasks': []})

    def _task_start(self, task):
        entry = {'task': {'name': task.get_name()}, 'hosts': {}}
        self.plays[-1]['tasks'].append(entry)
        self.tasks[task._uuid] = entry

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start(task)

    def _record(self, result, **flags):
        entry = self.tasks.get(result._task._uuid)
        if entry is None:
            return
        r = dict(result._result)
        r.update(flags)
        entry['hosts'][result._host.get_name()] = r

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        hosts = sorted(stats.processed.keys())
        out = {'plays': self.plays, 'stats': dict((h, stats.summarize(h)) for h in hosts)}
        self._display.display(json.dumps(out, cls=AnsibleJSONEncoder, indent=2, sort_keys=True))
