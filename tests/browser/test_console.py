"""The Cockpit page "Instant Image" in a real browser, against a real iifs mount and a real
cockpit-ws (see conftest.py). Each test proves one thing the issue asks for; the state is read
back with iiadm, not from the page, so a page that only looks right does not pass. Screenshots of
each view go to target/screenshots/NAME.png."""

import time

MiB = 1 << 20


def test_main_view_lists_sets_and_groups(iifs, page):
    """The main table: one row per set and per group, with type, state, status and percent; the
    filter narrows it by name."""
    m, s, b = iifs.volumes("db", 4 * MiB)
    iifs.iiadm("-e", "dep", m, s, b, "db")
    m, s, b = iifs.volumes("logs", 4 * MiB)
    iifs.iiadm("-e", "ind", m, s, b, "logs")
    iifs.wait_idle("logs")
    iifs.iiadm("-C", "app")
    iifs.iiadm("-M", "logs", "app")

    page.wait_row("db")
    page.wait_row("logs")
    page.wait_row("app", kind="group")
    assert "dependent" in page.cell_text("db", "type")
    assert "independent" in page.cell_text("logs", "type")
    assert "idle" in page.cell_text("db", "state")
    assert "normal" in page.cell_text("db", "status")
    page.wait(lambda: "100" in page.cell_text("logs", "progress"), 5, "logs at 100%")
    page.shot("main")

    # Sorting by name, then the other way round.
    def names():
        return [r.get_attribute("data-name") for r in page.all("#objects tr[data-kind='set']")]
    page.click("th[data-sort='name']")
    page.wait(lambda: names() in (["db", "logs"], ["logs", "db"]), 3, "two set rows")
    first = names()
    page.click("th[data-sort='name']")
    page.wait(lambda: names() == first[::-1], 3, "the name order reversed")

    page.fill("#filter", "db")
    page.wait(lambda: page.row("logs") is None or not page.row("logs").is_displayed(), 5,
              "filter hides logs")
    assert page.row("db").is_displayed()
    page.fill("#filter", "")
    page.wait(lambda: page.row("logs") is not None and page.row("logs").is_displayed(), 5,
              "logs back")


def test_new_set_dialog_creates_set(iifs, page):
    """New set: the volume browser lists the volume dir with sizes and marks volumes in use;
    choosing a row fills the field; Advanced sets chunk size and durability; Create makes the set
    (as iiadm sees it) and it appears in the table."""
    um, us, ub = iifs.volumes("used", 2 * MiB)
    iifs.iiadm("-e", "dep", um, us, ub, "used")
    m = iifs.volume("web-master.img", 8 * MiB, b"w")
    s = iifs.volume("web-shadow.img", 8 * MiB)
    b = str(iifs.vol / "web-bitmap.img")
    page.wait_row("used")

    page.click("#new-set")
    page.wait_visible("#new-set-dialog")
    page.fill("#ns-name", "web")
    page.select("#ns-type", value="ind")

    # The master from the volume browser.
    page.click("button.browse[data-for='ns-master']")
    page.wait_visible("#volume-browser")
    page.fill("#vb-dir", str(iifs.vol))
    page.click("#vb-go")
    row = page.wait_visible(f"#volume-browser tr[data-path='{m}']")
    assert "8" in row.text, f"no capacity in the browser row: {row.text!r}"
    used = page.wait_visible(f"#volume-browser tr[data-path='{um}']")
    assert "in-use" in (used.get_attribute("class") or "").split()
    assert "in use by used" in used.text
    page.shot("volume-browser")
    row.click()
    page.wait(lambda: page.first("#ns-master").get_attribute("value") == m, 5,
              "the master field filled from the browser")

    page.fill("#ns-shadow", s)
    page.fill("#ns-bitmap", b)
    adv = page.wait_visible("#ns-advanced")
    if adv.get_attribute("open") is None:
        adv.find_element("css selector", "summary").click()
    page.select("#ns-chunk-size", text="16K")
    page.select("#ns-durability", value="relaxed")
    page.shot("new-set")
    page.click("#ns-create")
    page.wait_hidden("#new-set-dialog")

    st = iifs.set("web")
    assert st["type"] == "independent"
    assert (st["master"], st["shadow"], st["bitmap"]) == (m, s, b)
    assert st["chunk_size"] == 16384
    assert st["durability"] == "relaxed"
    page.wait_row("web", timeout=3)
    iifs.wait_idle("web")
    page.wait(lambda: "100" in page.cell_text("web", "progress"), 5, "web copied, 100%")
    page.shot("main-new-set")


