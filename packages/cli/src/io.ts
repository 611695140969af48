/** Where a command writes: stdout lines, stderr lines, and whether progress may be shown. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  /** A terminal that wants progress (false with --json or when piped). */
  readonly progress: boolean;
}

export function processIo(json: boolean): Io {
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    progress: !json && process.stderr.isTTY === true,
  };
}

/** A bufferring Io for tests. */
export function memoryIo(): Io & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, out: (l) => lines.push(l), err: (l) => errors.push(l), progress: false };
}

/** A fixed-width text table. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headers), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
