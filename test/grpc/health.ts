// grpc.health.v1.Health/Check through a plain grpc-js client (no token, none of our glue), so
// the tests see what any health checker sees.
import { type Client, credentials, type ServiceError as GrpcError, makeGenericClientConstructor } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

/** The serving status ("SERVING", "NOT_SERVING", ...) of `service` ("" for the whole server). */
export function healthCheck(address: string, service: string): Promise<string> {
  const Health = makeGenericClientConstructor(healthService, "Health");
  const client = new Health(address, credentials.createInsecure()) as unknown as Client & {
    Check: (
      request: { service: string },
      done: (error: GrpcError | null, response: { status: string }) => void,
    ) => void;
  };
  return new Promise<string>((resolve, reject) =>
    client.Check({ service }, (error, response) => (error ? reject(error) : resolve(response.status))),
  ).finally(() => client.close());
}
