/**
 * Vendor payloads, opaque to the core (like Linux's `struct iommu_user_data`): a type tag the vendor
 * defines and the bytes the user passed. Core carries them through and never interprets them.
 */
export interface UserData {
  readonly type: number;
  readonly bytes: Uint8Array;
}

/** An array of vendor entries (like `struct iommu_user_data_array`): `entryNum` entries of `entryLen` bytes each. */
export interface UserDataArray {
  readonly type: number;
  readonly entryLen: number;
  readonly entryNum: number;
  readonly bytes: Uint8Array;
}
