import { createConnection, type Socket } from "node:net";

/** A QMP answer that was an error, or the connection ended. */
export class QmpError extends Error {}

interface Waiter {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/**
 * A minimal client of QEMU's machine protocol (QMP: one JSON object per line; a greeting, `qmp_capabilities`,
 * then `{"execute": …}` answered by `{"return": …}` or `{"error": …}`, with `{"event": …}` lines at any time).
 * Used to reset the machine between difftest cases instead of starting QEMU again.
 */
export class QmpClient {
  private buffer = "";
  private readonly answers: Waiter[] = [];
  private readonly eventWaiters = new Map<string, Waiter[]>();
  private ended: Error | undefined;
  private greeted!: Promise<void>;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.receive(chunk));
    const end = (why: string): void => this.end(new QmpError(why));
    socket.on("close", () => end("the QMP connection closed"));
    socket.on("error", (e) => end(`QMP connection error: ${e.message}`));
  }

  /** Connects, waits for the greeting and leaves capabilities negotiation mode. */
  static async connect(path: string): Promise<QmpClient> {
    const socket = createConnection(path);
    const client = new QmpClient(socket);
    client.greeted = new Promise((resolve, reject) => client.answers.push({ resolve: () => resolve(), reject }));
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    await client.greeted;
    await client.execute("qmp_capabilities");
    return client;
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf("\n"); nl >= 0; nl = this.buffer.indexOf("\n")) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line === "") continue;
      let message: Record<string, unknown>;
      try {
        message = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.end(new QmpError(`QMP sent something that is not JSON: ${line.slice(0, 80)}`));
        return;
      }
      if (typeof message.event === "string") {
        const waiting = this.eventWaiters.get(message.event);
        const w = waiting?.shift();
        w?.resolve(message.data);
        continue;
      }
      const w = this.answers.shift();
      if (w === undefined) continue;
      if ("error" in message) w.reject(new QmpError(`QMP error: ${JSON.stringify(message.error)}`));
      else w.resolve(message.return ?? message.QMP);
    }
  }

  private end(error: Error): void {
    if (this.ended !== undefined) return;
    this.ended = error;
    for (const w of this.answers.splice(0)) w.reject(error);
    for (const list of this.eventWaiters.values()) for (const w of list.splice(0)) w.reject(error);
  }

  /** Runs a command and returns its `return` value. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      this.answers.push({ resolve, reject });
      this.socket.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
    });
  }

  /** Resolves at the next event named `name` (register before causing it). */
  nextEvent(name: string): Promise<unknown> {
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const list = this.eventWaiters.get(name) ?? [];
      list.push({ resolve, reject });
      this.eventWaiters.set(name, list);
    });
  }

  close(): void {
    this.end(new QmpError("the QMP client was closed"));
    this.socket.destroy();
  }
}
