import type { ByteFields } from "../format/byte-layout.js";
import type { inputDeviceDomainLayout } from "../format/device-domain.js";
import type {
  attachDeviceDomainInputLayout,
  configureDeviceDomainInputLayout,
  createDeviceDomainInputLayout,
  deleteDeviceDomainInputLayout,
  detachDeviceDomainInputLayout,
  flushDeviceDomainInputLayout,
  flushDeviceDomainListInputLayout,
  iommuFlushVaElementLayout,
} from "../format/device-domain-hypercalls.js";
import type { gpaPageListElementLayout, mapDeviceGpaPagesInputLayout, unmapDeviceGpaPagesInputLayout } from "../format/device-gpa-pages.js";
import type { HvDeviceId } from "../format/device-id.js";
import type { attachDeviceInputLayout, detachDeviceInputLayout } from "../format/direct-attach.js";
import { HvStatus, type HvStatusCode } from "../format/hv-status.js";
import { HV_PARTITION_ID_SELF } from "../format/hypercalls.js";
import { getIommuCapabilitiesOutputLayout, getLogicalDevicePropertyOutputLayout, HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU } from "../format/iommu-discovery.js";
import type { getIommuCapabilitiesInputLayout, getLogicalDevicePropertyInputLayout } from "../format/iommu-discovery.js";
import { readStruct } from "../format/byte-layout.js";
import type { CallContext, CallOutcome, DecodedCall } from "./call-context.js";
import type { DeviceDomains, DomainConfig } from "./device-domains.js";
import { MAX_LOGICAL_DEVICE_ID, ridOfDeviceId, type DeviceState } from "./partition-devices.js";

/**
 * Handlers of the device-domain (pvIOMMU) hypercalls. Each checks what the hypervisor checks before acting:
 * the partition is the caller's own, the VTL is 0 (the model has no VTLs), the device and domain exist. The
 * hypervisor's exact status for each refusal is not public; the model's choices are: another partition →
 * INVALID_PARTITION_ID; a malformed value → INVALID_PARAMETER; no such device or domain → NOT_FOUND; a domain or
 * device in a state that forbids the call → OPERATION_DENIED.
 */

type In<L extends Parameters<typeof readStruct>[0]> = DecodedCall<ByteFields<L>>;
type DeviceDomainFields = ByteFields<typeof inputDeviceDomainLayout>;

const status = (s: HvStatusCode): CallOutcome => ({ status: s });

function partitionProblem(c: CallContext, id: bigint): HvStatusCode | undefined {
  return id === HV_PARTITION_ID_SELF || id === c.partitionId ? undefined : HvStatus.HV_STATUS_INVALID_PARTITION_ID;
}

function domainProblem(c: CallContext, d: DeviceDomainFields): HvStatusCode | undefined {
  if (d.owner_vtl.use_target_vtl && d.owner_vtl.target_vtl !== 0) return HvStatus.HV_STATUS_INVALID_PARAMETER;
  return partitionProblem(c, d.partition_id);
}

function domains(c: CallContext): DeviceDomains {
  // The dispatcher answers INVALID_HYPERCALL_CODE for these calls when the partition has no pvIOMMU.
  return c.domains!;
}

/** The device a hypercall names; a status when it names none the partition has. */
function device(c: CallContext, id: HvDeviceId, create: boolean): DeviceState | HvStatusCode {
  const rid = ridOfDeviceId(id);
  if (rid === undefined) return HvStatus.HV_STATUS_INVALID_PARAMETER;
  const dev = create ? c.devices.getOrCreate(rid) : c.devices.get(rid);
  if (dev === undefined) return create ? HvStatus.HV_STATUS_NO_RESOURCES : HvStatus.HV_STATUS_NOT_FOUND;
  return dev;
}

export function getIommuCapabilities(c: CallContext, call: In<typeof getIommuCapabilitiesInputLayout>): CallOutcome {
  const p = partitionProblem(c, call.input.partition_id);
  if (p !== undefined) return status(p);
  const caps = readStruct(getIommuCapabilitiesOutputLayout, c.capabilities!);
  return status(call.output(getIommuCapabilitiesOutputLayout, caps));
}

