"use strict";
// The ringchat web client: plain JS over the HTTP API and one WebSocket (docs/web-client.md).
//
// What it keeps where:
// - the session (token, user, device) in localStorage, so a reload or a new tab stays logged in;
// - messages not yet acknowledged by the server (the outbox) in sessionStorage, per tab, so a
//   reload of that tab keeps them and every one is retried with its own client_msg_id until
//   the server answers (the server de-duplicates by it);
// - usernames by id in localStorage (usernames never change), filled by GET /v1/users?ids=.

const SESSION_KEY = "ringchat.session";
const NAMES_KEY = "ringchat.names";
const MAX_NAMES_KEPT = 5000;
const PAGE = 50;                 // messages per history page
const REQUEST_TIMEOUT_MS = 10000;
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 10000;
const MAX_TEXT_CHARS = 100000;

const S = {
  token: null, me: null, myName: null, deviceId: null,
  ws: null, conn: "offline", attempts: 0, retryTimer: null, retryAt: 0, countdown: null,
  caughtUp: false, heartbeatMs: 15000, pingTimer: null, readyTimer: null, showBanner: null,
  channels: new Map(),        // channel_id -> summary
  activity: new Map(),        // channel_id -> ts of the newest message seen (list order)
  messages: new Map(),        // channel_id -> Map(seq -> message)
  olderMore: new Map(),       // channel_id -> true while older history exists
  loadedAt: new Map(),        // channel_id -> the connection number its newest page was fetched on
  loadingOlder: new Set(),
  outbox: [],                 // {channel_id, text, client_msg_id, created, state, error, attempts}
  flushing: false,
  names: new Map(), unknownNames: new Set(), nameQueue: new Set(), nameTimer: null, namesRetryAt: 0,
  presence: new Map(),        // user_id -> {online, last_seen}
  reads: new Map(),           // channel_id -> Map(user_id -> seq)
  acked: new Map(), unread: new Map(), current: null, membersOpen: false,
  refs: 0, pending: new Map(), connections: 0, typingTimer: null, lastTyping: 0,
};
const $ = (id) => document.getElementById(id);

// ---------- small helpers ----------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function readJson(storage, key, fallback) {
  try { const v = storage.getItem(key); return v ? JSON.parse(v) : fallback; } catch (e) { return fallback; }
}

function writeJson(storage, key, value) {
  try { storage.setItem(key, JSON.stringify(value)); } catch (e) { /* storage full or disabled: keep going in memory */ }
}

function newClientMsgId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function showError(id, text) { $(id).textContent = text || ""; }

// ---------- HTTP ----------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (S.token) headers.authorization = "Bearer " + S.token;
  let r;
  try {
    r = await fetch(path, { method, headers, body: body !== undefined ? JSON.stringify(body) : undefined });
  } catch (e) {
    throw new ApiError(0, "network", "Cannot reach the server. Check the connection and try again.");
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!r.ok) {
    const err = data && data.error ? data.error : { code: "http", message: r.statusText || ("HTTP " + r.status) };
    if (r.status === 401 && S.token && path !== "/v1/sessions") sessionEnded("Your session ended. Please log in again.");
    throw new ApiError(r.status, err.code, err.message);
  }
  return data;
}

// ---------- session ----------

function saveSession() {
  writeJson(localStorage, SESSION_KEY, { token: S.token, user_id: S.me, username: S.myName, device_id: S.deviceId });
}

function outboxKey() { return "ringchat.outbox." + S.me; }
function saveOutbox() {
  if (!S.me) return;
  writeJson(sessionStorage, outboxKey(), S.outbox.map(({ channel_id, text, client_msg_id, created, state, error }) =>
    ({ channel_id, text, client_msg_id, created, state: state === "failed" ? "failed" : "queued", error })));
}

async function login(signup) {
  showError("auth-error", "");
  const username = $("username").value.trim().toLowerCase(), password = $("password").value;
  if (!username || !password) { showError("auth-error", "Enter a username and a password."); return; }
  $("login").disabled = $("signup").disabled = true;
  try {
    if (signup) await api("POST", "/v1/users", { username, password });
    const deviceKey = "ringchat.device." + username;
    const body = { username, password, device_name: "web: " + navigator.userAgent.slice(0, 80) };
    const known = localStorage.getItem(deviceKey);
    if (known) body.device_id = known;
    let s;
    try { s = await api("POST", "/v1/sessions", body); }
    catch (e) {
      if (!known || e.status !== 404) throw e;
      delete body.device_id;                                // that device is gone: make a new one
      s = await api("POST", "/v1/sessions", body);
    }
    localStorage.setItem(deviceKey, s.device_id);
    S.token = s.token; S.me = s.user_id; S.myName = username; S.deviceId = s.device_id;
    rememberName(s.user_id, username);
    saveSession();
    $("password").value = "";
    enterApp();
  } catch (e) {
    showError("auth-error", e.message);
  } finally {
    $("login").disabled = $("signup").disabled = false;
  }
}

