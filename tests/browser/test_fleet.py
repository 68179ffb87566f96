"""The fleet view of the Cockpit page (issue 14) in a real browser, against real test hosts:
network namespaces with their own sshd and iifs daemon each, started by tests/fleet_browser.rs
(tests/common/hosts.rs), reached by the page's one `iiadm --hosts-file FILE --watch --json` and
its `iiadm --hosts-file FILE --only HOST ...` over real ssh. Every host has the dependent sets db, a1 and a2, and the
group app of a1 and a2. What a test checks is read back on the hosts themselves (iiadm inside
the host), not from the page. Screenshots go to target/screenshots/fleet-*.png."""

import os
import re
import time
from pathlib import Path

from conftest import fleet_session

SETS = ("db", "a1", "a2")


def all_rows_shown(page, hosts):
    for h in hosts:
        for n in SETS:
            if page.fleet_row(h.name, n) is None:
                return False
        if page.fleet_row(h.name, "app", kind="group") is None:
            return False
    return True


def wait_all_rows(page, hosts, timeout=20):
    page.wait(lambda: all_rows_shown(page, hosts), timeout,
              "the rows of " + ", ".join(h.name for h in hosts))


def within_2s(page, cond, what):
    t0 = time.time()
    page.wait(cond, 2.0, what, interval=0.02)
    return time.time() - t0


def state_of(page, host, name, kind="set"):
    return page.fleet_cell_text(host, name, "state", kind) or ""


def test_rows_of_every_host(fleet, fleet_page):
    """One row per set and per group of every host of the hosts file, with the main view's
    columns and the host's name; the count names hosts, sets and groups; the filter narrows by
    host."""
    page = fleet_page
    wait_all_rows(page, fleet.hosts)
    for h in fleet.hosts:
        sets = h.sets()
        for n in SETS:
            assert page.fleet_cell_text(h.name, n, "host") == h.name
            assert page.fleet_cell_text(h.name, n, "type") == sets[n]["type"] == "dependent"
            assert state_of(page, h.name, n).startswith(sets[n]["state"])
            assert page.fleet_cell_text(h.name, n, "status") == sets[n]["status"]
            assert page.fleet_cell_text(h.name, n, "group") == ("app" if n != "db" else "")
        assert page.fleet_cell_text(h.name, "app", "group", kind="group") == "2 sets"
        assert page.fleet_row(h.name) is None, f"{h.name} shown as not connected"
    n = len(fleet.hosts)
    count = page.first("#fleet-count").text
    assert f"{n} hosts" in count and f"{3 * n} sets" in count and f"{n} groups" in count, count
    assert "unreachable" not in count
    page.shot("fleet")

    # Live from one stream, not polled: in 3 quiet seconds the page ran no other iiadm.
    time.sleep(3)
    calls = [args for _, args in page.cockpit.iiadm_calls()]
    assert calls == [f"--hosts-file {fleet.hosts_file} --watch --json"], calls

    other = fleet.hosts[1].name
    page.fill("#fleet-filter", other)
    page.wait(lambda: all(r.get_attribute("data-host") == other
                          for r in page.all("#fleet-body tr")), 3, f"only {other}'s rows")
    assert len(page.all("#fleet-body tr")) == 4
    page.fill("#fleet-filter", "")
    wait_all_rows(page, fleet.hosts, 3)


