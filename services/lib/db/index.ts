// Persistence: the embedded server, connections and migrations, data access, the trajectory recorder.

export * from "./database.ts";
export * from "./embedded.ts";
export * from "./queries.ts";
export * from "./recorder.ts";
export * from "./schema.ts";
