"""The browser half of benches/fleet.rs: the console's fleet view in headless Chromium, driven
through tests/browser/conftest.py's Cockpit and Page (a cockpit-ws of its own, the application
from contrib/cockpit/iifs, IIADM_SSH for the test hosts).

Started with IIFS_FLEET (the JSON of tests/fleet_browser.rs: hosts file, IIADM_SSH, hosts) and
IIFS_BIN_DIR. Talks one line at a time:
  -> "ready ROWS MS"      the page shows ROWS rows of sets and groups, MS after it was asked for
  <- "wait HOST SET WORD" (the bench changed SET on HOST) wait until the row's state starts with
                          WORD
  -> "seen MS"            the page's own time (ms since the epoch) at which it drew the change
                          (the row's data-updated), or "timeout"
  <- "quit"
Anything else it prints goes to stderr.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "browser"))

import conftest  # noqa: E402

STATE_JS = """
const tr = document.querySelector(`#fleet-body tr[data-kind='set'][data-host='${arguments[0]}'][data-name='${arguments[1]}']`);
if (!tr) return null;
return [tr.querySelector('.col-state').textContent, tr.dataset.updated || ''];
"""


def say(*words):
    print(*words, flush=True)


def main():
    fleet = conftest.Fleet(json.loads(os.environ["IIFS_FLEET"]))
    want_rows = int(os.environ.get("IIFS_FLEET_ROWS", "0"))
    tmp = Path(tempfile.mkdtemp(prefix="iifs-fleet-bench-"))
    os.chmod(tmp, 0o755)
    t0 = time.time()
    with conftest.fleet_session(tmp, fleet, fleet.hosts_file) as page:
        d = page.driver

        def rows():
            return d.execute_script(
                "return document.querySelectorAll(\"#fleet-body tr[data-kind='set'],"
                " #fleet-body tr[data-kind='group']\").length")
        page.wait(lambda: rows() >= want_rows, 120, f"{want_rows} rows")
        say("ready", rows(), round((time.time() - t0) * 1000))
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            _, host, name, word = words
            deadline = time.time() + 30
            seen = None
            while time.time() < deadline:
                r = d.execute_script(STATE_JS, host, name)
                if r and r[0].startswith(word) and r[1]:
                    seen = r[1]
                    break
                time.sleep(0.005)
            say("seen", seen) if seen else say("timeout")


if __name__ == "__main__":
    main()
