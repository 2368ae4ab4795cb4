// The browser side of the real-browser test (tests/web.rs): Converse.js in
// Debian's chromium, headless, driven by playwright-core. It opens a page
// that runs Converse (Shoal's /chat, or tests/web/prosody.sh's copy of it),
// logs in through Converse's own login form, over the page's WebSocket,
// waits for a message from the peer, answers it by typing into the chat,
// and keeps a screenshot.
//
//   node converse.mjs --url URL --jid JID --password PASSWORD --peer JID \
//     --expect TEXT --reply TEXT --screenshot FILE.png [--timeout MS]
//
// Each option may instead come from the environment: CONVERSE_URL,
// CONVERSE_JID, CONVERSE_PASSWORD, CONVERSE_PEER, CONVERSE_EXPECT,
// CONVERSE_REPLY, CONVERSE_SCREENSHOT, CONVERSE_TIMEOUT; CHROMIUM names the
// browser (default /usr/bin/chromium).
//
// Prints on stdout, one line each as it happens:
//   ONLINE        logged in: the roster is shown and the initial presence
//                 has gone out on the WebSocket
//   GOT TEXT      the peer's message is shown in the chat with the peer
//   SENT          the reply is shown in the chat and has gone out on the
//                 WebSocket
// then takes the screenshot and exits 0. A step that does not happen within
// the timeout (30 s) fails it: FAIL on stdout, on stderr the page's last
// console messages and WebSocket frames, the page's HTML in FILE.html, and
// exit 1. The screenshot is taken either way, and FILE.log beside it keeps
// all the console messages and frames.

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const OPTIONS = ['url', 'jid', 'password', 'peer', 'expect', 'reply', 'screenshot', 'timeout'];
const { values } = parseArgs({
    options: Object.fromEntries(OPTIONS.map((o) => [o, { type: 'string' }])),
});
const opt = Object.fromEntries(
    OPTIONS.map((o) => [o, values[o] ?? process.env[`CONVERSE_${o.toUpperCase()}`]]),
);
opt.timeout = Number(opt.timeout ?? 30000);
const missing = OPTIONS.filter((o) => opt[o] === undefined || opt[o] === '');
if (missing.length) {
    console.error(`converse.mjs: missing ${missing.map((o) => `--${o}`).join(', ')}`);
    process.exit(2);
}

// Debian's chromium as root, with no network but loopback: no sandbox
// (it refuses root without), no GPU, nothing that phones home.
// playwright adds --headless and a fresh, temporary --user-data-dir.
const ARGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
];

const transcript = [];
const note = (line) => transcript.push(`${new Date().toISOString()} ${line}`);
const say = (line) => process.stdout.write(`${line}\n`);

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
let browser;
try {
    browser = await chromium.launch({ executablePath, headless: true, args: ARGS, timeout: opt.timeout });
} catch (e) {
    say(`FAIL: launch ${executablePath}: ${e.message.split('\n')[0]}`);
    console.error(`converse.mjs: ${e.stack ?? e}`);
    process.exit(1);
}
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(opt.timeout);
page.on('console', (m) => note(`console.${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => note(`page error: ${e.stack ?? e}`));
page.on('requestfailed', (r) => note(`request failed: ${r.url()}: ${r.failure()?.errorText}`));
// Each file the page loads, once (Converse loads its OMEMO WebAssembly
// over a hundred times), with its type: a module script must come as
// JavaScript.
const loaded = new Set();
page.on('response', (r) => {
    const line = `HTTP ${r.status()} ${r.headers()['content-type'] ?? '(no type)'}: ${r.url()}`;
    if (!loaded.has(line)) {
        loaded.add(line);
        note(line);
    }
});

// What Converse sends and receives on its WebSocket, and a promise per
// awaited outgoing frame.
const sentWaiters = [];
page.on('websocket', (ws) => {
    note(`websocket ${ws.url()}`);
    ws.on('framesent', (f) => {
        note(`ws sent: ${f.payload}`);
        for (const w of sentWaiters) {
            if (!w.done && w.test(String(f.payload))) {
                w.done = true;
                w.resolve();
            }
        }
    });
    ws.on('framereceived', (f) => note(`ws received: ${f.payload}`));
    ws.on('socketerror', (e) => note(`websocket error: ${e}`));
    ws.on('close', () => note('websocket closed'));
});
function frameSent(test) {
    return new Promise((resolve) => sentWaiters.push({ test, resolve, done: false }));
}

async function screenshot() {
    try {
        await page.screenshot({ path: opt.screenshot, fullPage: true });
    } catch (e) {
        note(`screenshot failed: ${e}`);
    }
    writeFileSync(`${opt.screenshot}.log`, transcript.join('\n') + '\n');
}

// Runs one step within the timeout, or fails the whole run with what the
// page said.
async function step(name, fn) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${opt.timeout} ms`)), opt.timeout);
    });
    try {
        return await Promise.race([fn(), timeout]);
    } catch (e) {
        say(`FAIL: ${name}: ${e.message.split('\n')[0]}`);
        await screenshot();
        try {
            writeFileSync(`${opt.screenshot}.html`, await page.content());
        } catch (err) {
            note(`no HTML: ${err}`);
        }
        const log = transcript.slice(-200).map((l) => (l.length > 2000 ? `${l.slice(0, 2000)}...` : l));
        console.error(`converse.mjs: ${name} failed: ${e.stack ?? e}\n` +
            `--- the page's last ${log.length} events (all in ${opt.screenshot}.log, ` +
            `its HTML in ${opt.screenshot}.html) ---\n${log.join('\n')}`);
        await browser.close().catch(() => {});
        process.exit(1);
    } finally {
        clearTimeout(timer);
    }
}