def test_new_compact_set_shows_overflow_pane(iifs, page):
    """A dependent shadow smaller than its master opens the overflow pane; the overflow chosen
    there is attached to the new compact set."""
    m = iifs.volume("cm-master.img", 8 * MiB)
    s = iifs.volume("cm-shadow.img", 1 * MiB)
    b = str(iifs.vol / "cm-bitmap.img")
    iifs.iiadm("-O", iifs.volume("pool.img", 2 * MiB), "pool")

    page.click("#new-set")
    page.wait_visible("#new-set-dialog")
    page.fill("#ns-name", "cm")
    page.select("#ns-type", value="dep")
    page.fill("#ns-master", m)
    page.fill("#ns-shadow", s)
    page.fill("#ns-bitmap", b)
    page.wait_visible("#ns-overflow-pane")
    page.select("#ns-overflow", value="pool")
    page.shot("new-set-overflow")
    page.click("#ns-create")
    page.wait_hidden("#new-set-dialog")
    st = iifs.set("cm")
    assert st["type"] == "compact"
    assert st["overflow"] == "pool"
    page.wait_row("cm", timeout=3)

    # Same size: no pane.
    page.click("#new-set")
    page.select("#ns-type", value="dep")
    page.fill("#ns-master", m)
    page.fill("#ns-shadow", iifs.volume("full-shadow.img", 8 * MiB))
    page.wait_hidden("#ns-overflow-pane", 3)
    close_dialog(page, "#new-set-dialog")


def test_bad_input_shows_the_daemons_sentence(iifs, page):
    """A refused create shows iiadm's reason word for word in the dialog, which stays open; a
    refused row action shows it in #alert."""
    m, s, b = iifs.volumes("db", 2 * MiB)
    iifs.iiadm("-e", "dep", m, s, b, "db")
    m2, s2, b2 = iifs.volumes("other", 2 * MiB)
    sentence = iifs.refusal("-e", "dep", m2, s2, b2, "db")  # the name is taken
    page.wait_row("db")

    page.click("#new-set")
    page.fill("#ns-name", "db")
    page.select("#ns-type", value="dep")
    page.fill("#ns-master", m2)
    page.fill("#ns-shadow", s2)
    page.fill("#ns-bitmap", b2)
    page.click("#ns-create")
    err = page.wait(lambda: page.visible("#ns-error") if page.visible("#ns-error")
                    and page.visible("#ns-error").text.strip() else None, 10, "#ns-error")
    assert sentence in err.text, f"{sentence!r} not in {err.text!r}"
    assert page.visible("#new-set-dialog") is not None, "the dialog closed on a refusal"
    page.shot("new-set-error")
    assert set(iifs.sets()) == {"db"}

    # A refused action from the row menu: update of a suspended set.
    iifs.iiadm("-s", "db")
    page.wait(lambda: "suspended" in (page.cell_text("db", "state") or ""), 3, "db suspended")
    sentence = iifs.refusal("-u", "s", "db")
    close_dialog(page, "#new-set-dialog")
    page.row_action("db", "update-shadow")
    alert = page.wait(lambda: page.visible("#alert") if page.visible("#alert")
                      and page.visible("#alert").text.strip() else None, 10, "#alert")
    assert sentence in alert.text, f"{sentence!r} not in {alert.text!r}"
    assert alert.get_attribute("role") == "alert"
    page.shot("alert")


def close_dialog(page, css):
    """Close a dialog with its Cancel or Close button (the contract names none for every
    dialog), or Escape."""
    from selenium.webdriver.common.keys import Keys
    dlg = page.wait_visible(css)
    for b in dlg.find_elements("css selector", "button[id]"):
        if b.is_displayed() and b.text.strip().lower() in ("cancel", "close"):
            page.close_with("#" + b.get_attribute("id"), css)
            return
    dlg.send_keys(Keys.ESCAPE)
    page.wait_hidden(css)


