// The web client end to end in headless Chromium (Playwright), against a real ringchat node:
// two users in two browser contexts, through sign-up, a DM by username, names, read receipts,
// a reload, the node stopped and started again with a message typed meanwhile, scroll-back,
// long words, a group with members added and removed, and a phone-width layout.
//
// Run by tests/tests/web_client.rs, which passes:
//   RINGCHAT_BIN, RINGCHAT_PORT, RINGCHAT_CLUSTER_PORT, RINGCHAT_DATA_DIR, SCREENSHOT_DIR,
//   CHROMIUM (default /usr/bin/chromium).
// Exits 0 when every check passed; prints the first failure and exits 1 otherwise.

import { spawn } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (k, d) => process.env[k] ?? d ?? assert.fail(`${k} is not set`);
const BIN = env("RINGCHAT_BIN");
const PORT = env("RINGCHAT_PORT");
const CLUSTER_PORT = env("RINGCHAT_CLUSTER_PORT");
const DATA_DIR = env("RINGCHAT_DATA_DIR");
const SHOTS = env("SCREENSHOT_DIR");
const CHROMIUM = env("CHROMIUM", "/usr/bin/chromium");
const BASE = `http://127.0.0.1:${PORT}`;
const PASSWORD = "correct horse battery";
const T = 15000; // the longest any single expectation may wait
const started = Date.now();

fs.mkdirSync(SHOTS, { recursive: true });
const log = (...a) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);

// ---------- the node ----------

let node = null;
const logFile = path.join(DATA_DIR, "..", "ringchat.log");

