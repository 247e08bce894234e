// A protobuf-es service descriptor as a grpc-js ServiceDefinition: one method definition per
// rpc, with the standard path /<package.Service>/<Method> and protobuf-es binary (de)serialisers.
// Clients use it as is; the server wraps request decoding (see service-handlers.ts).

import { create, type DescMessage, type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/** "/ddpo.v1.Rewarder/Score": the HTTP/2 path of an rpc, as every gRPC implementation spells it. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Protobuf bytes as a Buffer without copying (grpc-js wants Buffers). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Serialises a message or its init shape (plain object) of the given schema. */
export function encodeMessage(schema: DescMessage, value: unknown): Buffer {
  // create() returns a message of this schema unchanged and fills defaults into a plain object.
  return asBuffer(toBinary(schema, create(schema, value as never)));
}

export function methodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  const { input, output } = method;
  return {
    path: methodPath(method),
    originalName: method.name,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (value) => encodeMessage(input, value),
    requestDeserialize: (bytes: Buffer) => fromBinary(input, bytes),
    responseSerialize: (value) => encodeMessage(output, value),
    responseDeserialize: (bytes: Buffer) => fromBinary(output, bytes),
  };
}

/** Keyed by the rpc's local name ("score"), which is also the key of its handler. */
export function serviceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) definition[method.localName] = methodDefinition(method);
  return definition as ServiceDefinition;
}
