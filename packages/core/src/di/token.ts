import type { DependencyContainer, InjectionToken } from "tsyringe";

/**
 * An injection token that carries its type, declared right above its interface with the same name:
 * `export const IdAllocators = token<IdAllocators>("IdAllocators")`. `resolveToken` then returns `T`.
 */
export type Token<T> = InjectionToken<T> & { readonly __type?: T };

export function token<T>(name: string): Token<T> {
  return Symbol.for(`viommu:${name}`) as Token<T>;
}

export function resolveToken<T>(container: DependencyContainer, t: Token<T>): T {
  return container.resolve<T>(t);
}

export function resolveAllTokens<T>(container: DependencyContainer, t: Token<T>): T[] {
  return container.isRegistered(t, true) ? container.resolveAll<T>(t) : [];
}

export type { DependencyContainer } from "tsyringe";