def watch_processes(hosts_file):
    """Console-side iiadm processes watching `hosts_file` (the page's stream)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"iiadm") and b"--watch" in args and str(hosts_file).encode() in args:
            out.append(int(entry))
    return out


def test_tabs_switch_views_and_the_stream(fleet, fleet_page):
    """The Fleet and This host tabs switch views (and the URL); the fleet's stream runs only
    while the fleet view is shown, and comes back with it."""
    page = fleet_page
    wait_all_rows(page, fleet.hosts)
    assert watch_processes(fleet.hosts_file), "no iiadm --watch for the fleet view"
    page.click("#view-local")
    page.wait_visible("#local-view")
    assert page.visible("#fleet-view") is None
    page.wait(lambda: not watch_processes(fleet.hosts_file), 10,
              "the fleet's iiadm --watch ended with the fleet view")
    page.click("#view-fleet")
    page.wait_visible("#fleet-view")
    assert "fleet" in page.driver.execute_script("return window.location.hash")
    assert page.first("#fleet-hosts-file").text == str(fleet.hosts_file), \
        "the hosts file of the URL was not kept"
    wait_all_rows(page, fleet.hosts)
    assert len(watch_processes(fleet.hosts_file)) == 1


def test_change_on_one_host_shows_within_2s(fleet, fleet_page):
    """Changes made on one host, inside it and not through the page, show within 2 s on that
    host's rows only: a suspend and a resume, a hold of its writes and the release, a new set
    and its removal."""
    page = fleet_page
    wait_all_rows(page, fleet.hosts)
    h = fleet.hosts[1]
    others = [o for o in fleet.hosts if o is not h]

    h.iiadm("-s", "db")
    within_2s(page, lambda: state_of(page, h.name, "db").startswith("suspended"),
              f"{h.name} db suspended")
    for o in others:
        assert state_of(page, o.name, "db").startswith("idle"), f"{o.name} db changed too"
    h.iiadm("-r", "db")
    within_2s(page, lambda: state_of(page, h.name, "db").startswith("idle"), f"{h.name} db idle")

    h.iiadm("--hold", "30", "a1")
    within_2s(page, lambda: "writes held" in state_of(page, h.name, "a1"),
              f"{h.name} a1 writes held")
    page.shot("fleet-held")
    h.iiadm("--release", "a1")
    within_2s(page, lambda: "held" not in state_of(page, h.name, "a1"), f"{h.name} a1 released")

    for role in ("master", "shadow"):
        h.run("truncate", "-s", "2M", f"/run/vol/fresh-{role}.img")
    h.iiadm("-e", "dep", "/run/vol/fresh-master.img", "/run/vol/fresh-shadow.img",
            "/run/vol/fresh-bitmap.img", "fresh")
    within_2s(page, lambda: page.fleet_row(h.name, "fresh"), f"{h.name} fresh's row")
    for o in others:
        assert page.fleet_row(o.name, "fresh") is None
    h.iiadm("-d", "fresh")
    within_2s(page, lambda: page.fleet_row(h.name, "fresh") is None, f"{h.name} fresh gone")


def test_action_reaches_the_right_host(fleet, fleet_page):
    """A row's action runs on that row's host only (iiadm --only HOST); a refusal shows the host's
    daemon's sentence word for word, after the host's name; an update to master first asks,
    naming the host and the master volume, and Cancel changes nothing; a group's row updates
    that host's group only."""
    page = fleet_page
    wait_all_rows(page, fleet.hosts)
    h = fleet.hosts[1]
    others = [o for o in fleet.hosts if o is not h]

    page.fleet_action(h.name, "db", "suspend")
    page.wait(lambda: h.set("db")["state"] == "suspended", 10, f"{h.name}: db suspended")
    for o in others:
        assert o.set("db")["state"] == "idle", f"the suspend reached {o.name} too"
    page.wait(lambda: state_of(page, h.name, "db").startswith("suspended"), 3, "row suspended")

    sentence = h.refusal("-u", "s", "db")
    page.fleet_action(h.name, "db", "update-shadow")
    alert = page.wait(lambda: page.visible("#alert") if page.visible("#alert")
                      and page.visible("#alert").text.strip() else None, 10, "#alert")
    assert sentence in alert.text, f"{sentence!r} not in {alert.text!r}"
    assert alert.text.startswith(h.name + ": "), alert.text
    page.shot("fleet-refusal")
    page.fleet_action(h.name, "db", "resume")
    page.wait(lambda: h.set("db")["state"] == "idle", 10, f"{h.name}: db resumed")

    # Update master of db on the last host: its master written through that host's mount
    # first, so that the update has something to restore.
    t = fleet.hosts[-1]
    master = Path(f"/proc/{t.pid}/root/mnt/iifs/sets/db/master")
    with open(master, "r+b") as f:
        f.write(b"N" * 65536)
        f.flush()
        os.fsync(f.fileno())
    st = t.set("db")
    assert st["chunks_differ"] >= 1
    page.fleet_action(t.name, "db", "update-master")
    dlg = page.wait_visible("#confirm-dialog")
    assert st["master"] in dlg.text, f"the confirmation does not name {st['master']}: {dlg.text}"
    assert t.name in page.first("#confirm-title").text, page.first("#confirm-title").text
    page.shot("fleet-confirm")
    page.click("#confirm-cancel")
    page.wait_hidden("#confirm-dialog")
    time.sleep(1)
    assert t.set("db")["chunks_differ"] == st["chunks_differ"], "Cancel updated the master"
    assert master.read_bytes()[:4] == b"NNNN"
    page.fleet_action(t.name, "db", "update-master")
    page.wait_visible("#confirm-dialog")
    page.click("#confirm-ok")
    page.wait_hidden("#confirm-dialog")
    page.wait(lambda: t.set("db")["chunks_differ"] == 0, 10, f"{t.name}: db's master updated")
    assert master.read_bytes()[:4] == b"\0\0\0\0", "the master was not restored from the shadow"
    for o in fleet.hosts[:-1]:
        assert o.set("db")["chunks_differ"] == 0

    g = fleet.hosts[0]
    pits = {o.name: o.set("a1")["pit_time"] for o in fleet.hosts}
    time.sleep(1.1)  # pit_time is in seconds
    page.fleet_action(g.name, "app", "update-shadow", kind="group")
    page.wait(lambda: g.set("a1")["pit_time"] > pits[g.name], 10, f"{g.name}: app updated")
    assert g.set("a2")["pit_time"] > pits[g.name]
    for o in fleet.hosts[1:]:
        assert o.set("a1")["pit_time"] == pits[o.name], f"the group update reached {o.name}"


