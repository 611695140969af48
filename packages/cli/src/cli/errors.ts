/**
 * How a command fails. A usage error (a bad option or value) exits 2; an input error (a file that cannot be
 * read or written, a malformed input) exits 1. Either is one line on stderr naming the option or file;
 * anything else escaping a command is a bug and is reported with its stack.
 */
export class UsageError extends Error {
  readonly exitCode = 2;
}

export class InputError extends Error {
  readonly exitCode = 1;
}

/** The one-line message of a file-system error, naming what the user called the file. */
export function fileProblem(what: string, path: string, e: unknown): InputError {
  const code = (e as { code?: string }).code;
  const reason =
    code === "ENOENT"
      ? "no such file"
      : code === "EACCES" || code === "EPERM"
        ? "permission denied"
        : code === "EISDIR"
          ? "is a directory"
          : code === "ENOTDIR"
            ? "a path component is not a directory"
            : code === "Z_BUF_ERROR" || code === "Z_DATA_ERROR"
              ? "truncated or corrupt gzip data"
              : e instanceof Error
                ? e.message
                : String(e);
  return new InputError(`${what} ${path}: ${reason}`);
}
