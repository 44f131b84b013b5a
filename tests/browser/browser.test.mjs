// Sluice's pages as a researcher and an admin use them, in headless
// Chromium (Debian's, driven by playwright-core), against the real binary
// and a real OpenID provider (op.mjs, the oidc-provider package):
//
//   search → dataset page → sign in through the provider → your access →
//   run a copied snippet → ask for access → `sluice access approve` →
//   the page shows the grant and the preview → the admin's page → sign out.
//
// Every page is checked with axe-core (no serious or critical violation)
// and weighed (under 50 KB). Screenshots and the axe report go to
// target/browser/ in the repository.
//
//   SLUICE_BIN=…/sluice CHROMIUM=/usr/bin/chromium node --test browser.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const here = import.meta.dirname;
const repo = path.resolve(here, '../..');
const bin = process.env.SLUICE_BIN ?? path.join(repo, 'target', 'release', 'sluice');
const artifacts = path.join(repo, 'target', 'browser');
const axeSource = require.resolve('axe-core/axe.min.js');

let work, sluice, op, browser, base, config;
const axeReport = {};
const weights = {};

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function startProcess(cmd, args, options, readyTest, name) {
  const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = fs.createWriteStream(path.join(work, `${name}.log`));
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  return child;
}

async function waitFor(check, what, ms = 60000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}: ${last}`);
}

function sluiceCli(...args) {
  return execFileSync(bin, ['--config', config, ...args], { encoding: 'utf8', cwd: work });
}

// Node's fetch with the development CA trusted (undici honours NODE_EXTRA_CA_CERTS
// only at start, so the API calls here go through curl, as a researcher's would).
function api(pathAndQuery, token) {
  const args = ['-fsS', '--cacert', path.join(work, 'state', 'tls', 'ca.pem'), `${base}${pathAndQuery}`];
  if (token) args.push('-H', `Authorization: Bearer ${token}`);
  return execFileSync('curl', args, { encoding: 'utf8' });
}

async function check(page, name) {
  // Weight of the HTML itself, as served.
  const response = await page.request.get(page.url(), { headers: { Accept: 'text/html' } });
  weights[name] = (await response.body()).length;
  assert.ok(weights[name] < 50 * 1024, `${name} weighs ${weights[name]} bytes`);
  await page.addScriptTag({ path: axeSource });
  const result = await page.evaluate(async () =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] }),
  );
  axeReport[name] = {
    rules_passed: result.passes.length,
    violations: result.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help })),
  };
  assert.ok(result.passes.length > 10, `${name}: axe ran (${result.passes.length} rules passed)`);
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(serious.map((v) => `${v.id}: ${v.help}`), [], `${name}: serious accessibility violations`);
  assert.equal(await page.locator('h1').count(), 1, `${name}: one h1`);
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

async function signInThroughProvider(page, login) {
  await page.getByRole('link', { name: /Sign in with Example University/ }).click();
  // The provider's own development login form, then its consent page.
  await page.waitForURL((url) => url.port === String(op.port));
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForSelector('button[type=submit]');
  await page.click('button[type=submit]');
  await page.waitForURL((url) => url.origin === base);
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-browser-'));
  fs.mkdirSync(artifacts, { recursive: true });
  const port = await freePort();
  const opPort = await freePort();
  base = `https://127.0.0.1:${port}`;
  execFileSync(bin, ['demo-data', '--rows', '600', '--out', path.join(work, 'datasets')]);
  fs.copyFileSync(path.join(repo, 'config', 'policy.toml'), path.join(work, 'policy.toml'));
  config = path.join(work, 'sluice.toml');
  fs.writeFileSync(config, `
[server]
listen = "127.0.0.1:${port}"
policy_poll_ms = 200
[tls]
mode = "self-signed"
[auth]
dev_mode = true
[[auth.issuers]]
issuer = "http://127.0.0.1:${opPort}"
audience = "${base}"
refresh_secs = 3
min_refresh_secs = 5
[auth.login]
issuer = "http://127.0.0.1:${opPort}"
client_id = "sluice-cli"
scopes = ["openid", "offline_access", "sluice"]
resource = "${base}"
[auth.oidc]
issuer = "http://127.0.0.1:${opPort}"
client_id = "sluice"
client_secret = "sluice-browser-test-secret"
scopes = ["openid", "sluice"]
label = "Example University"
[storage]
datasets = "${path.join(work, 'datasets')}"
state = "${path.join(work, 'state')}"
policy = "${path.join(work, 'policy.toml')}"
`);
  const opProcess = startProcess('node', [path.join(here, 'op.mjs'), String(opPort), `${base}/auth/callback`, base], {}, null, 'op');
  op = { process: opProcess, port: opPort };
  sluice = startProcess(bin, ['--config', config, 'serve'], { cwd: work }, null, 'sluice');
  await waitFor(async () => (await fetch(`http://127.0.0.1:${opPort}/.well-known/openid-configuration`)).ok, 'the OpenID provider');
  await waitFor(() => {
    api('/healthz');
    return true;
  }, 'the server');
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  sluice?.kill('SIGTERM');
  op?.process.kill('SIGTERM');
  fs.writeFileSync(path.join(artifacts, 'axe-report.json'), JSON.stringify({ axe: axeReport, page_bytes: weights }, null, 2));
});

