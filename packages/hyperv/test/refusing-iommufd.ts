import { err, type ErrnoName, type IommufdContext } from "@viommu/core";

type Refusable = "attach" | "detach" | "destroy" | "hwptAlloc" | "hwptInvalidate" | "ioasAlloc" | "ioasMap" | "ioasUnmap";
type Args<K extends Refusable> = Parameters<IommufdContext[K]>;

/**
 * Makes a VM's real iommufd context refuse chosen calls, as a kernel under memory pressure or with a busy
 * object would: each call of `method` for which `when` holds answers `errno` without doing anything; every
 * other call goes through. Returns the refusal's switch and how many calls it refused.
 */
export function refuse<K extends Refusable>(
  ctx: IommufdContext,
  method: K,
  errno: ErrnoName,
  when: (...args: Args<K>) => boolean = () => true,
): { refused: number; lift(): void } {
  const original = ctx[method].bind(ctx) as (...a: Args<K>) => unknown;
  const state = {
    refused: 0,
    lift: (): void => {
      delete (ctx as unknown as Record<string, unknown>)[method];
    },
  };
  (ctx as unknown as Record<string, unknown>)[method] = (...a: Args<K>): unknown => {
    if (!when(...a)) return original(...a);
    state.refused++;
    const e = err(errno, `refused by the test (${method})`);
    return method === "hwptInvalidate" ? { handled: 0, result: e } : e;
  };
  return state;
}
