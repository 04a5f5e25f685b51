// LineGuard review station: polls /api/state, shows the queue and posts verdicts.
// Plain DOM (textContent only: part ids and reasons are never parsed as HTML).
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const $ = (id) => document.getElementById(id);
  let queue = [];
  let selected = 0;
  let defectTypes = [];
  let busy = false;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function describe(part) {
    const score = part.score === null ? "no score" : "score " + part.score.toFixed(3);
    return part.camera + " · " + part.part_id + " · " + part.decision +
      (part.reason ? " (" + part.reason + ")" : "") + " · " + score + " · " + part.ts;
  }

  function render(state) {
    $("model").textContent = state.model ? "model " + state.model : "no model";
    queue = state.queue;
    if (selected >= queue.length) selected = Math.max(0, queue.length - 1);
    $("count").textContent = "(" + queue.length + ")";
    const list = $("queue");
    list.replaceChildren(...queue.map((part, i) => {
      const item = el("li", describe(part), i === selected ? "selected" : "");
      item.addEventListener("click", () => { selected = i; render(state); });
      return item;
    }));
    const part = queue[selected];
    $("empty").hidden = Boolean(part);
    $("part").hidden = !part;
    $("buttons").hidden = !part;
    if (part) {
      $("caption").textContent = describe(part);
      const image = $("image");
      if (part.image) {
        if (image.getAttribute("src") !== part.image) image.src = part.image;
        image.alt = "image of part " + part.part_id;
      } else {
        image.removeAttribute("src");
        image.alt = "no image kept for this part";
      }
    }
    if (defectTypes.join() !== state.defect_types.join()) {
      defectTypes = state.defect_types;
      $("types").replaceChildren(...defectTypes.map((type, i) => {
        const b = el("button", (i < 9 ? (i + 1) + " " : "") + type, "type");
        b.addEventListener("click", () => verdict("defect", type));
        return b;
      }));
    }
    $("labelled").replaceChildren(...state.labelled.map((part) => el("li",
      part.part_id + ": " + part.label + (part.defect_type ? " / " + part.defect_type : "") +
      " by " + part.operator + " at " + part.labelled_at, part.label === "good" ? "pass" : "reject")));
    $("cameras").replaceChildren(...state.cameras.map((cam) => {
      const box = el("div", undefined, "camera");
      const counts = Object.entries(cam.counts).map(([k, v]) => k + " " + v).join(" · ");
      box.append(el("h3", cam.camera + " — " + counts));
      const recent = el("ol");
      recent.append(...cam.recent.map((r) => el("li",
        r.ts + " " + r.part_id + " " + r.decision + (r.reason ? " (" + r.reason + ")" : ""), r.decision)));
      box.append(recent);
      return box;
    }));
  }

  async function refresh() {
    const rejects = $("rejects").checked ? "1" : "0";
    try {
      const response = await fetch("/api/state?rejects=" + rejects, { credentials: "same-origin" });
      if (response.status === 401) { window.location = "/login"; return; }
      if (response.ok) render(await response.json());
    } catch (err) {
      $("status").textContent = "station not reachable: " + err;
    }
  }

  async function verdict(label, type) {
    const part = queue[selected];
    if (!part || busy) return;
    busy = true;
    try {
      const response = await fetch("/api/verdict", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ part_id: part.part_id, result_seq: part.result_seq,
          revision: part.revision, label: label, defect_type: type || null }),
      });
      const body = await response.json();
      $("status").textContent = response.ok
        ? part.part_id + ": " + label + (type ? " / " + type : "") + " (" + body.status + ")"
        : body.error;
      if (response.status === 401) window.location = "/login";
    } finally {
      busy = false;
      refresh();
    }
  }

  $("good").addEventListener("click", () => verdict("good"));
  $("defect").addEventListener("click", () => verdict("defect"));
  $("rejects").addEventListener("change", refresh);
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "g") verdict("good");
    else if (key === "d") verdict("defect");
    else if (/^[1-9]$/.test(key) && defectTypes[Number(key) - 1]) verdict("defect", defectTypes[Number(key) - 1]);
    else if (key === "j" || key === "ArrowDown") { selected = Math.min(selected + 1, queue.length - 1); refresh(); }
    else if (key === "k" || key === "ArrowUp") { selected = Math.max(selected - 1, 0); refresh(); }
    else if (key === "r") { $("rejects").checked = !$("rejects").checked; refresh(); }
    else return;
    event.preventDefault();
  });
  refresh();
  setInterval(refresh, 2000);
})();