function newContext() {
  // bypassCSP lets axe-core be injected: Sluice's pages allow no script.
  return browser.newContext({ ignoreHTTPSErrors: true, bypassCSP: true, viewport: { width: 1200, height: 900 } });
}

test('a researcher finds a dataset, signs in, asks for access, is approved and sees the rows', async () => {
  const context = await newContext();
  const page = await context.newPage();

  // Home and search.
  await page.goto(`${base}/`);
  await check(page, '01-home');
  // By keyboard: the first Tab reaches the skip link, which jumps to the
  // content; the search box is reached by Tab and sent with Enter.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.ok(page.url().endsWith('#main'));
  for (let i = 0; i < 10; i += 1) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(() => document.activeElement.id === 'q')) break;
  }
  assert.equal(await page.evaluate(() => document.activeElement.id), 'q', 'the search box is reachable by Tab');
  await page.keyboard.type('admissions');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/datasets\?q=admissions/);
  const results = page.locator('.results h3 a');
  assert.ok((await results.allTextContents()).some((t) => /admissions/i.test(t)));
  await check(page, '02-search');

  // The dataset page, signed out: what anyone may read.
  await page.getByRole('link', { name: /Hospital admissions/i }).first().click();
  await page.waitForURL(/\/datasets\/hospital-admissions$/);
  assert.match(await page.textContent('#your-access'), /You are not signed in/);
  assert.match(await page.textContent('#your-access'), /You may not read this dataset/);
  await check(page, '03-dataset-signed-out');

  // Sign in through the OpenID provider, back on the same page.
  await page.locator('#your-access').getByRole('link', { name: 'Sign in' }).click();
  await page.waitForURL(/\/auth\/sign-in/);
  await check(page, '04-sign-in');
  await signInThroughProvider(page, 'carol@uni.example');
  assert.equal(new URL(page.url()).pathname, '/datasets/hospital-admissions');
  assert.match(await page.textContent('header'), /Signed in as carol@uni\.example/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === '__Host-sluice-session');
  assert.ok(session, 'a session cookie');
  assert.equal(session.httpOnly, true);
  assert.equal(session.secure, true);
  assert.equal(session.sameSite, 'Lax');
  assert.match(await page.textContent('#your-access'), /You hold no grant for this dataset/);
  assert.equal(await page.locator('#preview').count(), 0, 'no preview without access');
  await check(page, '05-dataset-no-grant');

  // A snippet copied from an open dataset's page runs as pasted.
  await page.goto(`${base}/datasets/vaccination-coverage`);
  const openSnippet = await page.textContent('#snippet-curl');
  const openCsv = execFileSync('bash', ['-c', openSnippet], { encoding: 'utf8' }).trim().split('\n');
  const vaccination = JSON.parse(api('/v1/datasets/vaccination-coverage'));
  assert.equal(openCsv[0], vaccination.columns.map((c) => c.name).join(','));
  assert.equal(openCsv.length - 1, Math.min(1000, vaccination.rows));
  await check(page, '06-open-dataset');

  // Ask for access.
  await page.goto(`${base}/datasets/hospital-admissions`);
  await page.getByLabel('Project title').fill('Length of stay by region');
  await page.getByLabel('Purpose: what you will do with the data').fill('Compare lengths of stay between regions for a service evaluation.');
  for (const column of ['age_band', 'region', 'length_of_stay']) {
    await page.getByLabel(column, { exact: true }).check();
  }
  await page.getByLabel('For how long').selectOption('90');
  await page.getByRole('button', { name: 'Send the request' }).click();
  await page.waitForURL(/\/datasets\/hospital-admissions#your-access$/);
  assert.match(await page.textContent('#your-access'), /Pending: “Length of stay by region”/);
  assert.equal(await page.getByRole('button', { name: 'Send the request' }).count(), 0, 'one request at a time');
  await check(page, '07-request-pending');

  // The admin sees it through the API and approves it with the CLI.
  const admin = sluiceCli('token', '--sub', 'ada@sluice.example', '--role', 'admin').trim();
  const listed = JSON.parse(api('/v1/access-requests?status=pending', admin)).requests;
  assert.equal(listed.length, 1);
  const request = listed[0];
  assert.equal(request.subject, 'carol@uni.example');
  assert.equal(request.organisation, 'University of Example');
  assert.deepEqual(request.columns, ['age_band', 'region', 'length_of_stay']);
  const approved = sluiceCli('access', 'approve', request.id, '--by', 'ada@sluice.example');
  assert.match(approved, new RegExp(`approved ${request.id}`));
  const policy = fs.readFileSync(path.join(work, 'policy.toml'), 'utf8');
  assert.match(policy, new RegExp(`# Access request ${request.id}: asked by carol@uni\\.example`));
  assert.match(policy, new RegExp(`id = "${request.id}"`));

  // The server's policy reload applies the grant: the page shows it and the preview.
  await waitFor(async () => {
    await page.goto(`${base}/datasets/hospital-admissions`);
    return /You may read this dataset/.test(await page.textContent('#your-access'));
  }, 'the approved grant to apply', 15000);
  assert.match(await page.textContent('#your-access'), new RegExp(`grant ${request.id}`));
  assert.match(await page.textContent('#your-access'), /Approved/);
  const header = await page.locator('#preview thead th').allTextContents();
  assert.deepEqual(header, ['age_band', 'region', 'length_of_stay']);
  const previewRows = await page.locator('#preview tbody tr').count();
  assert.equal(previewRows, 20);
  await check(page, '08-access-granted');

  // The copied snippet, with the researcher's token, returns exactly the granted columns.
  const snippet = await page.textContent('#snippet-curl');
  const token = sluiceCli('token', '--sub', 'carol@uni.example', '--role', 'researcher').trim();
  const csv = execFileSync('bash', ['-c', snippet], { encoding: 'utf8', env: { ...process.env, SLUICE_TOKEN: token } })
    .trim()
    .split('\n');
  assert.equal(csv[0], 'age_band,region,length_of_stay');
  assert.equal(csv.length - 1, 600);
  // And the Delta Sharing one, with the connector's own Python where given.
  if (process.env.SLUICE_SHARING_BIN) {
    const code = await page.textContent('#snippet-delta-sharing');
    const out = execFileSync('bash', ['-c', code], {
      encoding: 'utf8',
      cwd: work,
      env: { ...process.env, SLUICE_TOKEN: token, PATH: `${process.env.SLUICE_SHARING_BIN}:${process.env.PATH}` },
    });
    assert.match(out, /age_band\s+region\s+length_of_stay/, out);
  }
  // So do the Python ones, where a Python with pyarrow, polars and pandas is given.
  if (process.env.SLUICE_PYTHON) {
    for (const name of ['pyarrow', 'polars', 'pandas']) {
      const code = await page.textContent(`#snippet-${name}`);
      const out = execFileSync(process.env.SLUICE_PYTHON, ['-c', code], {
        encoding: 'utf8',
        env: { ...process.env, SLUICE_TOKEN: token },
      });
      assert.match(out, name === 'pyarrow' ? /^600 age_band: string/ : /length_of_stay/, `${name}: ${out}`);
    }
  }

  // Sign out ends the session on the server, not only in this browser.
  const sessionValue = (await context.cookies()).find((c) => c.name === '__Host-sluice-session').value;
  await page.getByRole('button', { name: 'Sign out' }).click();
  // Signed in at the provider, so signed out there too (RP-Initiated
  // Logout): its page asks, then sends the browser back.
  await page.getByRole('button', { name: 'Yes, sign me out' }).click();
  await page.waitForURL(`${base}/`);
  assert.match(await page.textContent('header'), /Sign in/);
  const replay = await newContext();
  await replay.addCookies([{ name: '__Host-sluice-session', value: sessionValue, url: base, secure: true }]);
  const replayed = await replay.newPage();
  await replayed.goto(`${base}/datasets/hospital-admissions`);
  assert.match(await replayed.textContent('#your-access'), /You are not signed in/);
  await replay.close();
  await context.close();
});

