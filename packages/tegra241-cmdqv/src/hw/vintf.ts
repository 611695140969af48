import { HOST_OWNER, type MmioRegion, type OwnerId } from "@viommu/core";
import { VCMDQ_STRIDE, VcmdqPage0Reg, type Page0RegName } from "../format/aperture.js";
import type { SidReplacer } from "./guest-command.js";
import type { Vcmdq } from "./vcmdq.js";

const CONFIG_EN = 1 << 0;
const CONFIG_VMID_SHIFT = 1;
const CONFIG_HYP_OWN = 1 << 17;
/** VINTF_CONFIG's defined bits: EN, VMID [16:1], HYP_OWN. */
const CONFIG_MASK = CONFIG_EN | (0xffff << CONFIG_VMID_SHIFT) | CONFIG_HYP_OWN;
const STATUS_ERROR_SHIFT = 1;
/** VINTF_STATUS.STATUS code while an LVCMDQ is in error (QEMU's value; spec §4.3). */
const STATUS_VCMDQ_ERROR = 1;

const page0ByOffset = new Map<number, Page0RegName>(Object.entries(VcmdqPage0Reg).map(([name, offset]) => [offset, name as Page0RegName]));

/**
 * One VINTF (virtual interface) of the CMDQV (spec arm-hyperv-virtio.md §4.3): CONFIG (EN, the VMID its queues'
 * TLBIs carry, HYP_OWN), STATUS, the SID_MATCH / SID_REPLACE pairs, the logical VCMDQs mapped to it and the
 * LVCMDQ error map derived from them. `page0` is its 64 KiB page 0 — the register window of its LVCMDQs that the
 * host maps into a VM, so the guest drives PROD/CONS/CONFIG/GERRORN of its queues without any exit.
 */
export class Vintf implements SidReplacer {
  /** The VM whose memory this VINTF's queues live in (HOST_OWNER for the host's VINTF0). */
  owner: OwnerId = HOST_OWNER;
  readonly sidMatch: Uint32Array;
  readonly sidReplace: Uint32Array;
  /** Global VCMDQs by logical index (CMDQ_ALLOC with ALLOCATED). */
  readonly lvcmdqs: (Vcmdq | undefined)[];
  readonly page0: MmioRegion;
  private config = 0;

  constructor(
    readonly index: number,
    lvcmdqsPerVintf: number,
    sidSlots: number,
  ) {
    this.sidMatch = new Uint32Array(sidSlots);
    this.sidReplace = new Uint32Array(sidSlots);
    this.lvcmdqs = new Array<Vcmdq | undefined>(lvcmdqsPerVintf).fill(undefined);
    this.page0 = {
      read: (offset, size) => this.readPage0(offset, size),
      write: (offset, size, value) => this.writePage0(offset, size, value),
    };
  }

  readConfig(): number {
    return this.config;
  }

  writeConfig(value: number): void {
    this.config = (value & CONFIG_MASK) >>> 0;
    // Enabling lets queues that already have work run.
    if (this.enabled) for (const q of this.lvcmdqs) q?.consume();
  }

  /** VINTF_STATUS: ENABLED follows EN at once; STATUS reports whether an LVCMDQ is in error. */
  readStatus(): number {
    const error = this.lvcmdqs.some((q) => q?.inError) ? STATUS_VCMDQ_ERROR : 0;
    return ((this.config & CONFIG_EN) | (error << STATUS_ERROR_SHIFT)) >>> 0;
  }

  get enabled(): boolean {
    return (this.config & CONFIG_EN) !== 0;
  }

  get hypOwn(): boolean {
    return (this.config & CONFIG_HYP_OWN) !== 0;
  }

  get vmid(): number {
    return (this.config >>> CONFIG_VMID_SHIFT) & 0xffff;
  }

  /**
   * The physical SID of the first enabled SID_MATCH slot whose VIRT_SID equals `vsid`. The slot holds what Linux
   * writes, (vSID << 1) | 1 as a 32-bit register, so a vSID matches through its low 31 bits.
   */
  physicalSid(vsid: number): number {
    for (let s = 0; s < this.sidMatch.length; s++) {
      const match = this.sidMatch[s]!;
      if ((match & 1) === 1 && match >>> 1 === vsid >>> 0) return this.sidReplace[s]!;
    }
    return -1;
  }

  /** LVCMDQ_ERR_MAP as four 32-bit words (bit l = logical VCMDQ l stopped on an error), into `out`. */
  errorMap(out: Uint32Array): Uint32Array {
    out.fill(0);
    for (let l = 0; l < this.lvcmdqs.length && l < 128; l++) {
      if (this.lvcmdqs[l]?.inError) out[l >>> 5] = (out[l >>> 5]! | (1 << (l & 31))) >>> 0;
    }
    return out;
  }

  get hasError(): boolean {
    return this.lvcmdqs.some((q) => q?.inError);
  }

  // ---- page 0: the LVCMDQ aliases of the global VCMDQs ----

  /** The logical VCMDQ a page-0 offset falls in, if mapped (no allocation: this is the doorbell path). */
  private queueAt(offset: number): Vcmdq | undefined {
    if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0) return undefined;
    return this.lvcmdqs[Math.floor(offset / VCMDQ_STRIDE)];
  }

  /** Unmapped LVCMDQs and undefined offsets read as zero. 8-byte reads are two registers, low first. */
  private readPage0(offset: number, size: 4 | 8): bigint {
    const lo = this.read32(offset);
    return size === 8 ? (BigInt(this.read32(offset + 4)) << 32n) | BigInt(lo) : BigInt(lo);
  }

  private read32(offset: number): number {
    const name = page0ByOffset.get(offset % VCMDQ_STRIDE);
    const queue = name === undefined ? undefined : this.queueAt(offset);
    return queue === undefined || name === undefined ? 0 : queue.readPage0(name);
  }

  /** Writes to unmapped LVCMDQs or undefined offsets are ignored. 8-byte writes are two registers, low first. */
  private writePage0(offset: number, size: 4 | 8, value: bigint): void {
    this.write32(offset, Number(value & 0xffff_ffffn));
    if (size === 8) this.write32(offset + 4, Number((value >> 32n) & 0xffff_ffffn));
  }

  private write32(offset: number, value: number): void {
    const name = page0ByOffset.get(offset % VCMDQ_STRIDE);
    const queue = name === undefined ? undefined : this.queueAt(offset);
    if (queue !== undefined && name !== undefined) queue.writePage0(name, value);
  }
}