function enterApp() {
  S.outbox = readJson(sessionStorage, outboxKey(), []).map((i) => ({ ...i, attempts: 0 }));
  $("who").textContent = S.myName || "";
  $("auth").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  renderChannels(); renderConversation();
  connect();
}

function leaveApp(message) {
  S.token = null; S.me = null; S.myName = null; S.deviceId = null; S.current = null;
  dropSocket();
  clearTimeout(S.retryTimer); clearInterval(S.countdown);
  S.channels.clear(); S.messages.clear(); S.outbox = []; S.presence.clear(); S.reads.clear();
  S.loadedAt.clear(); S.olderMore.clear(); S.unread.clear(); S.acked.clear(); S.activity.clear();
  document.body.classList.remove("in-channel");
  $("app").hidden = true; $("logout").hidden = true; $("auth").hidden = false; $("who").textContent = "";
  setBanner(null);
  showError("auth-error", message || "");
}

function sessionEnded(message) {
  localStorage.removeItem(SESSION_KEY);
  leaveApp(message);
}

async function logout() {
  let note = "";
  try { await api("DELETE", "/v1/sessions/current"); }
  catch (e) { if (e.code === "network") note = "Logged out here, but the server could not be told (offline)."; }
  localStorage.removeItem(SESSION_KEY);
  leaveApp(note);
}

// ---------- names ----------

function loadNames() {
  const saved = readJson(localStorage, NAMES_KEY, {});
  for (const [id, name] of Object.entries(saved)) S.names.set(id, name);
}

function rememberName(id, name) {
  S.names.set(id, name);
  S.unknownNames.delete(id);
}

function saveNames() {
  const merged = readJson(localStorage, NAMES_KEY, {});
  for (const [id, name] of S.names) merged[id] = name;
  const ids = Object.keys(merged);
  for (const id of ids.slice(0, Math.max(0, ids.length - MAX_NAMES_KEPT))) delete merged[id];
  writeJson(localStorage, NAMES_KEY, merged);
}

function nameOf(uid) {
  if (uid === S.me && S.myName) return S.myName;
  if (S.names.has(uid)) return S.names.get(uid);
  if (S.unknownNames.has(uid)) return "unknown user";
  wantNames([uid]);
  return "…";
}

// Queues ids whose names are not known; one GET /v1/users?ids= per 100 of them, shortly after.
function wantNames(ids) {
  for (const id of ids) if (id && !S.names.has(id) && !S.unknownNames.has(id)) S.nameQueue.add(id);
  if (S.nameQueue.size && !S.nameTimer) S.nameTimer = setTimeout(fetchNames, Math.max(20, S.namesRetryAt - Date.now()));
}

async function fetchNames() {
  S.nameTimer = null;
  if (!S.token) return;
  const ids = [...S.nameQueue];
  S.nameQueue.clear();
  for (let i = 0; i < ids.length; i += 100) {
    const chunk = ids.slice(i, i + 100);
    try {
      const r = await api("GET", "/v1/users?" + new URLSearchParams({ ids: chunk.join(",") }));
      const found = new Set();
      for (const u of r.users) { rememberName(u.user_id, u.username); found.add(u.user_id); }
      for (const id of chunk) if (!found.has(id)) S.unknownNames.add(id);
    } catch (e) {
      // Offline or the cluster busy: ask again, but not before a few seconds have passed.
      if (e.code === "network" || e.status >= 500 || e.status === 429) S.namesRetryAt = Date.now() + 5000;
      else for (const id of chunk) S.unknownNames.add(id);
    }
  }
  saveNames();
  renderChannels(); renderConversation();
}

async function userIdByName(name) {
  const username = name.trim().toLowerCase();
  if (!username) throw new ApiError(400, "invalid", "Enter a username.");
  try {
    const u = await api("GET", "/v1/users/by-name/" + encodeURIComponent(username));
    rememberName(u.user_id, u.username);
    return u.user_id;
  } catch (e) {
    if (e.code === "not_found") throw new ApiError(404, "not_found", "No user named " + username + ".");
    throw e;
  }
}

// ---------- connection ----------

