import {
  createShadowBackend,
  ShadowMirror,
  type EntryReader,
  type GuestMemory,
  type IommuError,
  type IommufdContext,
  type Result,
  type ShadowBackendKind,
  type ShadowReporter,
  type ShadowSource,
} from "@viommu/core";
import type { CdSettings } from "../translate/cd-config.js";

/** How a stream translates, as far as the shadow cares. */
export type ShadowStream = { readonly kind: "blocked" } | { readonly kind: "identity" } | { readonly kind: "stage1"; readonly cd: CdSettings };

interface ShadowSpace {
  readonly key: string;
  readonly cd: CdSettings;
  readonly mirror: ShadowMirror;
  readonly source: ShadowSource;
  readonly streams: Set<number>;
}

interface ShadowDevice {
  readonly devId: number;
  space: string | undefined;
  attached: "none" | "identity" | "space";
}

/**
 * Shadow (caching) mode for a stage-1-only SMMU: for each distinct guest address space (a CD: ASID, TTB0,
 * granule) the VMM keeps a host IOAS mirroring the guest's stage-1 leaves (IOVA → GPA) through core's
 * `ShadowMirror`, resynchronised whenever an invalidation covers them, and attaches the passthrough devices of that
 * space to it. Identity streams (bypass, or the SMMU disabled with GBPA bypass) use the VM's own IOAS (IOVA = GPA);
 * blocked streams are detached. A mapping the back end refuses (the type1 `dmaEntryLimit`) is left out, so DMA
 * there faults, and is written to the host log by the mirror; the refusal is returned to the caller, which tells
 * the guest.
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
    private readonly reporter: ShadowReporter,
  ) {}

  addDevice(devId: number, vsid: number): void {
    this.devices.set(vsid, { devId, space: undefined, attached: "none" });
  }

  hasDevice(vsid: number): boolean {
    return this.devices.has(vsid);
  }

  /** Hot-unplug: the device is detached (DMA blocked) and leaves its space; a space left empty goes. */
  removeDevice(vsid: number): void {
    const d = this.devices.get(vsid);
    if (d === undefined) return;
    if (d.attached !== "none") this.ctx.detach(d.devId);
    d.attached = "none";
    this.leaveSpace(vsid, d.space);
    this.devices.delete(vsid);
  }

  /** The device is now seen at `to`; the caller re-derives its stream from the guest's tables there. */
  renumberDevice(from: number, to: number): void {
    const d = this.devices.get(from);
    if (d === undefined) return;
    const space = d.space === undefined ? undefined : this.spaces.get(d.space);
    if (space?.streams.delete(from)) space.streams.add(to);
    this.devices.delete(from);
    this.devices.set(to, d);
  }

  /** Mappings installed over every space. */
  get mappings(): number {
    let n = 0;
    for (const s of this.spaces.values()) n += s.mirror.entries;
    return n;
  }

  /**
   * Points a device at what its stream now says, then lets go of the space it was in. Returns the first refusal
   * on the way: a host attach that failed, or (for a space built now) shadow mappings the back end would not
   * install.
   */
  setStream(vsid: number, stream: ShadowStream): IommuError | undefined {
    const d = this.devices.get(vsid);
    if (d === undefined) return undefined;
    const previous = d.space;
    const refused = this.attachTo(vsid, d, stream);
    if (previous !== undefined && previous !== d.space) this.leaveSpace(vsid, previous);
    return refused;
  }

  private attachTo(vsid: number, d: ShadowDevice, stream: ShadowStream): IommuError | undefined {
    if (stream.kind === "identity") {
      const r = this.ctx.attach(d.devId, this.ioasId);
      if (r.ok) {
        d.attached = "identity";
        d.space = undefined;
        return undefined;
      }
      this.block(d);
      return this.refused(vsid, r.error);
    }
    if (stream.kind === "blocked") {
      this.block(d);
      return undefined;
    }
    const space = this.spaceFor(stream.cd);
    if (!space.ok) {
      this.block(d);
      return this.refused(vsid, space.error);
    }
    const r = this.ctx.attach(d.devId, space.value.space.mirror.backend.ioasId);
    if (!r.ok) {
      this.block(d);
      this.dropIfUnused(space.value.space);
      return this.refused(vsid, r.error);
    }
    space.value.space.streams.add(vsid);
    d.space = space.value.space.key;
    d.attached = "space";
    return space.value.refused;
  }

  /** A host refusal to give the stream its address space: written to the host log; the stream is blocked. */
  private refused(vsid: number, error: IommuError): IommuError {
    this.reporter.log.record({
      vm: this.reporter.vm,
      source: this.reporter.source,
      kind: "configuration-refused",
      error,
      message: `StreamID 0x${vsid.toString(16)}: the host refused its shadow address space (${error.errno} ${error.message}); the stream is blocked`,
    });
    return error;
  }

  private block(d: ShadowDevice): void {
    if (d.attached !== "none") this.ctx.detach(d.devId);
    d.attached = "none";
    d.space = undefined;
  }

  private leaveSpace(vsid: number, key: string | undefined): void {
    const space = key === undefined ? undefined : this.spaces.get(key);
    if (space === undefined) return;
    space.streams.delete(vsid);
    this.dropIfUnused(space);
  }

  /** A space no stream uses is no longer kept in sync: its mappings and its IOAS go, so a later reuse starts clean. */
  private dropIfUnused(space: ShadowSpace): void {
    if (space.streams.size > 0) return;
    space.mirror.clear();
    this.spaces.delete(space.key);
    // Its devices moved elsewhere first, so its automatic HWPT is gone and the IOAS can be destroyed.
    this.ctx.destroy(space.mirror.backend.ioasId);
  }

  private spaceFor(cd: CdSettings): Result<{ space: ShadowSpace; refused: IommuError | undefined }> {
    const key = `${cd.asid}:${cd.ttb0}:${cd.granuleShift}:${cd.geometry.inputBits}:${cd.epd0 ? 1 : 0}`;
    const existing = this.spaces.get(key);
    if (existing !== undefined) return { ok: true, value: { space: existing, refused: undefined } };
    const backend = createShadowBackend(this.backendKind, this.ctx, this.memory, this.dmaEntryLimit);
    if (!backend.ok) return backend;
    const space: ShadowSpace = {
      key,
      cd,
      mirror: new ShadowMirror(backend.value, this.memory, this.reporter),
      source: { format: cd.format, geometry: cd.geometry, root: cd.ttb0, reader: this.reader },
      streams: new Set(),
    };
    this.spaces.set(key, space);
    return { ok: true, value: { space, refused: this.resync(space, 0, Number.POSITIVE_INFINITY) } };
  }

  /**
   * An invalidation of `asid` (undefined: every ASID) over [address, address + length) (Infinity: all). Returns
   * the first mapping the back end refused, if any.
   */
  invalidate(asid: number | undefined, address: number, length: number): IommuError | undefined {
    let refused: IommuError | undefined;
    for (const space of this.spaces.values()) {
      if (asid !== undefined && space.cd.asid !== asid) continue;
      refused ??= this.resync(space, address, length);
    }
    return refused;
  }

  /** Makes the space equal to the guest's table over the range; with TTB0 disabled (EPD0) nothing is mapped. */
  private resync(space: ShadowSpace, address: number, length: number): IommuError | undefined {
    if (space.cd.epd0) {
      space.mirror.clear();
      return undefined;
    }
    const report = space.mirror.resync(space.source, address, length);
    return report.refused > 0 ? report.firstError : undefined;
  }

  destroy(): void {
    for (const d of this.devices.values()) if (d.attached !== "none") this.ctx.detach(d.devId);
    this.devices.clear();
    for (const space of this.spaces.values()) {
      space.mirror.clear();
      this.ctx.destroy(space.mirror.backend.ioasId);
    }
    this.spaces.clear();
  }
}
