import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { QemuProcess, QemuStartError, QtestClient, QtestError, liveQemuCount, vtdMachine, x86HaltingBios } from "../src/index.js";
import { describeWith, qemuX86 } from "./support.js";

/** A scripted peer in QEMU's place: it sees the request lines and answers what `reply` says. */
async function fakeQemu(reply: (line: string, peer: Socket) => string | undefined): Promise<{ client: QtestClient; requests: string[]; peer: Socket; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), "qtest-fake-"));
  const path = join(dir, "s");
  const server = createServer();
  await new Promise<void>((r) => server.listen(path, r));
  const peerP = new Promise<Socket>((r) => server.once("connection", r));
  const socket = createConnection(path);
  const peer = await peerP;
  const requests: string[] = [];
  let buffer = "";
  peer.setEncoding("utf8");
  peer.on("data", (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      requests.push(line);
      const answer = reply(line, peer);
      if (answer !== undefined) peer.write(answer);
    }
  });
  return {
    client: new QtestClient(socket),
    requests,
    peer,
    close: () => {
      socket.destroy();
      peer.destroy();
      server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("the qtest client (protocol)", () => {
  let close: (() => void) | undefined;
  afterEach(() => close?.());

  it("pipelines requests and gives each its own answer, with interrupt lines in between", async () => {
    let n = 0;
    const f = await fakeQemu((line) => (line.startsWith("readl") ? `IRQ raise 3\nOK 0x${(++n).toString(16)}\n` : "OK\n"));
    close = f.close;
    const answers = await Promise.all([f.client.readl(0x1000), f.client.writel(0x2000, 0xffff_ffff), f.client.readl(0x3000), f.client.writeq(0xfed9_0000, 1n)]);
    expect(answers).toEqual([1n, undefined, 2n, undefined]);
    expect(f.requests).toEqual(["readl 0x1000", "writel 0x2000 0xffffffff", "readl 0x3000", "writeq 0xfed90000 0x1"]);
    expect(f.client.takeIrqs()).toEqual([{ line: 3, raised: true }, { line: 3, raised: true }]);
    expect(f.client.takeIrqs()).toEqual([]);
  });

  it("answers a FAIL or ERR with a QtestError for that request only", async () => {
    const f = await fakeQemu((line) => (line.startsWith("clock") ? "FAIL Unknown command 'clock_step'\n" : line.startsWith("b64write") ? "ERR invalid argument size\n" : "OK 0x5\n"));
    close = f.close;
    await expect(f.client.command("clock_step")).rejects.toThrow(QtestError);
    await expect(f.client.write(0, Uint8Array.of(1))).rejects.toThrow(/ERR invalid argument size/);
    expect(await f.client.readb(0)).toBe(5n);
  });

  it("rejects every pending request when the connection ends, and later ones at once", async () => {
    const f = await fakeQemu(() => undefined);
    close = f.close;
    const pending = [f.client.readl(0), f.client.readl(4)];
    f.peer.end();
    for (const p of pending) await expect(p).rejects.toThrow(QtestError);
    await expect(f.client.readl(8)).rejects.toThrow(QtestError);
    expect(f.client.open).toBe(false);
  });

  it("refuses what QEMU would abort on before sending anything", async () => {
    const f = await fakeQemu(() => "OK\n");
    close = f.close;
    await expect(f.client.writeb(0, 0x100)).rejects.toThrow(RangeError);
    await expect(f.client.writel(-1, 0)).rejects.toThrow(RangeError);
    await expect(f.client.readq(2n ** 64n)).rejects.toThrow(RangeError);
    await expect(f.client.read(0, 0)).rejects.toThrow(RangeError);
    await expect(f.client.outl(0x10000, 0)).rejects.toThrow(RangeError);
    await expect(f.client.interceptIrqIn("a b")).rejects.toThrow(RangeError);
    expect(() => f.client.command("readl 0\nreadl 4")).toThrow(RangeError);
    expect(f.requests).toEqual([]);
  });

  it("treats an answer nobody asked for as the end of the connection", async () => {
    const f = await fakeQemu(() => "OK\nOK\n");
    close = f.close;
    await f.client.writel(0, 0);
    await new Promise((r) => setTimeout(r, 20));
    await expect(f.client.readl(0)).rejects.toThrow(/unexpected qtest output/);
  });
});

describeWith(qemuX86, "the qtest client against QEMU", () => {
  async function q35(): Promise<QemuProcess> {
    return QemuProcess.start({ binary: "qemu-system-x86_64", args: vtdMachine.args(128 * 2 ** 20, [4]), firmware: x86HaltingBios() });
  }

  it("reads and writes guest RAM at every width and in bulk, and reads the VT-d unit's version", async () => {
    const qemu = await q35();
    try {
      const q = qemu.qtest;
      expect(await q.endianness()).toBe("little");
      expect(await q.readl(0xfed9_0000)).toBe(0x10n);
      await q.writeq(0x10_0000, 0x0102_0304_0506_0708n);
      expect(await q.readb(0x10_0000)).toBe(8n);
      expect(await q.readw(0x10_0006)).toBe(0x0102n);
      expect(await q.readl(0x10_0002)).toBe(0x0304_0506n);
      expect(await q.readq(0x10_0000)).toBe(0x0102_0304_0506_0708n);
      const bytes = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7 + 3) & 0xff);
      await q.write(0x20_0000, bytes);
      expect(await q.read(0x20_0000, bytes.length)).toEqual(bytes);
      await q.memset(0x20_0010, 16, 0xa5);
      expect(await q.read(0x20_000f, 18)).toEqual(Uint8Array.from([bytes[15]!, ...new Array(16).fill(0xa5), bytes[32]!]));
    } finally {
      await qemu.stop();
    }
  });

  it("reaches PCI configuration space through ports 0xCF8/0xCFC (the edu at 00:04.0)", async () => {
    const qemu = await q35();
    try {
      expect(await vtdMachine.pci.read(qemu.qtest, 0x20, 0, 4)).toBe(0x11e8_1234n);
      expect(await vtdMachine.pci.read(qemu.qtest, 0x20, 2, 2)).toBe(0x11e8n);
      expect(await vtdMachine.pci.read(qemu.qtest, 0x28, 0, 4)).toBe(0xffff_ffffn);
    } finally {
      await qemu.stop();
    }
  });

  it("reports a QEMU that cannot start with its error, and leaves nothing running", async () => {
    await expect(QemuProcess.start({ binary: "qemu-system-x86_64", args: ["-machine", "no-such-machine"] })).rejects.toThrow(QemuStartError);
    await expect(QemuProcess.start({ binary: "qemu-system-x86_64", args: ["-machine", "no-such-machine"] })).rejects.toThrow(/no-such-machine/);
    await expect(QemuProcess.start({ binary: "no-such-qemu", args: [] })).rejects.toThrow(/not on PATH/);
    expect(liveQemuCount()).toBe(0);
  });

  it("stops QEMU and reaps it; a QEMU that dies fails what is pending", async () => {
    const qemu = await q35();
    expect(liveQemuCount()).toBe(1);
    const pid = qemu.pid!;
    process.kill(pid, "SIGKILL");
    await qemu.exited;
    await expect(qemu.qtest.readl(0)).rejects.toThrow(QtestError);
    await qemu.stop();
    expect(liveQemuCount()).toBe(0);
    expect(() => process.kill(pid, 0)).toThrow();
  });
});