function wsUrl() { return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws"; }

function connect() {
  clearTimeout(S.retryTimer); clearInterval(S.countdown);
  if (!S.token || S.ws) return;
  S.conn = "connecting"; S.caughtUp = false;
  setBanner(S.attempts ? "Reconnecting…" : "Connecting…", "connecting");
  let ws;
  try { ws = new WebSocket(wsUrl()); } catch (e) { scheduleReconnect(); return; }
  S.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token: S.token }));
  ws.onmessage = (ev) => {
    if (ws !== S.ws) return;
    let f;
    try { f = JSON.parse(ev.data); } catch (e) { return; }
    onFrame(f);
  };
  ws.onclose = (ev) => { if (ws === S.ws) onDisconnected(ev.code); };
  // A server that accepts the socket but never says ready counts as down.
  S.readyTimer = setTimeout(() => { if (ws === S.ws && S.conn !== "online") { dropSocket(); onDisconnected(0); } }, REQUEST_TIMEOUT_MS);
}

// Forgets the current socket (its late events are ignored) and closes it.
function dropSocket() {
  const ws = S.ws;
  S.ws = null;
  clearInterval(S.pingTimer); clearTimeout(S.readyTimer);
  if (ws) { try { ws.close(); } catch (e) { /* already closed */ } }
}

function onDisconnected(code) {
  S.ws = null; S.caughtUp = false;
  clearInterval(S.pingTimer); clearTimeout(S.readyTimer);
  for (const [ref, p] of S.pending) { clearTimeout(p.timer); p.resolve({ type: "error", code: "disconnected", message: "connection lost" }); S.pending.delete(ref); }
  for (const item of S.outbox) if (item.state === "sending") item.state = "queued";
  S.presence.clear();                      // what we knew is stale now: show nobody as online
  $("typing").textContent = "";
  if (code === 4001) { sessionEnded("Your session ended. Please log in again."); return; }
  if (!S.token) return;
  renderChannels(); renderConversation();
  scheduleReconnect();
}

function scheduleReconnect() {
  S.conn = "offline";
  const base = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** S.attempts);
  const delay = Math.round(base / 2 + Math.random() * base / 2);    // jitter: not every tab at once
  S.attempts += 1;
  S.retryAt = Date.now() + delay;
  S.retryTimer = setTimeout(connect, delay);
  const show = () => {
    const s = Math.max(0, Math.ceil((S.retryAt - Date.now()) / 1000));
    const queued = S.outbox.filter((i) => i.state !== "failed").length;
    setBanner((navigator.onLine === false ? "You are offline. " : "Connection lost. ") + "Reconnecting in " + s + " s…" +
      (queued ? " " + queued + " message" + (queued > 1 ? "s" : "") + " waiting to send." : ""), "offline", true);
  };
  show();
  S.showBanner = show;
  clearInterval(S.countdown);
  S.countdown = setInterval(show, 1000);
}

function setBanner(text, kind, retry) {
  const b = $("banner");
  if (!text) { b.hidden = true; b.dataset.state = "online"; S.showBanner = null; return; }
  b.hidden = false;
  b.className = kind || "";
  b.dataset.state = kind || "";
  $("banner-text").textContent = text;
  $("banner-retry").hidden = !retry;
}

function online() { return S.conn === "online" && S.ws && S.ws.readyState === 1; }

// Sends a frame with a fresh ref and resolves with its reply, or with an error frame of code
// "timeout" / "disconnected" (never rejects).
function request(frame, timeoutMs) {
  if (!S.ws || S.ws.readyState !== 1) return Promise.resolve({ type: "error", code: "disconnected", message: "not connected" });
  const ref = ++S.refs;
  frame.ref = ref;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      S.pending.delete(ref);
      resolve({ type: "error", code: "timeout", message: "no answer from the server" });
    }, timeoutMs || REQUEST_TIMEOUT_MS);
    S.pending.set(ref, { resolve, timer });
    S.ws.send(JSON.stringify(frame));
  });
}

function sendFrame(frame) { if (online()) S.ws.send(JSON.stringify(frame)); }

function startHeartbeat() {
  clearInterval(S.pingTimer);
  const ws = S.ws;
  S.pingTimer = setInterval(async () => {
    if (ws !== S.ws) return;
    const r = await request({ type: "ping" }, S.heartbeatMs);
    // No pong within a heartbeat: the node or the path to it is gone even if TCP has not noticed.
    if (ws === S.ws && r.type === "error" && r.code === "timeout") { dropSocket(); onDisconnected(0); }
  }, Math.max(1000, S.heartbeatMs / 2));
}