async function startNode() {
  const out = fs.openSync(logFile, "a");
  node = spawn(BIN, [
    "serve", "--data-dir", DATA_DIR, "--listen", `127.0.0.1:${PORT}`, "--cluster-listen", `127.0.0.1:${CLUSTER_PORT}`,
    "--partitions", "8", "--send-rate", "100000", "--send-burst", "100000", "--signups-per-minute", "100000",
  ], { stdio: ["ignore", "ignore", out] });
  const deadline = Date.now() + 30000;
  for (;;) {
    if (node.exitCode !== null) throw new Error(`ringchat exited with ${node.exitCode}; see ${logFile}`);
    try { if ((await fetch(BASE + "/readyz")).status === 200) return; } catch (e) { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error("node not ready within 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopNode() {
  const child = node;
  node = null;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
  await exited;
  clearTimeout(timer);
}

function killNode() { if (node && node.exitCode === null) node.kill("SIGKILL"); }
process.on("exit", killNode);

// ---------- HTTP from the test itself (setup that is not under test) ----------

async function http(method, p, token, body) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const r = await fetch(BASE + p, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

// ---------- page helpers ----------

const problems = [];

async function newPage(browser, name, viewport) {
  const context = await browser.newContext({ viewport: viewport || { width: 1100, height: 720 } });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  page.on("dialog", (d) => { problems.push(`${name}: a dialog opened: ${d.message()}`); d.dismiss(); });
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${e.message}`));
  await page.goto(BASE + "/");
  return page;
}

async function signUp(page, username) {
  await page.fill("#username", username);
  await page.fill("#password", PASSWORD);
  await page.click("#signup");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector("#banner[hidden]", { state: "attached" });
}

async function send(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// Texts of the committed (not pending) messages shown in the open channel.
const shownTexts = (page) => page.$$eval("#message-list .msg:not(.pending) .text", (els) => els.map((e) => e.textContent));

async function waitForText(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#message-list .msg:not(.pending) .text")].some((e) => e.textContent === t),
    text, { timeout: T });
}

async function countOf(page, text) { return (await shownTexts(page)).filter((t) => t === text).length; }

async function noRawIds(page, ids) {
  const text = await page.evaluate(() => document.body.innerText);
  for (const id of ids) assert.ok(!text.includes(id), `the page shows the raw id ${id}`);
}

async function noSidewaysScroll(page, what) {
  const m = await page.evaluate(() => {
    const send = document.getElementById("send").getBoundingClientRect();
    const box = document.getElementById("messages");
    return {
      page: document.documentElement.scrollWidth, view: window.innerWidth,
      box: box.scrollWidth, boxView: box.clientWidth,
      send: { left: send.left, right: send.right, top: send.top, bottom: send.bottom }, height: window.innerHeight,
    };
  });
  assert.ok(m.page <= m.view, `${what}: the page scrolls sideways (${m.page} > ${m.view})`);
  assert.ok(m.box <= m.boxView + 1, `${what}: the message list scrolls sideways (${m.box} > ${m.boxView})`);
  assert.ok(m.send.left >= 0 && m.send.right <= m.view && m.send.top >= 0 && m.send.bottom <= m.height,
    `${what}: the Send button is off screen: ${JSON.stringify(m)}`);
}

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, name + ".png") });
const sessionOf = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("ringchat.session")));

// ---------- the run ----------

async function run() {
  await startNode();
  log("node ready at", BASE);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  try {
    const suffix = String(process.pid % 100000) + String(Date.now() % 1000);
    const alice = "alice" + suffix, bob = "bob" + suffix, carol = "carol" + suffix;
    const a = await newPage(browser, "alice");
    const b = await newPage(browser, "bob");
    await signUp(a, alice);
    await signUp(b, bob);
    const aliceId = (await sessionOf(a)).user_id, bobId = (await sessionOf(b)).user_id;
    log("signed up", alice, bob);

    // An error is shown inline, not in a dialog.
    await a.fill("#dm-name", "nobody" + suffix);
    await a.press("#dm-name", "Enter");
    await a.waitForFunction(() => /No user named/.test(document.getElementById("side-error").textContent));

    // A DM by username; the receiver sees the sender's name, never an id.
    await a.fill("#dm-name", bob);
    await a.press("#dm-name", "Enter");
    await a.waitForFunction((n) => document.getElementById("title").textContent.includes(n), bob);
    assert.equal(await a.textContent("#side-error"), "");
    await send(a, "hello bob");
    await waitForText(a, "hello bob");
    const dmItem = `#channels li[data-kind="dm"]`;
    await b.waitForFunction((n) => [...document.querySelectorAll("#channels li .label")].some((l) => l.textContent === n), alice);
    await b.click(dmItem);
    await waitForText(b, "hello bob");
    await b.waitForFunction((n) => [...document.querySelectorAll("#message-list .sender")].some((s) => s.textContent === n), alice);
    await send(b, "hi alice");
    await waitForText(a, "hi alice");
    await a.waitForFunction((n) => [...document.querySelectorAll("#message-list .sender")].some((s) => s.textContent === n), bob);
    await noRawIds(a, [bobId]);
    await noRawIds(b, [aliceId]);
    log("DM by username, names shown");

    // Read receipts: bob has read alice's message.
    await a.waitForFunction(() => [...document.querySelectorAll("#message-list .msg.mine .receipt")].some((r) => r.textContent === "Seen"));
    // Dates: the day of the messages is shown.
    assert.ok((await a.$$eval("#message-list .day", (d) => d.map((x) => x.textContent))).includes("Today"));
    log("read receipt and date shown");

    // A reload keeps the session.
    await b.reload();
    await b.waitForSelector("#app:not([hidden])");
    assert.ok(await b.isHidden("#auth"), "the sign-in form is back after a reload");
    assert.equal(await b.textContent("#who"), bob);
    await b.waitForFunction((n) => [...document.querySelectorAll("#channels li .label")].some((l) => l.textContent === n), alice);
    await b.click(dmItem);
    await waitForText(b, "hi alice");
    log("reload kept the session");

    // The node stops: a banner says so, a message typed meanwhile stays pending.
    await stopNode();
    log("node stopped");
    await a.waitForFunction(() => {
      const b = document.getElementById("banner");
      return !b.hidden && /Reconnecting/.test(b.textContent);
    });
    await send(a, "sent while offline");
    await a.waitForFunction(() => [...document.querySelectorAll("#message-list .msg.pending")].some((m) =>
      m.querySelector(".text").textContent === "sent while offline" && /Pending/.test(m.querySelector(".state").textContent)));
    assert.equal(await countOf(a, "sent while offline"), 0, "not shown as sent while the node is down");
    await a.waitForFunction(() => /1 message waiting/.test(document.getElementById("banner").textContent));
    assert.equal(await a.locator("#channels .dot.online, #title .dot.online").count(), 0, "nobody shown online while disconnected");
    await shot(a, "offline-pending");
    log("banner shown, message pending");

    // The node starts again: the banner goes, the message is delivered once.
    await startNode();
    log("node started again");
    await a.waitForSelector("#banner[hidden]", { state: "attached", timeout: 30000 });
    await waitForText(a, "sent while offline");
    await waitForText(b, "sent while offline");
    await a.waitForFunction(() => document.querySelectorAll("#message-list .msg.pending").length === 0);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await countOf(a, "sent while offline"), 1, "alice sees it once");
    assert.equal(await countOf(b, "sent while offline"), 1, "bob gets it once");
    const dmId = (await http("GET", "/v1/channels", (await sessionOf(a)).token)).channels.find((c) => c.kind === "dm").channel_id;
    const stored = await http("GET", `/v1/channels/${dmId}/messages?limit=500`, (await sessionOf(a)).token);
    assert.equal(stored.messages.filter((m) => m.text === "sent while offline").length, 1, "committed once");
    log("reconnected, delivered once");

    // Scroll-back: 100 more messages, then a fresh page walks back to the first through history.
    const aliceToken = (await sessionOf(a)).token;
    for (let i = 1; i <= 100; i++) {
      await http("POST", `/v1/channels/${dmId}/messages`, aliceToken, { text: "old " + i, client_msg_id: "old-" + i });
    }
    // Bob sees them live and acks them, so the fresh page gets no catch-up, only history.
    await waitForText(b, "old 100");
    await new Promise((r) => setTimeout(r, 1000));
    await b.reload();
    await b.waitForSelector("#banner[hidden]", { state: "attached" });
    await b.click(dmItem);
    await waitForText(b, "old 100");
    const firstPage = (await shownTexts(b)).length;
    assert.ok(firstPage <= 60, `the first page is one page, not everything (${firstPage})`);
    for (let i = 0; i < 10 && (await b.textContent("#older")) !== "Start of the conversation"; i++) {
      const held = (await shownTexts(b)).length;
      await b.evaluate(() => { document.getElementById("messages").scrollTop = 0; });
      await b.waitForFunction((n) => document.querySelectorAll("#message-list .msg").length > n, held);
    }
    const all = await shownTexts(b);
    assert.ok(all.includes("hello bob"), "scrolling up reached the first message");
    assert.equal(all.length, 103, "every message once");
    assert.ok(all.indexOf("old 1") < all.indexOf("old 2") && all.indexOf("old 119") < all.indexOf("old 100"), "in order");
    assert.equal(await b.textContent("#older"), "Start of the conversation");
    log("scroll-back reached the first message");

    // A long unbroken word wraps: no sideways scroll, Send stays on screen.
    const long = "x".repeat(3000);
    await send(a, long);
    await waitForText(b, long);
    await b.evaluate(() => { const m = document.getElementById("messages"); m.scrollTop = m.scrollHeight; });
    await noSidewaysScroll(b, "desktop");
    await shot(b, "desktop-long-word");
    log("long word wrapped");

    // A group: members listed by name, added, removed; the creator alone may remove others.
    const carolUser = await http("POST", "/v1/users", null, { username: carol, password: PASSWORD });
    await a.fill("#group-name", "team " + suffix);
    await a.fill("#group-members", bob);
    await a.press("#group-members", "Enter");
    await a.waitForFunction((n) => document.getElementById("title").textContent === n, "team " + suffix);
    await a.click("#members-toggle");
    const memberNames = (page) => page.$$eval("#member-list li .name", (els) => els.map((e) => e.textContent).sort());
    await a.waitForFunction((n) => document.querySelectorAll("#member-list li").length === 2 &&
      [...document.querySelectorAll("#member-list .name")].some((e) => e.textContent === n), bob);
    assert.deepEqual(await memberNames(a), [alice + " (you)", bob].sort());
    await a.fill("#add-member-name", carol);
    await a.press("#add-member-name", "Enter");
    await a.waitForFunction((n) => [...document.querySelectorAll("#member-list .name")].some((e) => e.textContent === n), carol);
    assert.equal(await a.textContent("#members-toggle"), "3 members");
    await shot(a, "group-members");
    await a.click(`#member-list li[data-user="${carolUser.user_id}"] button`);
    await a.waitForFunction((n) => ![...document.querySelectorAll("#member-list .name")].some((e) => e.textContent === n), carol);
    assert.equal(await a.textContent("#members-toggle"), "2 members");
    await b.click(`#channels li[data-kind="group"]`);
    await b.click("#members-toggle");
    await b.waitForSelector(`#member-list li[data-user="${aliceId}"] button`);
    await b.click(`#member-list li[data-user="${aliceId}"] button`);
    await b.waitForFunction(() => /Only the group's creator/.test(document.getElementById("members-error").textContent));
    await send(b, "bye all");
    await waitForText(a, "bye all");
    await b.click("#leave");
    await b.waitForFunction(() => !document.querySelector('#channels li[data-kind="group"]'));
    await a.waitForFunction(() => document.querySelectorAll("#member-list li").length === 1);
    assert.deepEqual(await memberNames(a), [alice + " (you)"]);
    log("group members listed, added, removed; leave works");

    // Phone width: one pane at a time, nothing scrolls sideways, Send on screen.
    await b.setViewportSize({ width: 390, height: 780 });
    await b.reload();
    await b.waitForSelector("#banner[hidden]", { state: "attached" });
    assert.ok(await b.isHidden("#main"), "the channel list alone at phone width");
    await shot(b, "phone-channels");
    await b.click(dmItem);
    await waitForText(b, long);
    assert.ok(await b.isHidden("#side"), "the conversation alone at phone width");
    assert.ok(await b.isVisible("#back"));
    await b.evaluate(() => { const m = document.getElementById("messages"); m.scrollTop = m.scrollHeight; });
    await noSidewaysScroll(b, "phone");
    await send(b, "from the phone");
    await a.click(dmItem);
    await waitForText(a, "from the phone");
    await shot(b, "phone-chat");
    await b.click("#back");
    assert.ok(await b.isVisible("#side"));
    log("phone layout");

    assert.deepEqual(problems, [], "no dialogs and no script errors");
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => { console.error("FAIL: the browser test took over 150 s"); killNode(); process.exit(1); }, 150000);
try {
  await run();
  log("PASS");
  clearTimeout(watchdog);
  if (node) await stopNode();
  process.exit(0);
} catch (e) {
  console.error("FAIL:", e && e.stack ? e.stack : e);
  if (problems.length) console.error("also:", problems.join("\n"));
  killNode();
  process.exit(1);
}