test('an admin signs in through the provider and sees the requests and the audit trail', async () => {
  const context = await newContext();
  const page = await context.newPage();
  await page.goto(`${base}/admin`);
  await page.waitForURL(/\/auth\/sign-in\?next=%2Fadmin/);
  await signInThroughProvider(page, 'ada@sluice.example');
  assert.equal(new URL(page.url()).pathname, '/admin');
  // The trail is written behind the answers: the admin's own sign-in
  // shows within moments (earlier ones may have left the newest 50).
  let text = await page.textContent('main');
  for (let i = 0; i < 30 && !/sign-inada@sluice\.example/.test(text); i++) {
    await page.waitForTimeout(100);
    await page.reload();
    text = await page.textContent('main');
  }
  assert.match(text, /sign-inada@sluice\.example/);
  assert.match(text, /Access requests waiting \(0\)/);
  assert.match(text, /Approved ar-\d{8}-[0-9a-f]{6}: carol@uni\.example, hospital-admissions, by ada@sluice\.example/);
  await check(page, '09-admin');
  await page.goto(`${base}/steward`);
  assert.match(await page.textContent('main'), /Hospital admissions/i);
  await check(page, '10-steward');
  await context.close();
});

test('a form posted from another site is refused, even with a stolen token', async () => {
  const context = await newContext();
  const page = await context.newPage();
  await page.goto(`${base}/auth/sign-in`);
  // The worst case: the attacker's page somehow holds this browser's token.
  const token = await page.getAttribute('form[action="/auth/dev"] input[name=csrf]', 'value');
  // A page on another origin (the provider's) posts the sign-in form to Sluice.
  await page.goto(`http://127.0.0.1:${op.port}/.well-known/openid-configuration`);
  await page.evaluate(({ target, token }) => {
    const form = document.createElement('form');
    form.method = 'post';
    form.action = target;
    for (const [name, value] of Object.entries({ csrf: token, identity: 'ada@sluice.example', next: '/admin' })) {
      const input = document.createElement('input');
      input.type = 'hidden';
      input.name = name;
      input.value = value;
      form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
  }, { target: `${base}/auth/dev`, token });
  await page.waitForURL(`${base}/auth/dev`);
  assert.match(await page.textContent('main'), /did not come from this site/);
  await page.goto(`${base}/`);
  assert.match(await page.textContent('header'), /Sign in/);
  assert.doesNotMatch(await page.textContent('header'), /ada@sluice\.example/);
  await context.close();
});

// The HTTP status of a GET with a bearer token (curl, trusting the dev CA).
function apiStatus(pathAndQuery, token) {
  return Number(execFileSync('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', path.join(work, 'state', 'tls', 'ca.pem'),
    '-H', `Authorization: Bearer ${token}`, `${base}${pathAndQuery}`], { encoding: 'utf8' }));
}

