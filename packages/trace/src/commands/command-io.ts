/**
 * Where a command function writes: lines for stdout and stderr, and whether progress may be shown. The command
 * line's own Io (packages/cli) has this shape.
 */
export interface CommandIo {
  out(line: string): void;
  err(line: string): void;
  readonly progress?: boolean;
}

/** Exit codes the command functions return: success, a finding (divergence, failure), a usage error. */
export const EXIT_OK = 0;
export const EXIT_FINDING = 1;
export const EXIT_USAGE = 2;
