// Validate glTF/glb files with the Khronos glTF-Validator; prints one JSON report summary per file.
// Usage: node tools/validate_gltf.js FILE...
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

async function main() {
  for (const file of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {
      uri: path.basename(file),
      externalResourceFunction: (uri) => new Promise((resolve, reject) => {
        fs.readFile(path.join(path.dirname(file), decodeURIComponent(uri)), (err, data) => err ? reject(err) : resolve(new Uint8Array(data)));
      }),
    });
    const issues = report.issues;
    console.log(JSON.stringify({
      file, errors: issues.numErrors, warnings: issues.numWarnings, infos: issues.numInfos,
      messages: issues.messages.filter((m) => m.severity <= 1).map((m) => `${m.code}: ${m.message} (${m.pointer || ""})`),
    }));
  }
}
main().catch((err) => { console.error(String(err)); process.exit(1); });
