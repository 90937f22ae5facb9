// Validate glTF/GLB files with the Khronos glTF validator (npm "gltf-validator").
//   node tools/gltf_validator/validate.mjs FILE.glb...   (after: npm ci --prefix tools/gltf_validator)
// Prints one JSON object per file: {file, errors, warnings, infos, hints, messages}; exits 1 when any
// file has an error or a warning (the bar avatar-jax's exports are held to), 2 on a usage error.
import { readFile } from "node:fs/promises";
import path from "node:path";
import validator from "gltf-validator";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE.glb...");
  process.exit(2);
}
let failed = false;
for (const file of files) {
  const bytes = new Uint8Array(await readFile(file));
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 0,
    externalResourceFunction: (uri) => readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))),
  });
  const issues = report.issues;
  const messages = issues.messages.map((m) => `${["error", "warning", "info", "hint"][m.severity]} ${m.code} ${m.pointer ?? ""}: ${m.message}`);
  console.log(JSON.stringify({ file, errors: issues.numErrors, warnings: issues.numWarnings, infos: issues.numInfos,
                               hints: issues.numHints, messages }));
  failed ||= issues.numErrors > 0 || issues.numWarnings > 0;
}
process.exit(failed ? 1 : 0);
