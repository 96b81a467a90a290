// Validate KEDA objects against the CRD schemas shipped in @kubernetes-models/keda.
// Run from a folder whose node_modules holds @kubernetes-models/keda and js-yaml (the test
// copies this file into SWARM_TOOLS_DIR/node). Prints one line per object; exit 1 if any fail.
import fs from "node:fs";
import * as yaml from "js-yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";

const kinds = { ScaledObject, TriggerAuthentication };
let bad = 0;
let seen = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(fs.readFileSync(file, "utf8"))) {
    if (!doc || doc.apiVersion !== "keda.sh/v1alpha1") continue;
    const Kind = kinds[doc.kind];
    if (!Kind) {
      bad++;
      console.log(`FAIL ${file} ${doc.kind}: no schema for this kind`);
      continue;
    }
    seen++;
    try {
      new Kind(doc).validate();
      console.log(`OK   ${file} ${doc.kind}/${doc.metadata.name}`);
    } catch (e) {
      bad++;
      console.log(`FAIL ${file} ${doc.kind}/${doc.metadata.name}: ${e.message}`);
    }
  }
}
console.log(`checked ${seen}, failed ${bad}`);
process.exit(bad ? 1 : 0);