def big_throttled_set(iifs, name="big", size=32 * MiB):
    """An independent set whose every chunk differs, throttled so that an update takes about
    20 s: 8192 chunks of 4 KiB, 40 ms of sleep after every 16."""
    m, s, b = iifs.volumes(name, size)
    iifs.iiadm("-e", "ind", m, s, b, name, "--chunk-size", "4096")
    iifs.wait_idle(name)
    iifs.write_master(name, b"x" * size)
    iifs.iiadm("-P", "40", "16", name)
    st = iifs.set(name)
    assert st["chunks_differ"] == st["chunks"]
    return m


def test_update_progress_moves_then_abort(iifs, page):
    """Update to shadow from the row menu on a big throttled set: the row's progress bar appears
    and its value grows from poll to poll; Abort from the row menu stops the copy (iiadm: state
    aborted) and the row shows it."""
    big_throttled_set(iifs)
    page.wait_row("big")
    page.row_action("big", "update-shadow")
    v1 = page.wait(lambda: page.progress_value("big") is not None and page.progress_value("big"),
                   5, "a progress bar in the big row") or 0
    assert iifs.set("big")["state"] == "updating"
    v1 = page.progress_value("big")
    page.shot("progress")
    v2 = page.wait(lambda: (page.progress_value("big") or 0) > v1 and page.progress_value("big"),
                   8, f"the progress bar moving past {v1}")
    assert 0 < v2 < 100
    page.row_action("big", "abort")
    page.wait(lambda: iifs.set("big")["state"] == "aborted", 5, "iiadm: big aborted")
    page.wait(lambda: "aborted" in (page.cell_text("big", "state") or ""), 3, "row: aborted")
    page.wait(lambda: page.progress_value("big") is None, 3, "no progress bar after the abort")
    page.shot("aborted")


def test_set_properties_tabs(iifs, page):
    """Set properties: the Config tab shows name, type, uuid and the volumes; attach and detach an
    overflow; the Status tab runs a copy with a live progress bar, rate and time left, applies the
    throttle (delay, units) and aborts."""
    big_throttled_set(iifs)
    cm = iifs.volume("cm-master.img", 4 * MiB)
    iifs.iiadm("-e", "dep", cm, iifs.volume("cm-shadow.img", 1 * MiB),
               str(iifs.vol / "cm-bitmap.img"), "cm")
    iifs.iiadm("-O", iifs.volume("pool.img", 2 * MiB), "pool")

    # Config tab of the compact set: attach, then detach its overflow.
    page.row_action("cm", "properties")
    page.wait_visible("#set-props")
    page.click("#tab-config")
    props = page.wait_visible("#set-props")
    st = iifs.set("cm")
    page.wait(lambda: st["uuid"] in props.text, 5, "the uuid in the Config tab")
    for path in (st["master"], st["shadow"], st["bitmap"]):
        assert path in props.text, f"{path} not in the Config tab"
    assert "compact" in props.text
    page.select("#sp-attach-overflow", value="pool")
    page.click("#sp-attach")
    page.wait(lambda: iifs.set("cm")["overflow"] == "pool", 5, "iiadm: cm attached to pool")
    page.shot("set-props-config")
    page.click("#sp-detach")
    page.wait(lambda: iifs.set("cm")["overflow"] == "-", 5, "iiadm: cm detached")
    page.close_with("#sp-close", "#set-props")

    # Status tab of the big set.
    page.row_action("big", "properties")
    page.wait_visible("#set-props")
    page.click("#tab-status")
    page.fill("#sp-delay", "30")
    page.fill("#sp-units", "12")
    page.click("#sp-params")
    page.wait(lambda: iifs.set("big")["params"] == "30 12", 5, "iiadm: params 30 12")
    page.click("#sp-update-shadow")
    page.wait(lambda: iifs.set("big")["state"] == "updating", 5, "iiadm: big updating")

    def bar():
        el = page.visible("#sp-progress")
        v = el.get_attribute("value") if el is not None else None
        return float(v) if v not in (None, "") else None
    # The bar of the update just started (not the 100% of the idle state a poll may still show).
    v1 = page.wait(lambda: bar() is not None and 0 < bar() < 100 and bar(), 8,
                   "#sp-progress between 0 and 100")
    page.wait(lambda: (bar() or 0) > v1, 8, f"#sp-progress past {v1}")
    page.wait(lambda: any(ch.isdigit() for ch in page.visible("#sp-rate").text), 5, "a rate")
    page.wait(lambda: any(ch.isdigit() for ch in page.visible("#sp-eta").text), 5, "a time left")
    assert "updating" in page.visible("#sp-state").text
    page.shot("set-props-status")
    page.click("#sp-abort")
    page.wait(lambda: iifs.set("big")["state"] == "aborted", 5, "iiadm: big aborted")
    page.wait(lambda: "aborted" in page.visible("#sp-state").text, 3, "#sp-state aborted")
    page.close_with("#sp-close", "#set-props")


