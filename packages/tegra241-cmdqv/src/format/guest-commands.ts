/**
 * The SMMU commands a guest-owned VCMDQ (VINTF_HYP_OWN = 0) executes (spec arm-hyperv-virtio.md §4.5,
 * iommufd.md §7.5). Linux's tegra241_guest_vcmdq_supports_cmd() routes only TLBI_NH_ASID, TLBI_NH_VA and ATC_INV to
 * such a queue; arm_smmu_cmdq_issue_cmdlist() then appends CMD_SYNC to the same queue, so CMD_SYNC runs there too.
 * Everything else (CFGI_*, TLBI_NH_ALL / VAA, TLBI_S2 / NSNH_ALL, PRI_RESP, RESUME, …) must go through the
 * emulated SMMU command queue; on a guest queue it stops the queue with CONS_INDX.ERR = CERROR_ILL.
 * Opcodes are the SMMUv3 CMDQ_OP_* values (command dword 0 bits [7:0]).
 */
export const GUEST_VCMDQ_COMMANDS = [
  { opcode: 0x11, name: "CMD_TLBI_NH_ASID" },
  { opcode: 0x12, name: "CMD_TLBI_NH_VA" },
  { opcode: 0x40, name: "CMD_ATC_INV" },
  { opcode: 0x46, name: "CMD_SYNC" },
] as const;

const allowed = new Set<number>(GUEST_VCMDQ_COMMANDS.map((c) => c.opcode));

/** The opcode of a 16-byte SMMU command from its first 32-bit word. */
export function commandOpcode(word0: number): number {
  return word0 & 0xff;
}

/** Whether a guest-owned VCMDQ executes the command with this opcode. */
export function guestVcmdqAllows(opcode: number): boolean {
  return allowed.has(opcode);
}
