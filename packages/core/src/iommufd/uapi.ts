/**
 * iommufd user-API constants the core itself interprets (values from Linux `include/uapi/linux/iommufd.h`).
 * Vendor type values (vIOMMU, HW queue, vEVENTQ, HWPT data, invalidation data, hw_info types) belong to the
 * vendor packages; the core only knows that 0 means DEFAULT and is always rejected.
 */
export const IommufdObjectType = {
  IOAS: "IOAS",
  HWPT_PAGING: "HWPT_PAGING",
  HWPT_NESTED: "HWPT_NESTED",
  DEVICE: "DEVICE",
  ACCESS: "ACCESS",
  FAULT: "FAULT",
  VIOMMU: "VIOMMU",
  VDEVICE: "VDEVICE",
  HW_QUEUE: "HW_QUEUE",
  VEVENTQ: "VEVENTQ",
} as const;
export type IommufdObjectType = (typeof IommufdObjectType)[keyof typeof IommufdObjectType];

/** `enum iommufd_hwpt_alloc_flags`. */
export const HwptAllocFlag = {
  NEST_PARENT: 1 << 0,
  DIRTY_TRACKING: 1 << 1,
  FAULT_ID_VALID: 1 << 2,
  PASID: 1 << 3,
} as const;

/** `enum iommufd_ioas_map_flags`. */
export const IoasMapFlag = {
  FIXED_IOVA: 1 << 0,
  WRITEABLE: 1 << 1,
  READABLE: 1 << 2,
} as const;

/** IOMMU_HWPT_DIRTY_TRACKING_ENABLE and IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR. */
export const DIRTY_TRACKING_ENABLE = 1 << 0;
export const DIRTY_BITMAP_NO_CLEAR = 1 << 0;

/** `enum iommufd_option` and `enum iommufd_option_ops`. */
export const IommuOption = { RLIMIT_MODE: 0, HUGE_PAGES: 1 } as const;
export const IommuOptionOp = { SET: 0, GET: 1 } as const;

/** `enum iommufd_vfio_ioas_op`. */
export const VfioIoasOp = { GET: 0, SET: 1, CLEAR: 2 } as const;

export const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_VIOMMU_TYPE_DEFAULT = 0;
export const IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;
export const IOMMU_VEVENTQ_TYPE_DEFAULT = 0;
export const IOMMU_HW_INFO_TYPE_DEFAULT = 0;

/** `IOMMU_HW_INFO_FLAG_INPUT_TYPE`: the caller names the hw_info type it wants. */
export const IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1 << 0;

/** `enum iommufd_hw_capabilities`. */
export const HwCapability = {
  DIRTY_TRACKING: 1 << 0,
  PCI_PASID_EXEC: 1 << 1,
  PCI_PASID_PRIV: 1 << 2,
  PCI_ATS_NOT_SUPPORTED: 1 << 3,
} as const;

/** vEVENT header: u32 flags, u32 sequence. */
export const VEVENT_HEADER_BYTES = 8;
export const IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1 << 0;
/** Sequence numbers wrap from INT_MAX to 0. */
export const VEVENT_SEQUENCE_MASK = 0x7fffffff;

/** `IOMMU_IOAS_UNMAP` with iova 0 and this length unmaps everything. */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/**
 * Upper bounds the 2026 hardening added (vEVENTQ depth, invalidation entry count and size). The exact
 * kernel constants were not available; these are the model's, with the kernel's errno (EINVAL).
 */
export const VEVENTQ_DEPTH_MAX = 1 << 19;
export const INVALIDATE_ENTRY_NUM_MAX = 1 << 16;
export const INVALIDATE_ENTRY_LEN_MAX = 4096;

/** Notional sizes of the core's own structs: a driver reporting less has a bug (EOPNOTSUPP, as in Linux). */
export const CORE_VIOMMU_SIZE = 64;
export const CORE_VDEVICE_SIZE = 32;
export const CORE_HW_QUEUE_SIZE = 48;

/** `struct iommu_hwpt_pgfault` (40 bytes) and `struct iommu_hwpt_page_response` (8 bytes). */
export const PGFAULT_BYTES = 40;
export const PAGE_RESPONSE_BYTES = 8;
export const PgfaultFlag = { PASID_VALID: 1 << 0, LAST_PAGE: 1 << 1 } as const;
export const PgfaultPerm = { READ: 1 << 0, WRITE: 1 << 1, EXEC: 1 << 2, PRIV: 1 << 3 } as const;
export const PageResponseCode = { SUCCESS: 0, INVALID: 1 } as const;
