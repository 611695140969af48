export interface Disposable {
  dispose(): void;
}

/**
 * Collects disposables and disposes them together, newest first. tsyringe disposes neither child
 * containers nor `useValue` instances, so whoever creates them tracks them here.
 */
export class DisposableStore implements Disposable {
  private readonly items: Disposable[] = [];
  private disposed = false;

  add<T extends Disposable>(item: T): T {
    if (this.disposed) item.dispose();
    else this.items.push(item);
    return item;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    while (this.items.length > 0) this.items.pop()!.dispose();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}

export function toDisposable(fn: () => void): Disposable {
  let done = false;
  return {
    dispose(): void {
      if (done) return;
      done = true;
      fn();
    },
  };
}