def confirm_dialog(page):
    return page.wait_visible("#confirm-dialog")


def test_update_master_asks_naming_the_master(iifs, page):
    """Update to master asks first, naming the master volume; Cancel changes nothing; OK restores
    the master from the shadow (read back through the mount)."""
    m, s, b = iifs.volumes("db", 2 * MiB, b"o")
    iifs.iiadm("-e", "dep", m, s, b, "db")
    iifs.write_master("db", b"N" * 65536)
    assert iifs.read("db", "master", 4) == b"NNNN"
    pit = iifs.set("db")["pit_time"]
    page.wait_row("db")

    page.row_action("db", "update-master")
    dlg = confirm_dialog(page)
    assert m in dlg.text, f"the confirmation does not name {m}: {dlg.text!r}"
    page.shot("confirm-update-master")
    page.click("#confirm-cancel")
    page.wait_hidden("#confirm-dialog")
    time.sleep(1.5)
    assert iifs.read("db", "master", 4) == b"NNNN", "Cancel overwrote the master"
    assert iifs.set("db")["chunks_differ"] == 1

    page.row_action("db", "copy-master")
    assert m in confirm_dialog(page).text
    page.click("#confirm-cancel")
    page.wait_hidden("#confirm-dialog")

    page.row_action("db", "update-master")
    confirm_dialog(page)
    page.click("#confirm-ok")
    page.wait_hidden("#confirm-dialog")
    page.wait(lambda: iifs.read("db", "master", 4) == b"oooo", 10, "the master restored")
    st = iifs.wait_idle("db")
    assert st["chunks_differ"] == 0 and st["pit_time"] >= pit


