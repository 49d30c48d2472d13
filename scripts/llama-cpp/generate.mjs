// Greedy generation with llama.cpp (through the npm package node-llama-cpp's prebuilt CPU
// binaries) from a GGUF file: prints {"prompt": [ids], "generated": [ids]} as JSON, as
// `distill generate --ids` does.
//
//   node generate.mjs <model.gguf> <prompt text> <max tokens>
import {getLlama} from "node-llama-cpp";

const [path, prompt, max] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: path});
const context = await model.createContext({contextSize: 512, batchSize: 512, threads: 2});
const sequence = context.getSequence();
// As `distill generate`: the tokenizer's own special tokens (BOS when it adds one), and an
// empty prompt starts from EOS.
let ids = [...model.tokenize(prompt, true)];
if (model.tokens.bos !== null && model.fileInfo.metadata.tokenizer.ggml.add_bos_token) {
    ids = [model.tokens.bos, ...ids];
}
if (ids.length === 0) ids = [model.tokens.eos];
const out = [];
for await (const t of sequence.evaluate(ids, {temperature: 0})) {
    // As ours: EOS ends the text and is not part of it.
    if (t === model.tokens.eos) break;
    out.push(t);
    if (out.length >= Number(max)) break;
}
console.log(JSON.stringify({prompt: ids, generated: out}));
await context.dispose();
await model.dispose();
