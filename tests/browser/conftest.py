"""Harness for the Cockpit page's browser tests.

Every test gets, and loses again whatever happens:
- a real iifs daemon (from IIFS_BIN_DIR, default target/release) mounted on a temp dir, with its
  state dir and a volume dir beside it (`iifs` fixture);
- a cockpit-ws of its own on a free loopback port, without TLS, login or systemd, loading the
  application from a temp XDG_DATA_HOME whose cockpit/iifs links to contrib/cockpit/iifs, with
  PATH starting with a directory whose `iiadm` runs the one next to the daemon (and logs each
  call, so a test can count the page's polls);
- a headless Chromium driven by Selenium (Debian's chromium, chromium-driver,
  python3-selenium), switched into the application's iframe (`page` fixture; `page_noadmin`
  runs cockpit-ws and its bridge as the unprivileged user nobody).
After each test the browser's console log must hold no error (level SEVERE: exceptions, failed
requests, console.error, CSP violations).

Outside CI a missing tool skips the tests; with CI set it fails them.
"""

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The fleet view's tests need test hosts, which tests/fleet_browser.rs starts and describes in
# IIFS_FLEET; without it (tests/console_browser.rs runs this directory) they are not collected.
collect_ignore = [] if os.environ.get("IIFS_FLEET") else ["test_fleet.py"]
BIN_DIR = Path(os.environ.get("IIFS_BIN_DIR") or REPO / "target" / "release")
APP_DIR = REPO / "contrib" / "cockpit" / "iifs"
SHOTS = Path(os.environ.get("IIFS_SCREENSHOTS") or REPO / "target" / "screenshots")
COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NOBODY = 65534

# Orphans of what the tests start (the bridge when cockpit-ws goes first, chromium's helpers when
# the driver goes) become our children rather than zombies of a PID 1 that may not reap them.
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except (OSError, AttributeError):
    pass


def _missing_tools():
    missing = []
    for p in [BIN_DIR / "iifs", BIN_DIR / "iiadm", Path(COCKPIT_WS), Path(CHROMIUM),
              Path(CHROMEDRIVER), Path("/dev/fuse"), Path("/usr/bin/setpriv")]:
        if not p.exists():
            missing.append(str(p))
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python3-selenium")
    if not (APP_DIR / "manifest.json").exists():
        missing.append(str(APP_DIR / "manifest.json"))
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.fixture(scope="session", autouse=True)
def _fresh_failure_shots():
    """Screenshots of failed waits (FAILED-*.png) are of this run only."""
    for p in SHOTS.glob("FAILED-*.png"):
        p.unlink()


@pytest.fixture(autouse=True)
def _tools():
    missing = _missing_tools()
    if missing:
        why = "browser tests need: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run them)")
        pytest.skip(why)


