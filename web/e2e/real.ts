/**
 * A real carrier-server (started here on loopback ports chosen by the system,
 * with a temporary data directory) and the real `carrier` CLI, for end-to-end
 * tests that interoperate with them. Everything waits on output as it arrives,
 * never on a fixed delay.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const SERVER_BIN = process.env.CARRIER_SERVER_BIN ?? join(ROOT, "target/debug/carrier-server");
export const CLI_BIN = process.env.CARRIER_BIN ?? join(ROOT, "target/debug/carrier");
export const HAVE_BINARIES = existsSync(SERVER_BIN) && existsSync(CLI_BIN);
const PATIENCE_MS = 30_000;

/** A growing text (a process's output) that can be waited on. */
class Output {
  text = "";
  private waiters: Array<() => void> = [];
  append(chunk: string): void {
    this.text += chunk;
    const waiters = this.waiters;
    this.waiters = [];
    waiters.forEach((wake) => wake());
  }
  /** Resolves with the first match of `pattern` found at or after `from`. */
  async match(pattern: RegExp, what: string, from = 0, done?: () => boolean): Promise<RegExpMatchArray> {
    const deadline = Date.now() + PATIENCE_MS;
    for (;;) {
      const found = this.text.slice(from).match(pattern);
      if (found) return found;
      if (done?.()) throw new Error(`${what}: it ended without it. Output:\n${this.text}`);
      if (Date.now() > deadline) throw new Error(`${what}: not seen in ${PATIENCE_MS} ms. Output:\n${this.text}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

export class RealServer {
  readonly dir = mkdtempSync(join(tmpdir(), "carrier-web-e2e-"));
  private readonly log = new Output();
  private process: ChildProcess | null = null;
  private exited = false;
  webUrl = "";
  address = "";
  fingerprint = "";

  async start(): Promise<void> {
    const child = spawn(SERVER_BIN, ["--data-dir", join(this.dir, "data"), "--port", "0", "--web-port", "0"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: "warn" },
    });
    this.process = child;
    child.stdout!.on("data", (d: Buffer) => this.log.append(d.toString()));
    child.stderr!.on("data", (d: Buffer) => this.log.append(d.toString()));
    child.on("exit", () => {
      this.exited = true;
      this.log.append("");
    });
    const ended = () => this.exited;
    this.fingerprint = (await this.log.match(/Carrier server fingerprint: ([0-9a-f]{64})/, "the server's fingerprint", 0, ended))[1];
    this.address = (await this.log.match(/Listening on (\S+)/, "the client port", 0, ended))[1];
    this.webUrl = (await this.log.match(/Web client on (http\S+)/, "the web port", 0, ended))[1];
  }

  /** Where the log is now: codes asked for later are found after it. */
  mark(): number {
    return this.log.text.length;
  }

  /** The next code the server writes on its console for `phone` after `from`. */
  async code(phone: string, from: number): Promise<string> {
    const escaped = phone.replace("+", "\\+");
    return (await this.log.match(new RegExp(`OTP for ${escaped}: (\\d{6})`), `a code for ${phone}`, from, () => this.exited))[1];
  }

  async stop(): Promise<void> {
    if (this.process && !this.exited) {
      const gone = new Promise((resolve) => this.process!.once("exit", resolve));
      this.process.kill("SIGTERM");
      await gone;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Ran {
  status: number;
  stdout: string;
  stderr: string;
}

/** One CLI user: a home directory of their own on `server`. */
export class Cli {
  constructor(
    private readonly server: RealServer,
    readonly phone: string,
    readonly home: string,
  ) {}

  static make(server: RealServer, phone: string, name: string): Cli {
    return new Cli(server, phone, join(server.dir, name));
  }

  private args(rest: string[]): string[] {
    return ["--home", this.home, "--server", this.server.address, "--server-fingerprint", this.server.fingerprint, ...rest];
  }

  /** Starts a command; `out` grows with its standard output. */
  spawn(rest: string[]): { child: ChildProcess; out: Output; done: Promise<Ran> } {
    const child = spawn(CLI_BIN, this.args(rest), { stdio: ["pipe", "pipe", "pipe"] });
    const out = new Output();
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => out.append(d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const done = new Promise<Ran>((resolve) => child.on("close", (status) => resolve({ status: status ?? -1, stdout: out.text, stderr })));
    return { child, out, done };
  }

  async run(...rest: string[]): Promise<Ran> {
    const { child, done } = this.spawn(rest);
    child.stdin!.end();
    return done;
  }

  /** Runs and insists on success; the standard output. */
  async ok(...rest: string[]): Promise<string> {
    const ran = await this.run(...rest);
    if (ran.status !== 0) throw new Error(`carrier ${rest.join(" ")} failed (${ran.status}):\n${ran.stdout}\n${ran.stderr}`);
    return ran.stdout;
  }

  /** `carrier register`, typing the code the server printed. */
  async register(): Promise<void> {
    const mark = this.server.mark();
    const { child, done } = this.spawn(["register", this.phone]);
    const code = await this.server.code(this.phone, mark);
    child.stdin!.end(`${code}\n`);
    const ran = await done;
    if (ran.status !== 0) throw new Error(`carrier register failed (${ran.status}):\n${ran.stdout}\n${ran.stderr}`);
  }

  /** `carrier devices add`: resolves with the link code, and a promise of the command's end. */
  async devicesAdd(): Promise<{ code: string; done: Promise<Ran> }> {
    const { child, out, done } = this.spawn(["devices", "add"]);
    child.stdin!.end();
    const code = (await out.match(/Link code: (\S+)/, "the link code"))[1];
    return { code, done };
  }
}
