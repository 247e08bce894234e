// Checks on the strings a request carries, applied at the edge before they reach Postgres, the
// engine or an error message: a bounded length (an echoed 100k-character id would overflow the
// status trailer) and no NUL (Postgres text cannot hold it).
import { Code, ServiceError } from "./service-error.ts";

/** Ids and names (run, checkpoint, reward, prompt set): at most this many characters. */
export const MAX_NAME_CHARS = 200;
/** Folder paths and host:port endpoints. */
export const MAX_PATH_CHARS = 4096;
/** Longest piece of a request echoed back in an error message. */
export const MAX_ECHO_CHARS = 200;

/** `value` unchanged, or INVALID_ARGUMENT naming `field` when it is too long or holds a NUL. */
export function checkedText(value: string, field: string, maxChars = MAX_NAME_CHARS): string {
  if (value.length > maxChars) {
    throw new ServiceError(Code.INVALID_ARGUMENT, `${field} is ${value.length} characters; at most ${maxChars}`);
  }
  if (value.includes("\0")) throw new ServiceError(Code.INVALID_ARGUMENT, `${field} must not contain a NUL character`);
  return value;
}

/** A piece of input for an error message: cut to MAX_ECHO_CHARS with the full length noted. */
export function echoed(value: string, maxChars = MAX_ECHO_CHARS): string {
  return value.length <= maxChars ? value : `${value.slice(0, maxChars)}... (${value.length} characters)`;
}

/**
 * A host:port endpoint (`127.0.0.1:50051`, `name:443`, `[::1]:50051`), or INVALID_ARGUMENT: a
 * malformed address would otherwise only fail when a channel gives up connecting to it.
 */
export function checkedEndpoint(value: string, field: string): string {
  checkedText(value, field);
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : 0;
  if (!(port >= 1 && port <= 65535)) {
    throw new ServiceError(Code.INVALID_ARGUMENT, `${field} '${value}' is not a host:port address`);
  }
  return value;
}

/**
 * A Sampler fleet's gRPC target, or INVALID_ARGUMENT: a host:port, or several servers behind one
 * target for client-side round_robin (balancedTarget): `ipv4:host:port,host:port` (a fixed list,
 * e.g. from `ddpo up`) or `dns:///name:port` (every address the name resolves to, e.g. a
 * Kubernetes headless service, re-resolved as they change).
 */
export function checkedTarget(value: string, field: string): string {
  checkedText(value, field, MAX_PATH_CHARS);
  const list = /^ipv[46]:(.*)$/.exec(value);
  if (list) {
    list[1]!.split(",").forEach((a, i) => {
      checkedEndpoint(a, `${field} address ${i + 1}`);
    });
    return value;
  }
  const dns = /^dns:(?:\/\/[^/]*\/)?(.*)$/.exec(value);
  if (dns) {
    checkedEndpoint(dns[1]!, field);
    return value;
  }
  return checkedEndpoint(value, field);
}

/** Whether `target` names several servers to balance over (an `ipv4:`, `ipv6:` or `dns:` target). */
export function balancedTarget(target: string): boolean {
  return /^(ipv4|ipv6|dns):/.test(target);
}
