// Server reflection (grpc.reflection.v1 and v1alpha), so grpcurl and other generic clients can
// discover the services and their message types. @grpc/reflection reads serialized
// FileDescriptorProtos from a proto-loader package definition; protobuf-es descriptors carry the
// same FileDescriptorProto, so the compiled-in descriptors feed it and proto/ is not needed at
// run time.

import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";

export const HEALTH_SERVICE = "grpc.health.v1.Health";

/** The files declaring the services and everything they import, each once. */
function filesWithImports(services: readonly DescService[]): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (seen.has(file.name)) return;
    seen.set(file.name, file);
    for (const dependency of file.dependencies) visit(dependency);
  };
  for (const service of services) visit(service.file);
  return [...seen.values()];
}

/** Reflection over the given services plus grpc.health.v1.Health. */
export function reflectionService(services: readonly DescService[]): ReflectionService {
  const definition: PackageDefinition = loadSync(healthProtoPath);
  for (const file of filesWithImports(services)) {
    const bytes = toBinary(FileDescriptorProtoSchema, file.proto);
    // Only fileDescriptorProtos is read; one entry per file is enough.
    definition[`${file.name}.proto`] = { fileDescriptorProtos: [Buffer.from(bytes)] } as never;
  }
  return new ReflectionService(definition, { services: [...services.map((s) => s.typeName), HEALTH_SERVICE] });
}
