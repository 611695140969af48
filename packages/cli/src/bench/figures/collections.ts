import { newWalkResult, NO_PASID } from "@viommu/core";
import { countCollections } from "../gc-count.js";
import { BenchRefused, type FigureResult, type OneShotSpec } from "../harness.js";
import { hitSetup, HIT_PAGES } from "./translate-hit.js";

const NAME = "dma-device-hit-collections-per-million";

/** Garbage collections per million IOTLB hits through `DmaDevice.translate`: zero when nothing is allocated per access. */
export const hitCollections: OneShotSpec = {
  name: NAME,
  yields: [NAME],
  async oneShot(options): Promise<FigureResult[]> {
    const s = hitSetup();
    try {
      const device = s.b.device;
      const out = newWalkResult();
      const total = options.quick ? 200_000 : 2_000_000;
      let failed = 0;
      const run = (n: number): void => {
        for (let i = 0; i < n; i++) {
          device.translate(s.iovas[i & (HIT_PAGES - 1)]!, false, NO_PASID, out);
          if (!out.ok || out.output !== s.expected.get(s.keys[i & (HIT_PAGES - 1)]!)) failed++;
        }
      };
      // Optimised before counting: code still in the interpreter or baseline tier boxes doubles it handles.
      for (let warm = 0; warm < 5; warm++) run(300_000);
      const misses = s.b.unit.iotlb.misses;
      const gcs = await countCollections(() => run(total));
      if (failed > 0) throw new BenchRefused(NAME, `${failed} translations faulted or differed from the mapping`);
      if (s.b.unit.iotlb.misses !== misses) throw new BenchRefused(NAME, "IOTLB misses in a figure of hits");
      return [{ name: NAME, value: Math.round((gcs * 1e6) / total), unit: "collections", verified: true, goal: "0", note: `${total} hits counted` }];
    } finally {
      s.b.dispose();
    }
  },
};