/** Every logical id the VMM answers for is behind the pvIOMMU: its passthrough devices and its emulated ones. */
export function getLogicalDeviceProperty(c: CallContext, call: In<typeof getLogicalDevicePropertyInputLayout>): CallOutcome {
  const p = partitionProblem(c, call.input.partition_id);
  if (p !== undefined) return status(p);
  if (call.input.code !== HV_LOGICAL_DEVICE_PROPERTY_PVIOMMU) return status(HvStatus.HV_STATUS_UNKNOWN_PROPERTY);
  if (call.input.logical_device_id > BigInt(MAX_LOGICAL_DEVICE_ID)) return status(HvStatus.HV_STATUS_NOT_FOUND);
  return status(call.output(getLogicalDevicePropertyOutputLayout, { device_iommu: { HV_DEVICE_IOMMU_ENABLED: 1 } }));
}

export function createDeviceDomain(c: CallContext, call: In<typeof createDeviceDomainInputLayout>): CallOutcome {
  const d = call.input.device_domain;
  const p = domainProblem(c, d);
  if (p !== undefined) return status(p);
  return status(domains(c).create(d.domain_id.id, d.domain_id.type));
}

export function deleteDeviceDomain(c: CallContext, call: In<typeof deleteDeviceDomainInputLayout>): CallOutcome {
  const d = call.input.device_domain;
  const p = domainProblem(c, d);
  if (p !== undefined) return status(p);
  return status(domains(c).delete(d.domain_id.id, d.domain_id.type));
}

/**
 * translation_enabled = 0 is the identity domain (blocked must then be 0: the hypervisor requires blocked and
 * paging domains to keep translation on); translation_enabled with blocked blocks DMA; otherwise the domain
 * translates through the x86-64 table at page_table_root, 5-level when first_stage_paging_mode is 1.
 */
export function configureDeviceDomain(c: CallContext, call: In<typeof configureDeviceDomainInputLayout>): CallOutcome {
  const d = call.input.device_domain;
  const p = domainProblem(c, d);
  if (p !== undefined) return status(p);
  const flags = call.input.settings.flags;
  const root = call.input.settings.page_table_root;
  let config: DomainConfig;
  if (!flags.translation_enabled) {
    if (flags.blocked) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
    config = { kind: "identity" };
  } else if (flags.blocked) config = { kind: "blocked" };
  else {
    if (root >= 1n << 52n) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
    config = { kind: "paging", root: Number(root), levels: flags.first_stage_paging_mode ? 5 : 4 };
  }
  return status(domains(c).configure(d.domain_id.id, d.domain_id.type, config));
}

export function attachDeviceDomain(c: CallContext, call: In<typeof attachDeviceDomainInputLayout>): CallOutcome {
  const d = call.input.device_domain;
  const p = domainProblem(c, d);
  if (p !== undefined) return status(p);
  const dev = device(c, call.input.device_id, true);
  if (typeof dev === "number") return status(dev);
  return status(domains(c).attach(d.domain_id.id, d.domain_id.type, dev));
}

export function detachDeviceDomain(c: CallContext, call: In<typeof detachDeviceDomainInputLayout>): CallOutcome {
  const p = partitionProblem(c, call.input.partition_id);
  if (p !== undefined) return status(p);
  const dev = device(c, call.input.device_id, false);
  if (typeof dev === "number") return status(dev);
  return status(domains(c).detach(dev));
}

/** The flush carries no flag the model knows: flags must be 0. */
export function flushDeviceDomain(c: CallContext, call: In<typeof flushDeviceDomainInputLayout>): CallOutcome {
  const d = call.input.device_domain;
  const p = domainProblem(c, d);
  if (p !== undefined) return status(p);
  if (call.input.flags !== 0) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  return status(domains(c).flush(d.domain_id.id, d.domain_id.type));
}

/**
 * The entries are in the IOMMU format only when HV_FLUSH_DEVICE_DOMAIN_LIST_IOMMU_FORMAT is set (Linux always
 * sets it); the model knows no other entry format and refuses a list without it.
 */
