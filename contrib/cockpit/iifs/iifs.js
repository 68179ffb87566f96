/*
 * Instant Image: the Cockpit page of iifs (point-in-time copy sets).
 *
 * Plain JavaScript on Cockpit's own cockpit.js, no build step. Everything the
 * page knows comes from `iiadm --mount MOUNT ... --json` run through the
 * bridge with administrative access; every change is an iiadm command, and
 * when the daemon refuses one, its sentence (iiadm's stderr) is shown as it is.
 */
(function () {
    "use strict";

    const _ = cockpit.gettext;
    const $ = (id) => document.getElementById(id);

    const POLL_MS = 1000;
    const CHUNK_SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576];
    const RUNNING = new Set(["copying", "updating"]);

    const state = {
        mounts: [], // mountpoints of fuse.iifs file systems, in /proc order
        mount: null, // the one shown
        sets: [], // iiadm -i all --json
        groups: [], // iiadm -G --json
        overflows: [], // iiadm -L --json
        setByName: new Map(),
        groupByName: new Map(),
        loaded: false, // a first state was read for this mount
        admin: null, // true, false, or null while unknown
        sort: { key: "name", dir: 1 },
        filter: "",
        samples: new Map(), // set name -> {t, left, rate} for rate and time left
        sizeCache: new Map(), // volume path -> size in bytes
        view: "local", // "local" (this host's mount) or "fleet" (#/fleet: every host of a hosts file)
        fleetHostsOption: null, // the last #/fleet?hosts=FILE, kept when going back and forth
    };

    /* ---------------------------------------------------------------- helpers */

    function el(tag, attrs, ...children) {
        const e = document.createElement(tag);
        if (attrs) {
            for (const [k, v] of Object.entries(attrs)) {
                if (v === undefined || v === null || v === false) continue;
                if (k === "class") e.className = v;
                else if (k === "text") e.textContent = v;
                else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
                else if (k === "dataset") Object.assign(e.dataset, v);
                else e.setAttribute(k, v === true ? "" : v);
            }
        }
        for (const c of children) {
            if (c === null || c === undefined || c === false) continue;
            e.append(c instanceof Node ? c : String(c));
        }
        return e;
    }

    function show(node, visible) {
        node.hidden = !visible;
    }

    function fmtBytes(n) {
        if (n === null || n === undefined || isNaN(n)) return "–";
        const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let i = 0;
        let v = Number(n);
        while (v >= 1024 && i < units.length - 1) {
            v /= 1024;
            i++;
        }
        const s = i === 0 ? String(v) : (v >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(1));
        return s + " " + units[i];
    }

    function fmtDuration(s) {
        if (!isFinite(s) || s < 0) return "–";
        s = Math.round(s);
        if (s < 60) return s + " s";
        const m = Math.floor(s / 60);
        if (m < 60) return m + " min " + (s % 60) + " s";
        const h = Math.floor(m / 60);
        return h + " h " + (m % 60) + " min";
    }

    function fmtTime(epoch) {
        if (!epoch) return "–";
        const d = new Date(epoch * 1000);
        return d.toLocaleString();
    }

    function basename(p) {
        const s = String(p).replace(/\/+$/, "");
        return s.slice(s.lastIndexOf("/") + 1);
    }

    function normDir(d) {
        d = String(d || "").trim();
        if (!d.startsWith("/")) d = "/" + d;
        d = d.replace(/\/+/g, "/");
        const parts = [];
        for (const p of d.split("/")) {
            if (p === "" || p === ".") continue;
            if (p === "..") parts.pop();
            else parts.push(p);
        }
        return "/" + parts.join("/");
    }

    function dirname(p) {
        const d = normDir(p);
        const i = d.lastIndexOf("/");
        return i <= 0 ? "/" : d.slice(0, i);
    }

    /* The text of a failed spawn: iiadm's own sentence when there is one. */
    function errorText(ex) {
        if (ex && typeof ex.message === "string" && ex.message.trim() !== "")
            return ex.message.replace(/\s+$/, "");
        if (ex && ex.problem === "not-found")
            return _("iiadm was not found on this host (install iifs, or put iiadm on the PATH of the Cockpit session)");
        return cockpit.message(ex);
    }

    function isAccessProblem(ex) {
        return ex && (ex.problem === "access-denied" || ex.problem === "not-authorized" ||
                      ex.problem === "authentication-failed");
    }

    /* cockpit.spawn as a native promise */
    function spawn(argv, opts) {
        return new Promise((resolve, reject) => {
            const proc = cockpit.spawn(argv, Object.assign({ err: "message" }, opts || {}));
            proc.then((out, msg) => resolve(out), (ex) => reject(ex));
        });
    }

    function iiadm(args, mount) {
        return spawn(["iiadm", "--mount", mount || state.mount].concat(args), { superuser: "require" });
    }

    function iiadmJSON(args, mount) {
        return iiadm(args, mount).then((out) => JSON.parse(out));
    }

    /* ------------------------------------------------------------ messages */

    function showAlert(text) {
        $("alert-text").textContent = text;
        show($("alert"), true);
    }

    function clearAlert() {
        $("alert-text").textContent = "";
        show($("alert"), false);
    }

    function showInline(id, text) {
        const e = $(id);
        if (!e) return;
        e.textContent = text || "";
        show(e, !!text);
    }

    let noticeTimer = null;
    function showNotice(text) {
        const n = $("notice");
        if (!text) return;
        n.textContent = text;
        show(n, true);
        clearTimeout(noticeTimer);
        noticeTimer = setTimeout(() => show(n, false), 8000);
    }

    /*
     * Run an iiadm command that changes something. On a refusal, the
     * daemon's sentence goes to the dialog's inline error (when the action
     * came from a dialog) and, unless the dialog is one of the create dialogs,
     * to the page's alert too. Returns true on success.
     */
    function act(args, opts) {
        opts = opts || {};
        clearAlert();
        if (opts.inline) showInline(opts.inline, "");
        return iiadm(args)
                .then((out) => {
                    if (out && out.trim() && !opts.quiet) showNotice(out.trim());
                    pollSoon();
                    return true;
                })
                .catch((ex) => {
                    if (isAccessProblem(ex)) {
                        setAdmin(false);
                        return false;
                    }
                    const text = errorText(ex);
                    if (opts.inline) showInline(opts.inline, text);
                    if (!opts.inlineOnly) showAlert(text);
                    pollSoon();
                    return false;
                });
    }

    /* ------------------------------------------------------------- polling */

    let pollTimer = null;
    let polling = false;
    let pollAgain = false;
    const mountsFile = cockpit.file("/proc/self/mounts");

    /* The main view polls only while it is what the user sees (not in the fleet view). */
    function visible() {
        return document.visibilityState === "visible" && !cockpit.hidden && state.view === "local";
    }

    function schedule(ms) {
        clearTimeout(pollTimer);
        pollTimer = null;
        if (!visible()) return;
        pollTimer = setTimeout(poll, ms);
    }

    function pollSoon() {
        if (polling) pollAgain = true;
        else schedule(0);
    }

    function poll() {
        pollTimer = null;
        if (polling) {
            pollAgain = true;
            return;
        }
        if (!visible()) return;
        polling = true;
        refresh()
                .catch((ex) => console.warn("iifs: refresh failed", ex))
                .then(() => {
                    polling = false;
                    if (pollAgain) {
                        pollAgain = false;
                        schedule(0);
                    } else {
                        schedule(state.admin === false ? 5000 : POLL_MS);
                    }
                });
    }

    function onVisibility() {
        if (visible()) schedule(0);
        else {
            clearTimeout(pollTimer);
            pollTimer = null;
        }
    }

    function unescapeMount(s) {
        return s.replace(/\\([0-7]{3})/g, (m, o) => String.fromCharCode(parseInt(o, 8)));
    }

    function readMounts() {
        return mountsFile.read().then((content) => {
            const mounts = [];
            for (const line of (content || "").split("\n")) {
                const f = line.split(" ");
                if (f.length >= 3 && f[2] === "fuse.iifs") mounts.push(unescapeMount(f[1]));
            }
            return mounts;
        });
    }

    function chooseMount(mounts) {
        if (state.mount && mounts.includes(state.mount)) return state.mount;
        const wanted = cockpit.location.options.mount;
        if (wanted && mounts.includes(wanted)) return wanted;
        let saved = null;
        try {
            saved = window.localStorage.getItem("iifs-mount");
        } catch (e) {}
        if (saved && mounts.includes(saved)) return saved;
        return mounts.length ? mounts[0] : null;
    }

    function setMount(m) {
        if (m === state.mount) return;
        state.mount = m;
        state.loaded = false;
        state.sets = [];
        state.groups = [];
        state.overflows = [];
        state.samples.clear();
        closeAllDialogs();
        try {
            if (m) window.localStorage.setItem("iifs-mount", m);
        } catch (e) {}
        if (m && cockpit.location.options.mount !== m && state.mounts.length > 1)
            cockpit.location.replace(cockpit.location.path, { mount: m });
    }

    function renderMounts() {
        const sel = $("mount-select");
        const several = state.mounts.length > 1;
        show(sel, several);
        show($("mount-path"), !several);
        $("mount-path").textContent = state.mount || "";
        show($("mount-label"), !!state.mount);
        const current = Array.from(sel.options).map((o) => o.value).join("\n");
        if (current !== state.mounts.join("\n")) {
            sel.replaceChildren(...state.mounts.map((m) => el("option", { value: m, text: m })));
        }
        if (state.mount) sel.value = state.mount;
    }

    function refresh() {
        return readMounts().then((mounts) => {
            state.mounts = mounts;
            state.mountsRead = true;
            setMount(chooseMount(mounts));
            renderMounts();
            if (state.admin === false) {
                renderPage();
                return;
            }
            if (!state.mount) {
                renderPage();
                return;
            }
            const mount = state.mount;
            return Promise.all([
                iiadmJSON(["-i", "all", "--json"], mount),
                iiadmJSON(["-G", "--json"], mount),
                iiadmJSON(["-L", "--json"], mount),
            ]).then(([sets, groups, overflows]) => {
                if (mount !== state.mount) return;
                if (state.admin === null) setAdmin(true);
                state.stateError = null;
                ingest(sets, groups, overflows);
                renderPage();
            }, (ex) => {
                if (mount !== state.mount) return;
                if (isAccessProblem(ex)) {
                    setAdmin(false);
                } else {
                    state.stateError = errorText(ex);
                }
                renderPage();
            });
        });
    }

    function ingest(sets, groups, overflows) {
        const now = Date.now() / 1000;
        state.sets = Array.isArray(sets) ? sets : [];
        state.groups = Array.isArray(groups) ? groups : [];
        state.overflows = Array.isArray(overflows) ? overflows : [];
        state.setByName = new Map(state.sets.map((s) => [s.name, s]));
        state.groupByName = new Map(state.groups.map((g) => [g.name, g]));
        state.loaded = true;
        state.lastUpdate = new Date();

        // rate and time left from successive polls (chunks still to copy)
        for (const s of state.sets) {
            const prev = state.samples.get(s.name);
            const left = typeof s.chunks_to_copy === "number" ? s.chunks_to_copy : null;
            const running = RUNNING.has(s.state);
            const sample = { t: now, left, running, direction: s.direction, rate: null };
            if (running && prev && prev.running && prev.direction === s.direction &&
                left !== null && prev.left !== null && now > prev.t) {
                const r = (prev.left - left) / (now - prev.t);
                if (r >= 0) sample.rate = prev.rate === null ? r : prev.rate * 0.5 + r * 0.5;
                else sample.rate = prev.rate;
            } else if (running && prev && prev.running) {
                sample.rate = prev.rate;
            }
            state.samples.set(s.name, sample);
        }
        for (const name of Array.from(state.samples.keys()))
            if (!state.setByName.has(name)) state.samples.delete(name);
    }

    /* ------------------------------------------------ administrative access */

    function setAdmin(allowed) {
        if (state.admin === allowed) return;
        state.admin = allowed;
        if (allowed === false) closeAllDialogs();
        renderPage();
        renderFleetSoon();
    }

    /* ---------------------------------------------------------- main view */

    function typeOfGroup(g) {
        const types = new Set((g.members || []).map((m) => {
            const s = state.setByName.get(m);
            return s && s.type ? (s.type === "independent" ? "independent" : "dependent") : null;
        }).filter(Boolean));
        return types.size === 1 ? Array.from(types)[0] : null;
    }

    function rowsModel() {
        const rows = [];
        for (const g of state.groups) {
            const t = typeOfGroup(g);
            rows.push({
                kind: "group",
                name: g.name,
                type: "group",
                typeDetail: t ? _("group of ") + t + _(" sets") : _("group"),
                state: g.state || "",
                status: g.status || "",
                progress: typeof g.progress === "number" ? g.progress : 0,
                running: (g.member || []).some((m) => RUNNING.has(m.state)) || RUNNING.has(g.state),
                direction: null,
                group: "",
                error: "",
                obj: g,
            });
        }
        for (const s of state.sets) {
            rows.push({
                kind: "set",
                name: s.name,
                type: s.type || "unknown",
                typeDetail: s.type || _("unknown (offline since start)"),
                state: s.state || "",
                status: s.status || "",
                progress: typeof s.progress === "number" ? s.progress : 0,
                running: RUNNING.has(s.state),
                direction: s.direction && s.direction !== "-" ? s.direction : null,
                group: s.group && s.group !== "-" ? s.group : "",
                error: s.last_error && s.last_error !== "-" ? s.last_error : "",
                obj: s,
            });
        }
        const f = state.filter.trim().toLowerCase();
        const shown = f
            ? rows.filter((r) => (r.name + "\n" + r.type + "\n" + r.state).toLowerCase().includes(f) ||
                                 (r.kind === "group" && "group".includes(f)))
            : rows;
        const { key, dir } = state.sort;
        const statusRank = { error: 0, degraded: 1, normal: 2 };
        shown.sort((a, b) => {
            let c;
            if (key === "progress") c = a.progress - b.progress;
            else if (key === "status") c = (statusRank[a.status] ?? 3) - (statusRank[b.status] ?? 3) || a.status.localeCompare(b.status);
            else c = String(a[key]).localeCompare(String(b[key]), undefined, { numeric: true });
            if (c === 0) c = a.name.localeCompare(b.name, undefined, { numeric: true }) || (a.kind === "group" ? -1 : 1);
            return c * dir;
        });
        return { rows, shown };
    }

    const SVG_NS = "http://www.w3.org/2000/svg";
    function icon(kind) {
        const svg = document.createElementNS(SVG_NS, "svg");
        svg.setAttribute("viewBox", "0 0 16 16");
        svg.setAttribute("width", "16");
        svg.setAttribute("height", "16");
        svg.setAttribute("aria-hidden", "true");
        svg.classList.add("icon", "icon-" + kind);
        const paths = kind === "group"
            ? ["M1 4h6v5H1z", "M9 4h6v5H9z", "M1 11h14v2H1z"]
            : ["M2 2h12v4H2z", "M2 8h12v4H2z", "M11 3.5h1.5v1H11z", "M11 9.5h1.5v1H11z"];
        for (const d of paths) {
            const p = document.createElementNS(SVG_NS, "path");
            p.setAttribute("d", d);
            svg.appendChild(p);
        }
        return svg;
    }

    function progressCell(cell, r) {
        if (r.running) {
            let bar = cell.querySelector("progress.sync");
            if (!bar) {
                cell.replaceChildren(
                    el("progress", { class: "sync", max: "100", value: String(r.progress) }),
                    el("span", { class: "pct" }),
                    el("span", { class: "dir muted" }));
                bar = cell.querySelector("progress.sync");
            }
            bar.value = r.progress;
            bar.setAttribute("value", String(r.progress));
            bar.textContent = r.progress + "%";
            cell.querySelector(".pct").textContent = r.progress + "%";
            cell.querySelector(".dir").textContent = r.direction ? "→ " + r.direction : "";
            cell.title = r.direction ? _("copying to the ") + r.direction : "";
        } else {
            const text = r.progress + "%";
            if (cell.querySelector("progress") || cell.textContent !== text) cell.textContent = text;
            cell.title = "";
        }
    }

    function setText(node, text) {
        if (node.textContent !== text) node.textContent = text;
    }

    function buildRow(r) {
        const tr = el("tr", { dataset: { kind: r.kind, name: r.name } });
        const nameBtn = el("button", {
            type: "button",
            class: "link",
            text: r.name,
            onclick: () => (r.kind === "set" ? openSetProps(tr.dataset.name) : openGroupProps(tr.dataset.name)),
        });
        const actions = el("button", {
            type: "button",
            class: "row-actions kebab",
            "aria-label": _("Actions for ") + r.name,
            "aria-haspopup": "menu",
            title: _("Actions"),
            onclick: (ev) => {
                ev.stopPropagation();
                toggleMenu(tr, actions);
            },
        });
        tr.append(
            el("td", { class: "col-icon" }, icon(r.kind)),
            el("td", { class: "col-name" }, nameBtn),
            el("td", { class: "col-type" }),
            el("td", { class: "col-state" }),
            el("td", { class: "col-status" }),
            el("td", { class: "col-progress" }),
            el("td", { class: "col-group" }),
            el("td", { class: "col-actions" }, actions));
        return tr;
    }

    function updateRow(tr, r) {
        setText(tr.querySelector(".col-type"), r.type);
        tr.querySelector(".col-type").title = r.typeDetail;
        const st = tr.querySelector(".col-state");
        setText(st, r.state);
        st.className = "col-state state-" + r.state.replace(/\s+/g, "-");
        const status = tr.querySelector(".col-status");
        setText(status, r.status);
        status.className = "col-status status-" + (r.status || "unknown");
        status.title = r.error;
        progressCell(tr.querySelector(".col-progress"), r);
        const g = tr.querySelector(".col-group");
        if (r.kind === "set") setText(g, r.group);
        else setText(g, (r.obj.members || []).length + (r.obj.members && r.obj.members.length === 1 ? _(" set") : _(" sets")));
        tr.classList.toggle("member", r.kind === "set" && !!r.group);
        tr.classList.toggle("has-error", r.status === "error");
        if (openMenu && openMenu.row === tr) updateMenu(tr);
    }

    function renderTable() {
        const body = $("objects-body");
        const { rows, shown } = rowsModel();
        const existing = new Map();
        for (const tr of Array.from(body.children)) existing.set(tr.dataset.kind + "\n" + tr.dataset.name, tr);
        const keep = new Set();
        let prev = null;
        for (const r of shown) {
            const key = r.kind + "\n" + r.name;
            let tr = existing.get(key);
            if (!tr) tr = buildRow(r);
            updateRow(tr, r);
            keep.add(key);
            const want = prev ? prev.nextSibling : body.firstChild;
            if (want !== tr) body.insertBefore(tr, want);
            prev = tr;
        }
        for (const [key, tr] of existing) {
            if (!keep.has(key)) {
                if (openMenu && openMenu.row === tr) closeMenu();
                tr.remove();
            }
        }
        const empty = $("objects-empty");
        if (rows.length === 0) {
            empty.textContent = _("No sets yet. “New set” makes one: a master volume, a shadow volume that holds its image at a point in time, and a bitmap volume for the set's state.");
            show(empty, true);
        } else if (shown.length === 0) {
            empty.textContent = _("No set or group matches “") + state.filter + "”.";
            show(empty, true);
        } else {
            show(empty, false);
        }
        const nSets = state.sets.length;
        const nGroups = state.groups.length;
        $("count").textContent = (shown.length !== rows.length ? shown.length + _(" of ") : "") +
            nSets + (nSets === 1 ? _(" set") : _(" sets")) + ", " +
            nGroups + (nGroups === 1 ? _(" group") : _(" groups"));
        for (const th of document.querySelectorAll("#objects th[data-sort]")) {
            const on = th.dataset.sort === state.sort.key;
            th.setAttribute("aria-sort", on ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
        }
    }

    function renderOverflows() {
        const body = $("overflow-body");
        const rows = state.overflows.slice().sort((a, b) => a.name.localeCompare(b.name));
        const existing = new Map(Array.from(body.children).map((tr) => [tr.dataset.overflow, tr]));
        const keep = new Set();
        let prev = null;
        for (const o of rows) {
            let tr = existing.get(o.name);
            if (!tr) {
                tr = el("tr", { dataset: { overflow: o.name } },
                        el("td", { class: "ov-name" }),
                        el("td", { class: "ov-vol mono" }),
                        el("td", { class: "ov-chunk" }),
                        el("td", { class: "ov-used" }),
                        el("td", { class: "ov-sets" }),
                        el("td", { class: "col-actions" },
                           el("button", {
                               type: "button",
                               class: "btn small ov-delete",
                               dataset: { overflow: o.name },
                               text: _("Delete"),
                               onclick: () => act(["-Z", o.name]),
                           })));
            }
            setText(tr.querySelector(".ov-name"), o.name);
            setText(tr.querySelector(".ov-vol"), o.volume);
            setText(tr.querySelector(".ov-chunk"), fmtBytes(o.chunk_size));
            const used = tr.querySelector(".ov-used");
            const pct = o.chunks_total ? Math.round(100 * o.chunks_used / o.chunks_total) : 0;
            const text = o.chunks_used + " / " + o.chunks_total + _(" chunks (") + pct + "%)";
            if (used.dataset.text !== text) {
                used.dataset.text = text;
                used.replaceChildren(el("meter", { min: "0", max: String(o.chunks_total || 1), value: String(o.chunks_used), high: String(0.8 * (o.chunks_total || 1)) }),
                                     el("span", { text }));
            }
            used.title = fmtBytes(o.chunks_used * o.chunk_size) + _(" of ") + fmtBytes(o.chunks_total * o.chunk_size);
            const sets = Object.entries(o.sets || {});
            setText(tr.querySelector(".ov-sets"), sets.length ? sets.map(([n, c]) => n + " (" + c + ")").join(", ") : "–");
            keep.add(o.name);
            const want = prev ? prev.nextSibling : body.firstChild;
            if (want !== tr) body.insertBefore(tr, want);
            prev = tr;
        }
        for (const [name, tr] of existing) if (!keep.has(name)) tr.remove();
        show($("overflow-empty"), rows.length === 0);
        show($("overflow-table"), rows.length > 0);
    }

    function renderPage() {
        const admin = state.admin === false;
        show($("admin-required"), admin);
        show($("no-mount"), !admin && !state.mount && state.mountsRead);
        const ready = !admin && !!state.mount && state.loaded;
        show($("loading"), !admin && !!state.mount && !state.loaded && !state.stateError);
        show($("main"), ready);
        const se = $("state-error");
        if (!admin && state.stateError) {
            $("state-error-text").textContent = state.stateError;
            show(se, true);
        } else {
            show(se, false);
        }
        if (admin) {
            $("last-update").textContent = "";
            return;
        }
        if (!ready) return;
        renderTable();
        renderOverflows();
        if (state.lastUpdate) {
            const t = state.lastUpdate;
            $("last-update").textContent = _("Updated ") + t.toLocaleTimeString();
            $("last-update").dataset.time = String(t.getTime());
        }
        refreshOpenDialogs();
    }

    /* -------------------------------------------------------- action menu */

    let openMenu = null;

    function menuItems(tr) {
        const kind = tr.dataset.kind;
        const name = tr.dataset.name;
        const items = [];
        const sep = () => items.push(null);
        items.push(["new-set", _("New set…")], ["new-group", _("New group…")]);
        sep();
        if (kind === "set") {
            const s = state.setByName.get(name) || {};
            items.push(["update-shadow", _("Update shadow")],
                       ["copy-shadow", _("Copy to shadow")],
                       ["update-master", _("Update master…"), "warn"],
                       ["copy-master", _("Copy to master…"), "warn"],
                       ["abort", _("Abort copy")]);
            sep();
            if (s.state === "suspended") items.push(["resume", _("Resume")]);
            else items.push(["suspend", _("Suspend")]);
            if (s.state === "offline" || s.status === "error") items.push(["reset", _("Reset")]);
            items.push(["delete", _("Delete (disable)…"), "danger"]);
        } else {
            items.push(["update-shadow", _("Update shadows")],
                       ["copy-shadow", _("Copy to shadows")],
                       ["update-master", _("Update masters…"), "warn"],
                       ["copy-master", _("Copy to masters…"), "warn"],
                       ["abort", _("Abort copies")]);
            sep();
            items.push(["delete", _("Delete group"), "danger"]);
        }
        sep();
        items.push(["properties", _("Properties")]);
        return items;
    }

    function updateMenu(tr) {
        // a member's own update/copy is refused by the daemon: say why, still let it answer
        if (tr.dataset.kind !== "set" || !openMenu) return;
        const s = state.setByName.get(tr.dataset.name);
        const g = s && s.group && s.group !== "-" ? s.group : null;
        for (const b of openMenu.menu.querySelectorAll("button[data-action]")) {
            if (/^(update|copy)-/.test(b.dataset.action))
                b.title = g ? _("Member of group ") + g + _(": update and copy act on the whole group") : "";
        }
    }

    /* A row's action menu: the main view's items and actions unless `items`/`pick` say others
     * (the fleet view's rows). */
    function toggleMenu(tr, button, items, pick) {
        if (openMenu && openMenu.row === tr) {
            closeMenu();
            return;
        }
        closeMenu();
        const menu = el("div", { class: "menu", role: "menu" });
        for (const it of items || menuItems(tr)) {
            if (it === null) {
                if (menu.lastChild && !menu.lastChild.classList.contains("sep")) menu.append(el("div", { class: "sep", role: "separator" }));
                continue;
            }
            const [action, label, cls] = it;
            menu.append(el("button", {
                type: "button",
                role: "menuitem",
                class: "menu-item" + (cls ? " " + cls : ""),
                dataset: { action },
                text: label,
                onclick: (ev) => {
                    ev.stopPropagation();
                    closeMenu();
                    if (pick) pick(action);
                    else rowAction(tr.dataset.kind, tr.dataset.name, action);
                },
            }));
        }
        button.parentNode.append(menu);
        button.setAttribute("aria-expanded", "true");
        openMenu = { row: tr, menu, button };
        if (!pick) updateMenu(tr);
        const first = menu.querySelector("button");
        if (first) first.focus({ preventScroll: true });
    }

    function closeMenu() {
        if (!openMenu) return;
        openMenu.menu.remove();
        openMenu.button.setAttribute("aria-expanded", "false");
        openMenu = null;
    }

    function rowAction(kind, name, action) {
        if (action === "new-set") return openNewSet();
        if (action === "new-group") return openNewGroup();
        if (action === "properties") return kind === "set" ? openSetProps(name) : openGroupProps(name);
        if (kind === "set") return setAction(name, action, {});
        return groupAction(name, action, {});
    }

    /* ------------------------------------------------------- confirmations */

    let confirmResolve = null;

    function confirmDialog(title, body, okLabel, danger) {
        if (confirmResolve) confirmResolve(false);
        $("confirm-title").textContent = title;
        $("confirm-text").replaceChildren(...body);
        $("confirm-ok").textContent = okLabel;
        $("confirm-ok").className = "btn " + (danger === false ? "primary" : "danger");
        const d = $("confirm-dialog");
        return new Promise((resolve) => {
            confirmResolve = resolve;
            if (!d.open) d.showModal();
            $("confirm-cancel").focus();
        });
    }

    function finishConfirm(ok) {
        const d = $("confirm-dialog");
        const r = confirmResolve;
        confirmResolve = null;
        if (d.open) d.close();
        if (r) r(ok);
    }

    function masterOverwriteBody(what, sets) {
        const list = el("ul", { class: "volumes" });
        for (const s of sets) {
            list.append(el("li", null,
                           el("code", { class: "master-path", text: s.master || "?" }),
                           el("span", { class: "muted", text: _(" (master of set ") + s.name + _(", from its shadow ") + (s.shadow || "?") + ")" })));
        }
        return [
            el("p", { text: what }),
            list,
            el("p", { class: "strong", text: sets.length > 1 ? _("Their current contents are lost. Unmount them and stop what uses them first.") : _("Its current content is lost. Unmount it and stop what uses it first.") }),
        ];
    }

    /* ---------------------------------------------------------- set actions */

    function setAction(name, action, opts) {
        const s = state.setByName.get(name) || { name };
        const run = (args) => act(args, opts);
        switch (action) {
        case "update-shadow": return run(["-u", "s", name]);
        case "copy-shadow": return run(["-c", "s", name]);
        case "abort": return run(["-a", name]);
        case "suspend": return run(["-s", name]);
        case "resume": return run(["-r", name]);
        case "reset": return run(["-R", name]);
        case "update-master":
        case "copy-master": {
            const upd = action === "update-master";
            const what = upd
                ? _("Update master of set ") + name + _(": the chunks that differ (") + (s.chunks_differ ?? "?") + _(") are copied from the shadow onto the master volume")
                : _("Copy to master of set ") + name + _(": every chunk of the shadow is copied onto the master volume");
            return confirmDialog(upd ? _("Overwrite the master volume?") : _("Overwrite the whole master volume?"),
                                 masterOverwriteBody(what, [s]), upd ? _("Update master") : _("Copy to master"))
                    .then((ok) => ok ? run(["-n", upd ? "-u" : "-c", "m", name]) : false);
        }
        case "delete": {
            const vols = el("ul", { class: "volumes" });
            for (const role of ["master", "shadow", "bitmap"])
                if (s[role] && s[role] !== "-") vols.append(el("li", null, role + ": ", el("code", { text: s[role] })));
            const body = [
                el("p", { text: _("Delete set ") + name + _("? The set is disabled and its volumes are released:") }),
                vols,
            ];
            if (s.type && s.type !== "independent")
                body.push(el("p", { class: "strong", text: _("A dependent shadow is not an image on its own: its bytes 8192-65535 are zeroed so that a torn file system is not mounted by mistake.") }));
            else if (s.state && s.state !== "idle")
                body.push(el("p", { class: "strong", text: _("The shadow's copy from the master did not finish: its bytes 8192-65535 are zeroed.") }));
            return confirmDialog(_("Delete set ") + name + "?", body, _("Delete"))
                    .then((ok) => ok ? run(["-d", name]) : false);
        }
        }
        return Promise.resolve(false);
    }

    function groupAction(name, action, opts) {
        const g = state.groupByName.get(name) || { name, members: [] };
        const run = (args) => act(args, opts);
        const members = (g.members || []).map((m) => state.setByName.get(m) || { name: m });
        switch (action) {
        case "update-shadow": return run(["-g", name, "-u", "s"]);
        case "copy-shadow": return run(["-g", name, "-c", "s"]);
        case "abort": return run(["-g", name, "-a"]);
        case "delete": return run(["-X", name]);
        case "update-master":
        case "copy-master": {
            const upd = action === "update-master";
            const what = (upd ? _("Update masters of group ") : _("Copy to masters of group ")) + name +
                (upd ? _(": the chunks that differ are copied from each shadow onto its master volume, at one point in time:")
                    : _(": every chunk of each shadow is copied onto its master volume, at one point in time:"));
            return confirmDialog(_("Overwrite the master volumes of group ") + name + "?",
                                 masterOverwriteBody(what, members), upd ? _("Update masters") : _("Copy to masters"))
                    .then((ok) => ok ? run(["-n", "-g", name, upd ? "-u" : "-c", "m"]) : false);
        }
        }
        return Promise.resolve(false);
    }

    /* ------------------------------------------------------------- dialogs */

    function openModal(id) {
        const d = $(id);
        if (!d.open) d.showModal();
        return d;
    }

    function closeModal(id) {
        const d = $(id);
        if (d.open) d.close();
    }

    function closeAllDialogs() {
        closeMenu();
        finishConfirm(false);
        for (const id of ["volume-browser", "new-set-dialog", "set-props", "new-group-dialog", "group-props"])
            closeModal(id);
    }

    function refreshOpenDialogs() {
        if ($("set-props").open) renderSetProps();
        if ($("group-props").open) renderGroupProps();
        if ($("new-group-dialog").open) renderNgMembers();
        if ($("new-set-dialog").open) fillOverflowSelect($("ns-overflow"), true);
    }

    function fillChunkSizes(sel) {
        sel.replaceChildren(el("option", { value: "default", text: _("default") }),
                            ...CHUNK_SIZES.map((c) => el("option", { value: String(c), text: fmtBytes(c).replace(" KiB", "K").replace(" MiB", "M") })));
    }

    function fillOverflowSelect(sel, withNone) {
        const names = state.overflows.map((o) => o.name);
        const want = (withNone ? ["none"] : []).concat(names);
        const have = Array.from(sel.options).map((o) => o.value);
        if (have.join("\n") === want.join("\n")) return;
        const cur = sel.value;
        sel.replaceChildren(...want.map((n) => {
            const o = state.overflows.find((x) => x.name === n);
            return el("option", { value: n, text: o ? n + " — " + o.volume + " (" + o.chunks_free + _(" chunks free") + ")" : n });
        }));
        if (want.includes(cur)) sel.value = cur;
    }

    /* ------------------------------------------------------------- new set */

    function openNewSet() {
        clearAlert();
        for (const id of ["ns-name", "ns-master", "ns-shadow", "ns-bitmap"]) $(id).value = "";
        $("ns-type").value = "ind";
        $("ns-chunk-size").value = "default";
        $("ns-durability").value = "default";
        $("ns-advanced").open = false;
        fillOverflowSelect($("ns-overflow"), true);
        $("ns-overflow").value = "none";
        showInline("ns-error", "");
        showInline("ns-note", "");
        $("ns-sizes").textContent = "";
        show($("ns-overflow-pane"), false);
        $("ns-create").disabled = false;
        openModal("new-set-dialog");
        $("ns-name").focus();
    }

    function volumeSize(path) {
        path = String(path || "").trim();
        if (!path) return Promise.resolve(null);
        if (state.sizeCache.has(path)) return Promise.resolve(state.sizeCache.get(path));
        return spawn(["stat", "-L", "-c", "%s\t%F", path], { superuser: "try" })
                .then((out) => {
                    const [size, kind] = out.trim().split("\t");
                    if (kind === "block special file") {
                        return spawn(["blockdev", "--getsize64", path], { superuser: "try" })
                                .then((o) => parseInt(o.trim(), 10));
                    }
                    if (kind !== "regular file") return null;
                    return parseInt(size, 10);
                })
                .catch(() => null);
    }

    let nsSizeSeq = 0;
    function nsCheckSizes() {
        const seq = ++nsSizeSeq;
        const m = $("ns-master").value.trim();
        const s = $("ns-shadow").value.trim();
        Promise.all([volumeSize(m), volumeSize(s)]).then(([ms, ss]) => {
            if (seq !== nsSizeSeq) return;
            const parts = [];
            if (ms !== null) parts.push(_("master ") + fmtBytes(ms));
            if (ss !== null) parts.push(_("shadow ") + fmtBytes(ss));
            $("ns-sizes").textContent = parts.join(" · ");
            const compact = $("ns-type").value === "dep" && ms !== null && ss !== null && ss < ms;
            show($("ns-overflow-pane"), compact);
            if ($("ns-type").value === "ind" && ms !== null && ss !== null && ss < ms)
                $("ns-sizes").textContent += _(" — an independent shadow must be at least as large as its master");
        });
    }

    let nsTimer = null;
    function nsSizesSoon() {
        clearTimeout(nsTimer);
        nsTimer = setTimeout(nsCheckSizes, 250);
    }

    function nsCreate() {
        const name = $("ns-name").value.trim();
        const type = $("ns-type").value;
        const master = $("ns-master").value.trim();
        const shadow = $("ns-shadow").value.trim();
        const bitmap = $("ns-bitmap").value.trim();
        showInline("ns-note", "");
        const missing = [];
        if (!master) missing.push(_("master"));
        if (!shadow) missing.push(_("shadow"));
        if (!bitmap) missing.push(_("bitmap"));
        if (missing.length) {
            showInline("ns-error", _("Choose the ") + missing.join(", ") + _(" volume") + (missing.length > 1 ? "s" : "") + ".");
            return;
        }
        const args = ["-e", type, master, shadow, bitmap];
        if (name) args.push(name);
        const chunk = $("ns-chunk-size").value;
        if (chunk !== "default") args.push("--chunk-size", chunk);
        const dur = $("ns-durability").value;
        if (dur !== "default") args.push("--durability", dur);
        const ovf = !$("ns-overflow-pane").hidden ? $("ns-overflow").value : "none";
        $("ns-create").disabled = true;
        act(args, { inline: "ns-error", inlineOnly: true }).then((ok) => {
            if (!ok) {
                $("ns-create").disabled = false;
                return;
            }
            const setName = name || basename(shadow);
            if (ovf && ovf !== "none") {
                return act(["-A", setName, ovf], { inline: "ns-error", inlineOnly: true }).then((ok2) => {
                    $("ns-create").disabled = false;
                    if (ok2) closeModal("new-set-dialog");
                    else {
                        showInline("ns-note", _("Set ") + setName + _(" was created without an overflow volume; attach one from its properties."));
                        $("ns-create").disabled = true;
                    }
                });
            }
            $("ns-create").disabled = false;
            closeModal("new-set-dialog");
        });
    }

    /* ------------------------------------------------------ volume browser */

    let vbTarget = null;
    let vbDir = null;
    let vbSeq = 0;

    function openBrowser(fieldId) {
        vbTarget = fieldId;
        const v = $(fieldId).value.trim();
        const dir = v.startsWith("/") ? dirname(v) : (vbDir || "/");
        $("vb-dir").value = dir;
        const label = $("label-" + fieldId) || document.querySelector("label[for='" + fieldId + "']");
        $("vb-title").textContent = _("Choose ") + (label ? label.textContent.toLowerCase() : _("a volume"));
        openModal("volume-browser");
        vbLoad(dir);
    }

    function parseLsblk(out) {
        const devs = [];
        const walk = (list) => {
            for (const d of list || []) {
                devs.push(d);
                walk(d.children);
            }
        };
        try {
            walk(JSON.parse(out).blockdevices);
        } catch (e) {}
        return devs;
    }

    function vbLoad(dir) {
        dir = normDir(dir);
        vbDir = dir;
        $("vb-dir").value = dir;
        const seq = ++vbSeq;
        showInline("vb-error", "");
        const body = $("vb-body");
        body.replaceChildren(el("tr", { class: "loading" }, el("td", { colspan: "4", class: "muted", text: _("Reading ") + dir + "…" })));
        const find = spawn(["find", dir, "-mindepth", "1", "-maxdepth", "1",
            "(", "-type", "f", "-o", "-type", "b", "-o", "-type", "l", "-o", "-type", "d", ")",
            "-printf", "%p\\t%s\\t%y\\t%Y\\n"], { superuser: "try" })
                .then((out) => ({ out }), (ex) => ({ out: ex.message && typeof ex.message === "string" ? "" : "", error: errorText(ex) }));
        const lsblk = spawn(["lsblk", "--json", "-b", "-o", "NAME,PATH,SIZE,TYPE,MOUNTPOINT"], { superuser: "try" })
                .then(parseLsblk, () => []);
        const vols = iiadmJSON(["-V", "--json"]).catch(() => ({ in_use: [], candidates: [] }));
        Promise.all([find, lsblk, vols]).then(([f, devs, v]) => {
            if (seq !== vbSeq) return;
            vbRender(dir, f, devs, v);
        });
    }

    function vbRender(dir, f, devs, v) {
        const body = $("vb-body");
        const inUse = new Map();
        for (const u of (v && v.in_use) || []) {
            if (!inUse.has(u.path)) inUse.set(u.path, []);
            inUse.get(u.path).push(u);
        }
        const cand = new Map(((v && v.candidates) || []).map((c) => [c.path, c]));
        const devByPath = new Map(devs.filter((d) => d.path).map((d) => [d.path, d]));
        const rows = [];
        if (dir !== "/") {
            rows.push(el("tr", { class: "dir", dataset: { dir: dirname(dir) } },
                         el("td", { colspan: "4" }, el("span", { class: "folder", "aria-hidden": "true" }), "..")));
        }
        const dirs = [];
        const files = [];
        let partial = "";
        if (f.error) {
            // find says why for the entries it could not read, and lists the rest
            partial = f.error;
        }
        for (const line of (f.out || "").split("\n")) {
            if (!line) continue;
            const parts = line.split("\t");
            if (parts.length < 4) continue;
            const [path, size, y, Y] = parts;
            const kind = y === "l" ? Y : y;
            if (kind === "d") dirs.push(path);
            else if (kind === "f" || kind === "b") files.push({ path, size: kind === "f" ? parseInt(size, 10) : null, kind: kind === "f" ? "file" : "block", link: y === "l" });
        }
        dirs.sort();
        files.sort((a, b) => a.path.localeCompare(b.path));
        for (const d of dirs) {
            rows.push(el("tr", { class: "dir", dataset: { dir: d } },
                         el("td", { colspan: "4" }, el("span", { class: "folder", "aria-hidden": "true" }), basename(d) + "/")));
        }
        const listed = new Set();
        const volRow = (path, size, kind, extra) => {
            listed.add(path);
            const users = inUse.get(path);
            const c = cand.get(path);
            let use = extra || "";
            const cls = ["vol"];
            if (users && users.length) {
                cls.push("in-use");
                use = users.map((u) => (u.set && u.set !== "-" ? _("in use by ") + u.set : _("in use")) + " (" + u.role + ")").join(", ");
            } else if (c && c.state && c.state !== "free") {
                cls.push("held");
                use = c.state;
            }
            if (size === null && c) size = c.size;
            if (size === null && users && users.length) size = users[0].size;
            if (size !== null && !isNaN(size)) state.sizeCache.set(path, size);
            return el("tr", { class: cls.join(" "), dataset: { path }, tabindex: "0", title: _("Use ") + path },
                      el("td", { class: "mono" }, path),
                      el("td", { class: "num", title: size !== null ? size + _(" bytes") : "" }, fmtBytes(size)),
                      el("td", null, kind),
                      el("td", { class: "use" }, use));
        };
        for (const fl of files) {
            let size = fl.size;
            if (fl.kind === "block") {
                const d = devByPath.get(fl.path);
                size = d ? Number(d.size) : null;
            }
            rows.push(volRow(fl.path, size, fl.kind, fl.kind === "block" && devByPath.get(fl.path) && devByPath.get(fl.path).mountpoint ? _("mounted on ") + devByPath.get(fl.path).mountpoint : ""));
        }
        if (files.length === 0 && dirs.length === 0) {
            rows.push(el("tr", { class: "empty" }, el("td", { colspan: "4", class: "muted", text: _("No files or block devices in ") + dir })));
        }
        const blocks = devs.filter((d) => d.path && !listed.has(d.path) && Number(d.size) > 0 &&
                                    ["disk", "part", "loop", "lvm", "crypt", "raid0", "raid1", "raid5", "raid6", "raid10", "md", "dm"].includes(d.type));
        if (blocks.length) {
            rows.push(el("tr", { class: "section" }, el("th", { colspan: "4", text: _("Block devices") })));
            for (const d of blocks)
                rows.push(volRow(d.path, Number(d.size), "block", d.mountpoint ? _("mounted on ") + d.mountpoint : d.type));
        }
        body.replaceChildren(...rows);
        if (partial && files.length === 0 && dirs.length === 0) showInline("vb-error", partial);
    }

    function vbPick(path) {
        const field = $(vbTarget);
        closeModal("volume-browser");
        if (!field) return;
        field.value = path;
        field.dispatchEvent(new Event("input", { bubbles: true }));
        field.dispatchEvent(new Event("change", { bubbles: true }));
        field.focus();
    }

    /* ------------------------------------------------------ set properties */

    let spName = null;
    let spVolumes = null;

    function openSetProps(name, tab) {
        clearAlert();
        spName = name;
        spVolumes = null;
        showInline("sp-error", "");
        const s = state.setByName.get(name);
        const p = s && typeof s.params === "string" ? s.params.split(/\s+/) : [];
        $("sp-delay").value = p[0] || "";
        $("sp-units").value = p[1] || "";
        $("sp-join-bitmap").value = "";
        selectTab(tab || "config");
        renderSetProps();
        openModal("set-props");
        loadSpVolumes();
    }

    function selectTab(tab) {
        const cfg = tab === "config";
        $("tab-config").setAttribute("aria-selected", String(cfg));
        $("tab-status").setAttribute("aria-selected", String(!cfg));
        show($("sp-config"), cfg);
        show($("sp-status-pane"), !cfg);
    }

    function loadSpVolumes() {
        const name = spName;
        const s = state.setByName.get(name);
        if (!s) return;
        const paths = [s.master, s.shadow, s.bitmap].filter((p) => p && p !== "-");
        const ov = state.overflows.find((o) => o.name === s.overflow);
        if (ov) paths.push(ov.volume);
        Promise.all([
            iiadmJSON(["-V", "--json"]).catch(() => ({ in_use: [] })),
            spawn(["stat", "-L", "-c", "%n\t%s\t%F"].concat(paths), { superuser: "try" }).catch((ex) => ""),
        ]).then(([v, st]) => {
            if (name !== spName) return;
            const kinds = new Map();
            for (const line of String(st || "").split("\n")) {
                const [p, size, kind] = line.split("\t");
                if (p) kinds.set(p, { size: parseInt(size, 10), kind: kind === "block special file" ? "block" : kind === "regular file" ? "file" : kind });
            }
            spVolumes = { inUse: (v && v.in_use) || [], kinds };
            renderSetProps();
        });
    }

    function renderSetProps() {
        const s = state.setByName.get(spName);
        $("sp-name-title").textContent = spName || "";
        if (!s) {
            showInline("sp-error", _("Set ") + spName + _(" no longer exists."));
            for (const b of $("set-props").querySelectorAll(".button-row button, .props-actions button")) b.disabled = true;
            return;
        }
        for (const b of $("set-props").querySelectorAll(".button-row button, .props-actions button")) b.disabled = false;
        const v = (x) => (x === null || x === undefined || x === "-" ? "–" : String(x));
        setText($("sp-name"), s.name);
        setText($("sp-type"), v(s.type));
        setText($("sp-uuid"), v(s.uuid));
        setText($("sp-group"), v(s.group));
        setText($("sp-chunk-size"), s.chunk_size ? fmtBytes(s.chunk_size) + " (" + v(s.chunks) + _(" chunks)") : "–");
        setText($("sp-durability"), v(s.durability));
        setText($("sp-pit"), s.pit_time ? fmtTime(s.pit_time) : "–");
        setText($("sp-origin"), v(s.origin));

        // volumes
        const rows = [];
        const vol = (role, path) => {
            if (!path || path === "-") return;
            let size = null;
            let kind = "";
            if (spVolumes) {
                const u = spVolumes.inUse.find((x) => x.path === path && x.role === role) || spVolumes.inUse.find((x) => x.path === path);
                if (u) size = u.size;
                const k = spVolumes.kinds.get(path);
                if (k) {
                    kind = k.kind;
                    if (size === null && k.kind === "file") size = k.size;
                }
            }
            if (role === "shadow" && s.type === "compact" && s.shadow_chunks)
                kind += kind ? _(", compact: ") + s.shadow_chunks_used + " / " + s.shadow_chunks + _(" slots used") : "";
            rows.push(el("tr", { dataset: { role } },
                         el("td", null, role), el("td", { class: "mono" }, path),
                         el("td", { class: "num", title: size !== null ? size + _(" bytes") : "" }, size !== null ? fmtBytes(size) : (spVolumes ? "–" : "…")),
                         el("td", null, kind || (spVolumes ? "–" : "…"))));
        };
        vol("master", s.master);
        vol("shadow", s.shadow);
        vol("bitmap", s.bitmap);
        const ov = state.overflows.find((o) => o.name === s.overflow);
        if (ov) vol("overflow", ov.volume);
        const key = rows.map((r) => r.textContent).join("\n");
        const body = $("sp-volumes-body");
        if (body.dataset.key !== key) {
            body.dataset.key = key;
            body.replaceChildren(...rows);
        }

        // overflow
        fillOverflowSelect($("sp-attach-overflow"), false);
        if (!$("sp-attach-overflow").dataset.touched && s.overflow && s.overflow !== "-")
            $("sp-attach-overflow").value = s.overflow;
        let space = "";
        if (s.type === "compact") {
            space = _("Attached: ") + (s.overflow && s.overflow !== "-" ? s.overflow : _("none")) +
                _(". Chunks in the shadow: ") + s.shadow_chunks_used + " / " + s.shadow_chunks +
                _(", in the overflow: ") + s.overflow_chunks_used + ".";
            if (s.space_warning) space += " " + s.space_warning;
        } else if (s.type) {
            space = _("Only compact sets (a dependent set whose shadow is smaller than its master) use an overflow volume.");
        }
        setText($("sp-space"), space);

        // status
        const st = $("sp-status");
        setText(st, v(s.status));
        st.className = "status-" + (s.status || "unknown");
        setText($("sp-state"), v(s.state));
        const prog = typeof s.progress === "number" ? s.progress : 0;
        $("sp-progress").value = prog;
        $("sp-progress").setAttribute("value", String(prog));
        setText($("sp-percent"), prog + "%");
        const running = RUNNING.has(s.state);
        let op = _("none");
        if (running) op = (s.state === "updating" ? _("update of the ") : _("copy to the ")) + s.direction + ": " + v(s.chunks_to_copy) + _(" chunks to go");
        else if (s.state === "aborted") op = _("aborted copy to the ") + s.direction + ": " + v(s.chunks_to_copy) + _(" chunks not copied");
        else if (s.state === "suspended" && s.chunks_to_copy) op = _("parked copy to the ") + s.direction + ": " + v(s.chunks_to_copy) + _(" chunks to go once resumed");
        setText($("sp-operation"), op);
        $("set-props").classList.toggle("running", running);
        setText($("sp-differ"), v(s.chunks_differ) + (s.chunks ? _(" of ") + s.chunks : ""));
        const sample = state.samples.get(s.name);
        if (running && sample && sample.rate !== null && sample.rate !== undefined) {
            const bytes = sample.rate * (s.chunk_size || 0);
            setText($("sp-rate"), (bytes / 1e6).toFixed(bytes >= 1e7 ? 0 : 1) + " MB/s (" + Math.round(sample.rate) + _(" chunks/s)"));
            setText($("sp-eta"), sample.rate > 0 ? fmtDuration(s.chunks_to_copy / sample.rate) : _("stalled"));
        } else if (running) {
            setText($("sp-rate"), _("measuring…"));
            setText($("sp-eta"), "–");
        } else {
            setText($("sp-rate"), "–");
            setText($("sp-eta"), "–");
        }
        setText($("sp-last-error"), v(s.last_error));
        $("sp-abort").disabled = false;
    }

    function spAct(args) {
        return act(args, { inline: "sp-error" }).then((ok) => {
            if (ok) loadSpVolumes();
            return ok;
        });
    }

    /* ------------------------------------------------------------- groups */

    function groupTypeOfSet(s) {
        if (!s || !s.type) return null;
        return s.type === "independent" ? "independent" : "dependent";
    }

    function openNewGroup() {
        clearAlert();
        $("ng-name").value = "";
        $("ng-type").value = "independent";
        showInline("ng-error", "");
        $("ng-members").replaceChildren();
        renderNgMembers();
        $("ng-create").disabled = false;
        openModal("new-group-dialog");
        $("ng-name").focus();
    }

    function renderNgMembers() {
        const type = $("ng-type").value;
        const box = $("ng-members");
        const eligible = state.sets.filter((s) => (!s.group || s.group === "-") && groupTypeOfSet(s) === type);
        const key = type + "\n" + eligible.map((s) => s.name).join("\n");
        if (box.dataset.key === key) return;
        const checked = new Set(Array.from(box.querySelectorAll("input.ng-member:checked")).map((i) => i.value));
        box.dataset.key = key;
        if (!eligible.length) {
            box.replaceChildren(el("p", { class: "muted", text: _("No ") + type + _(" set outside a group. A group can be made empty and sets added later.") }));
            return;
        }
        box.replaceChildren(...eligible.map((s) => {
            const id = "ng-m-" + s.name.replace(/[^A-Za-z0-9_-]/g, "_");
            return el("div", { class: "check" },
                      el("input", { type: "checkbox", class: "ng-member", value: s.name, id, checked: checked.has(s.name) }),
                      el("label", { for: id }, s.name, el("span", { class: "muted", text: " — " + s.type + ", " + s.state })));
        }));
    }

    function ngCreate() {
        const name = $("ng-name").value.trim();
        const members = Array.from($("ng-members").querySelectorAll("input.ng-member:checked")).map((i) => i.value);
        if (!name) {
            showInline("ng-error", _("Enter a name for the group."));
            return;
        }
        $("ng-create").disabled = true;
        act(["-C", name], { inline: "ng-error", inlineOnly: true }).then(async (ok) => {
            if (!ok) {
                $("ng-create").disabled = false;
                return;
            }
            for (const m of members) {
                const ok2 = await act(["-M", m, name], { inline: "ng-error", inlineOnly: true });
                if (!ok2) {
                    // the group exists; say so under the daemon's sentence
                    $("ng-error").append(el("div", { class: "muted", text: _("Group ") + name + _(" was created; add the remaining sets from its properties.") }));
                    return;
                }
            }
            $("ng-create").disabled = false;
            closeModal("new-group-dialog");
        });
    }

    let gpName = null;

    function openGroupProps(name) {
        clearAlert();
        gpName = name;
        showInline("gp-error", "");
        $("gp-rename-name").value = "";
        renderGroupProps();
        openModal("group-props");
    }

    function renderGroupProps() {
        const g = state.groupByName.get(gpName);
        setText($("gp-name"), gpName || "");
        const buttons = $("group-props").querySelectorAll(".button-row button, #gp-add, .gp-remove, #gp-rename");
        if (!g) {
            showInline("gp-error", _("Group ") + gpName + _(" no longer exists."));
            for (const b of buttons) b.disabled = true;
            return;
        }
        for (const b of buttons) b.disabled = false;
        const st = $("gp-status");
        setText(st, g.status || "–");
        st.className = "status-" + (g.status || "unknown");
        setText($("gp-state"), g.state || "–");
        const prog = typeof g.progress === "number" ? g.progress : 0;
        $("gp-progress").value = prog;
        $("gp-progress").setAttribute("value", String(prog));
        setText($("gp-percent"), prog + "%");
        setText($("gp-copy"), g.chunks_to_do ? g.chunks_done + _(" of ") + g.chunks_to_do + _(" chunks copied") : _("none"));
        const t = typeOfGroup(g);
        setText($("gp-type"), t || (g.members && g.members.length ? _("mixed") : _("any (no members yet)")));

        const body = $("gp-members-body");
        const existing = new Map(Array.from(body.querySelectorAll("tr[data-member]")).map((tr) => [tr.dataset.member, tr]));
        const keep = new Set();
        let prev = null;
        for (const m of g.member || (g.members || []).map((n) => ({ name: n }))) {
            const s = state.setByName.get(m.name) || {};
            let tr = existing.get(m.name);
            if (!tr) {
                tr = el("tr", { dataset: { member: m.name } },
                        el("td", { class: "m-name" }), el("td", { class: "m-type" }), el("td", { class: "m-status" }),
                        el("td", { class: "m-state" }), el("td", { class: "m-progress col-progress" }), el("td", { class: "m-overflow" }),
                        el("td", { class: "col-actions" },
                           el("button", {
                               type: "button",
                               class: "btn small gp-remove",
                               dataset: { member: m.name },
                               text: _("Remove"),
                               onclick: () => act(["-B", m.name], { inline: "gp-error" }),
                           })));
            }
            setText(tr.querySelector(".m-name"), m.name);
            setText(tr.querySelector(".m-type"), s.type || "–");
            const ms = tr.querySelector(".m-status");
            setText(ms, m.status || s.status || "–");
            ms.className = "m-status status-" + (m.status || s.status || "unknown");
            setText(tr.querySelector(".m-state"), m.state || s.state || "–");
            progressCell(tr.querySelector(".m-progress"), {
                running: RUNNING.has(m.state || s.state),
                progress: typeof m.progress === "number" ? m.progress : (s.progress || 0),
                direction: s.direction && s.direction !== "-" ? s.direction : null,
            });
            let ovText = s.overflow && s.overflow !== "-" ? s.overflow : "–";
            if (s.type === "compact") ovText += " (" + (s.overflow_chunks_used || 0) + _(" chunks)");
            setText(tr.querySelector(".m-overflow"), ovText);
            keep.add(m.name);
            const want = prev ? prev.nextSibling : body.firstChild;
            if (want !== tr) body.insertBefore(tr, want);
            prev = tr;
        }
        for (const [n, tr] of existing) if (!keep.has(n)) tr.remove();
        for (const tr of Array.from(body.querySelectorAll("tr.empty"))) tr.remove();
        if (!keep.size) body.append(el("tr", { class: "empty" }, el("td", { colspan: "7", class: "muted", text: _("No members yet.") })));

        // sets that may join: of the group's type, in no group
        const sel = $("gp-add-set");
        const cands = state.sets.filter((s) => (!s.group || s.group === "-") && s.type && (!t || groupTypeOfSet(s) === t));
        const want = cands.map((s) => s.name);
        const have = Array.from(sel.options).map((o) => o.value).filter(Boolean);
        if (want.join("\n") !== have.join("\n")) {
            const cur = sel.value;
            sel.replaceChildren(...(want.length
                ? cands.map((s) => el("option", { value: s.name, text: s.name + " (" + s.type + ")" }))
                : [el("option", { value: "", text: t ? _("no ") + t + _(" set outside a group") : _("no set outside a group") })]));
            if (want.includes(cur)) sel.value = cur;
        }
        $("gp-add").disabled = !want.length;
    }

    function gpAct(args) {
        return act(args, { inline: "gp-error" });
    }

    /* ---------------------------------------------------------------- fleet */

    /*
     * The fleet view (#/fleet): the sets and groups of every host named by a hosts file
     * (default /etc/iifs/hosts, or #/fleet?hosts=FILE), live from ONE long-lived
     * `iiadm --hosts-file FILE --watch --json`: iiadm keeps one ssh session per host and
     * writes every host's change stream as NDJSON, each object with its "host". Nothing is
     * polled. On {"event":"lost"} a host's rows go and the host shows as unreachable (with
     * iiadm's reason) until its lines come again. Actions go to one host with `iiadm -H HOST`;
     * the cross-host point in time is `iiadm ... --group-pit GROUP --json`. ssh's options come
     * from IIADM_SSH in the bridge's environment (iiadm reads it), never from the page.
     */

    const HOSTS_FILE = "/etc/iifs/hosts";
    // After iiadm itself ended (not a host: iiadm retries lost hosts on its own), start it again.
    const FLEET_RETRY_MS = 5000;
    // A line longer than this without a newline is not iiadm's: drop it rather than grow.
    const FLEET_MAX_LINE = 1 << 20;

    const fleet = {
        file: null, // the hosts file of the running stream
        text: undefined, // its content when the stream started (undefined: not read yet)
        watchFile: null, // cockpit.file of it, watched: a changed file restarts the stream
        watchHandle: null,
        proc: null, // the iiadm --watch spawn
        gen: 0, // bumped at every (re)start: lines and ends of an older spawn are ignored
        buf: "", // the part of a line not ended yet
        hosts: new Map(), // host name -> { name, state: connecting|up|lost, error, since, objects, overflows }
        groupEntries: [], // @GROUP entries of the file (resolved by iiadm)
        error: null, // why iiadm is not running (its sentence), or null
        lines: 0,
        lastLine: null,
        retryTimer: null,
        renderTimer: null,
        sort: { key: "host", dir: 1 },
        filter: "",
        pitRunning: false,
    };

    function currentView() {
        return cockpit.location.path[0] === "fleet" ? "fleet" : "local";
    }

    function fleetFileOption() {
        const f = cockpit.location.options.hosts;
        return typeof f === "string" && f.trim() ? f.trim() : null;
    }

    function goView(view) {
        if (view === "fleet") {
            const opts = {};
            const f = fleetFileOption() || state.fleetHostsOption;
            if (f) opts.hosts = f;
            cockpit.location.go(["fleet"], opts);
        } else {
            cockpit.location.go([], state.mount && state.mounts.length > 1 ? { mount: state.mount } : {});
        }
        applyView();
    }

    function applyView() {
        const view = currentView();
        const changed = view !== state.view;
        state.view = view;
        const fleetOn = view === "fleet";
        $("view-local").setAttribute("aria-selected", String(!fleetOn));
        $("view-fleet").setAttribute("aria-selected", String(fleetOn));
        show($("local-view"), !fleetOn);
        show($("fleet-view"), fleetOn);
        show(document.querySelector(".mount-picker"), !fleetOn);
        show($("last-update"), !fleetOn);
        if (fleetOn) {
            if (fleetFileOption()) state.fleetHostsOption = fleetFileOption();
            if (changed) {
                closeAllDialogs();
                clearAlert();
                clearTimeout(pollTimer);
                pollTimer = null;
            }
            fleetStart();
        } else if (changed) {
            closeAllDialogs();
            clearAlert();
            fleetStop();
            onVisibility(); // the main view polls again, at once
        }
    }

    /* The stream runs while the fleet view is shown, for the file the URL names. */
    function fleetStart() {
        const file = fleetFileOption() || HOSTS_FILE;
        if (fleet.file === file && fleet.watchFile) return;
        fleetStop();
        fleet.file = file;
        fleet.text = undefined;
        fleet.hosts = new Map();
        fleet.groupEntries = [];
        fleet.error = null;
        $("fleet-hosts-file").textContent = file;
        $("fleet-pit-result").hidden = true;
        // The file is watched (inotify works on a regular file): the stream starts with its
        // first content, and starts again when it changes.
        fleet.watchFile = cockpit.file(file, { superuser: "try" });
        fleet.watchHandle = fleet.watchFile.watch((content, tag, ex) => {
            if (fleet.file !== file) return;
            const text = typeof content === "string" ? content : null;
            if (text === fleet.text) return;
            fleet.text = text;
            if (text === null) {
                fleetKill();
                fleet.hosts = new Map();
                fleet.groupEntries = [];
                fleet.error = ex && ex.problem && ex.problem !== "not-found"
                    ? _("Cannot read the hosts file ") + file + ": " + cockpit.message(ex.problem)
                    : null;
                renderFleetSoon();
                return;
            }
            fleetSpawn();
        });
        renderFleetSoon();
    }

    function fleetStop() {
        fleetKill();
        if (fleet.watchHandle) fleet.watchHandle.remove();
        if (fleet.watchFile) fleet.watchFile.close();
        fleet.watchHandle = null;
        fleet.watchFile = null;
        fleet.file = null;
        fleet.text = undefined;
    }

    function fleetKill() {
        clearTimeout(fleet.retryTimer);
        fleet.retryTimer = null;
        fleet.gen++;
        if (fleet.proc) {
            const p = fleet.proc;
            fleet.proc = null;
            // With a problem code the bridge ends the process (SIGTERM; iiadm's ssh sessions
            // end with it); a plain close only closes its pipes, and a watch that is not
            // writing would not notice.
            p.close("terminated");
        }
    }

    /* Entries of a hosts file: one a line, `#` comments and blank lines ignored. */
    function hostsEntries(text) {
        const out = [];
        for (const raw of String(text || "").split("\n")) {
            const e = raw.replace(/#.*/, "").trim();
            if (e && !out.includes(e)) out.push(e);
        }
        return out;
    }

    function hostRecord(name) {
        let h = fleet.hosts.get(name);
        if (!h) {
            h = { name, state: "connecting", error: "", since: Date.now(), objects: new Map(), overflows: new Map() };
            fleet.hosts.set(name, h);
        }
        return h;
    }

    function fleetSpawn() {
        fleetKill();
        if (state.view !== "fleet" || !fleet.file || fleet.text === null || fleet.text === undefined) return;
        const gen = fleet.gen;
        fleet.buf = "";
        fleet.error = null;
        fleet.lines = 0;
        fleet.lastLine = null;
        // The file's own host names are rows (connecting) before their first line; an
        // @GROUP's hosts appear as iiadm reports them.
        const entries = hostsEntries(fleet.text);
        fleet.hosts = new Map();
        fleet.groupEntries = entries.filter((e) => e.startsWith("@"));
        for (const e of entries) if (!e.startsWith("@")) hostRecord(e);
        const proc = cockpit.spawn(["iiadm", "--hosts-file", fleet.file, "--watch", "--json"],
                                   { superuser: "require", err: "message" });
        fleet.proc = proc;
        proc.stream((data) => {
            if (gen === fleet.gen) fleetData(data);
        });
        proc.then(() => fleetEnded(gen, null), (ex) => fleetEnded(gen, ex));
        renderFleetSoon();
    }

    /* iiadm itself ended (a fan-out watch does not end by itself): say why, start again. */
    function fleetEnded(gen, ex) {
        if (gen !== fleet.gen) return;
        fleet.proc = null;
        if (isAccessProblem(ex)) {
            setAdmin(false);
            return;
        }
        fleet.error = ex ? errorText(ex) : _("iiadm --watch ended");
        for (const h of fleet.hosts.values()) {
            h.objects.clear();
            h.overflows.clear();
            if (h.state === "up") {
                h.state = "connecting";
                h.since = Date.now();
            }
        }
        renderFleetSoon();
        clearTimeout(fleet.retryTimer);
        fleet.retryTimer = setTimeout(() => {
            fleet.retryTimer = null;
            if (gen === fleet.gen && state.view === "fleet") fleetSpawn();
        }, FLEET_RETRY_MS);
    }

    function fleetData(data) {
        const parts = (fleet.buf + data).split("\n");
        fleet.buf = parts.pop();
        if (fleet.buf.length > FLEET_MAX_LINE) fleet.buf = "";
        let changed = false;
        for (const line of parts) {
            if (fleetLine(line)) changed = true;
        }
        if (changed) renderFleetSoon();
    }

    /* One NDJSON line of the fan-out watch; true when it changed what the page shows. */
    function fleetLine(line) {
        line = line.trim();
        if (!line) return false;
        let o;
        try {
            o = JSON.parse(line);
        } catch (e) {
            return false;
        }
        if (!o || typeof o !== "object" || typeof o.host !== "string" || !o.host) return false;
        fleet.lines++;
        fleet.lastLine = new Date();
        const h = hostRecord(o.host);
        if (o.event === "lost") {
            // "since" is when it was lost first; iiadm's later tries say why they failed
            if (h.state !== "lost") h.since = Date.now();
            h.state = "lost";
            h.error = typeof o.error === "string" ? o.error : "";
            h.objects.clear();
            h.overflows.clear();
            return true;
        }
        if (h.state !== "up") {
            h.state = "up";
            h.error = "";
            h.since = Date.now();
        }
        if (o.event === "resync") {
            // every object's state follows
            h.objects.clear();
            h.overflows.clear();
            return true;
        }
        if (typeof o.name !== "string" || !["set", "group", "overflow"].includes(o.kind)) return true;
        const map = o.kind === "overflow" ? h.overflows : h.objects;
        const key = o.kind + "\n" + o.name;
        if (o.event === "removed") map.delete(key);
        else map.set(key, o);
        return true;
    }

    function renderFleetSoon() {
        if (fleet.renderTimer !== null) return;
        fleet.renderTimer = setTimeout(() => {
            fleet.renderTimer = null;
            renderFleet();
        }, 0);
    }

    function fleetGroupType(h, g) {
        const types = new Set((g.members || []).map((m) => {
            const s = h.objects.get("set\n" + m);
            return s && s.type ? (s.type === "independent" ? "independent" : "dependent") : null;
        }).filter(Boolean));
        return types.size === 1 ? Array.from(types)[0] : null;
    }

    function fleetRows() {
        const rows = [];
        for (const h of fleet.hosts.values()) {
            if (h.state !== "up" || h.objects.size === 0) {
                let text;
                if (h.state === "lost") {
                    text = _("unreachable") + (h.error ? ": " + h.error : "") + _(" (since ") + new Date(h.since).toLocaleTimeString() + ")";
                } else if (h.state === "connecting") {
                    text = fleet.error ? _("not connected: iiadm is not running") : _("connecting…");
                } else {
                    text = _("no sets or groups");
                }
                rows.push({ kind: "host", host: h.name, name: "", type: "", state: h.state, status: "", progress: 0, text });
            }
            for (const o of h.objects.values()) {
                if (o.kind === "group") {
                    const t = fleetGroupType(h, o);
                    rows.push({
                        kind: "group",
                        host: h.name,
                        name: o.name,
                        type: "group",
                        typeDetail: t ? _("group of ") + t + _(" sets") : _("group"),
                        state: o.state || "",
                        status: o.status || "",
                        progress: typeof o.progress === "number" ? o.progress : 0,
                        running: RUNNING.has(o.state),
                        direction: null,
                        group: (o.members || []).length + ((o.members || []).length === 1 ? _(" set") : _(" sets")),
                        held: false,
                        error: "",
                        obj: o,
                    });
                } else {
                    rows.push({
                        kind: "set",
                        host: h.name,
                        name: o.name,
                        type: o.type || "unknown",
                        typeDetail: o.type || _("unknown (offline since start)"),
                        state: o.state || "",
                        status: o.status || "",
                        progress: typeof o.progress === "number" ? o.progress : 0,
                        running: RUNNING.has(o.state),
                        direction: o.direction && o.direction !== "-" ? o.direction : null,
                        group: o.group && o.group !== "-" ? o.group : "",
                        held: o.held === true,
                        error: o.last_error && o.last_error !== "-" ? o.last_error : "",
                        obj: o,
                    });
                }
            }
        }
        const f = fleet.filter.trim().toLowerCase();
        const shown = f
            ? rows.filter((r) => (r.host + "\n" + r.name + "\n" + r.type + "\n" + r.state + "\n" + (r.text || "")).toLowerCase().includes(f))
            : rows;
        const { key, dir } = fleet.sort;
        const statusRank = { error: 0, degraded: 1, normal: 2 };
        const byHost = (a, b) => a.host.localeCompare(b.host, undefined, { numeric: true });
        const kindRank = { host: 0, group: 1, set: 2 };
        shown.sort((a, b) => {
            // a host without rows of its own (unreachable, connecting, empty) stays in sight:
            // at its place when sorted by host, at the top otherwise
            if (key !== "host" && (a.kind === "host") !== (b.kind === "host")) return a.kind === "host" ? -1 : 1;
            let c;
            if (key === "host") c = byHost(a, b);
            else if (key === "progress") c = a.progress - b.progress;
            else if (key === "status") c = (statusRank[a.status] ?? 3) - (statusRank[b.status] ?? 3) || a.status.localeCompare(b.status);
            else c = String(a[key]).localeCompare(String(b[key]), undefined, { numeric: true });
            if (c === 0) c = byHost(a, b) || kindRank[a.kind] - kindRank[b.kind] || a.name.localeCompare(b.name, undefined, { numeric: true });
            return c * dir;
        });
        return { rows, shown };
    }

    function fleetBuildRow(r) {
        const tr = el("tr", { dataset: { kind: r.kind, host: r.host, name: r.name } });
        if (r.kind === "host") {
            tr.className = "host-row";
            tr.append(el("td", { class: "col-host" }),
                      el("td", { class: "host-state", colspan: "8" }));
            return tr;
        }
        const actions = el("button", {
            type: "button",
            class: "row-actions kebab",
            "aria-label": _("Actions for ") + r.name + _(" on ") + r.host,
            "aria-haspopup": "menu",
            title: _("Actions"),
            onclick: (ev) => {
                ev.stopPropagation();
                toggleMenu(tr, actions, fleetMenuItems(tr),
                           (action) => fleetRowAction(tr.dataset.host, tr.dataset.kind, tr.dataset.name, action));
            },
        });
        tr.append(
            el("td", { class: "col-host" }),
            el("td", { class: "col-icon" }, icon(r.kind)),
            el("td", { class: "col-name" }),
            el("td", { class: "col-type" }),
            el("td", { class: "col-state" }),
            el("td", { class: "col-status" }),
            el("td", { class: "col-progress" }),
            el("td", { class: "col-group" }),
            el("td", { class: "col-actions" }, actions));
        return tr;
    }

    /* Fill a row from its model; `data-updated` is when what it shows last changed (the
     * benchmark reads it to time a change from host to page). */
    function fleetUpdateRow(tr, r) {
        const sig = r.kind === "host"
            ? r.state + "\n" + r.text
            : [r.type, r.typeDetail, r.state, r.status, r.progress, r.running, r.direction, r.group, r.held, r.error].join("\n");
        if (tr.dataset.sig === sig) return;
        tr.dataset.sig = sig;
        tr.dataset.updated = String(Date.now());
        setText(tr.querySelector(".col-host"), r.host);
        if (r.kind === "host") {
            setText(tr.querySelector(".host-state"), r.text);
            tr.classList.toggle("unreachable", r.state === "lost");
            tr.classList.toggle("connecting", r.state === "connecting");
            tr.dataset.state = r.state;
            return;
        }
        setText(tr.querySelector(".col-name"), r.name);
        setText(tr.querySelector(".col-type"), r.type);
        tr.querySelector(".col-type").title = r.typeDetail;
        const st = tr.querySelector(".col-state");
        st.className = "col-state state-" + r.state.replace(/\s+/g, "-");
        if (r.held) {
            st.replaceChildren(el("span", { class: "state-word", text: r.state }),
                               el("span", { class: "held", text: _("writes held"), title: _("New writes to the master wait until the hold is released") }));
        } else {
            setText(st, r.state);
        }
        const status = tr.querySelector(".col-status");
        setText(status, r.status);
        status.className = "col-status status-" + (r.status || "unknown");
        status.title = r.error;
        progressCell(tr.querySelector(".col-progress"), r);
        setText(tr.querySelector(".col-group"), r.group);
        tr.classList.toggle("member", r.kind === "set" && !!r.group);
        tr.classList.toggle("has-error", r.status === "error");
    }

    function renderFleet() {
        const on = state.view === "fleet";
        if (!on) return;
        const noAdmin = state.admin === false;
        show($("fleet-card"), !noAdmin);
        show($("fleet-pit"), !noAdmin);
        const fe = $("fleet-error");
        let err = null;
        if (!noAdmin) {
            if (fleet.error) err = fleet.error;
            else if (fleet.text === null) {
                err = _("No hosts file ") + fleet.file + _(": write the hosts to show in it, one a line (HOST, USER@HOST, or @GROUP of the Ansible inventory).");
            }
        }
        $("fleet-error-text").textContent = err || "";
        show(fe, !!err);
        if (noAdmin) return;

        const body = $("fleet-body");
        const { rows, shown } = fleetRows();
        const key = (r) => r.kind + "\n" + r.host + "\n" + r.name;
        const existing = new Map();
        for (const tr of Array.from(body.children)) existing.set(tr.dataset.kind + "\n" + tr.dataset.host + "\n" + tr.dataset.name, tr);
        const keep = new Set();
        let prev = null;
        for (const r of shown) {
            const k = key(r);
            let tr = existing.get(k);
            if (!tr) tr = fleetBuildRow(r);
            fleetUpdateRow(tr, r);
            keep.add(k);
            const want = prev ? prev.nextSibling : body.firstChild;
            if (want !== tr) body.insertBefore(tr, want);
            // a line between hosts when the rows are in host order
            tr.classList.toggle("first-of-host", fleet.sort.key === "host" && !!prev && prev.dataset.host !== r.host);
            prev = tr;
        }
        for (const [k, tr] of existing) {
            if (!keep.has(k)) {
                if (openMenu && openMenu.row === tr) closeMenu();
                tr.remove();
            }
        }
        const empty = $("fleet-empty");
        if (rows.length === 0) {
            // (when iiadm is not running, the alert above says why)
            empty.textContent = fleet.error || fleet.text === null || fleet.text === undefined
                ? ""
                : fleet.groupEntries.length
                    ? _("Waiting for the hosts of ") + fleet.groupEntries.join(", ") + "…"
                    : _("The hosts file names no host.");
            show(empty, !!empty.textContent);
        } else if (shown.length === 0) {
            empty.textContent = _("Nothing matches “") + fleet.filter + "”.";
            show(empty, true);
        } else {
            show(empty, false);
        }

        let nSets = 0;
        let nGroups = 0;
        let nLost = 0;
        for (const h of fleet.hosts.values()) {
            if (h.state === "lost") nLost++;
            for (const o of h.objects.values()) {
                if (o.kind === "set") nSets++;
                else nGroups++;
            }
        }
        const nHosts = fleet.hosts.size;
        $("fleet-count").textContent = nHosts + (nHosts === 1 ? _(" host") : _(" hosts")) +
            (nLost ? " (" + nLost + _(" unreachable") + ")" : "") + ", " +
            nSets + (nSets === 1 ? _(" set") : _(" sets")) + ", " +
            nGroups + (nGroups === 1 ? _(" group") : _(" groups"));
        for (const th of document.querySelectorAll("#fleet-objects th[data-sort]")) {
            const sorted = th.dataset.sort === fleet.sort.key;
            th.setAttribute("aria-sort", sorted ? (fleet.sort.dir > 0 ? "ascending" : "descending") : "none");
        }
        const live = $("fleet-stream");
        if (fleet.proc && fleet.lastLine) live.textContent = _("Live · last change ") + fleet.lastLine.toLocaleTimeString();
        else if (fleet.proc) live.textContent = _("Connecting…");
        else if (fleet.retryTimer) live.textContent = _("Not connected; trying again");
        else live.textContent = "";
        renderPit();
    }

    /* ---------------------------------------------------------- fleet actions */

    function fleetMenuItems(tr) {
        const h = fleet.hosts.get(tr.dataset.host);
        const items = [];
        if (tr.dataset.kind === "set") {
            const s = h && h.objects.get("set\n" + tr.dataset.name);
            items.push(["update-shadow", _("Update shadow")],
                       ["copy-shadow", _("Copy to shadow")],
                       ["update-master", _("Update master…"), "warn"],
                       ["copy-master", _("Copy to master…"), "warn"],
                       ["abort", _("Abort copy")], null);
            if (s && s.state === "suspended") items.push(["resume", _("Resume")]);
            else items.push(["suspend", _("Suspend")]);
            if (s && (s.state === "offline" || s.status === "error")) items.push(["reset", _("Reset")]);
            items.push(["delete", _("Delete (disable)…"), "danger"]);
        } else {
            items.push(["update-shadow", _("Update shadows")],
                       ["copy-shadow", _("Copy to shadows")],
                       ["update-master", _("Update masters…"), "warn"],
                       ["copy-master", _("Copy to masters…"), "warn"],
                       ["abort", _("Abort copies")], null,
                       ["delete", _("Delete group"), "danger"]);
        }
        return items;
    }

    /* One host of the file, reached as the file reaches it (a host of an @GROUP entry by its
     * inventory's address, user and port): `--only` picks it; its output comes back as it is. */
    function fleetIiadm(host, args) {
        return spawn(["iiadm", "--hosts-file", fleet.file, "--only", host].concat(args),
                     { superuser: "require" });
    }

    /* A refusal is shown as the main view shows it: the daemon's sentence as it is, here after
     * the host's name. */
    function fleetFailed(host, ex) {
        if (isAccessProblem(ex)) {
            setAdmin(false);
            return false;
        }
        showAlert(host + ": " + errorText(ex));
        return false;
    }

    function fleetAct(host, args) {
        clearAlert();
        return fleetIiadm(host, args).then((out) => {
            if (out && out.trim()) showNotice(host + ": " + out.trim());
            return true;
        }, (ex) => fleetFailed(host, ex));
    }

    function fleetMastersBody(what, host, sets) {
        const list = el("ul", { class: "volumes" });
        for (const s of sets) {
            list.append(el("li", null,
                           el("code", { class: "master-path", text: s.master || "?" }),
                           el("span", { class: "muted", text: _(" (master of set ") + s.name + _(" on ") + host + _(", from its shadow ") + (s.shadow || "?") + ")" })));
        }
        if (!sets.length) list.append(el("li", { class: "muted", text: _("(no member sets)") }));
        return [
            el("p", { text: what }),
            list,
            el("p", { class: "strong", text: sets.length > 1 ? _("Their current contents are lost. Unmount them and stop what uses them first.") : _("Its current content is lost. Unmount it and stop what uses it first.") }),
        ];
    }

    function fleetRowAction(host, kind, name, action) {
        clearAlert();
        const set = kind === "set";
        const simple = set
            ? { "update-shadow": ["-u", "s", name], "copy-shadow": ["-c", "s", name], abort: ["-a", name], suspend: ["-s", name], resume: ["-r", name], reset: ["-R", name] }
            : { "update-shadow": ["-g", name, "-u", "s"], "copy-shadow": ["-g", name, "-c", "s"], abort: ["-g", name, "-a"], delete: ["-X", name] };
        if (simple[action]) return fleetAct(host, simple[action]);
        if (action !== "update-master" && action !== "copy-master" && !(set && action === "delete")) return Promise.resolve(false);
        // The confirmation names the host and the volumes: read them from that host first.
        const info = set ? fleetIiadm(host, ["-i", name, "--json"]).then((out) => [JSON.parse(out)])
            : fleetIiadm(host, ["-i", "all", "--json"]).then((out) => JSON.parse(out).filter((s) => s.group === name));
        return info.then((sets) => {
            if (action === "delete") {
                const s = sets[0] || { name };
                const vols = el("ul", { class: "volumes" });
                for (const role of ["master", "shadow", "bitmap"])
                    if (s[role] && s[role] !== "-") vols.append(el("li", null, role + ": ", el("code", { text: s[role] })));
                const bodyNodes = [el("p", { text: _("Delete set ") + name + _(" on ") + host + _("? The set is disabled and its volumes are released:") }), vols];
                if (s.type && s.type !== "independent")
                    bodyNodes.push(el("p", { class: "strong", text: _("A dependent shadow is not an image on its own: its bytes 8192-65535 are zeroed so that a torn file system is not mounted by mistake.") }));
                return confirmDialog(_("Delete set ") + name + _(" on ") + host + "?", bodyNodes, _("Delete"))
                        .then((ok) => ok ? fleetAct(host, ["-d", name]) : false);
            }
            const upd = action === "update-master";
            let what;
            if (set) {
                what = upd
                    ? _("Update master of set ") + name + _(" on host ") + host + _(": the chunks that differ are copied from the shadow onto the master volume")
                    : _("Copy to master of set ") + name + _(" on host ") + host + _(": every chunk of the shadow is copied onto the master volume");
            } else {
                what = (upd ? _("Update masters of group ") : _("Copy to masters of group ")) + name + _(" on host ") + host +
                    (upd ? _(": the chunks that differ are copied from each shadow onto its master volume, at one point in time:")
                        : _(": every chunk of each shadow is copied onto its master volume, at one point in time:"));
            }
            const title = set
                ? (upd ? _("Overwrite the master volume on ") : _("Overwrite the whole master volume on ")) + host + "?"
                : _("Overwrite the master volumes of group ") + name + _(" on ") + host + "?";
            const args = set ? ["-n", upd ? "-u" : "-c", "m", name] : ["-n", "-g", name, upd ? "-u" : "-c", "m"];
            return confirmDialog(title, fleetMastersBody(what, host, sets),
                                 set ? (upd ? _("Update master") : _("Copy to master")) : (upd ? _("Update masters") : _("Copy to masters")))
                    .then((ok) => ok ? fleetAct(host, args) : false);
        }, (ex) => fleetFailed(host, ex));
    }

    /* ------------------------------------------------ cross-host point in time */

    /* Group name -> hosts (reachable now) that have it. */
    function fleetGroups() {
        const out = new Map();
        for (const h of fleet.hosts.values()) {
            if (h.state !== "up") continue;
            for (const o of h.objects.values()) {
                if (o.kind !== "group") continue;
                if (!out.has(o.name)) out.set(o.name, []);
                out.get(o.name).push(h.name);
            }
        }
        for (const hosts of out.values()) hosts.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
        return out;
    }

    function renderPit() {
        const groups = fleetGroups();
        const sel = $("fleet-pit-group");
        const names = Array.from(groups.keys()).sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
        const labels = names.map((g) => g + " — " + groups.get(g).length + (groups.get(g).length === 1 ? _(" host") : _(" hosts")));
        const have = Array.from(sel.options).map((o) => o.value + "\n" + o.textContent).join("\n");
        const want = names.map((g, i) => g + "\n" + labels[i]).join("\n");
        if (have !== want) {
            const cur = sel.value;
            sel.replaceChildren(...(names.length
                ? names.map((g, i) => el("option", { value: g, text: labels[i] }))
                : [el("option", { value: "", text: _("no group on any reachable host") })]));
            if (names.includes(cur)) sel.value = cur;
        }
        const g = sel.value;
        const on = g ? groups.get(g) || [] : [];
        $("fleet-pit-run").disabled = fleet.pitRunning || !on.length;
        let text = "";
        if (on.length) {
            text = _("On ") + on.join(", ") + ".";
            const lost = Array.from(fleet.hosts.values()).filter((h) => h.state !== "up").map((h) => h.name);
            const without = Array.from(fleet.hosts.values()).filter((h) => h.state === "up" && !on.includes(h.name)).map((h) => h.name);
            if (lost.length) text += " " + _("Not reachable now, so not included: ") + lost.join(", ") + ".";
            if (without.length) text += " " + _("Without this group: ") + without.join(", ") + ".";
        }
        setText($("fleet-pit-hosts"), text);
    }

    function runPit() {
        const g = $("fleet-pit-group").value;
        const on = fleetGroups().get(g) || [];
        if (!g || !on.length || fleet.pitRunning) return;
        clearAlert();
        // Every host of the file has the group: the file itself (its @GROUPs resolved by
        // iiadm); else just the hosts that have it.
        const all = Array.from(fleet.hosts.values()).every((h) => h.state === "up" && on.includes(h.name));
        const argv = all
            ? ["iiadm", "--hosts-file", fleet.file, "--group-pit", g, "--json"]
            : ["iiadm", "--hosts-file", fleet.file, "--only", on.join(","), "--group-pit", g, "--json"];
        fleet.pitRunning = true;
        $("fleet-pit-run").disabled = true;
        $("fleet-pit-result").hidden = false;
        setText($("fleet-pit-summary"), _("Taking one point in time of group ") + g + _(" on ") + on.length + (on.length === 1 ? _(" host…") : _(" hosts…")));
        $("fleet-pit-body").replaceChildren();
        $("fleet-pit-result").dataset.state = "running";
        new Promise((resolve) => {
            cockpit.spawn(argv, { superuser: "require", err: "message" })
                    .then((out) => resolve({ out, ex: null }), (ex, out) => resolve({ out: out || "", ex }));
        }).then(({ out, ex }) => {
            fleet.pitRunning = false;
            let reply = null;
            for (const line of String(out).split("\n").reverse()) {
                if (!line.trim()) continue;
                try {
                    const v = JSON.parse(line);
                    if (v && typeof v === "object" && Array.isArray(v.hosts)) {
                        reply = v;
                        break;
                    }
                } catch (e) {}
            }
            if (!reply) {
                $("fleet-pit-result").dataset.state = "failed";
                setText($("fleet-pit-summary"), _("No point in time was taken."));
                if (ex && isAccessProblem(ex)) setAdmin(false);
                else showAlert(ex ? errorText(ex) : _("iiadm gave no reply"));
                renderPit();
                return;
            }
            renderPitReply(reply);
            renderPit();
        });
    }

    function renderPitReply(reply) {
        const hosts = reply.hosts;
        const held = hosts.map((h) => h.held_ms).filter((v) => typeof v === "number");
        const maxHeld = held.length ? Math.max(...held) : null;
        let summary;
        if (reply.result === "new") {
            summary = _("New point in time of group ") + reply.group + _(" on all ") + hosts.length + (hosts.length === 1 ? _(" host") : _(" hosts")) +
                (maxHeld !== null ? _(" (writes held at most ") + maxHeld + " ms)." : ".");
        } else if (reply.result === "old") {
            summary = _("No host took a new point in time: every host keeps its old one.");
        } else {
            summary = _("Mixed: not every host has the new point in time (see below).");
        }
        $("fleet-pit-result").dataset.state = String(reply.result || "");
        setText($("fleet-pit-summary"), summary);
        $("fleet-pit-body").replaceChildren(...hosts.map((h) => {
            const pit = String(h.point_in_time || "unknown");
            return el("tr", { dataset: { host: String(h.host), pit } },
                      el("td", { class: "pit-host", text: String(h.host) }),
                      el("td", { class: "pit-result pit-" + pit, text: pit === "new" ? _("new") : pit === "old" ? _("old (kept)") : _("unknown") }),
                      el("td", { class: "pit-held num", text: typeof h.held_ms === "number" ? h.held_ms + " ms" : "–" }),
                      el("td", { class: "pit-error", text: h.error ? String(h.error) : "" }));
        }));
    }

    function wireFleet() {
        $("fleet-filter").addEventListener("input", (ev) => {
            fleet.filter = ev.target.value;
            renderFleet();
        });
        for (const th of document.querySelectorAll("#fleet-objects th[data-sort]")) {
            const sortBy = () => {
                const key = th.dataset.sort;
                if (fleet.sort.key === key) fleet.sort.dir = -fleet.sort.dir;
                else fleet.sort = { key, dir: 1 };
                renderFleet();
            };
            th.addEventListener("click", sortBy);
            th.addEventListener("keydown", (ev) => {
                if (ev.key === "Enter" || ev.key === " ") {
                    ev.preventDefault();
                    sortBy();
                }
            });
        }
        $("fleet-pit-group").addEventListener("change", renderPit);
        $("fleet-pit-run").addEventListener("click", runPit);
    }

    /* --------------------------------------------------------------- wiring */

    function wire() {
        $("alert-close").addEventListener("click", clearAlert);
        $("mount-select").addEventListener("change", (ev) => {
            setMount(ev.target.value);
            renderMounts();
            renderPage();
            pollSoon();
        });
        $("filter").addEventListener("input", (ev) => {
            state.filter = ev.target.value;
            renderTable();
        });
        for (const th of document.querySelectorAll("#objects th[data-sort]")) {
            const sortBy = () => {
                const key = th.dataset.sort;
                if (state.sort.key === key) state.sort.dir = -state.sort.dir;
                else state.sort = { key, dir: 1 };
                try {
                    window.localStorage.setItem("iifs-sort", JSON.stringify(state.sort));
                } catch (e) {}
                renderTable();
            };
            th.addEventListener("click", sortBy);
            th.addEventListener("keydown", (ev) => {
                if (ev.key === "Enter" || ev.key === " ") {
                    ev.preventDefault();
                    sortBy();
                }
            });
        }
        $("new-set").addEventListener("click", openNewSet);
        $("new-group").addEventListener("click", openNewGroup);

        document.addEventListener("click", (ev) => {
            if (openMenu && !openMenu.menu.contains(ev.target)) closeMenu();
        });
        document.addEventListener("keydown", (ev) => {
            if (ev.key === "Escape" && openMenu) {
                const b = openMenu.button;
                closeMenu();
                b.focus();
            }
        });

        // confirmation
        $("confirm-ok").addEventListener("click", () => finishConfirm(true));
        $("confirm-cancel").addEventListener("click", () => finishConfirm(false));
        $("confirm-dialog").addEventListener("cancel", (ev) => {
            ev.preventDefault();
            finishConfirm(false);
        });

        // new set
        $("ns-create").addEventListener("click", nsCreate);
        $("ns-cancel").addEventListener("click", () => closeModal("new-set-dialog"));
        for (const id of ["ns-master", "ns-shadow"]) $(id).addEventListener("input", nsSizesSoon);
        $("ns-type").addEventListener("change", nsCheckSizes);
        for (const id of ["ns-name", "ns-master", "ns-shadow", "ns-bitmap"]) {
            $(id).addEventListener("keydown", (ev) => {
                if (ev.key === "Enter") nsCreate();
            });
        }

        // volume browser
        for (const b of document.querySelectorAll("button.browse")) b.addEventListener("click", () => openBrowser(b.dataset.for));
        $("vb-go").addEventListener("click", () => vbLoad($("vb-dir").value));
        $("vb-dir").addEventListener("keydown", (ev) => {
            if (ev.key === "Enter") {
                ev.preventDefault();
                vbLoad($("vb-dir").value);
            }
        });
        $("vb-up").addEventListener("click", () => vbLoad(dirname($("vb-dir").value)));
        $("vb-cancel").addEventListener("click", () => closeModal("volume-browser"));
        const vbClick = (ev) => {
            const tr = ev.target.closest("tr");
            if (!tr) return;
            if (tr.dataset.dir) vbLoad(tr.dataset.dir);
            else if (tr.dataset.path) vbPick(tr.dataset.path);
        };
        $("vb-body").addEventListener("click", vbClick);
        $("vb-body").addEventListener("keydown", (ev) => {
            if (ev.key === "Enter") vbClick(ev);
        });

        // set properties
        $("tab-config").addEventListener("click", () => selectTab("config"));
        $("tab-status").addEventListener("click", () => selectTab("status"));
        $("sp-close").addEventListener("click", () => closeModal("set-props"));
        const spSet = (action) => () => setAction(spName, action, { inline: "sp-error" });
        for (const a of ["update-shadow", "update-master", "copy-shadow", "copy-master", "abort"])
            $("sp-" + a).addEventListener("click", spSet(a));
        $("sp-export").addEventListener("click", () => spAct(["-E", spName]));
        $("sp-join").addEventListener("click", () => {
            const b = $("sp-join-bitmap").value.trim();
            if (!b) {
                showInline("sp-error", _("Choose the bitmap volume of the set that imported the shadow."));
                return;
            }
            spAct(["-J", spName, b]);
        });
        $("sp-attach-overflow").addEventListener("change", (ev) => {
            ev.target.dataset.touched = "1";
        });
        $("sp-attach").addEventListener("click", () => {
            const o = $("sp-attach-overflow").value;
            if (!o) {
                showInline("sp-error", _("Initialise an overflow volume first (Overflow volumes, on the main page)."));
                return;
            }
            spAct(["-A", spName, o]);
        });
        $("sp-detach").addEventListener("click", () => spAct(["-D", spName]));
        $("sp-params").addEventListener("click", () => {
            const d = $("sp-delay").value.trim();
            const u = $("sp-units").value.trim();
            spAct(["-P", d || "0", u || "100", spName]);
        });
        $("set-props").addEventListener("close", () => {
            spName = null;
            delete $("sp-attach-overflow").dataset.touched;
        });

        // groups
        $("ng-type").addEventListener("change", renderNgMembers);
        $("ng-create").addEventListener("click", ngCreate);
        $("ng-cancel").addEventListener("click", () => closeModal("new-group-dialog"));
        $("gp-close").addEventListener("click", () => closeModal("group-props"));
        $("gp-add").addEventListener("click", () => {
            const s = $("gp-add-set").value;
            if (s) gpAct(["-M", s, gpName]);
        });
        const gpGroup = (action) => () => groupAction(gpName, action, { inline: "gp-error" });
        for (const a of ["update-shadow", "update-master", "copy-shadow", "copy-master", "abort"])
            $("gp-" + a).addEventListener("click", gpGroup(a));
        $("gp-rename").addEventListener("click", () => {
            const n = $("gp-rename-name").value.trim();
            if (!n) {
                showInline("gp-error", _("Enter the group's new name."));
                return;
            }
            const old = gpName;
            gpAct(["-N", old, n]).then((ok) => {
                if (ok && gpName === old) {
                    gpName = n;
                    $("gp-rename-name").value = "";
                }
            });
        });
        $("group-props").addEventListener("close", () => {
            gpName = null;
        });

        // overflow volumes
        fillChunkSizes($("ns-chunk-size"));
        fillChunkSizes($("ov-chunk-size"));
        $("ov-init").addEventListener("click", () => {
            const vol = $("ov-volume").value.trim();
            const name = $("ov-name").value.trim();
            if (!vol) {
                showAlert(_("Choose the volume to initialise as an overflow volume."));
                return;
            }
            const args = ["-O", vol];
            if (name) args.push(name);
            if ($("ov-chunk-size").value !== "default") args.push("--chunk-size", $("ov-chunk-size").value);
            act(args).then((ok) => {
                if (ok) {
                    $("ov-volume").value = "";
                    $("ov-name").value = "";
                }
            });
        });

        document.addEventListener("visibilitychange", onVisibility);
        cockpit.addEventListener("visibilitychange", onVisibility);
        $("view-local").addEventListener("click", () => goView("local"));
        $("view-fleet").addEventListener("click", () => goView("fleet"));
        wireFleet();
        cockpit.addEventListener("locationchanged", () => {
            applyView();
            if (state.view !== "local") return;
            const m = cockpit.location.options.mount;
            if (m && m !== state.mount && state.mounts.includes(m)) {
                setMount(m);
                renderMounts();
                renderPage();
                pollSoon();
            }
        });
    }

    function init() {
        try {
            const s = JSON.parse(window.localStorage.getItem("iifs-sort") || "null");
            if (s && ["name", "type", "state", "status", "progress"].includes(s.key) && (s.dir === 1 || s.dir === -1)) state.sort = s;
        } catch (e) {}
        wire();

        const perm = cockpit.permission({ admin: true });
        const onPerm = () => {
            if (perm.allowed === false) setAdmin(false);
            else if (perm.allowed === true && state.admin === false) {
                state.admin = null;
                pollSoon();
                if (state.view === "fleet") fleetSpawn();
            }
        };
        perm.addEventListener("changed", onPerm);
        onPerm();

        applyView();
        poll();
    }

    document.addEventListener("DOMContentLoaded", init);
}());
