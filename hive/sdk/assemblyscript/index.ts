// `import { ... } from "edge-hive"` resolves here (AssemblyScript looks for a package's index.ts).
export * from "./assembly/edge-hive";