export function flushDeviceDomainList(c: CallContext, call: DecodedCall<ByteFields<typeof flushDeviceDomainListInputLayout>, ByteFields<typeof iommuFlushVaElementLayout>>): CallOutcome {
  const d = call.input.device_domain;
  const p = domainProblem(c, d) ?? (call.input.flags.iommu_format ? undefined : HvStatus.HV_STATUS_INVALID_PARAMETER);
  if (p !== undefined) return { status: p, done: call.repStart };
  const entries = call.reps.map((r) => r.iova);
  return domains(c).flushList(d.domain_id.id, d.domain_id.type, entries, call.repStart, call.repEnd);
}

const PAGE = 4096n;
const SAFE_PAGES = 2n ** 41n;

/**
 * READABLE is required (Linux always sets it) and WRITABLE is the only other flag a device map may carry. The
 * device VA base must be page aligned and the whole list must stay below 2^53.
 */
export function mapDeviceGpaPages(c: CallContext, call: DecodedCall<ByteFields<typeof mapDeviceGpaPagesInputLayout>, ByteFields<typeof gpaPageListElementLayout>>): CallOutcome {
  const d = call.input.device_domain;
  const f = call.input.map_flags;
  const vtl = call.input.target_vtl;
  const base = call.input.target_device_va_base;
  let p = domainProblem(c, d);
  if (p === undefined && vtl.use_target_vtl && vtl.target_vtl !== 0) p = HvStatus.HV_STATUS_INVALID_PARAMETER;
  const otherFlags = f.KERNEL_EXECUTABLE | f.USER_EXECUTABLE | f.ADJUSTABLE | f.NO_ACCESS | f.NOT_CACHED | f.LARGE_PAGE;
  if (p === undefined && (!f.READABLE || otherFlags)) p = HvStatus.HV_STATUS_INVALID_PARAMETER;
  if (p === undefined && (base % PAGE !== 0n || base / PAGE + BigInt(call.repCount) > SAFE_PAGES)) p = HvStatus.HV_STATUS_INVALID_PARAMETER;
  if (p !== undefined) return { status: p, done: call.repStart };
  // A frame number no guest page can have becomes -1, which the domain refuses at that rep.
  const gpaPages = call.reps.map((r) => (r.gpa_page_number < SAFE_PAGES ? Number(r.gpa_page_number) : -1));
  return domains(c).mapPages(d.domain_id.id, d.domain_id.type, Number(base / PAGE), f.WRITABLE === 1, gpaPages, call.repStart, call.repEnd);
}

export function unmapDeviceGpaPages(c: CallContext, call: In<typeof unmapDeviceGpaPagesInputLayout>): CallOutcome {
  const d = call.input.device_domain;
  const base = call.input.target_device_va_base;
  let p = domainProblem(c, d);
  if (p === undefined && (base % PAGE !== 0n || base / PAGE + BigInt(call.repCount) > SAFE_PAGES)) p = HvStatus.HV_STATUS_INVALID_PARAMETER;
  if (p !== undefined) return { status: p, done: call.repStart };
  return domains(c).unmapPages(d.domain_id.id, d.domain_id.type, Number(base / PAGE), call.repStart, call.repEnd);
}

/**
 * Direct attach: the device is given to the partition, which then translates with its own GPA map (stage 2
 * alone). The logical id is required (flag logical_id): the partition names the device by it in later calls.
 */
export function attachDevice(c: CallContext, call: In<typeof attachDeviceInputLayout>): CallOutcome {
  const p = partitionProblem(c, call.input.partition_id);
  if (p !== undefined) return status(p);
  if (!call.input.attdev_flags.logical_id || call.input.attdev_vtl !== 0) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  const dev = device(c, call.input.device_id, false);
  if (typeof dev === "number") return status(dev);
  if (dev.direct !== undefined || c.devices.byDirectId(call.input.logical_devid) !== undefined) return status(HvStatus.HV_STATUS_INVALID_PARAMETER);
  return status(domains(c).directAttach(dev, call.input.logical_devid));
}

export function detachDevice(c: CallContext, call: In<typeof detachDeviceInputLayout>): CallOutcome {
  const p = partitionProblem(c, call.input.partition_id);
  if (p !== undefined) return status(p);
  const dev = c.devices.byDirectId(call.input.logical_devid);
  if (dev === undefined) return status(HvStatus.HV_STATUS_NOT_FOUND);
  return status(domains(c).directDetach(dev));
}
