import { EventEmitter } from "eventemitter3";
import { toDisposable, type Disposable } from "./disposable.js";

/** An event map: event name → payload type. */
export type EventMap = Record<string, unknown>;

/** A listener that threw, kept so that a test or the CLI can show it; delivery to others went on. */
export interface ListenerFailure {
  readonly event: string;
  readonly error: unknown;
}

/**
 * Typed events over eventemitter3. eventemitter3 calls listeners in a plain loop, so one throwing listener
 * would starve the rest; every listener is wrapped so that a throw is recorded in `failures` and delivery
 * continues. Events report; nothing a test needs for control flow travels only through them.
 */
export class EventBus<M extends EventMap> {
  private readonly emitter = new EventEmitter();
  readonly failures: ListenerFailure[] = [];

  on<K extends keyof M & string>(event: K, listener: (payload: M[K]) => void): Disposable {
    const wrapped = (payload: M[K]): void => {
      try {
        listener(payload);
      } catch (error) {
        this.failures.push({ event, error });
      }
    };
    this.emitter.on(event, wrapped);
    return toDisposable(() => this.emitter.off(event, wrapped));
  }

  once<K extends keyof M & string>(event: K, listener: (payload: M[K]) => void): Disposable {
    const d = this.on(event, (payload) => {
      d.dispose();
      listener(payload);
    });
    return d;
  }

  emit<K extends keyof M & string>(event: K, payload: M[K]): void {
    this.emitter.emit(event, payload);
  }

  listenerCount(event: keyof M & string): number {
    return this.emitter.listenerCount(event);
  }
}
