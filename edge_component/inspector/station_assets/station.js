// LineGuard review station: polls /api/state, shows the queue and posts verdicts.
// Plain DOM (textContent only: part ids and reasons are never parsed as HTML).
//
// A verdict is for the part on screen, never for a position in the queue: the selection is
// the part's (part_id, result_seq), and the buttons and keys act only once that part's image
// has loaded and it has been on screen for SETTLE_MS — a refresh or a verdict that moves the
// queue under a finger or a repeated key then cannot label the next part unseen. The server
// refuses a verdict whose result_seq or revision is not the part's current one (409).
//
// The anomaly map, when the sampler kept one with the image, is a small grey PNG in which
// state.map_at_threshold is the reject threshold; it is drawn over the image on a canvas as a
// translucent heat overlay (transparent below half the threshold, yellow to red at and above
// it), shown or hidden with the "anomaly map" box or the m key.
"use strict";
(function () {
  const SETTLE_MS = 400;
  const csrf = document.querySelector('meta[name="csrf"]').content;
  const $ = (id) => document.getElementById(id);
  let queue = [];
  let selectedKey = null; // part_id + "@" + result_seq of the part on screen
  let shown = null; // the part object the buttons act on (null: nothing, or not ready)
  let shownKey = null;
  let shownAt = 0;
  let ready = false; // its image has loaded (or it has none)
  let defectTypes = [];
  let busy = false;
  let atThreshold = 170; // the map's grey level of the reject threshold (the server says)

  const keyOf = (part) => part.part_id + "@" + part.result_seq;

  function setReady(value) {
    ready = value;
    for (const button of document.querySelectorAll("#buttons button")) button.disabled = !value;
  }

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

  function select(index) {
    const part = queue[Math.max(0, Math.min(index, queue.length - 1))];
    selectedKey = part ? keyOf(part) : null;
  }

  function drawHeat(map) {
    const canvas = $("heat");
    canvas.width = map.naturalWidth;
    canvas.height = map.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(map, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    const data = pixels.data;
    for (let i = 0; i < data.length; i += 4) {
      const ratio = data[i] / atThreshold; // 1: the reject threshold
      const heat = Math.max(0, Math.min(1, (ratio - 0.5) / 0.5));
      data[i] = 255;
      data[i + 1] = Math.round(230 * (1 - heat));
      data[i + 2] = 0;
      data[i + 3] = ratio < 0.5 ? 0 : Math.round(40 + 100 * heat); // at most 55 %: the part shows through
    }
    context.putImageData(pixels, 0, 0);
  }

  function showMap(part) {
    const canvas = $("heat");
    canvas.hidden = true;
    $("maptoggle").hidden = !part.map;
    $("legend").textContent = part.map
      ? "yellow → red: towards and above the reject threshold"
      : "no anomaly map kept for this part";
    if (!part.map) return;
    const key = keyOf(part);
    const map = new Image();
    map.onload = () => {
      if (shownKey !== key) return;
      drawHeat(map);
      canvas.hidden = !$("showmap").checked;
    };
    map.src = part.map;
  }

  function show(part) {
    // a different part (or the same id judged again) on screen: wait for its image and a pause
    if (part && shownKey === keyOf(part)) { shown = part; return; }
    shown = part || null;
    shownKey = part ? keyOf(part) : null;
    shownAt = performance.now();
    setReady(false);
    if (!part) return;
    $("caption").textContent = describe(part);
    showMap(part);
    const image = $("image");
    const key = shownKey;
    if (part.image) {
      image.onload = () => { if (shownKey === key) setReady(true); };
      image.onerror = () => {
        if (shownKey === key) $("status").textContent = part.part_id + ": image not loaded; no verdict";
      };
      image.alt = "image of part " + part.part_id;
      image.src = part.image;
    } else {
      image.onload = image.onerror = null;
      image.removeAttribute("src");
      image.alt = "no image kept for this part";
      setReady(true);
    }
  }

  function render(state) {
    $("model").textContent = state.model ? "model " + state.model : "no model";
    if (state.map_at_threshold) atThreshold = state.map_at_threshold;
    const before = queue.findIndex((part) => keyOf(part) === selectedKey);
    queue = state.queue;
    if (!queue.some((part) => keyOf(part) === selectedKey)) select(before < 0 ? 0 : before);
    $("count").textContent = "(" + queue.length + ")";
    const list = $("queue");
    list.replaceChildren(...queue.map((part) => {
      const key = keyOf(part);
      const item = el("li", describe(part), key === selectedKey ? "selected" : "");
      item.addEventListener("click", () => { selectedKey = key; render(state); });
      return item;
    }));
    const part = queue.find((p) => keyOf(p) === selectedKey);
    $("empty").hidden = Boolean(part);
    $("part").hidden = !part;
    $("buttons").hidden = !part;
    show(part);
    if (defectTypes.join() !== state.defect_types.join()) {
      defectTypes = state.defect_types;
      $("types").replaceChildren(...defectTypes.map((type, i) => {
        const b = el("button", (i < 9 ? (i + 1) + " " : "") + type, "type");
        b.addEventListener("click", () => verdict("defect", type));
        return b;
      }));
      setReady(ready);
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
    const part = shown;
    if (!part || busy || !ready || performance.now() - shownAt < SETTLE_MS) return;
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

  function move(step) {
    select(queue.findIndex((part) => keyOf(part) === selectedKey) + step);
    refresh();
  }

  $("good").addEventListener("click", () => verdict("good"));
  $("defect").addEventListener("click", () => verdict("defect"));
  $("rejects").addEventListener("change", refresh);
  const toggleMap = () => { $("heat").hidden = !$("showmap").checked || !shown || !shown.map; };
  $("showmap").addEventListener("change", toggleMap);
  document.addEventListener("keydown", (event) => {
    // keys typed into a text field are the field's; a tapped checkbox keeps the focus but
    // takes no text, so the keys still act after it
    const target = event.target;
    const typing = target.tagName === "INPUT" && target.type !== "checkbox";
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (key === "g") verdict("good");
    else if (key === "d") verdict("defect");
    else if (/^[1-9]$/.test(key) && defectTypes[Number(key) - 1]) verdict("defect", defectTypes[Number(key) - 1]);
    else if (key === "j" || key === "ArrowDown") { move(1); }
    else if (key === "k" || key === "ArrowUp") { move(-1); }
    else if (key === "r") { $("rejects").checked = !$("rejects").checked; refresh(); }
    else if (key === "m") { $("showmap").checked = !$("showmap").checked; toggleMap(); }
    else return;
    event.preventDefault();
  });
  refresh();
  setInterval(refresh, 2000);
})();