def test_cross_host_point_in_time(fleet, fleet_page):
    """The cross-host button: group app, on every host that has it; the reply per host says new,
    with the time writes were held; the point in time moved on every host."""
    page = fleet_page
    wait_all_rows(page, fleet.hosts)
    before = {h.name: {n: h.set(n)["pit_time"] for n in ("a1", "a2")} for h in fleet.hosts}
    time.sleep(1.1)  # pit_time is in seconds
    page.select("#fleet-pit-group", value="app")
    hosts_text = page.first("#fleet-pit-hosts").text
    assert hosts_text.startswith("On " + ", ".join(fleet.names())), hosts_text
    page.click("#fleet-pit-run")
    res = page.wait_visible("#fleet-pit-result")
    page.wait(lambda: res.get_attribute("data-state") in ("new", "old", "mixed", "failed"), 60,
              "the reply of --group-pit")
    rows = {r.get_attribute("data-host"): r for r in page.all("#fleet-pit-body tr")}
    assert res.get_attribute("data-state") == "new", res.text
    assert sorted(rows) == sorted(fleet.names()), rows.keys()
    for name, r in rows.items():
        assert r.get_attribute("data-pit") == "new", r.text
        held = r.find_element("css selector", ".pit-held").text
        assert re.fullmatch(r"\d+ ms", held), f"{name}: writes held {held!r}"
    assert "on all " + str(len(fleet.hosts)) + " hosts" in page.first("#fleet-pit-summary").text
    page.shot("fleet-pit", at=res)
    for h in fleet.hosts:
        for n in ("a1", "a2"):
            st = h.set(n)
            assert st["pit_time"] > before[h.name][n], \
                f"{h.name} {n}: point in time did not move ({before[h.name][n]} -> {st['pit_time']})"
    # Released everywhere: no row shows held writes any more.
    page.wait(lambda: not any("writes held" in r.text for r in page.all("#fleet-body tr")), 2,
              "every hold released")