function onFrame(f) {
  if (f.ref !== undefined && S.pending.has(f.ref)) {
    const p = S.pending.get(f.ref);
    S.pending.delete(f.ref); clearTimeout(p.timer); p.resolve(f);
    return;
  }
  switch (f.type) {
    case "ready": onReady(f); break;
    case "message": addMessage(f); break;
    case "caught_up": S.caughtUp = true; flushOutbox(); break;
    case "channel": onChannelEvent(f); break;
    case "presence": S.presence.set(f.user_id, { online: f.status === "online", last_seen: f.last_seen }); renderChannels(); renderTitle(); renderMembers(); break;
    case "typing": onTyping(f); break;
    case "read": onRead(f); break;
    case "error": showError("composer-error", f.message || f.code); break;
    default: break;
  }
}

function onReady(f) {
  clearTimeout(S.readyTimer);
  S.conn = "online"; S.attempts = 0; S.connections += 1;
  clearInterval(S.countdown);
  setBanner(null);
  if (f.user_id && f.user_id !== S.me) { S.me = f.user_id; saveSession(); }
  S.heartbeatMs = f.heartbeat_ms || 15000;
  startHeartbeat();
  S.channels.clear();
  for (const c of f.channels || []) S.channels.set(c.channel_id, c);
  wantNames([].concat(...[...S.channels.values()].map((c) => c.members)));
  if (S.current && !S.channels.has(S.current)) closeChannel();
  renderChannels();
  subscribePresence();
  if (S.current) loadNewest(S.current);
  renderConversation();
}

function onChannelEvent(f) {
  const c = f.channel;
  if (!c) return;
  if (f.event === "left") {
    S.channels.delete(c.channel_id);
    if (S.current === c.channel_id) closeChannel("You are no longer a member of " + (c.name || "that channel") + ".");
  } else {
    S.channels.set(c.channel_id, c);
    if (!S.activity.has(c.channel_id)) S.activity.set(c.channel_id, Date.now());
    wantNames(c.members);
  }
  renderChannels(); subscribePresence();
  if (S.current === c.channel_id) { renderTitle(); renderMembers(); }
}

function onTyping(f) {
  if (f.channel_id !== S.current || f.user_id === S.me) return;
  $("typing").textContent = nameOf(f.user_id) + " is typing…";
  clearTimeout(S.typingTimer);
  S.typingTimer = setTimeout(() => { $("typing").textContent = ""; }, 3000);
}

function onRead(f) {
  if (f.user_id === S.me) return;
  if (!S.reads.has(f.channel_id)) S.reads.set(f.channel_id, new Map());
  const m = S.reads.get(f.channel_id);
  if ((m.get(f.user_id) || 0) < f.seq) m.set(f.user_id, f.seq);
  if (f.channel_id === S.current) renderMessages();
}

async function subscribePresence() {
  const users = new Set();
  for (const c of S.channels.values()) for (const m of c.members) if (m !== S.me) users.add(m);
  if (!users.size || !online()) return;
  const r = await request({ type: "presence_subscribe", user_ids: [...users].slice(0, 1000) });
  if (r.type === "presence_state") {
    for (const u of r.users) S.presence.set(u.user_id, { online: u.status === "online", last_seen: u.last_seen });
    renderChannels(); renderTitle(); renderMembers();
  }
}

// ---------- messages ----------

function store(m) {
  if (!S.messages.has(m.channel_id)) S.messages.set(m.channel_id, new Map());
  const map = S.messages.get(m.channel_id);
  const isNew = !map.has(m.seq);
  map.set(m.seq, m);
  wantNames([m.sender_id]);
  return isNew;
}

function addMessage(m) {
  const isNew = store(m);
  if (m.sender_id === S.me && m.client_msg_id) removeFromOutbox(m.client_msg_id);
  const c = S.channels.get(m.channel_id);
  if (c && m.seq > c.last_seq) c.last_seq = m.seq;
  if (isNew) S.activity.set(m.channel_id, Math.max(S.activity.get(m.channel_id) || 0, m.ts));
  if (m.channel_id === S.current) { renderMessages(); markRead(m.channel_id, m.seq); }
  else if (isNew && m.sender_id !== S.me) S.unread.set(m.channel_id, (S.unread.get(m.channel_id) || 0) + 1);
  renderChannels();
  ack(m.channel_id, m.seq);
}

function ack(cid, seq) {
  if ((S.acked.get(cid) || 0) >= seq || !online()) return;
  S.acked.set(cid, seq);
  sendFrame({ type: "ack", channel_id: cid, seq });
}

function markRead(cid, seq) {
  if (document.visibilityState === "hidden" || !seq) return;
  sendFrame({ type: "read", channel_id: cid, seq });
}

