// Greedy generation with llama.cpp (through the npm package node-llama-cpp's prebuilt CPU
// binaries) from a GGUF file. Prints, as JSON, the prompt's token ids, the greedy continuation
// (as `distill generate --ids`) and llama.cpp's five most likely next tokens after the prompt
// with their log-probabilities (full softmax, no sampling filters).
//
//   node generate.mjs <model.gguf> <prompt text> <max tokens>
import {getLlama} from "node-llama-cpp";

const [path, prompt, max] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: path});
const context = await model.createContext({contextSize: 512, batchSize: 512, threads: 2, sequences: 2});
// As `distill generate`: BOS only when the tokenizer adds one, and an empty prompt starts
// from EOS.
let ids = [...model.tokenize(prompt, true)];
if (model.tokens.bos !== null && model.fileInfo.metadata.tokenizer.ggml.add_bos_token) {
    ids = [model.tokens.bos, ...ids];
}
if (ids.length === 0) ids = [model.tokens.eos];

const probe = context.getSequence();
let top = [];
const full = {temperature: 1, topK: 0, topP: 1, minP: 0};
for await (const o of probe.evaluateWithMetadata(ids, {probabilities: true}, full)) {
    top = [...o.probabilities.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([t, p]) => [t, Math.log(p)]);
    break;
}

const sequence = context.getSequence();
const out = [];
for await (const t of sequence.evaluate(ids, {temperature: 0})) {
    // As ours: EOS ends the text and is not part of it.
    if (t === model.tokens.eos) break;
    out.push(t);
    if (out.length >= Number(max)) break;
}
console.log(JSON.stringify({prompt: ids, generated: out, top}));
await context.dispose();
await model.dispose();
