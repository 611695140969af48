import { createShadowBackend, forEachLeaf, Perm, type EntryReader, type IommufdContext, type PermBits, type Result, type ShadowBackend, type ShadowBackendKind, type GuestMemory } from "@viommu/core";
import type { CdSettings } from "../translate/cd-config.js";

/** How a stream translates, as far as the shadow cares. */
export type ShadowStream = { readonly kind: "blocked" } | { readonly kind: "identity" } | { readonly kind: "stage1"; readonly cd: CdSettings };

interface ShadowSpace {
  readonly key: string;
  readonly cd: CdSettings;
  readonly backend: ShadowBackend;
  /** Installed mappings: IOVA → [GPA, bytes]. */
  readonly maps: Map<number, [number, number]>;
  readonly streams: Set<number>;
}

interface ShadowDevice {
  readonly devId: number;
  space: string | undefined;
  attached: "none" | "identity" | "space";
}

/** At most this many table entries are read per resync, so a hostile table cannot make one invalidation unbounded. */
const RESYNC_ENTRY_BUDGET = 1 << 20;

/**
 * Shadow (caching) mode for a stage-1-only SMMU: for each distinct guest address space (a CD: ASID, TTB0,
 * granule) the VMM keeps a host IOAS mirroring the guest's stage-1 leaves (IOVA → GPA), built by walking the
 * guest's tables whenever an invalidation covers them, and attaches the passthrough devices of that space to
 * it. Identity streams (bypass, or the SMMU disabled with GBPA bypass) use the VM's own IOAS (IOVA = GPA);
 * blocked streams are detached.
 */
export class ShadowHost {
  private readonly spaces = new Map<string, ShadowSpace>();
  private readonly devices = new Map<number, ShadowDevice>();

  constructor(
    private readonly ctx: IommufdContext,
    private readonly memory: GuestMemory,
    private readonly reader: EntryReader,
    private readonly ioasId: number,
    private readonly backendKind: ShadowBackendKind,
    private readonly dmaEntryLimit: number | undefined,
  ) {}

  addDevice(devId: number, vsid: number): void {
    this.devices.set(vsid, { devId, space: undefined, attached: "none" });
  }

  hasDevice(vsid: number): boolean {
    return this.devices.has(vsid);
  }

  /** Mappings installed over every space. */
  get mappings(): number {
    let n = 0;
    for (const s of this.spaces.values()) n += s.maps.size;
    return n;
  }

  /** Points a device at what its stream now says. */
  setStream(vsid: number, stream: ShadowStream): Result<void> | undefined {
    const d = this.devices.get(vsid);
    if (d === undefined) return undefined;
    this.leaveSpace(vsid, d);
    if (stream.kind === "blocked") {
      if (d.attached !== "none") this.ctx.detach(d.devId);
      d.attached = "none";
      return undefined;
    }
    if (stream.kind === "identity") {
      const r = this.ctx.attach(d.devId, this.ioasId);
      d.attached = r.ok ? "identity" : "none";
      return r.ok ? undefined : r;
    }
    const space = this.spaceFor(stream.cd);
    if (space === undefined) {
      if (d.attached !== "none") this.ctx.detach(d.devId);
      d.attached = "none";
      return undefined;
    }
    const r = this.ctx.attach(d.devId, space.backend.ioasId);
    if (!r.ok) return r;
    space.streams.add(vsid);
    d.space = space.key;
    d.attached = "space";
    return undefined;
  }

  private leaveSpace(vsid: number, d: ShadowDevice): void {
    if (d.space === undefined) return;
    const space = this.spaces.get(d.space);
    space?.streams.delete(vsid);
    d.space = undefined;
    // A space no stream uses is no longer kept in sync; its mappings go so a later reuse starts clean.
    if (space !== undefined && space.streams.size === 0) {
      for (const [iova, [, size]] of space.maps) space.backend.unmap(iova, size);
      space.maps.clear();
      this.spaces.delete(space.key);
    }
  }

  private spaceFor(cd: CdSettings): ShadowSpace | undefined {
    const key = `${cd.asid}:${cd.ttb0}:${cd.granuleShift}:${cd.geometry.inputBits}:${cd.epd0 ? 1 : 0}`;
    const existing = this.spaces.get(key);
    if (existing !== undefined) return existing;
    const backend = createShadowBackend(this.backendKind, this.ctx, this.memory, this.dmaEntryLimit);
    if (!backend.ok) return undefined;
    const space: ShadowSpace = { key, cd, backend: backend.value, maps: new Map(), streams: new Set() };
    this.spaces.set(key, space);
    this.resync(space, 0, Number.POSITIVE_INFINITY);
    return space;
  }

  /** An invalidation of `asid` (undefined: every ASID) over [address, address + length) (Infinity: all). */
  invalidate(asid: number | undefined, address: number, length: number): void {
    for (const space of this.spaces.values()) {
      if (asid === undefined || space.cd.asid === asid) this.resync(space, address, length);
    }
  }

  /**
   * Makes the space equal to the guest's table over the range: stale mappings removed, current leaves installed.
   * A leaf whose output is not guest RAM, or that the back end refuses (the type1 entry limit), stays unmapped:
   * the device faults there rather than reaching anything else.
   */
  private resync(space: ShadowSpace, address: number, length: number): void {
    const end = Number.isFinite(length) ? address + length : Number.MAX_SAFE_INTEGER;
    for (const [iova, [, size]] of [...space.maps]) {
      if (iova < end && iova + size > address) {
        space.backend.unmap(iova, size);
        space.maps.delete(iova);
      }
    }
    if (space.cd.epd0) return;
    const span = Math.min(end, 2 ** space.cd.geometry.inputBits) - address;
    if (!(span > 0)) return;
    forEachLeaf(
      space.cd.format,
      space.cd.geometry,
      space.cd.ttb0,
      this.reader,
      address,
      span,
      (leaf) => {
        const size = 2 ** leaf.pageShift;
        if (leaf.input < address || leaf.input + size > end || space.maps.has(leaf.input)) return;
        if (!this.memory.contains(leaf.output, size)) return;
        const perms: PermBits = leaf.perms & Perm.ReadWrite;
        if (perms === 0) return;
        if (space.backend.map(leaf.input, leaf.output, size, perms).ok) space.maps.set(leaf.input, [leaf.output, size]);
      },
      RESYNC_ENTRY_BUDGET,
    );
  }

  destroy(): void {
    for (const d of this.devices.values()) if (d.attached !== "none") this.ctx.detach(d.devId);
    this.devices.clear();
    this.spaces.clear();
  }
}