// The newest page of a channel, once per connection (catch-up covers the rest while connected).
async function loadNewest(cid) {
  if (!online() || S.loadedAt.get(cid) === S.connections) return;
  S.loadedAt.set(cid, S.connections);
  const h = await request({ type: "history", channel_id: cid, limit: PAGE });
  if (h.type !== "history") { S.loadedAt.delete(cid); if (h.code !== "disconnected") showError("composer-error", h.message); return; }
  h.messages.forEach(store);
  // Older messages exist if the page reached our oldest and the server says so, or, when
  // catch-up brought older ones than the page, if our oldest is not seq 1 (seqs have no gaps).
  const held = S.messages.get(cid);
  const oldest = held && held.size ? Math.min(...held.keys()) : 0;
  if (!oldest) S.olderMore.set(cid, false);
  else if (h.messages.length && h.messages[0].seq === oldest) S.olderMore.set(cid, h.has_more);
  else S.olderMore.set(cid, oldest > 1);
  if (h.messages.length) {
    const last = h.messages[h.messages.length - 1];
    S.activity.set(cid, Math.max(S.activity.get(cid) || 0, last.ts));
    ack(cid, last.seq);
  }
  if (cid === S.current) {
    renderMessages(true);
    const c = S.channels.get(cid);
    if (c && c.last_seq) markRead(cid, c.last_seq);
    fillScreen();
  }
}

// Scroll-back: the page before the oldest message held, keeping the view where it was.
async function loadOlder() {
  const cid = S.current;
  if (!cid || !S.olderMore.get(cid) || S.loadingOlder.has(cid) || !online()) return;
  const map = S.messages.get(cid);
  if (!map || !map.size) return;
  S.loadingOlder.add(cid);
  $("older").textContent = "Loading older messages…";
  const before = Math.min(...map.keys());
  const h = await request({ type: "history", channel_id: cid, before, limit: PAGE });
  S.loadingOlder.delete(cid);
  if (h.type !== "history") { $("older").textContent = "Could not load older messages."; return; }
  h.messages.forEach(store);
  S.olderMore.set(cid, h.has_more);
  if (cid !== S.current) return;
  const box = $("messages"), fromBottom = box.scrollHeight - box.scrollTop;
  renderMessages();
  box.scrollTop = box.scrollHeight - fromBottom;
  fillScreen();
}

// Loads older pages until the list can scroll (so scrolling up is possible at all), bounded.
function fillScreen() {
  const box = $("messages");
  if (S.current && S.olderMore.get(S.current) && box.scrollHeight <= box.clientHeight + 10) setTimeout(loadOlder, 0);
}

// ---------- outbox ----------

function queueMessage(text) {
  const item = { channel_id: S.current, text, client_msg_id: newClientMsgId(), created: Date.now(), state: "queued", error: null, attempts: 0 };
  S.outbox.push(item);
  saveOutbox();
  renderMessages(true);
  if (S.showBanner) S.showBanner();          // the banner counts the messages waiting
  flushOutbox();
}

function removeFromOutbox(clientMsgId) {
  const before = S.outbox.length;
  S.outbox = S.outbox.filter((i) => i.client_msg_id !== clientMsgId);
  if (S.outbox.length !== before) saveOutbox();
}

const RETRYABLE = new Set(["unavailable", "internal", "rate_limited", "timeout", "disconnected"]);

// Sends queued messages one at a time, oldest first, while connected and caught up. A send the
// server may or may not have committed (timeout, lost connection) stays queued and goes again
// with the same client_msg_id; only a definite refusal marks it failed (shown, never dropped).
async function flushOutbox() {
  if (S.flushing) return;
  S.flushing = true;
  try {
    while (online() && S.caughtUp) {
      const item = S.outbox.find((i) => i.state === "queued");
      if (!item) break;
      item.state = "sending";
      if (item.channel_id === S.current) renderMessages();
      const r = await request({ type: "send", channel_id: item.channel_id, text: item.text, client_msg_id: item.client_msg_id });
      if (r.type === "sent") {
        removeFromOutbox(item.client_msg_id);
        addMessage({ channel_id: r.channel_id, seq: r.seq, ts: r.ts, sender_id: S.me, text: item.text, client_msg_id: item.client_msg_id });
        continue;
      }
      if (RETRYABLE.has(r.code)) {
        item.state = "queued"; item.attempts = (item.attempts || 0) + 1;
        if (r.code === "timeout") { dropSocket(); onDisconnected(0); break; }
        if (r.code === "disconnected") break;
        await new Promise((res) => setTimeout(res, Math.min(8000, 300 * 2 ** item.attempts)));
      } else {
        item.state = "failed"; item.error = r.message || r.code;
      }
      saveOutbox();
      if (item.channel_id === S.current) renderMessages();
    }
  } finally {
    S.flushing = false;
  }
}