def reap_orphans():
    """Wait for the zombies that were handed to us as subreaper (not our own Popen children,
    which their Popen objects reap)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def _children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Stop a process we started, and its process group (started with start_new_session)."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    # What is left of its group (a bridge that outlived cockpit-ws).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    time.sleep(0.05)
    reap_orphans()


def mounted(mnt):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(mnt) and line.split()[2] == "fuse.iifs" for line in f)


class Iifs:
    """A real iifs mount in a temp dir, and iiadm against it."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.mnt = self.tmp / "mnt"
        self.state = self.tmp / "state"
        self.vol = self.tmp / "vol"
        for d in (self.mnt, self.vol):
            d.mkdir(parents=True)
        self.log = open(self.tmp / "iifs.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN_DIR / "iifs"), "none", str(self.mnt), "-f", "-o",
             f"state_dir={self.state},log_level=info,volume_dirs={self.vol}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            start_new_session=True)
        deadline = time.time() + 20
        while not mounted(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"iifs exited before mounting:\n{self.daemon_log()}")
            if time.time() > deadline:
                raise RuntimeError(f"iifs did not mount:\n{self.daemon_log()}")
            time.sleep(0.02)

    def daemon_log(self):
        try:
            return (self.tmp / "iifs.log").read_text(errors="replace")
        except OSError:
            return ""

    def iiadm(self, *args, check=True):
        r = subprocess.run([str(BIN_DIR / "iiadm"), "--mount", str(self.mnt), *map(str, args)],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"iiadm {' '.join(map(str, args))}: {r.returncode} {r.stderr}")
        return r

    def refusal(self, *args):
        """iiadm's one-line reason for a command it refuses (exit 1), without the 'iiadm: '."""
        r = self.iiadm(*args, check=False)
        assert r.returncode == 1, f"iiadm {args} was expected to be refused: {r}"
        line = r.stderr.strip().splitlines()[0]
        return line[len("iiadm: "):] if line.startswith("iiadm: ") else line

    def json(self, *args):
        return json.loads(self.iiadm(*args, "--json").stdout)

    def set(self, name):
        return self.json("-i", name)

    def sets(self):
        return {s["name"]: s for s in self.json("-i", "all")}

    def groups(self):
        return {g["name"]: g for g in self.json("-G")}

    def overflows(self):
        return {o["name"]: o for o in self.json("-L")}

    def volume(self, name, size, fill=None):
        """A volume file in the volume dir: sparse, or `fill` bytes repeated."""
        p = self.vol / name
        with open(p, "wb") as f:
            if fill is None:
                f.truncate(size)
            else:
                block = (fill * ((1 << 20) // len(fill) + 1))[:1 << 20]
                left = size
                while left > 0:
                    n = min(left, len(block))
                    f.write(block[:n])
                    left -= n
        return str(p)

    def volumes(self, tag, size, fill=None):
        """Master (filled), shadow (same size, empty) and a bitmap path (made by iifs)."""
        return (self.volume(f"{tag}-master.img", size, fill),
                self.volume(f"{tag}-shadow.img", size),
                str(self.vol / f"{tag}-bitmap.img"))

    def write_master(self, name, data, offset=0):
        """Write through the mount, as an application would (the set notes the change)."""
        fd = os.open(self.mnt / "sets" / name / "master", os.O_WRONLY)
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:done + (4 << 20)], offset + done)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, name, which, length, offset=0):
        fd = os.open(self.mnt / "sets" / name / which, os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def wait_idle(self, name, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.set(name)
            if s["state"] not in ("copying", "updating"):
                return s
            time.sleep(0.05)
        raise AssertionError(f"set {name} still copying after {timeout} s")

    def close(self):
        # Abort what still copies, so the stop is quick; then a clean stop, and the mount goes.
        if mounted(self.mnt):
            try:
                for s in self.sets().values():
                    if s["state"] in ("copying", "updating"):
                        self.iiadm("-a", s["name"], check=False)
            except Exception:  # noqa: BLE001  the daemon may be gone already
                pass
        stop_process(self.proc, signal.SIGTERM, timeout=20)
        if mounted(self.mnt):
            subprocess.run(["umount", "-l", str(self.mnt)], check=False)
        self.log.close()


@pytest.fixture
def tmpdir_clean():
    d = tempfile.mkdtemp(prefix="iifs-browser-")
    os.chmod(d, 0o755)
    try:
        yield Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def iifs(tmpdir_clean):
    m = Iifs(tmpdir_clean / "iifs")
    try:
        yield m
    finally:
        m.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cockpit:
    """A cockpit-ws of one browser session (a local session ends for good 15 s after its last
    connection goes: never share one between browsers)."""

    def __init__(self, tmp, user=None, env_extra=None):
        self.tmp = Path(tmp)
        xdg = self.tmp / "xdg"
        (xdg / "cockpit").mkdir(parents=True)
        os.symlink(APP_DIR, xdg / "cockpit" / "iifs")
        cfg = self.tmp / "config"
        cfg.mkdir()
        home = self.tmp / "home"
        home.mkdir()
        bindir = self.tmp / "bin"
        bindir.mkdir()
        self.calls = self.tmp / "iiadm-calls.log"
        self.calls.touch()
        wrapper = bindir / "iiadm"
        wrapper.write_text("#!/bin/sh\n"
                           f"echo \"$(date +%s.%N) $*\" >> '{self.calls}'\n"
                           f"exec '{BIN_DIR / 'iiadm'}' \"$@\"\n")
        wrapper.chmod(0o755)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "PATH": f"{bindir}:{BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "XDG_DATA_HOME": str(xdg),
            "XDG_CONFIG_DIRS": str(cfg),
            # Dead paths: else the bridge starts a dbus-daemon and an ssh-agent that outlive it.
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.tmp}/no-bus",
            "SSH_AUTH_SOCK": f"{self.tmp}/no-agent",
        }
        # What a test adds to cockpit-ws's environment (the fleet view's IIADM_SSH): the bridge
        # and what it spawns inherit it.
        env.update(env_extra or {})
        cmd = [COCKPIT_WS, "--no-tls", "--address", "127.0.0.1", "--port", str(self.port),
               "--local-session=cockpit-bridge"]
        if user is not None:
            for p in (self.tmp, home, self.calls):
                os.chown(p, user, -1)
            env["USER"] = env["LOGNAME"] = "nobody"
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        self.log = open(self.tmp / "cockpit-ws.log", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.time() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"cockpit-ws did not start:\n{self.ws_log()}")
                time.sleep(0.05)

    def ws_log(self):
        try:
            return (self.tmp / "cockpit-ws.log").read_text(errors="replace")
        except OSError:
            return ""

    def iiadm_calls(self):
        """(time, args) of every iiadm the page ran."""
        out = []
        for line in self.calls.read_text().splitlines():
            t, _, args = line.partition(" ")
            out.append((float(t), args))
        return out

    def close(self):
        stop_process(self.proc, signal.SIGTERM)
        self.log.close()


