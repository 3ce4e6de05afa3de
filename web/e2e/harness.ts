// End-to-end harness: starts the real `basalt serve` on a temp data dir and free loopback ports, talks to its API for
// setup, writes to images through its NBD socket with qemu-io, launches Debian's chromium through playwright-core, and
// saves numbered screenshots to web/test-results/.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(WEB, '..');
export const RESULTS = join(WEB, 'test-results');
export const ADMIN_PASSWORD = 'e2e-admin-password';

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => ok(port));
    });
  });
}

export interface Server {
  url: string;
  /** The server's data directory (it holds the NBD socket `nbd.sock`). */
  dataDir: string;
  /** The NBD URI of an export (`pool/image`) on the server's unix socket, for qemu-io and friends. */
  nbdUri: (exportName: string) => string;
  stop: () => Promise<void>;
  /** Stops the server, runs `whileDown` (to change its data directory as a failing disk would), starts it again. */
  restart: (whileDown?: () => void) => Promise<void>;
  /** Calls the API as `username` (setup and checks; the UI is what the tests drive). */
  api: (method: string, path: string, body?: unknown, username?: string) => Promise<{ status: number; body: unknown }>;
}

/** Runs `basalt serve` on `dataDir` and waits until it answers /api/health. */
async function spawnServe(binary: string, dataDir: string, http: number, nbd: number): Promise<ChildProcess> {
  const url = `http://127.0.0.1:${http}`;
  const child: ChildProcess = spawn(
    binary,
    [
      'serve',
      '--no-progress',
      '--data-dir',
      dataDir,
      '--listen',
      `127.0.0.1:${http}`,
      '--nbd-listen',
      `127.0.0.1:${nbd}`,
    ],
    { env: { ...process.env, BASALT_ADMIN_PASSWORD: ADMIN_PASSWORD }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-4000);
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`basalt serve exited with ${child.exitCode}:\n${log}`);
    try {
      if ((await fetch(`${url}/api/health`)).ok) return child;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`basalt serve did not answer /api/health within 30 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Stops a `basalt serve` the way a service manager does: SIGTERM, then SIGKILL after 10 s. */
async function stopServe(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

export async function startServer(): Promise<Server> {
  const binary = process.env.BASALT_BIN ?? join(REPO, 'target', 'debug', 'basalt');
  const dataDir = mkdtempSync(join(tmpdir(), 'basalt-e2e-data-'));
  const [http, nbd] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${http}`;
  let child = await spawnServe(binary, dataDir, http, nbd);

  const passwords = new Map([['admin', ADMIN_PASSWORD]]);
  const tokens = new Map<string, string>();
  const api: Server['api'] = async (method, path, body, username = 'admin') => {
    let token = tokens.get(username);
    if (!token) {
      const login = await fetch(`${url}/api/auth`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username, password: passwords.get(username) }),
      });
      token = ((await login.json()) as { token: string }).token;
      tokens.set(username, token);
    }
    const response = await fetch(`${url}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? (JSON.parse(text) as unknown) : null };
  };
  for (const [username, role] of [
    ['viewer', 'read-only'],
    ['blockadmin', 'block-manager'],
  ]) {
    const password = `${username}-password`;
    const created = await api('POST', '/api/user', { username, password, roles: [role] });
    if (created.status !== 201) throw new Error(`creating user ${username}: ${JSON.stringify(created.body)}`);
    passwords.set(username as string, password);
  }

  return {
    url,
    dataDir,
    nbdUri: (exportName) => `nbd+unix:///${exportName}?socket=${join(dataDir, 'nbd.sock')}`,
    api,
    async stop() {
      await stopServe(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
    async restart(whileDown) {
      await stopServe(child);
      whileDown?.();
      child = await spawnServe(binary, dataDir, http, nbd);
      tokens.clear();
    },
  };
}

/**
 * Runs qemu-io's commands (e.g. `write -P 0xab 0 4M`) on an image through the server's NBD socket, as a real client
 * would; fails with qemu-io's own message, and gives up after 20 s.
 */
export async function qemuIo(server: Server, exportName: string, command: string): Promise<string> {
  const uri = server.nbdUri(exportName);
  return new Promise((ok, fail) => {
    execFile('qemu-io', ['-f', 'raw', '-c', command, uri], { timeout: 20_000 }, (error, stdout, stderr) => {
      if (error) {
        const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
        fail(
          new Error(
            missing
              ? 'qemu-io is missing: install it with apt-get install -y qemu-utils'
              : `qemu-io -c '${command}' ${uri} failed: ${stderr || error.message}`,
          ),
        );
      } else ok(stdout);
    });
  });
}

export interface Browser {
  context: BrowserContext;
  close: () => Promise<void>;
}

export async function launchBrowser(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'basalt-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

let shotNumber = 0;

/** Saves a full-page screenshot as test-results/NN-name.png, numbered in the order the flow takes them. */
export async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(RESULTS, { recursive: true });
  shotNumber += 1;
  await page.screenshot({ path: join(RESULTS, `${String(shotNumber).padStart(2, '0')}-${name}.png`), fullPage: true });
}

export function cleanResults(): void {
  rmSync(RESULTS, { recursive: true, force: true });
  mkdirSync(RESULTS, { recursive: true });
}
