// The names the IOMMU's config section accepts (devices, driver modes, IOMMU kinds): light data, so
// that validating a config does not load the IOMMU's model, its driver or its devices.
import * as L from "../core/layout.js";

export type DeviceKind = "nic" | "nvme" | "gpu";
export const DEVICE_KINDS: readonly DeviceKind[] = ["nic", "nvme", "gpu"];

export type IommuMode = "off" | "strict" | "deferred" | "passthrough";
export const IOMMU_MODES: readonly IommuMode[] = ["off", "strict", "deferred", "passthrough"];

export type IommuKind = Exclude<L.IommuKindName, "none">;
export const IOMMU_KINDS = L.IOMMU_KIND_NAMES.filter((kind): kind is IommuKind => kind !== "none");