class Page:
    """The application in Cockpit's shell, in a headless Chromium; the driver is switched into
    the application's iframe."""

    FRAME = "iframe[name='cockpit1:localhost/iifs']"

    def __init__(self, tmp, cockpit, iifs=None):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.cockpit = cockpit
        self.iifs = iifs
        profile = Path(tmp) / "profile"
        profile.mkdir()
        o = webdriver.ChromeOptions()
        for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                  f"--user-data-dir={profile}"):
            o.add_argument(a)
        o.binary_location = CHROMIUM
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.service = Service(CHROMEDRIVER, log_path=str(Path(tmp) / "chromedriver.log"))
        self.driver = webdriver.Chrome(service=self.service, options=o)
        self.driver.set_page_load_timeout(30)
        self.console = []

    # --- loading

    def open(self, ready=("#last-update",)):
        return self._loaded_despite_network_changes(self._load_main)

    def _load_main(self):
        from selenium.webdriver.common.by import By

        d = self.driver
        d.get(self.cockpit.url + "/iifs")
        self.wait(lambda: d.find_elements(By.CSS_SELECTOR, self.FRAME), 30,
                  "the shell shows no iifs iframe")
        d.switch_to.frame(d.find_element(By.CSS_SELECTOR, self.FRAME))
        self.wait(lambda: d.execute_script("return document.readyState") == "complete", 30,
                  "the page did not load")
        if self.iifs is not None:
            self.choose_mount(str(self.iifs.mnt))

    def _loaded_despite_network_changes(self, load):
        """Run `load` (the shell and the application, up to a first state).

        Chromium drops the requests in flight when this machine's network changes (another
        process adding or removing a test host's veth: net::ERR_NETWORK_CHANGED), which can
        leave the shell half loaded. That is not the page's doing: the load is tried once more,
        and only those entries are dropped from the console log of the first try."""
        for attempt in (1, 2):
            try:
                load()
                failed = None
            except AssertionError as e:
                failed = e
            changed = [e for e in self.read_console()
                       if "ERR_NETWORK_CHANGED" in str(e.get("message"))]
            if not changed or attempt == 2:
                if failed:
                    raise failed
                return self
            print(f"the network changed while the shell loaded ({len(changed)} requests "
                  "dropped): loading it again")
            self.console = [e for e in self.console
                            if "ERR_NETWORK_CHANGED" not in str(e.get("message"))]
            self.driver.switch_to.default_content()
        return self

    def open_fleet(self, hosts_file):
        """The fleet view (#/fleet?hosts=FILE), switched into the application's frame."""
        return self._loaded_despite_network_changes(lambda: self._load_fleet(hosts_file))

    def _load_fleet(self, hosts_file):
        from urllib.parse import quote
        from selenium.webdriver.common.by import By

        d = self.driver
        d.get(self.cockpit.url + "/iifs#/fleet?hosts=" + quote(str(hosts_file), safe=""))
        self.wait(lambda: d.find_elements(By.CSS_SELECTOR, self.FRAME), 30,
                  "the shell shows no iifs iframe")
        d.switch_to.frame(d.find_element(By.CSS_SELECTOR, self.FRAME))
        self.wait(lambda: d.execute_script("return document.readyState") == "complete", 30,
                  "the page did not load")
        self.wait(lambda: self.visible("#fleet-view"), 15,
                  lambda: "#fleet-view visible (shell at " + d.execute_script(
                      "return window.top.location.href") + ", page at " + d.execute_script(
                      "return window.location.href") + ")")
        self.wait(lambda: (self.first("#fleet-hosts-file").text or "") == str(hosts_file), 10,
                  f"the fleet view reading {hosts_file}")

    # --- the fleet view

    def fleet_row(self, host, name=None, kind="set"):
        """A set's or group's row of a host, or (name None) the host's own row (unreachable,
        connecting, or without sets)."""
        if name is None:
            return self.first(f"#fleet-body tr[data-kind='host'][data-host='{host}']")
        return self.first(f"#fleet-body tr[data-kind='{kind}'][data-host='{host}']"
                          f"[data-name='{name}']")

    def fleet_cell_text(self, host, name, col, kind="set"):
        r = self.fleet_row(host, name, kind)
        if r is None:
            return None
        from selenium.webdriver.common.by import By
        return r.find_element(By.CSS_SELECTOR, f".col-{col}").text.strip()

    def fleet_action(self, host, name, action, kind="set"):
        """Open a fleet row's action menu and choose an action."""
        from selenium.webdriver.common.by import By
        r = self.wait(lambda: self.fleet_row(host, name, kind), 10, f"{host} {kind} {name}")
        r.find_element(By.CSS_SELECTOR, "button.row-actions").click()
        self.click(f"button[data-action='{action}']")

    def choose_mount(self, mnt):
        """Wait for the first state read; pick our mount when the host has several."""
        from selenium.webdriver.support.ui import Select

        def ready():
            sel = self.visible("#mount-select")
            if sel is not None:
                s = Select(sel)
                values = [o.get_attribute("value") for o in s.options]
                texts = [o.text for o in s.options]
                if mnt not in values and not any(mnt in t for t in texts):
                    return False
                if s.first_selected_option.get_attribute("value") != mnt \
                        and mnt not in s.first_selected_option.text:
                    if mnt in values:
                        s.select_by_value(mnt)
                    else:
                        s.select_by_visible_text(next(t for t in texts if mnt in t))
                    return False
            el = self.first("#last-update")
            return el is not None and el.text.strip() != ""
        self.wait(ready, 30, f"the page never showed the state of {mnt} (#last-update)")

    # --- finding

    def all(self, css):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def first(self, css):
        els = self.all(css)
        return els[0] if els else None

    def visible(self, css):
        from selenium.common.exceptions import StaleElementReferenceException
        for e in self.all(css):
            try:
                if e.is_displayed():
                    return e
            except StaleElementReferenceException:
                pass
        return None

    def wait(self, cond, timeout=10, what="condition", interval=0.05):
        from selenium.common.exceptions import StaleElementReferenceException
        deadline = time.time() + timeout
        last_exc = None
        while True:
            try:
                v = cond()
                if v:
                    return v
            except StaleElementReferenceException as e:
                last_exc = e
            if time.time() > deadline:
                if callable(what):  # a description that says what the page shows now
                    what = what()
                self.shot("FAILED-" + "".join(c if c.isalnum() else "-" for c in what)[:60])
                raise AssertionError(f"timed out after {timeout} s waiting for: {what}"
                                     + (f" ({last_exc})" if last_exc else ""))
            time.sleep(interval)

    def wait_visible(self, css, timeout=10):
        return self.wait(lambda: self.visible(css), timeout, f"{css} visible")

    def wait_hidden(self, css, timeout=10):
        return self.wait(lambda: self.visible(css) is None, timeout, f"{css} hidden")

    def click(self, css, timeout=10):
        el = self.wait_visible(css, timeout)
        self.wait(lambda: el.is_enabled(), timeout, f"{css} enabled")
        el.click()
        return el

    def close_with(self, button, dialog):
        """Click a dialog's Close/Cancel button until the dialog is gone: a poll that re-renders
        the dialog can move the button between the driver's aim and its click."""
        for _ in range(3):
            self.click(button)
            try:
                self.wait(lambda: self.visible(dialog) is None, 2, f"{dialog} closed by {button}")
                return
            except AssertionError:
                pass
        self.wait_hidden(dialog, 1)

    def fill(self, css, text):
        """Replace a field's text by typing, so the page gets its input events."""
        from selenium.webdriver.common.keys import Keys
        el = self.wait_visible(css)
        el.send_keys(Keys.CONTROL, "a")
        el.send_keys(Keys.BACKSPACE)
        if text:
            el.send_keys(text)
        return el

    def select(self, css, value=None, text=None):
        from selenium.webdriver.support.ui import Select
        el = self.wait_visible(css)

        def offered():  # the page may fill the list at its next poll
            opts = Select(el).options
            return any((o.get_attribute("value") == value) if value is not None
                       else (o.text == text) for o in opts)
        self.wait(offered, 5, f"{css} offering {value if value is not None else text!r}")
        s = Select(el)
        if value is not None:
            s.select_by_value(value)
        else:
            s.select_by_visible_text(text)

    def row(self, name, kind="set"):
        return self.first(f"#objects tr[data-kind='{kind}'][data-name='{name}']")

    def wait_row(self, name, kind="set", timeout=10):
        return self.wait(lambda: self.row(name, kind), timeout, f"{kind} row {name}")

    def cell(self, name, col, kind="set"):
        r = self.row(name, kind)
        if r is None:
            return None
        from selenium.webdriver.common.by import By
        return r.find_element(By.CSS_SELECTOR, f".col-{col}")

    def cell_text(self, name, col, kind="set"):
        c = self.cell(name, col, kind)
        return c.text.strip() if c is not None else None

    def row_action(self, name, action, kind="set"):
        """Open a row's action menu and choose an action."""
        from selenium.webdriver.common.by import By
        r = self.wait_row(name, kind)
        r.find_element(By.CSS_SELECTOR, "button.row-actions").click()
        self.click(f"button[data-action='{action}']")

    def progress_value(self, name, kind="set"):
        """The value of the row's <progress class=sync>, or None when there is none."""
        from selenium.webdriver.common.by import By
        c = self.cell(name, "progress", kind)
        if c is None:
            return None
        bars = c.find_elements(By.CSS_SELECTOR, "progress.sync")
        if not bars:
            return None
        v = bars[0].get_attribute("value")
        return float(v) if v not in (None, "") else None

    # --- evidence

    def shot(self, name, at=None):
        """A screenshot; `at`: an element scrolled into view first."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        try:
            if at is not None:
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", at)
            self.driver.save_screenshot(str(SHOTS / f"{name}.png"))
        except Exception:  # noqa: BLE001  a screenshot is evidence, not the test
            pass

    def read_console(self):
        try:
            self.console += self.driver.get_log("browser")
        except Exception:  # noqa: BLE001
            pass
        return self.console

    def console_errors(self):
        return [e for e in self.read_console() if e.get("level") == "SEVERE"]

    def check_console(self):
        errors = self.console_errors()
        assert not errors, "errors in the browser console:\n" + "\n".join(
            f"{e.get('source')}: {e.get('message')}" for e in errors)

    def close(self):
        try:
            self.driver.quit()
        finally:
            # chromedriver, if quit failed
            try:
                self.service.stop()
            except Exception:  # noqa: BLE001
                pass
            reap_orphans()


@contextlib.contextmanager
def _session(tmp, user, iifs):
    cockpit = Cockpit(tmp / "cockpit", user=user)
    page = None
    try:
        page = Page(tmp / "cockpit", cockpit, iifs)
        yield page
    finally:
        if page is not None:
            page.close()
        cockpit.close()


@pytest.fixture
def page(tmpdir_clean, iifs):
    """The page as root (administrative access), loaded and showing our mount."""
    with _session(tmpdir_clean, None, iifs) as p:
        p.open()
        yield p
        p.check_console()


@pytest.fixture
def page_unloaded(tmpdir_clean, iifs):
    """As `page`, but not loaded yet: the test calls .open() when its state is ready."""
    with _session(tmpdir_clean, None, iifs) as p:
        yield p
        p.check_console()


@pytest.fixture
def page_noadmin(tmpdir_clean, iifs):
    """cockpit-ws and its bridge as the user nobody: no administrative access."""
    with _session(tmpdir_clean, NOBODY, None) as p:
        yield p
        p.check_console()


class FleetHost:
    """One test host of tests/common/hosts.rs (started by tests/fleet_browser.rs): its name,
    address, PID 1 and network namespace. Commands run inside it as Host::command does."""

    def __init__(self, d):
        self.name = d["name"]
        self.addr = d["addr"]
        self.pid = int(d["pid"])
        self.netns = d["netns"]

    def run(self, *argv, check=True):
        env = {k: v for k, v in os.environ.items() if k not in ("IIFS_MOUNT", "IIADM_SSH")}
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-u", "-n", "-p", "--",
                            *map(str, argv)], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"{self.name}: {' '.join(map(str, argv))}: {r.returncode} "
                                 f"{r.stdout}{r.stderr}")
        return r

    def iiadm(self, *args, check=True):
        return self.run("iiadm", *args, check=check)

    def refusal(self, *args):
        """iiadm's one-line reason on this host for a command it refuses, without 'iiadm: '."""
        r = self.iiadm(*args, check=False)
        assert r.returncode == 1, f"{self.name}: iiadm {args} was expected to be refused: {r}"
        line = r.stderr.strip().splitlines()[0]
        return line[len("iiadm: "):] if line.startswith("iiadm: ") else line

    def json(self, *args):
        return json.loads(self.iiadm(*args, "--json").stdout)

    def set(self, name):
        return self.json("-i", name)

    def sets(self):
        return {s["name"]: s for s in self.json("-i", "all")}

    def network_down(self):
        """As Host::network_down: the console's end of its veth goes down."""
        subprocess.run(["ip", "link", "set", self.netns, "down"], check=True)

    def network_up(self):
        subprocess.run(["ip", "link", "set", self.netns, "up"], check=True)


