import type { Socket } from "node:net";

/**
 * A qtest answer that was not OK (FAIL, ERR), or the connection ended: the operation did not happen, or its
 * answer is lost.
 */
export class QtestError extends Error {}

/** An interrupt line change QEMU reported asynchronously (after `irq_intercept_in/out`). */
export interface QtestIrq {
  readonly line: number;
  readonly raised: boolean;
}

interface Pending {
  readonly command: string;
  resolve(text: string): void;
  reject(error: Error): void;
}

const U64 = (1n << 64n) - 1n;

function checkAddress(addr: number | bigint, what = "address"): bigint {
  const a = BigInt(addr);
  if (a < 0n || a > U64) throw new RangeError(`${what} ${a} is not a 64-bit unsigned value`);
  return a;
}

function checkValue(value: number | bigint, bits: number): bigint {
  const v = BigInt(value);
  if (v < 0n || v >= 1n << BigInt(bits)) throw new RangeError(`value 0x${v.toString(16)} does not fit in ${bits} bits`);
  return v;
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

/**
 * A client of QEMU's qtest protocol (a line per request, "OK [value]" / "FAIL …" / "ERR …" per answer, "IRQ
 * raise|lower N" lines at any time; QEMU's docs/devel/qtest.rst and the protocol comment in its qtest.c). Requests
 * may be pipelined: answers come back in request order, and each request's promise settles with its own answer.
 *
 * QEMU asserts on a malformed request (an unparsable number aborts the process), so every request is built here
 * from checked numbers: a value that cannot be sent is a RangeError before anything is written.
 */
export class QtestClient {
  private readonly pending: Pending[] = [];
  private buffer = "";
  private ended: Error | undefined;
  /** Interrupt line changes reported so far (consume with `takeIrqs`). */
  private readonly irqs: QtestIrq[] = [];

  constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.setNoDelay(true);
    socket.on("data", (chunk: string) => this.receive(chunk));
    const end = (why: string): void => this.end(new QtestError(why));
    socket.on("end", () => end("QEMU closed the qtest connection"));
    socket.on("close", () => end("the qtest connection closed"));
    socket.on("error", (e) => end(`qtest connection error: ${e.message}`));
  }

  /** Whether the connection is still usable. */
  get open(): boolean {
    return this.ended === undefined;
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.pending.length;
  }

  private receive(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf("\n"); nl >= 0; nl = this.buffer.indexOf("\n")) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      this.answer(line);
    }
  }

  private answer(line: string): void {
    const irq = /^IRQ (raise|lower) (\d+)$/.exec(line);
    if (irq !== null) {
      this.irqs.push({ line: Number(irq[2]), raised: irq[1] === "raise" });
      return;
    }
    const p = this.pending.shift();
    if (p === undefined) {
      this.end(new QtestError(`unexpected qtest output with no request waiting: ${JSON.stringify(line)}`));
      return;
    }
    if (line === "OK" || line.startsWith("OK ")) p.resolve(line.slice(2).trim());
    else p.reject(new QtestError(`qtest "${p.command}" answered ${JSON.stringify(line)}`));
  }

  private end(error: Error): void {
    if (this.ended !== undefined) return;
    this.ended = error;
    for (const p of this.pending.splice(0)) p.reject(error);
  }

  /**
   * Sends one request line (words separated by single spaces) and returns the text after "OK". Rejects with a
   * QtestError on FAIL/ERR or when the connection ends first.
   */
  command(line: string): Promise<string> {
    if (/[\n\r]/.test(line) || line.trim() !== line || line === "") throw new RangeError(`not a qtest request line: ${JSON.stringify(line)}`);
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      this.pending.push({ command: line, resolve, reject });
      this.socket.write(`${line}\n`);
    });
  }

  private async value(line: string): Promise<bigint> {
    const text = await this.command(line);
    if (!/^0x[0-9a-fA-F]+$/.test(text)) throw new QtestError(`qtest "${line}" answered ${JSON.stringify(text)}, not a value`);
    return BigInt(text);
  }

  // ---- guest physical memory, through the first CPU's address space (RAM and MMIO alike) ----

  async readb(addr: number | bigint): Promise<bigint> {
    return this.value(`readb ${hex(checkAddress(addr))}`);
  }
  async readw(addr: number | bigint): Promise<bigint> {
    return this.value(`readw ${hex(checkAddress(addr))}`);
  }
  async readl(addr: number | bigint): Promise<bigint> {
    return this.value(`readl ${hex(checkAddress(addr))}`);
  }
  async readq(addr: number | bigint): Promise<bigint> {
    return this.value(`readq ${hex(checkAddress(addr))}`);
  }

  /** A read of `size` bytes (1, 2, 4 or 8) as one access. */
  readSized(addr: number | bigint, size: 1 | 2 | 4 | 8): Promise<bigint> {
    return size === 1 ? this.readb(addr) : size === 2 ? this.readw(addr) : size === 4 ? this.readl(addr) : this.readq(addr);
  }

  async writeb(addr: number | bigint, value: number | bigint): Promise<void> {
    await this.command(`writeb ${hex(checkAddress(addr))} ${hex(checkValue(value, 8))}`);
  }
  async writew(addr: number | bigint, value: number | bigint): Promise<void> {
    await this.command(`writew ${hex(checkAddress(addr))} ${hex(checkValue(value, 16))}`);
  }
  async writel(addr: number | bigint, value: number | bigint): Promise<void> {
    await this.command(`writel ${hex(checkAddress(addr))} ${hex(checkValue(value, 32))}`);
  }
  async writeq(addr: number | bigint, value: number | bigint): Promise<void> {
    await this.command(`writeq ${hex(checkAddress(addr))} ${hex(checkValue(value, 64))}`);
  }

  /** A write of `size` bytes (1, 2, 4 or 8) as one access. */
  writeSized(addr: number | bigint, size: 1 | 2 | 4 | 8, value: number | bigint): Promise<void> {
    return size === 1 ? this.writeb(addr, value) : size === 2 ? this.writew(addr, value) : size === 4 ? this.writel(addr, value) : this.writeq(addr, value);
  }

  /** `length` bytes at `addr` (base64 on the wire). */
  async read(addr: number | bigint, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`read length ${length}`);
    const a = checkAddress(addr);
    checkAddress(a + BigInt(length) - 1n, "read end");
    const text = await this.command(`b64read ${hex(a)} ${hex(BigInt(length))}`);
    const bytes = Buffer.from(text, "base64");
    if (bytes.length !== length) throw new QtestError(`b64read of ${length} bytes answered ${bytes.length}`);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  /** Writes `data` at `addr` (base64 on the wire). */
  async write(addr: number | bigint, data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    const a = checkAddress(addr);
    checkAddress(a + BigInt(data.length) - 1n, "write end");
    await this.command(`b64write ${hex(a)} ${hex(BigInt(data.length))} ${Buffer.from(data.buffer, data.byteOffset, data.length).toString("base64")}`);
  }

  /** `length` copies of `byte` at `addr`. */
  async memset(addr: number | bigint, length: number, byte: number): Promise<void> {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`memset length ${length}`);
    await this.command(`memset ${hex(checkAddress(addr))} ${hex(BigInt(length))} ${hex(checkValue(byte, 8))}`);
  }

  // ---- x86 I/O ports ----

  private port(port: number): string {
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`I/O port ${port}`);
    return hex(BigInt(port));
  }

  async outb(port: number, value: number): Promise<void> {
    await this.command(`outb ${this.port(port)} ${hex(checkValue(value, 8))}`);
  }
  async outw(port: number, value: number): Promise<void> {
    await this.command(`outw ${this.port(port)} ${hex(checkValue(value, 16))}`);
  }
  async outl(port: number, value: number): Promise<void> {
    await this.command(`outl ${this.port(port)} ${hex(checkValue(value, 32))}`);
  }
  async inb(port: number): Promise<number> {
    return Number(await this.value(`inb ${this.port(port)}`));
  }
  async inw(port: number): Promise<number> {
    return Number(await this.value(`inw ${this.port(port)}`));
  }
  async inl(port: number): Promise<number> {
    return Number(await this.value(`inl ${this.port(port)}`));
  }

  // ---- interrupts ----

  /** Reports the named device's input lines' changes as IRQ messages ("ioapic" on a PC). */
  async interceptIrqIn(qomPath: string): Promise<void> {
    if (!/^[A-Za-z0-9/_.\-[\]]+$/.test(qomPath)) throw new RangeError(`QOM path ${JSON.stringify(qomPath)}`);
    await this.command(`irq_intercept_in ${qomPath}`);
  }

  /** The interrupt line changes reported since the last call. */
  takeIrqs(): QtestIrq[] {
    return this.irqs.splice(0);
  }

  /** The byte order of the target ("little" or "big"). */
  endianness(): Promise<string> {
    return this.command("endianness");
  }

  /** Closes the connection; pending requests reject. */
  close(): void {
    this.end(new QtestError("the qtest client was closed"));
    this.socket.destroy();
  }
}