def test_group_of_two_sets_created_and_updated(iifs, page):
    """New group: name and type, the sets of that type offered as members; Create makes the group
    with both (iiadm -G); its row shows; a group update runs on both at one point in time; group
    properties list the members; a group update to master asks naming both masters."""
    masters = []
    for n in ("a1", "a2"):
        m, s, b = iifs.volumes(n, 4 * MiB, n.encode())
        iifs.iiadm("-e", "ind", m, s, b, n)
        masters.append(m)
    dm, ds, db = iifs.volumes("d1", 2 * MiB)
    iifs.iiadm("-e", "dep", dm, ds, db, "d1")
    for n in ("a1", "a2"):
        iifs.wait_idle(n)
    page.wait_row("a2")

    page.click("#new-group")
    page.wait_visible("#new-group-dialog")
    page.fill("#ng-name", "app")
    page.select("#ng-type", value="independent")
    page.wait_visible("input.ng-member[value='a1']")
    assert page.visible("input.ng-member[value='d1']") is None, "a dependent set offered"
    page.click("input.ng-member[value='a1']")
    page.click("input.ng-member[value='a2']")
    page.shot("new-group")
    page.click("#ng-create")
    page.wait_hidden("#new-group-dialog")
    page.wait(lambda: sorted(iifs.groups().get("app", {}).get("members", [])) == ["a1", "a2"],
              5, "iiadm: group app of a1 and a2")
    page.wait_row("app", kind="group", timeout=3)

    # Dirty both masters, throttle both, update the group from its row.
    for n in ("a1", "a2"):
        iifs.write_master(n, b"z" * (4 * MiB))
        iifs.iiadm("-P", "150", "2", n)  # 64 chunks: about 5 s
    pits = {n: iifs.set(n)["pit_time"] for n in ("a1", "a2")}
    time.sleep(1.1)  # pit_time is in seconds
    page.row_action("app", "update-shadow", kind="group")
    page.wait(lambda: page.progress_value("app", kind="group") is not None, 5,
              "a progress bar in the group row")
    page.shot("group-updating")
    for n in ("a1", "a2"):
        iifs.iiadm("-P", "0", "100", n)
    sts = [iifs.wait_idle(n) for n in ("a1", "a2")]
    assert all(st["chunks_differ"] == 0 for st in sts)
    assert sts[0]["pit_time"] == sts[1]["pit_time"] > max(pits.values()), \
        "the group's point in time is not one for both"
    for n in ("a1", "a2"):
        assert iifs.read(n, "shadow", 4) == b"zzzz"
    page.wait(lambda: "100" in page.cell_text("app", "progress", kind="group"), 5, "group 100%")

    page.row_action("app", "properties", kind="group")
    gp = page.wait_visible("#group-props")
    page.wait_visible("#group-props tr[data-member='a1']")
    page.wait_visible("#group-props tr[data-member='a2']")
    page.shot("group-props")
    page.click("#gp-update-master")
    dlg = confirm_dialog(page)
    for m in masters:
        assert m in dlg.text, f"the confirmation does not name {m}"
    page.click("#confirm-cancel")
    page.wait_hidden("#confirm-dialog")
    assert gp.is_displayed()

    # Remove a member, add it back from the list of sets of that type in no group.
    page.click(".gp-remove[data-member='a2']")
    page.wait(lambda: iifs.groups()["app"]["members"] == ["a1"], 5, "iiadm: a2 removed")
    page.wait(lambda: page.visible("#group-props tr[data-member='a2']") is None, 3, "row gone")
    page.wait(lambda: "a2" in [o.get_attribute("value") for o in
                               page.all("#gp-add-set option")], 3, "a2 offered")
    assert "d1" not in [o.get_attribute("value") for o in page.all("#gp-add-set option")]
    page.select("#gp-add-set", value="a2")
    page.click("#gp-add")
    page.wait(lambda: sorted(iifs.groups()["app"]["members"]) == ["a1", "a2"], 5,
              "iiadm: a2 back")
    page.close_with("#gp-close", "#group-props")


def test_overflow_init_and_delete(iifs, page):
    """Overflow volumes: init from the page (iiadm -L sees it), the row shows the volume and the
    sets using it, a refused delete shows the daemon's sentence, delete removes it."""
    vol = iifs.volume("pool.img", 4 * MiB)
    page.wait_visible("#overflows")
    page.fill("#ov-volume", vol)
    page.fill("#ov-name", "pool")
    page.click("#ov-init")
    page.wait(lambda: "pool" in iifs.overflows(), 5, "iiadm: overflow pool")
    assert iifs.overflows()["pool"]["volume"] == vol
    row = page.wait_visible("#overflows tr[data-overflow='pool']")
    assert vol in row.text

    m = iifs.volume("cm-master.img", 4 * MiB)
    iifs.iiadm("-e", "dep", m, iifs.volume("cm-shadow.img", 1 * MiB),
               str(iifs.vol / "cm-bitmap.img"), "cm")
    iifs.iiadm("-A", "cm", "pool")
    page.wait(lambda: "cm" in page.visible("#overflows tr[data-overflow='pool']").text, 3,
              "the overflow row names cm")
    page.shot("overflows")

    sentence = iifs.refusal("-Z", "pool")
    page.click("button.ov-delete[data-overflow='pool']")
    if page.visible("#confirm-dialog"):
        page.click("#confirm-ok")
    alert = page.wait(lambda: page.visible("#alert") if page.visible("#alert")
                      and page.visible("#alert").text.strip() else None, 10, "#alert")
    assert sentence in alert.text, f"{sentence!r} not in {alert.text!r}"
    assert "pool" in iifs.overflows()

    iifs.iiadm("-D", "cm")
    page.click("button.ov-delete[data-overflow='pool']")
    if page.visible("#confirm-dialog"):
        page.click("#confirm-ok")
    page.wait(lambda: "pool" not in iifs.overflows(), 5, "iiadm: pool deleted")
    page.wait(lambda: page.visible("#overflows tr[data-overflow='pool']") is None, 3,
              "the overflow row gone")


