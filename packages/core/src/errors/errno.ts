/**
 * Host API misuse answers with iommufd's errno semantics. Each errno has one meaning here, as in the
 * kernel's iommufd: EINVAL incompatible or malformed arguments, ENOENT no such object (or a tombstone),
 * EBUSY the object has dependants, EEXIST the slot is taken, EOPNOTSUPP the driver or type does not do
 * this, ENOMEM/ENOSPC out of memory or ids, EOVERFLOW an address range that wraps, EFAULT memory that cannot
 * be accessed as asked (e.g. not contiguous), EIO the hardware refused an entry.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSPC: 28,
  ESPIPE: 29,
  ERANGE: 34,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
} as const;

export type ErrnoName = keyof typeof Errno;

/** A typed error value: the errno by name and number, and what went wrong. */
export interface IommuError {
  readonly errno: ErrnoName;
  readonly code: number;
  readonly message: string;
}

export type Result<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: IommuError };

export function ok<T>(value: T): Result<T>;
export function ok(): Result<void>;
export function ok<T>(value?: T): Result<T | undefined> {
  return value === undefined ? OK_VOID : { ok: true, value };
}

/** The one success without a value: results are read-only, so every `ok()` can share it (nothing allocated). */
const OK_VOID: Result<undefined> = Object.freeze({ ok: true, value: undefined });

export function err<T = never>(errno: ErrnoName, message: string): Result<T> {
  return { ok: false, error: { errno, code: Errno[errno], message } };
}

/** Re-types a failed result for a caller with another success type. */
export function fail<T>(r: { readonly ok: false; readonly error: IommuError }): Result<T> {
  return r;
}

/** The value of a result that must have succeeded (tests, examples); throws with the errno otherwise. */
export function unwrap<T>(r: Result<T>): T {
  if (!r.ok) throw new Error(`${r.error.errno}: ${r.error.message}`);
  return r.value;
}

export function errnoOf(r: Result<unknown>): ErrnoName | undefined {
  return r.ok ? undefined : r.error.errno;
}
