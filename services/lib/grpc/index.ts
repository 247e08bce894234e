// gRPC glue for the ddpo.v1 services: typed handlers and clients from protobuf-es descriptors over
// @grpc/grpc-js, one server bootstrap with health, reflection, auth and TLS.

export { AUTHORIZATION_HEADER, bearerHeader } from "./bearer-token.ts";
export { type CallOptions, type ClientOptions, type ClientTls, createClient, type ServiceClient } from "./client.ts";
export { DEFAULT_MAX_MESSAGE_BYTES } from "./message-size.ts";
export { HEALTH_SERVICE } from "./reflection.ts";
export {
  balancedTarget,
  checkedEndpoint,
  checkedTarget,
  checkedText,
  echoed,
  MAX_NAME_CHARS,
  MAX_PATH_CHARS,
} from "./request-fields.ts";
export {
  DEFAULT_CLOSE_TIMEOUT_MS,
  type RunningServer,
  type ServerTls,
  type ServingStatus,
  type StartServerOptions,
  startServer,
} from "./server.ts";
export { methodPath, serviceDefinition } from "./service-definition.ts";
export { Code, ServiceError } from "./service-error.ts";
export {
  type BoundService,
  bindService,
  type CallContext,
  type ServerStreamingHandler,
  type ServiceImpl,
  type UnaryHandler,
} from "./service-handlers.ts";
