#!/usr/bin/env bash
# Copies config/default-policy.json into wrangler.toml's ROUTE_POLICY var (one line of JSON).
# A unit test (core::policy::tests) fails when the two disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
node --input-type=module -e '
import fs from "node:fs";
const policy = JSON.stringify(JSON.parse(fs.readFileSync("config/default-policy.json", "utf8")));
const toml = fs.readFileSync("wrangler.toml", "utf8");
const next = toml.replace(/ROUTE_POLICY = \x27\x27\x27[\s\S]*?\x27\x27\x27/, "ROUTE_POLICY = \x27\x27\x27" + policy + "\x27\x27\x27");
fs.writeFileSync("wrangler.toml", next);
console.log(next === toml ? "wrangler.toml already in sync" : "wrangler.toml updated");
'