// Converse shows a message's text in .chat-msg__text; exactly TEXT, give or
// take surrounding whitespace.
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const exactly = (text) => new RegExp(`^\\s*${escape(text)}\\s*$`);
const chat = page.locator(`converse-chat[jid="${opt.peer}"]`);
const messageIn = (where, text) => where.locator('.chat-msg__text').filter({ hasText: exactly(text) });

await step('open the page', async () => {
    const response = await page.goto(opt.url);
    if (!response.ok()) {
        throw new Error(`HTTP ${response.status()} ${response.statusText()}`);
    }
    await page.locator('converse-login-form input[name=jid]').waitFor({ state: 'visible' });
});

// Initial presence: a <presence/> without a type (nor a "to": not a
// subscription or directed presence).
const presenceSent = frameSent((p) => /^<presence\b(?![^>]*\b(type|to)=)/.test(p));
await step('log in', async () => {
    const form = page.locator('converse-login-form');
    await form.locator('input[name=jid]').fill(opt.jid);
    await form.locator('input[name=password]').fill(opt.password);
    await form.locator('button[type=submit]').click();
    // Converse reports a refused login or a lost connection in the form;
    // no need to wait out the timeout then.
    const trouble = form.locator('.conn-feedback.alert-danger:not(.d-none)');
    const outcome = await Promise.race([
        page.locator('converse-roster').waitFor({ state: 'visible' }).then(() => 'roster'),
        trouble.waitFor({ state: 'visible' }).then(() => 'trouble', () => 'never'),
    ]);
    if (outcome === 'trouble') {
        throw new Error(`Converse says: ${(await trouble.textContent()).trim()}`);
    }
    await presenceSent;
});
say('ONLINE');

// The message may open its chat by itself, or only mark the peer's roster
// entry as unread (fullscreen mode shows one chat at a time): then the
// user opens the chat as one would, by clicking the peer.
await step(`receive '${opt.expect}' from ${opt.peer}`, async () => {
    const shown = messageIn(chat, opt.expect);
    // The roster may list the peer twice: under "New messages" and its group.
    const unread = page.locator(`converse-roster a.open-chat.unread-msgs[data-jid="${opt.peer}"]`).first();
    const first = await Promise.race([
        shown.waitFor({ state: 'visible' }).then(() => 'shown', () => 'never'),
        unread.waitFor({ state: 'visible' }).then(() => 'unread', () => 'never'),
    ]);
    if (first === 'unread') {
        await unread.click();
    }
    await shown.waitFor({ state: 'visible' });
});
say(`GOT ${opt.expect}`);

await step(`send '${opt.reply}'`, async () => {
    const body = opt.reply.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const sent = frameSent((p) => p.startsWith('<message') && p.includes(`>${body}</body>`));
    const textarea = chat.locator('textarea.chat-textarea');
    await textarea.fill(opt.reply);
    await textarea.press('Enter');
    await messageIn(chat, opt.reply).waitFor({ state: 'visible' });
    await sent;
});
say('SENT');

await screenshot();
await browser.close();