class Fleet:
    """What tests/fleet_browser.rs started: IIFS_FLEET is a JSON object with the hosts file,
    IIADM_SSH, the runtime dir of iiadm's ssh connections, and every host."""

    def __init__(self, d):
        self.hosts_file = Path(d["hosts_file"])
        self.iiadm_ssh = d["iiadm_ssh"]
        self.runtime_dir = d["runtime_dir"]
        self.inventory = d.get("inventory")
        self.dir = Path(d["dir"])
        self.hosts = [FleetHost(h) for h in d["hosts"]]
        self.by_name = {h.name: h for h in self.hosts}

    def names(self):
        return [h.name for h in self.hosts]

    def env(self, run_dir):
        """cockpit-ws's environment for the fleet view: iiadm (run by the bridge) reaches the
        hosts with IIADM_SSH; ssh notices a dead link within about 3 s (else a stream over a
        link that went down hangs, unnoticed, until TCP gives up); its connection sockets in
        `run_dir`."""
        env = {
            "IIADM_SSH": self.iiadm_ssh + " -o ServerAliveInterval=1 -o ServerAliveCountMax=3",
            "XDG_RUNTIME_DIR": str(run_dir),
        }
        if self.inventory:
            env["ANSIBLE_INVENTORY"] = self.inventory
        return env


