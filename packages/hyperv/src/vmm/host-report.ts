import { HostServices, resolveToken, type HostLogKind, type IommuError, type VirtualMachine } from "@viommu/core";

/**
 * Records what the host refused while carrying out a partition's hypercall (or tearing the partition down) in
 * the host's log: the guest sees only a status, the operator needs the errno and what was asked.
 */
export type HostReport = (kind: HostLogKind, what: string, error?: IommuError) => void;

/** The reporter of one VM's partition, writing to the platform's HostServices.log. */
export function hostReporter(vm: VirtualMachine): HostReport {
  const log = resolveToken(vm.container, HostServices).log;
  const source = `hyperv-pviommu/${vm.name}`;
  return (kind, what, error) => void log.record({ vm: vm.id, source, kind, error, message: error === undefined ? what : `${what}: ${error.errno} ${error.message}` });
}