def test_live_update_within_two_seconds(iifs, page):
    """Changes made with iiadm outside the browser show within 2 s: a new set, a state change, a
    removed set."""
    m, s, b = iifs.volumes("live", 2 * MiB)
    page.wait(lambda: page.first("#last-update").text.strip(), 5, "#last-update")

    def within_2s(cond, what):
        t0 = time.time()
        page.wait(cond, 2.0, what, interval=0.02)
        return time.time() - t0

    iifs.iiadm("-e", "dep", m, s, b, "live")
    within_2s(lambda: page.row("live"), "the new set's row")
    iifs.iiadm("-s", "live")
    within_2s(lambda: "suspended" in (page.cell_text("live", "state") or ""), "suspended")
    iifs.iiadm("-r", "live")
    within_2s(lambda: "idle" in (page.cell_text("live", "state") or ""), "idle again")
    iifs.iiadm("-d", "live")
    within_2s(lambda: page.row("live") is None, "the row gone")


HIDE = """
Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
document.dispatchEvent(new Event("visibilitychange"));
"""
SHOW = """
delete document.visibilityState;
delete document.hidden;
document.dispatchEvent(new Event("visibilitychange"));
"""


def test_polls_once_a_second_and_not_while_hidden(iifs, page):
    """The page polls about once a second while shown, and not at all while hidden: when the
    user goes to another page of Cockpit's shell (which keeps the application's frame, hidden),
    and when the browser tab is hidden (document.visibilityState, emulated: a headless browser's
    background tab stays "visible"); it polls again at once when shown."""
    calls = page.cockpit.iiadm_calls

    def polls(since):
        return [t for t, args in calls() if t >= since and "-i all" in args]
    time.sleep(0.5)
    t0 = time.time()
    time.sleep(4)
    n = len(polls(t0))
    assert 2 <= n <= 8, f"{n} state polls in 4 s while shown"

    def quiet_for(seconds, what):
        time.sleep(1.0)  # a poll in flight may end
        t1 = time.time()
        time.sleep(seconds)
        n = len(polls(t1))
        assert n == 0, f"{n} polls in {seconds} s while {what}"

    d = page.driver
    # Another page of the shell: the frame stays, hidden.
    d.switch_to.default_content()
    page.click("a[href='/system']")
    page.wait(lambda: "/system" in d.current_url, 10, "the shell's Overview")
    assert page.all(page.FRAME), "the shell dropped the application's frame"
    quiet_for(3, "another page of the shell was shown")
    t2 = time.time()
    page.click("a[href='/iifs']")
    d.switch_to.frame(d.find_element("css selector", page.FRAME))
    page.wait(lambda: polls(t2), 2, "polls resumed when the page was shown again")

    # The browser tab hidden.
    d.execute_script(HIDE)
    quiet_for(3, "the tab was hidden")
    t3 = time.time()
    d.execute_script(SHOW)
    page.wait(lambda: polls(t3), 1.5, "polls resumed at once when the tab was shown")


def test_no_admin_access(iifs, page_noadmin):
    """A user without administrative access sees Cockpit's "Administrative access required"
    state, not a broken page or a JS error (the console check runs after the test), and no
    table."""
    page = page_noadmin
    page.open()
    el = page.wait(lambda: page.visible("#admin-required"), 15, "#admin-required shown")
    assert "Administrative access required" in el.text
    assert "administrative access" in el.text.lower().replace("administrative access required",
                                                                "", 1), \
        f"no hint to turn on administrative access: {el.text!r}"
    tbl = page.first("#objects")
    assert tbl is None or not tbl.is_displayed(), "the table shows without admin access"
    page.shot("no-admin")