def test_hosts_file_from_url_and_its_changes(fleet, tmpdir_clean):
    """The URL names the hosts file (#/fleet?hosts=FILE): only its hosts show; a host added
    to the file shows without reloading the page; the host of a hosts file that no host
    answers to is shown unreachable, with ssh's reason."""
    hosts_file = tmpdir_clean / "two-hosts"
    first_two = fleet.hosts[:2]
    hosts_file.write_text("# two of them\n" + "\n".join(h.name for h in first_two) + "\n\n")
    with fleet_session(tmpdir_clean / "s", fleet, hosts_file) as page:
        wait_all_rows(page, first_two)
        assert page.first(f"#fleet-body tr[data-host='{fleet.hosts[2].name}']") is None
        bad = "nosuchhost.invalid"
        hosts_file.write_text(hosts_file.read_text() + fleet.hosts[2].name + "\n" + bad + "\n")
        wait_all_rows(page, fleet.hosts, 20)
        row = page.wait(lambda: page.fleet_row(bad) if page.fleet_row(bad)
                        and "unreachable" in page.fleet_row(bad).text else None,
                        30, f"{bad} unreachable")
        assert len(row.text.split("unreachable", 1)[1].strip(": ")) > 10, row.text
        page.shot("fleet-hosts-file", at=row)


def test_ansible_group_entry(fleet, tmpdir_clean):
    """A hosts file entry @GROUP is an Ansible inventory group (resolved by iiadm): the rows of
    its hosts show, under their inventory names, and no others."""
    web = [fleet.hosts[0], fleet.hosts[2]]
    hosts_file = tmpdir_clean / "group-hosts"
    hosts_file.write_text("@web\n")
    with fleet_session(tmpdir_clean / "s", fleet, hosts_file) as page:
        wait_all_rows(page, web)
        time.sleep(0.5)
        assert page.first(f"#fleet-body tr[data-host='{fleet.hosts[1].name}']") is None


def test_unreachable_host_shown_and_back(fleet, fleet_page):
    """A host taken off the network (the console's end of its veth down): its rows go and one
    row says it is unreachable, with the reason; the other hosts stay; the cross-host button
    says it is left out. Back on the network, its rows come back by themselves."""
    page = fleet_page
    wait_all_rows(page, fleet.hosts)
    h = fleet.hosts[1]
    others = [o for o in fleet.hosts if o is not h]
    h.network_down()
    try:
        row = page.wait(lambda: page.fleet_row(h.name) if page.fleet_row(h.name) is not None
                        and "unreachable" in (page.fleet_row(h.name).get_attribute("class") or "")
                        else None, 30, f"{h.name} unreachable")
        text = row.text
        assert text.startswith(h.name) and "unreachable: " in text, text
        assert len(text.split("unreachable: ", 1)[1]) > 5, f"no reason given: {text!r}"
        for n in SETS:
            assert page.fleet_row(h.name, n) is None, f"{h.name} {n} still shown"
        assert all_rows_shown(page, others)
        assert "(1 unreachable)" in page.first("#fleet-count").text
        page.select("#fleet-pit-group", value="app")
        pit_hosts = page.first("#fleet-pit-hosts").text
        assert "not included: " + h.name in pit_hosts, pit_hosts
        page.shot("fleet-unreachable", at=row)
    finally:
        h.network_up()
    page.wait(lambda: all_rows_shown(page, fleet.hosts) and page.fleet_row(h.name) is None,
              40, f"{h.name}'s rows back")
    assert "unreachable" not in page.first("#fleet-count").text
