// Compile contracts/*.sol with the pinned npm solc and write contracts/artifacts/<Name>.json.
// Usage: node contracts/compile.js [--out DIR]   (tests compile into a temp DIR and compare)
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const here = __dirname;
const outIndex = process.argv.indexOf("--out");
const outDir = outIndex > 0 ? process.argv[outIndex + 1] : path.join(here, "artifacts");
const sources = {};
for (const file of fs.readdirSync(here).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(here, file), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);
fs.mkdirSync(outDir, { recursive: true });
for (const [file, contracts] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(contracts)) {
    const artifact = {
      contractName: name,
      sourceName: file,
      compiler: "solc " + solc.version(),
      settings: input.settings,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
    fs.writeFileSync(path.join(outDir, name + ".json"), JSON.stringify(artifact, null, 2) + "\n");
  }
}
