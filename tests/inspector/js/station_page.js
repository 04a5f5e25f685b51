// Runs station.js against a minimal stand-in of the DOM and fetch (no browser in CI), and
// prints one JSON line: the verdicts the page posted and what it ignored.
"use strict";
const fs = require("fs");
const vm = require("vm");

class Element {
  constructor(id) {
    this.id = id; this.children = []; this.listeners = {}; this.hidden = false;
    this.disabled = false; this.textContent = ""; this.className = ""; this.attrs = {};
    this.checked = false; this.onload = null; this.onerror = null;
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  replaceChildren(...nodes) { this.children = nodes; }
  append(...nodes) { this.children.push(...nodes); }
  getAttribute(name) { return name in this.attrs ? this.attrs[name] : null; }
  removeAttribute(name) { delete this.attrs[name]; }
  set src(value) { this.attrs.src = value; }
  get src() { return this.attrs.src; }
  click() { if (!this.disabled) for (const fn of this.listeners.click || []) fn(); }
}

const elements = {};
const byId = (id) => (elements[id] = elements[id] || new Element(id));
const docListeners = {};
let now = 1000;
const posted = [];
let states = [];
const document = {
  querySelector: () => ({ content: "token" }),
  querySelectorAll: () => [byId("good"), byId("defect"), ...byId("types").children],
  getElementById: byId,
  createElement: (tag) => new Element(tag),
  addEventListener: (type, fn) => { docListeners[type] = fn; },
};
const json = (status, body) => ({ status, ok: status < 400, json: async () => body });
async function fetch(url, options) {
  if (url.startsWith("/api/state")) return json(200, states[0]);
  posted.push(JSON.parse(options.body));
  return json(200, { status: "recorded" });
}
let tick = null;
const context = {
  document, fetch, window: { location: "/" }, performance: { now: () => now },
  setInterval: (fn) => { tick = fn; }, console,
};
const settle = () => new Promise((resolve) => setImmediate(resolve));
const key = (k) => docListeners.keydown({ key: k, target: { tagName: "BODY" }, preventDefault() {} });
const part = (id, seq) => ({
  part_id: id, result_seq: seq, revision: 0, camera: "cam0", decision: "manual",
  reason: "manual_band", score: 0.15, ts: "t", image: "/api/image/" + seq,
});
const state = (...queue) => ({ model: "m", queue, labelled: [], defect_types: [], cameras: [] });

(async () => {
  const a = part("part-a", 1), b = part("part-b", 2), x = part("part-x", 3);
  states = [state(a, b)];
  vm.runInNewContext(fs.readFileSync(process.argv[2], "utf-8"), context);
  for (let i = 0; i < 5; i++) await settle();
  const log = {};
  key("g"); await settle();
  log.before_image = posted.length; // the image has not loaded: nothing posted
  if (byId("image").onload) byId("image").onload();
  key("g"); byId("good").click(); await settle();
  log.before_settle = posted.length; // loaded, but on screen for less than the pause
  now += 500;
  // a refresh puts a new part ahead of the one on screen: the screen keeps part-a
  states = [state(x, a, b)];
  tick(); for (let i = 0; i < 5; i++) await settle();
  log.caption = byId("caption").textContent;
  // the verdict's refresh drops part-a; a second tap at once must not label part-b unseen
  states = [state(x, b)];
  key("g"); for (let i = 0; i < 5; i++) await settle();
  key("g"); byId("good").click(); for (let i = 0; i < 5; i++) await settle();
  log.after_double_tap = posted.length;
  log.shown_after = byId("caption").textContent;
  log.posted = posted;
  process.stdout.write(JSON.stringify(log) + "\n");
})();
