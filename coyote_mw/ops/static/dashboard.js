// coyote dashboard: polls the leader's JSON every second and updates its tables in place
// (a row keeps its place and focus; a cell is touched only when its content changed).
// Every value goes into the page as text: names and paths come from registrations.
"use strict";

(() => {
  const POLL_MS = 1000;
  const main = document.getElementById("dashboard");
  const endpoint = main.dataset.endpoint;
  // the routes_version of the routes shown: the leader sends the routes only when its
  // table has changed since ("" at first: never a version)
  let routesVersion = "";
  const connection = document.getElementById("connection");
  const updated = document.getElementById("updated");
  const notReady = document.getElementById("ready");
  const changes = document.getElementById("changes");
  const shown = new WeakMap(); // cell -> what it shows, to leave unchanged cells alone
  let known = null; // instance -> its health in words, as of the previous poll

  const clock = (iso) => (iso ? iso.slice(11, 19) : "—");

  function duration(s) {
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function seconds(iso, now) {
    return Math.round((Date.parse(iso) - now) / 1000);
  }

  function leaseCell(iso, now) {
    if (!iso) return { text: "no lease" };
    const s = seconds(iso, now);
    return { text: s > 0 ? `in ${duration(s)}` : "expired", title: iso };
  }

  function heartbeatCell(iso, now) {
    if (!iso) return { text: "—" };
    const s = -seconds(iso, now);
    return { text: s > 0 ? `${duration(s)} ago` : "just now", title: iso };
  }

  function health(up) {
    const h = up.health;
    if (!h) return { word: "in process", text: "In process", status: "idle" };
    if (h.ejected) {
      return {
        word: "ejected",
        text: `Ejected until ${clock(h.ejected_until)}`,
        status: "bad",
        icon: "✕",
      };
    }
    if (h.consecutive_failures > 0) {
      return { word: "failing", text: "Failing", status: "warn", icon: "!" };
    }
    return { word: "healthy", text: "Healthy", status: "ok", icon: "✓" };
  }

  function load(n, of) {
    return { text: `${n} / ${of}${of > 0 && n >= of ? " (full)" : ""}`, meter: [n, of] };
  }

  const num = (n) => ({ text: String(n), cls: "num" });

  // A cell: a string, or {text, cls, status, icon, title, meter: [value, max]}.
  function fill(td, cell) {
    const spec = typeof cell === "object" ? cell : { text: String(cell) };
    const key = JSON.stringify(spec);
    if (shown.get(td) === key) return;
    shown.set(td, key);
    td.className = spec.cls || "";
    td.replaceChildren();
    let target = td;
    if (spec.status) {
      target = document.createElement("span");
      target.className = `status ${spec.status}`;
      td.append(target);
    }
    if (spec.icon) {
      const icon = document.createElement("span");
      icon.setAttribute("aria-hidden", "true");
      icon.textContent = `${spec.icon} `;
      target.append(icon);
    }
    target.append(spec.text);
    if (spec.meter) {
      const meter = document.createElement("meter");
      meter.min = 0;
      meter.max = Math.max(spec.meter[1], 1);
      meter.value = spec.meter[0];
      meter.setAttribute("aria-hidden", "true"); // the text says it
      td.append(meter);
    }
    if (spec.title) td.title = spec.title;
    else td.removeAttribute("title");
  }

  // Make tbody hold these rows ({key, cells}) in this order, reusing rows by key.
  function sync(tbody, rows, emptyText) {
    if (rows.length === 0) {
      rows = [{ key: "", cells: [{ text: emptyText, cls: "empty" }] }];
    }
    const wanted = new Set(rows.map((row) => row.key));
    const byKey = new Map();
    for (const tr of [...tbody.rows]) {
      if (wanted.has(tr.dataset.key)) byKey.set(tr.dataset.key, tr);
      else tr.remove();
    }
    rows.forEach((row, i) => {
      let tr = byKey.get(row.key);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.key = row.key;
        for (const _ of row.cells) tr.append(document.createElement("td"));
        if (row.key === "") tr.cells[0].colSpan = tbody.closest("table").tHead.rows[0].cells.length;
      }
      if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null);
      row.cells.forEach((cell, c) => fill(tr.cells[c], cell));
    });
  }

  function announce(instances) {
    const now = new Map(
      instances.map((up) => [`${up.service}/${up.instance} in ${up.topology}`, health(up).word]),
    );
    const said = [];
    if (known !== null) {
      for (const [name, word] of now) {
        if (!known.has(name)) said.push(`${name} registered (${word})`);
        else if (known.get(name) !== word) said.push(`${name} is now ${word}`);
      }
      for (const name of known.keys()) {
        if (!now.has(name)) said.push(`${name} is gone`);
      }
    }
    known = now;
    if (said.length) changes.textContent = `${said.join(". ")}.`;
  }

  function render(data) {
    const now = Date.parse(data.now);
    updated.textContent = `Updated ${clock(data.now)} UTC`;
    notReady.hidden = data.ready === null;
    notReady.textContent = data.ready === null ? "" : `Not ready: ${data.ready}`;

    sync(
      document.getElementById("topologies"),
      data.topologies.map((t) => ({
        key: t.topology,
        cells: [
          t.topology,
          num(t.routes),
          num(t.instances),
          load(t.relay.active, t.relay.concurrency),
          load(t.relay.waiting, t.relay.queue),
          num(t.relay.rejected),
        ],
      })),
      "No topology yet.",
    );

    sync(
      document.getElementById("instances"),
      data.instances.map((up) => {
        const h = up.health;
        return {
          key: JSON.stringify([up.topology, up.service, up.instance]),
          cells: [
            up.topology,
            up.service,
            up.instance,
            { text: up.url || "in process", cls: up.url ? "mono" : "" },
            health(up),
            num(h ? h.consecutive_failures : "—"),
            num(h ? h.ejections : "—"),
            leaseCell(up.lease_expires, now),
            heartbeatCell(up.last_heartbeat, now),
            num(up.routes),
          ],
        };
      }),
      "No instance is registered.",
    );

    // null: the table has not changed since routesVersion, and neither have its rows
    if (data.routes !== null) {
      sync(
        document.getElementById("routes"),
        data.routes.map((r) => ({
          key: JSON.stringify([r.topology, r.method, r.path]),
          cells: [
            r.topology,
            r.method + (r.cast ? " (cast)" : ""),
            { text: r.path, cls: "mono" },
            r.service,
            r.instances.join(", ") || "—",
          ],
        })),
        "No route.",
      );
      routesVersion = data.routes_version; // (once they are shown)
    }

    sync(
      document.getElementById("errors"),
      data.errors.map((e, i) => ({
        key: String(i),
        cells: [clock(e.time), e.level, e.logger, e.message],
      })),
      "Nothing logged.",
    );

    announce(data.instances);
  }

  function connected(text) {
    if (connection.textContent !== text) connection.textContent = text;
  }

  async function poll() {
    try {
      const url = `${endpoint}?routes=${encodeURIComponent(routesVersion)}`;
      const response = await fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { accept: "application/json" },
      });
      if (response.status === 401) {
        window.location.reload(); // the session ended: the sign-in form
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      connected("Live: updated every second.");
    } catch (err) {
      connected(`Connection to the leader lost (${err.message}): retrying every second.`);
    }
    window.setTimeout(poll, POLL_MS);
  }

  poll();
})();
