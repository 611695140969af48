/**
 * Permission and access bits shared by every format. An entry grants a set of these; a request asks for
 * one. Plain numbers, so the walk can AND them level by level without allocating.
 */
export const Perm = {
  None: 0,
  Read: 1,
  Write: 2,
  Exec: 4,
  /** Unprivileged (user / EL0) access is allowed. */
  User: 8,
  ReadWrite: 3,
  All: 15,
} as const;

/** A set of `Perm` bits. */
export type PermBits = number;

export type AccessKind = "read" | "write";

export function accessPerm(kind: AccessKind): PermBits {
  return kind === "write" ? Perm.Write : Perm.Read;
}

export function permString(perms: PermBits): string {
  return `${perms & Perm.Read ? "r" : "-"}${perms & Perm.Write ? "w" : "-"}${perms & Perm.Exec ? "x" : "-"}${perms & Perm.User ? "u" : "-"}`;
}
