import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { checkFullUserArray, checkUserArrayEntry, copyStructFromFullUserArray, copyStructFromUserArray, fromBytes, readUserArrayEntryWords } from "../src/index.js";

const TYPE = 7;

describe("reading user arrays in place", () => {
  it("reads an entry as little-endian halves, zero-extended past a short entry", () => {
    const bytes = Uint8Array.of(0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x10, 0xe0, 0xff, 0x7f, 0xaa);
    const words = new Uint32Array(4).fill(0xdead_beef);
    readUserArrayEntryWords({ type: TYPE, entryLen: 14, entryNum: 1, bytes }, 0, 16, words);
    expect([...words].map((w) => w.toString(16))).toEqual(["12", "10000", "ffe01001", "aa7f"]);
  });

  it("refuses an entry longer than the kernel's struct with a nonzero tail (E2BIG), accepts a zero tail", () => {
    const bytes = new Uint8Array(40);
    const array = { type: TYPE, entryLen: 20, entryNum: 2, bytes };
    expect(checkFullUserArray(array, TYPE, 16).ok).toBe(true);
    bytes[38] = 1;
    const refused = checkFullUserArray(array, TYPE, 16);
    expect(refused.ok ? undefined : refused.error.errno).toBe("E2BIG");
  });

  it("accept and refuse what the copies accept and refuse, with the same errno, and read the same words", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 24 }), fc.uint8Array({ maxLength: 96 }), fc.boolean(), (entryNum, entryLen, bytes, wrongType) => {
        const array = { type: wrongType ? TYPE + 1 : TYPE, entryLen, entryNum, bytes };
        const copied = copyStructFromFullUserArray(array, TYPE, 16);
        const checked = checkFullUserArray(array, TYPE, 16);
        expect(checked.ok ? undefined : checked.error.errno).toBe(copied.ok ? undefined : copied.error.errno);
        for (let i = 0; i < entryNum + 1; i++) {
          const one = copyStructFromUserArray(array, TYPE, i, 8, 16);
          const oneChecked = checkUserArrayEntry(array, TYPE, i, 8, 16);
          expect(oneChecked.ok ? undefined : oneChecked.error.errno).toBe(one.ok ? undefined : one.error.errno);
          if (one.ok) {
            const words = new Uint32Array(4);
            readUserArrayEntryWords(array, i, 16, words);
            expect(words).toEqual(fromBytes(one.value, 0, 128));
          }
        }
        if (!copied.ok) return;
        copied.value.forEach((entry, i) => {
          const words = new Uint32Array(4);
          readUserArrayEntryWords(array, i, 16, words);
          expect(words).toEqual(fromBytes(entry, 0, 128));
        });
      }),
    );
  });
});