// ---------- rendering ----------

function channelOther(c) { return c.members.find((m) => m !== S.me) || S.me; }

function channelName(c) { return c.kind === "group" ? (c.name || "group") : nameOf(channelOther(c)); }

function presenceDot(uid) {
  const p = S.presence.get(uid);
  const d = el("span", "dot" + (p && p.online ? " online" : ""));
  d.title = p ? (p.online ? "online" : "offline") : "unknown";
  return d;
}

function renderChannels() {
  const ul = $("channels");
  ul.textContent = "";
  const list = [...S.channels.values()].sort((a, b) => (S.activity.get(b.channel_id) || 0) - (S.activity.get(a.channel_id) || 0));
  for (const c of list) {
    const li = el("li", c.channel_id === S.current ? "active" : "");
    li.dataset.channel = c.channel_id;
    li.dataset.kind = c.kind;
    if (c.kind === "dm") li.appendChild(presenceDot(channelOther(c)));
    li.appendChild(el("span", "label", channelName(c)));
    if (c.kind === "group") li.appendChild(el("span", "kind", c.members.length + " members"));
    const unread = S.unread.get(c.channel_id) || 0;
    if (unread) li.appendChild(el("span", "badge", String(unread)));
    li.onclick = () => openChannel(c.channel_id);
    ul.appendChild(li);
  }
  const unread = [...S.unread.values()].reduce((a, b) => a + b, 0);
  document.title = (unread ? "(" + unread + ") " : "") + "ringchat";
}

function renderTitle() {
  const t = $("title"), toggle = $("members-toggle");
  t.textContent = "";
  const c = S.current && S.channels.get(S.current);
  if (!c) { t.textContent = "Pick a channel"; toggle.hidden = true; return; }
  if (c.kind === "dm") {
    const other = channelOther(c);
    t.appendChild(presenceDot(other));
    t.appendChild(document.createTextNode(nameOf(other)));
    const p = S.presence.get(other);
    const status = !online() ? "" : p && p.online ? "online" : p && p.last_seen ? "last seen " + when(p.last_seen) : p ? "offline" : "";
    if (status) t.appendChild(el("span", "status", status));
    toggle.hidden = true;
  } else {
    t.textContent = c.name || "group";
    toggle.hidden = false;
    toggle.textContent = c.members.length + " member" + (c.members.length === 1 ? "" : "s");
    toggle.setAttribute("aria-expanded", String(S.membersOpen));
  }
}

function renderMembers() {
  const c = S.current && S.channels.get(S.current);
  const panel = $("members");
  panel.hidden = !(c && c.kind === "group" && S.membersOpen);
  if (panel.hidden) return;
  const ul = $("member-list");
  ul.textContent = "";
  for (const uid of c.members) {
    const li = el("li");
    li.dataset.user = uid;
    li.appendChild(presenceDot(uid));
    li.appendChild(el("span", "name", nameOf(uid) + (uid === S.me ? " (you)" : "")));
    if (uid !== S.me) {
      const rm = el("button", "small secondary", "Remove");
      rm.type = "button";
      rm.onclick = () => removeMember(c.channel_id, uid);
      li.appendChild(rm);
    }
    ul.appendChild(li);
  }
}

function dayKey(ts) { const d = new Date(ts); return d.getFullYear() + "-" + d.getMonth() + "-" + d.getDate(); }

function dayLabel(ts) {
  const d = new Date(ts), today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(ts) === dayKey(today.getTime())) return "Today";
  if (dayKey(ts) === dayKey(yesterday.getTime())) return "Yesterday";
  return d.toLocaleDateString(undefined, { weekday: "short", year: "numeric", month: "short", day: "numeric" });
}

function clock(ts) { return new Date(ts).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }); }

function when(ts) { return dayKey(ts) === dayKey(Date.now()) ? clock(ts) : dayLabel(ts) + " " + clock(ts); }

// Read receipts: for each reader, the newest of my messages at or below its read marker
// (seq -> readers), so each reader is named once, under the last of my messages it has seen.
function receipts(c, sorted) {
  const marks = S.reads.get(c.channel_id);
  const out = new Map();
  if (!marks) return out;
  for (const [uid, seq] of marks) {
    const mine = sorted.filter((m) => m.sender_id === S.me && m.seq <= seq);
    if (!mine.length) continue;
    const at = mine[mine.length - 1].seq;
    if (!out.has(at)) out.set(at, []);
    out.get(at).push(uid);
  }
  return out;
}

