import { err, ok, type Result } from "../errors/errno.js";
import type { UserData, UserDataArray } from "../contract/user-data.js";

/**
 * Linux's type-checked, size-tolerant copies of vendor data (`include/linux/iommu.h`). Drivers use these so
 * that a wrong type, a short struct or trailing garbage answers the kernel's errno.
 */

/** One struct (`iommu_copy_struct_from_user`): type must match, min ≤ len ≤ kernel size; result zero-extended. */
export function copyStructFromUser(data: UserData, type: number, minBytes: number, kernelBytes: number): Result<Uint8Array> {
  if (data.type !== type) return err("EINVAL", `user data type ${data.type}, expected ${type}`);
  if (data.bytes.length < minBytes) return err("EINVAL", `user data of ${data.bytes.length} bytes, minimum ${minBytes}`);
  if (data.bytes.length > kernelBytes) return err("EINVAL", `user data of ${data.bytes.length} bytes exceeds ${kernelBytes}`);
  const out = new Uint8Array(kernelBytes);
  out.set(data.bytes);
  return ok(out);
}

/** One entry of an array (`iommu_copy_struct_from_user_array`): as above per entry, and index < entryNum. */
export function copyStructFromUserArray(array: UserDataArray, type: number, index: number, minBytes: number, kernelBytes: number): Result<Uint8Array> {
  if (array.type !== type) return err("EINVAL", `array type ${array.type}, expected ${type}`);
  if (index >= array.entryNum) return err("EINVAL", `entry ${index} of ${array.entryNum}`);
  if (array.entryLen < minBytes) return err("EINVAL", `entry_len ${array.entryLen} below minimum ${minBytes}`);
  if (array.entryLen > kernelBytes) return err("EINVAL", `entry_len ${array.entryLen} exceeds ${kernelBytes}`);
  const start = index * array.entryLen;
  if (start + array.entryLen > array.bytes.length) return err("EFAULT", "entry beyond the user buffer");
  const out = new Uint8Array(kernelBytes);
  out.set(array.bytes.subarray(start, start + array.entryLen));
  return ok(out);
}

/**
 * The whole array at once (`iommu_copy_struct_from_full_user_array`): shorter entries are zero-extended,
 * longer ones accepted only if the extra bytes are zero (E2BIG otherwise); zero entries: EINVAL.
 */
export function copyStructFromFullUserArray(array: UserDataArray, type: number, kernelBytes: number): Result<Uint8Array[]> {
  if (array.type !== type) return err("EINVAL", `array type ${array.type}, expected ${type}`);
  if (array.entryNum === 0) return err("EINVAL", "empty array");
  if (array.bytes.length < array.entryNum * array.entryLen) return err("EFAULT", "array beyond the user buffer");
  const out: Uint8Array[] = [];
  for (let i = 0; i < array.entryNum; i++) {
    const entry = array.bytes.subarray(i * array.entryLen, (i + 1) * array.entryLen);
    if (entry.length > kernelBytes && entry.subarray(kernelBytes).some((b) => b !== 0)) {
      return err("E2BIG", `entry ${i} has nonzero bytes past ${kernelBytes}`);
    }
    const copy = new Uint8Array(kernelBytes);
    copy.set(entry.subarray(0, Math.min(kernelBytes, entry.length)));
    out.push(copy);
  }
  return ok(out);
}

/** Writes driver output back into the user's data (`iommu_copy_struct_to_user`): same size rules. */
export function copyStructToUser(data: UserData, type: number, minBytes: number, kernelBytes: number, value: Uint8Array): Result<void> {
  if (data.type !== type) return err("EINVAL", `user data type ${data.type}, expected ${type}`);
  if (data.bytes.length < minBytes) return err("EINVAL", `user data of ${data.bytes.length} bytes, minimum ${minBytes}`);
  if (data.bytes.length > kernelBytes) return err("EINVAL", `user data of ${data.bytes.length} bytes exceeds ${kernelBytes}`);
  data.bytes.set(value.subarray(0, data.bytes.length));
  return ok();
}

/**
 * `copyStructFromFullUserArray`'s checks without its copies, for a driver that reads the entries in place (an
 * invalidation array on the queue path): the same errno for the same array, in the same order.
 */
export function checkFullUserArray(array: UserDataArray, type: number, kernelBytes: number): Result<void> {
  if (array.type !== type) return err("EINVAL", `array type ${array.type}, expected ${type}`);
  if (array.entryNum === 0) return err("EINVAL", "empty array");
  if (array.bytes.length < array.entryNum * array.entryLen) return err("EFAULT", "array beyond the user buffer");
  if (array.entryLen > kernelBytes) {
    const bytes = array.bytes;
    for (let i = 0; i < array.entryNum; i++) {
      for (let b = i * array.entryLen + kernelBytes, end = (i + 1) * array.entryLen; b < end; b++) {
        if (bytes[b] !== 0) return err("E2BIG", `entry ${i} has nonzero bytes past ${kernelBytes}`);
      }
    }
  }
  return ok();
}

/**
 * Entry `index` of a checked array (`checkFullUserArray`) as the kernel's struct of `kernelBytes` (a multiple of 4)
 * in little-endian 32-bit halves, written to `into` from `at`: zero-extended when the entry is shorter, as
 * `copyStructFromFullUserArray` copies it. Allocates nothing.
 */
export function readUserArrayEntryWords(array: UserDataArray, index: number, kernelBytes: number, into: Uint32Array, at = 0): void {
  const bytes = array.bytes;
  const start = index * array.entryLen;
  const len = Math.min(array.entryLen, kernelBytes);
  for (let w = 0; w < kernelBytes >>> 2; w++) {
    const o = w * 4;
    if (o + 4 <= len) {
      const b = start + o;
      into[at + w] = (bytes[b]! | (bytes[b + 1]! << 8) | (bytes[b + 2]! << 16) | (bytes[b + 3]! << 24)) >>> 0;
    } else {
      let v = 0;
      for (let k = 0; k < 4 && o + k < len; k++) v |= bytes[start + o + k]! << (8 * k);
      into[at + w] = v >>> 0;
    }
  }
}

/**
 * `copyStructFromUserArray`'s checks for entry `index` without its copy (read it with `readUserArrayEntryWords`):
 * the same errno for the same array.
 */
export function checkUserArrayEntry(array: UserDataArray, type: number, index: number, minBytes: number, kernelBytes: number): Result<void> {
  if (array.type !== type) return err("EINVAL", `array type ${array.type}, expected ${type}`);
  if (index >= array.entryNum) return err("EINVAL", `entry ${index} of ${array.entryNum}`);
  if (array.entryLen < minBytes) return err("EINVAL", `entry_len ${array.entryLen} below minimum ${minBytes}`);
  if (array.entryLen > kernelBytes) return err("EINVAL", `entry_len ${array.entryLen} exceeds ${kernelBytes}`);
  if ((index + 1) * array.entryLen > array.bytes.length) return err("EFAULT", "entry beyond the user buffer");
  return ok();
}
