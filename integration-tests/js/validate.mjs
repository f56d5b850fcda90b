// Validates Kubernetes documents against the CRD schemas that kubernetes-models
// publishes on npm (installed by `make setup`). Reads a JSON array of documents on
// stdin; writes a JSON array with, per document, the validator that checked it
// (null when no package models its kind) and the problems found.
import { readFileSync } from "node:fs";

const PACKAGES = {
  "extensions.istio.io": "@kubernetes-models/istio",
  "networking.istio.io": "@kubernetes-models/istio",
  "security.istio.io": "@kubernetes-models/istio",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "gateway.envoyproxy.io": "@kubernetes-models/envoy-gateway",
  "argoproj.io": "@kubernetes-models/argo-rollouts",
};

const version = (pkg) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url))).version;

const docs = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const doc of docs) {
  const [group, ver] = String(doc.apiVersion ?? "").split("/");
  const pkg = PACKAGES[group];
  if (!pkg || !ver) {
    out.push({ validator: null, errors: [] });
    continue;
  }
  let Model;
  try {
    Model = (await import(`${pkg}/${group}/${ver}/${doc.kind}`))[doc.kind];
  } catch {
    Model = undefined;
  }
  if (typeof Model !== "function") {
    out.push({ validator: null, errors: [] });
    continue;
  }
  const validator = `npm ${pkg}@${version(pkg)}`;
  try {
    new Model(doc).validate();
    out.push({ validator, errors: [] });
  } catch (e) {
    out.push({ validator, errors: [String(e.message ?? e)] });
  }
}
process.stdout.write(JSON.stringify(out));