function renderMessages(toBottom) {
  const box = $("messages"), list = $("message-list");
  const cid = S.current, c = cid && S.channels.get(cid);
  const atBottom = toBottom || box.scrollTop + box.clientHeight >= box.scrollHeight - 30;
  list.textContent = "";
  if (!c) { $("older").textContent = ""; return; }
  const sorted = [...(S.messages.get(cid) || new Map()).values()].sort((a, b) => a.seq - b.seq);
  const seen = receipts(c, sorted);
  $("older").textContent = S.loadingOlder.has(cid) ? "Loading older messages…" : S.olderMore.get(cid) ? "Scroll up for older messages" : sorted.length ? "Start of the conversation" : "";
  let lastDay = null;
  const addDay = (ts) => {
    const k = dayKey(ts);
    if (k === lastDay) return;
    lastDay = k;
    const d = el("div", "day"); d.appendChild(el("span", null, dayLabel(ts))); list.appendChild(d);
  };
  for (const m of sorted) {
    addDay(m.ts);
    const d = el("div", "msg" + (m.sender_id === S.me ? " mine" : ""));
    d.dataset.seq = String(m.seq);
    const meta = el("div", "meta");
    meta.appendChild(el("span", "sender", nameOf(m.sender_id)));
    const t = el("time", null, clock(m.ts));
    t.dateTime = new Date(m.ts).toISOString();
    t.title = new Date(m.ts).toLocaleString();
    meta.appendChild(t);
    d.appendChild(meta);
    d.appendChild(el("div", "text", m.text));
    const readers = seen.get(m.seq);
    if (readers) d.appendChild(el("div", "receipt", c.kind === "dm" ? "Seen" : "Seen by " + readers.map(nameOf).join(", ")));
    list.appendChild(d);
  }
  for (const item of S.outbox) {
    if (item.channel_id !== cid) continue;
    addDay(item.created);
    const d = el("div", "msg mine pending" + (item.state === "failed" ? " failed" : ""));
    d.dataset.clientMsgId = item.client_msg_id;
    const meta = el("div", "meta");
    meta.appendChild(el("span", "sender", nameOf(S.me)));
    meta.appendChild(el("time", null, clock(item.created)));
    d.appendChild(meta);
    d.appendChild(el("div", "text", item.text));
    const state = item.state === "failed" ? "Not sent: " + item.error
      : item.state === "sending" ? "Sending…" : online() ? "Waiting to send…" : "Pending: will send when reconnected";
    d.appendChild(el("div", "state", state));
    if (item.state === "failed") {
      const retry = el("button", "small", "Retry"); retry.type = "button";
      retry.onclick = () => { item.state = "queued"; item.error = null; saveOutbox(); renderMessages(); flushOutbox(); };
      const discard = el("button", "small secondary", "Discard"); discard.type = "button";
      discard.onclick = () => { removeFromOutbox(item.client_msg_id); renderMessages(); };
      d.appendChild(retry); d.appendChild(discard);
    }
    list.appendChild(d);
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderConversation() {
  const c = S.current && S.channels.get(S.current);
  $("text").disabled = !c; $("send").disabled = !c;
  renderTitle(); renderMembers(); renderMessages();
}

function openChannel(cid) {
  if (S.current !== cid) { S.membersOpen = false; showError("composer-error", ""); showError("members-error", ""); $("typing").textContent = ""; }
  S.current = cid;
  S.unread.delete(cid);
  document.body.classList.add("in-channel");
  renderChannels(); renderConversation();
  renderMessages(true);
  const c = S.channels.get(cid);
  if (c && c.last_seq) markRead(cid, c.last_seq);
  loadNewest(cid);
  if (window.matchMedia("(min-width: 701px)").matches) $("text").focus();
}

function closeChannel(notice) {
  S.current = null; S.membersOpen = false;
  document.body.classList.remove("in-channel");
  renderChannels(); renderConversation();
  if (notice) showError("side-error", notice);
}

// ---------- actions ----------

function submitMessage() {
  showError("composer-error", "");
  const text = $("text").value;
  if (!S.current || !text.trim()) return;
  if ([...text].length > MAX_TEXT_CHARS) { showError("composer-error", "A message can have at most 100,000 characters."); return; }
  $("text").value = "";
  queueMessage(text);
}

async function openDm(e) {
  e.preventDefault();
  showError("side-error", "");
  try {
    const uid = await userIdByName($("dm-name").value);
    if (uid === S.me) throw new ApiError(400, "invalid", "That is you: pick someone else.");
    const c = await api("POST", "/v1/dms", { user_id: uid });
    S.channels.set(c.channel_id, c);
    if (!S.activity.has(c.channel_id)) S.activity.set(c.channel_id, Date.now());
    $("dm-name").value = "";
    subscribePresence();
    openChannel(c.channel_id);
  } catch (err) { showError("side-error", err.message); }
}

async function createGroup(e) {
  e.preventDefault();
  showError("side-error", "");
  try {
    const name = $("group-name").value.trim();
    if (!name) throw new ApiError(400, "invalid", "Give the group a name.");
    const names = $("group-members").value.split(",").map((s) => s.trim()).filter(Boolean);
    const members = [];
    for (const n of names) members.push(await userIdByName(n));
    const c = await api("POST", "/v1/groups", { name, members });
    S.channels.set(c.channel_id, c);
    S.activity.set(c.channel_id, Date.now());
    $("group-name").value = ""; $("group-members").value = "";
    subscribePresence();
    openChannel(c.channel_id);
  } catch (err) { showError("side-error", err.message); }
}

// Re-reads the caller's channels after a membership call, in case its event was missed.
async function refreshChannels() {
  try {
    const r = await api("GET", "/v1/channels");
    S.channels.clear();
    for (const c of r.channels) S.channels.set(c.channel_id, c);
    if (S.current && !S.channels.has(S.current)) closeChannel();
    renderChannels(); renderConversation();
  } catch (e) { /* the next ready frame brings them */ }
}

async function addMember(e) {
  e.preventDefault();
  showError("members-error", "");
  const cid = S.current;
  try {
    const uid = await userIdByName($("add-member-name").value);
    await api("POST", "/v1/channels/" + encodeURIComponent(cid) + "/members", { user_id: uid });
    $("add-member-name").value = "";
    await refreshChannels();
  } catch (err) { showError("members-error", err.message); }
}

async function removeMember(cid, uid) {
  showError("members-error", "");
  try {
    await api("DELETE", "/v1/channels/" + encodeURIComponent(cid) + "/members/" + encodeURIComponent(uid));
    await refreshChannels();
  } catch (err) {
    showError("members-error", err.code === "forbidden" ? "Only the group's creator can remove other members." : err.message);
  }
}

async function leaveGroup() {
  const cid = S.current;
  showError("members-error", "");
  try {
    await api("DELETE", "/v1/channels/" + encodeURIComponent(cid) + "/members/" + encodeURIComponent(S.me));
    S.channels.delete(cid);
    closeChannel();
    await refreshChannels();
  } catch (err) { showError("members-error", err.message); }
}

// ---------- wiring ----------

$("auth-form").onsubmit = (e) => { e.preventDefault(); login(false); };
$("signup").onclick = () => login(true);
$("logout").onclick = logout;
$("back").onclick = () => closeChannel();
$("banner-retry").onclick = () => { S.attempts = 0; connect(); };
$("composer").onsubmit = (e) => { e.preventDefault(); submitMessage(); };
$("dm-form").onsubmit = openDm;
$("group-form").onsubmit = createGroup;
$("add-member-form").onsubmit = addMember;
$("leave").onclick = leaveGroup;
$("members-toggle").onclick = () => { S.membersOpen = !S.membersOpen; renderTitle(); renderMembers(); };
$("messages").addEventListener("scroll", () => { if ($("messages").scrollTop < 80) loadOlder(); });
$("text").onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submitMessage(); return; }
  if (S.current && online() && Date.now() - S.lastTyping > 2000) {
    S.lastTyping = Date.now();
    sendFrame({ type: "typing", channel_id: S.current });
  }
};
window.addEventListener("online", () => { if (S.token && !S.ws) { S.attempts = 0; connect(); } });
window.addEventListener("offline", () => { if (S.ws) { dropSocket(); onDisconnected(0); } });
document.addEventListener("visibilitychange", () => {
  const c = S.current && S.channels.get(S.current);
  if (c && document.visibilityState === "visible") markRead(c.channel_id, c.last_seq);
});
// Another tab logged out (the server closes this tab's socket too): follow it.
window.addEventListener("storage", (e) => { if (e.key === SESSION_KEY && !e.newValue && S.token) leaveApp("Logged out in another tab."); });

(function start() {
  loadNames();
  const s = readJson(localStorage, SESSION_KEY, null);
  if (s && s.token && s.user_id) {
    S.token = s.token; S.me = s.user_id; S.myName = s.username; S.deviceId = s.device_id;
    enterApp();
  } else {
    $("auth").hidden = false;
  }
})();