// A token that looks like the provider's but is signed by a key it never had.
function madeUpToken(privateKey, kid) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const data = `${part({ alg: 'RS256', typ: 'at+jwt', kid })}.${part({
    iss: `http://127.0.0.1:${op.port}`, aud: base, sub: 'mallory@example.net', roles: ['admin'], iat: now, exp: now + 600,
  })}`;
  return `${data}.${crypto.sign('sha256', Buffer.from(data), privateKey).toString('base64url')}`;
}

const opControl = async (what, method = 'GET') => (await fetch(`http://127.0.0.1:${op.port}/_test/${what}`, { method })).json();

// Last: it rotates the provider's keys.
test('a researcher signs in on the command line through the provider (device flow); keys rotate at the provider', async () => {
  const cliConfig = path.join(work, 'cli-config');
  const env = { ...process.env, SLUICE_CONFIG_DIR: cliConfig };
  delete env.SLUICE_TOKEN;
  const ca = path.join(work, 'state', 'tls', 'ca.pem');
  const cli = (...args) => execFileSync(bin, ['--config', config, ...args], { encoding: 'utf8', cwd: work, env });

  // `sluice login` shows a code and where to enter it, then waits.
  const login = spawn(bin, ['--config', config, 'login', '--server', base, '--ca', ca], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  login.stderr.on('data', (d) => { said += d; });
  const exited = new Promise((resolve) => login.on('exit', resolve));
  await waitFor(() => /enter the code/.test(said), 'the code from `sluice login`', 30000);
  const code = said.match(/enter the code (\S+)/)[1];
  const where = said.match(/\(or open (\S+)\)/)[1];
  assert.ok(where.startsWith(`http://127.0.0.1:${op.port}/device`), said);

  // As a person would, in a browser: the provider's page, the code, sign in, approve.
  const context = await newContext();
  const page = await context.newPage();
  await page.goto(where);
  assert.match(await page.textContent('body'), new RegExp(code));
  await page.click('button[autofocus]');
  await page.fill('input[name=login]', 'carol@uni.example');
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForSelector('button[type=submit]');
  await page.click('button[type=submit]');
  await page.waitForSelector('text=Sign-in Success');
  await context.close();
  assert.equal(await exited, 0, said);
  assert.match(said, /signed in to \S+ as carol@uni\.example/);

  // Kept for its owner only, with what renews it.
  const file = path.join(cliConfig, 'credentials.json');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  const kept = () => JSON.parse(fs.readFileSync(file, 'utf8')).servers[base];
  const first = kept();
  assert.ok(first.refresh?.token, 'a refresh token is kept');
  assert.ok(first.expires_at > Date.now() / 1000 + 600);
  const kid = (token) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url')).kid;
  assert.equal(kid(first.token), 'key-1');

  // The kept token is what commands and snippets use.
  assert.equal(cli('print-token', '--server', base).trim(), first.token);
  const me = JSON.parse(api('/v1/me', first.token));
  assert.equal(me.subject, 'carol@uni.example');
  assert.deepEqual(me.roles, ['researcher']);
  assert.deepEqual(JSON.parse(cli('tokens', 'list', '--server', base)), { tokens: [] });

  // A flood of made-up kids costs at most one extra read of the provider's
  // keys (plus the scheduled one every 3 s), never one per token.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const readsBefore = (await opControl('stats')).jwks;
  for (let i = 0; i < 40; i += 1) {
    assert.equal(apiStatus('/v1/me', madeUpToken(privateKey, `made-up-${i}`)), 401);
  }
  const extraReads = (await opControl('stats')).jwks - readsBefore;
  assert.ok(extraReads <= 2, `40 unknown kids made ${extraReads} reads of the keys`);

  // The provider rotates: key-1 removed, key-2 signs. The kept token stops
  // working within refresh_secs, with no restart.
  assert.equal((await opControl('rotate', 'POST')).kid, 'key-2');
  await waitFor(() => apiStatus('/v1/me', first.token) === 401, 'the removed key refused', 15000);

  // An hour later the token is about to expire: the CLI renews it with its
  // refresh token, signed by the new key, and Sluice takes it.
  const aged = JSON.parse(fs.readFileSync(file, 'utf8'));
  aged.servers[base].expires_at = Math.floor(Date.now() / 1000) + 10;
  fs.writeFileSync(file, JSON.stringify(aged));
  // Two commands at once (a notebook and a script): one renews, the other
  // waits and takes its token (a refresh token spent twice would end the
  // whole sign-in at the provider).
  const printToken = () => new Promise((resolve, reject) => {
    const child = spawn(bin, ['--config', config, 'print-token', '--server', base], { cwd: work, env });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (status) => (status === 0 ? resolve(out.trim()) : reject(new Error(err))));
  });
  const [renewed, alsoRenewed] = await Promise.all([printToken(), printToken()]);
  assert.equal(alsoRenewed, renewed);
  assert.notEqual(renewed, first.token);
  assert.equal(kid(renewed), 'key-2');
  assert.equal(kept().token, renewed);
  assert.equal(JSON.parse(api('/v1/me', renewed)).subject, 'carol@uni.example');

  // The provider hangs (stopped, answering nothing): the last good keys
  // are kept, and a request does not wait on the provider.
  op.process.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, 4500));
  const started = Date.now();
  assert.equal(apiStatus('/v1/me', renewed), 200);
  assert.ok(Date.now() - started < 2000, `a request waited ${Date.now() - started} ms on a hung provider`);
  op.process.kill('SIGCONT');

  // Signing out ends the sign-in at the provider too (RFC 7009): a copy
  // of the file renews nothing.
  const refreshToken = kept().refresh.token;
  cli('logout', '--server', base);
  assert.equal(kept(), undefined);
  const spent = await fetch(`http://127.0.0.1:${op.port}/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'sluice-cli' }),
  });
  assert.equal((await spent.json()).error, 'invalid_grant');
});
