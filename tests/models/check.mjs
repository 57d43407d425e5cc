// Holds Envoy Gateway's and Istio's objects to the TypeScript models that
// @kubernetes-models generates from those projects' CRD schemas, strictly:
// each object is compiled as an object literal of its model's type, and
// TypeScript refuses a property the type does not have (as the API server's
// strict field validation refuses a field the schema does not have), a
// value of the wrong type, or a string outside an enum.
//
//     node tests/models/check.mjs FILE...     # YAML, several documents each
//
// Prints `KIND NAME against MODELS: ok` or each problem with its field, and
// `KIND NAME: no model here` for kinds none of the packages has. Exits 1 on
// any problem. The packages (pinned in package.json) are:
// - @kubernetes-models/envoy-gateway 2.0.0, Envoy Gateway's only one;
// - @kubernetes-models/istio 2.3.0 and 3.0.1: two generations of Istio's
//   schemas (the packages do not name the Istio release; 3.0.1 knows
//   `failStrategy: FAIL_RELOAD`, 2.3.0 does not).

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import YAML from "yaml";

const here = dirname(fileURLToPath(import.meta.url));

// `apiVersion kind` → [the package's name in package.json, the module in it, the type].
const MODELS = {
  "gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy": [
    ["@kubernetes-models/envoy-gateway", "gateway.envoyproxy.io/v1alpha1/EnvoyExtensionPolicy", "IEnvoyExtensionPolicy"],
  ],
  "extensions.istio.io/v1alpha1 WasmPlugin": ["2.3.0", "3.0.1"].map((v) => [
    `istio-models-${v}`, "extensions.istio.io/v1alpha1/WasmPlugin", "IWasmPlugin",
  ]),
  "networking.istio.io/v1alpha3 EnvoyFilter": ["2.3.0", "3.0.1"].map((v) => [
    `istio-models-${v}`, "networking.istio.io/v1alpha3/EnvoyFilter", "IEnvoyFilter",
  ]),
  "security.istio.io/v1 PeerAuthentication": [
    // 2.3.0 has PeerAuthentication only as v1beta1.
    ["istio-models-3.0.1", "security.istio.io/v1/PeerAuthentication", "IPeerAuthentication"],
  ],
};

const version = (pkg) =>
  JSON.parse(readFileSync(join(here, "node_modules", pkg, "package.json"), "utf8")).version;

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: check.mjs FILE...");
  process.exit(2);
}

const dir = mkdtempSync(join(here, ".check-"));
const checks = []; // { file, what }
const lines = [];
try {
  for (const file of files) {
    for (const doc of YAML.parseAllDocuments(readFileSync(file, "utf8"))) {
      const o = doc.toJS();
      if (!o || typeof o !== "object") continue;
      const what = `${o.kind} ${o.metadata?.name ?? "?"}`;
      const models = MODELS[`${o.apiVersion} ${o.kind}`];
      if (!models) {
        lines.push(`${what}: no model here`);
        continue;
      }
      for (const [pkg, module, type] of models) {
        const name = join(dir, `${checks.length}.ts`);
        writeFileSync(
          name,
          `import type { ${type} } from "${pkg}/${module}";\n` +
            `export const o: ${type} = ${JSON.stringify(o, null, 1)};\n`,
        );
        checks.push({ file: name, what, model: `${pkg === "@kubernetes-models/envoy-gateway" ? pkg : "@kubernetes-models/istio"} ${version(pkg)}` });
      }
    }
  }
  const program = ts.createProgram(
    checks.map((c) => c.file),
    {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: [],
    },
  );
  let failed = false;
  for (const c of checks) {
    const source = program.getSourceFile(c.file);
    const problems = ts.getPreEmitDiagnostics(program, source).map((d) => {
      const text = ts.flattenDiagnosticMessageText(d.messageText, "\n  ");
      if (!d.file || d.start === undefined) return text;
      // The object literal starts on line 2: JSON lines, one per field.
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const at = d.file.text.split("\n")[line].trim();
      return `${text}\n    at: ${at}`;
    });
    if (problems.length) {
      failed = true;
      lines.push(`${c.what} against ${c.model}:\n  ${problems.join("\n  ")}`);
    } else {
      lines.push(`${c.what} against ${c.model}: ok`);
    }
  }
  console.log(lines.join("\n"));
  process.exitCode = failed ? 1 : 0;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
