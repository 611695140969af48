import { readFileSync, writeFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { fileProblem } from "./errors.js";

/**
 * Reads a file the user named (`-` is stdin), gunzipping it when it is gzip (by magic, so a `.gz` suffix is
 * not needed, and a truncated archive is an error rather than silently short data).
 */
export function readInput(path: string, option: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = path === "-" ? readFileSync(0) : readFileSync(path);
  } catch (e) {
    throw fileProblem(option, path === "-" ? "(stdin)" : path, e);
  }
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw fileProblem(option, path, e);
    }
  }
  return bytes;
}

export function readInputText(path: string, option: string): string {
  return new TextDecoder().decode(readInput(path, option));
}

export function writeOutput(path: string, option: string, bytes: Uint8Array): void {
  try {
    writeFileSync(path, bytes);
  } catch (e) {
    throw fileProblem(option, path, e);
  }
}