@pytest.fixture(scope="session")
def fleet():
    d = os.environ.get("IIFS_FLEET")
    if not d:
        why = "the fleet tests need the test hosts of tests/fleet_browser.rs (IIFS_FLEET)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return Fleet(json.loads(d))


@contextlib.contextmanager
def fleet_session(tmp, fleet, hosts_file):
    """A cockpit-ws with the fleet's environment and a browser on the fleet view of
    `hosts_file`; the browser's console must stay free of errors."""
    # iiadm's ssh connection masters of this session, in a dir of its own: a master another
    # command opened (without the keepalive of fleet.env()) is not reused, and they end with
    # the session.
    run_dir = Path(tmp) / "run"
    run_dir.mkdir(mode=0o700, parents=True)
    cockpit = Cockpit(Path(tmp) / "cockpit", env_extra=fleet.env(run_dir))
    page = None
    try:
        page = Page(Path(tmp) / "cockpit", cockpit)
        page.fleet = fleet
        page.open_fleet(hosts_file)
        yield page
        page.check_console()
    finally:
        if page is not None:
            page.close()
        cockpit.close()
        stop_ssh_of(run_dir)


def stop_ssh_of(run_dir):
    """End the ssh processes (connection masters left for ControlPersist) whose command line
    names `run_dir`: only those of one session."""
    needle = str(run_dir).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"ssh") and any(needle in a for a in args):
            try:
                os.kill(int(entry), signal.SIGTERM)
            except ProcessLookupError:
                pass
    reap_orphans()


@pytest.fixture
def fleet_page(tmpdir_clean, fleet):
    """The fleet view of every test host (the Fleet's hosts file), as root."""
    with fleet_session(tmpdir_clean, fleet, fleet.hosts_file) as p:
        yield p
