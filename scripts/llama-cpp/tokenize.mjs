// llama.cpp's tokenization (through node-llama-cpp's prebuilt CPU binaries) of each text in a
// JSON list, with the vocabulary of a GGUF file: prints the id lists as JSON. No BOS, and
// special-token text is not parsed (as `encode(text, add_special_tokens=False)`).
//
//   node tokenize.mjs <model.gguf> <texts.json>
import {readFileSync} from "node:fs";
import {getLlama} from "node-llama-cpp";

const [path, textsPath] = process.argv.slice(2);
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: path, vocabOnly: true});
console.log(JSON.stringify({pre: model.fileInfo.metadata.tokenizer.ggml.pre, ids: texts.map((t) => [...model.tokenize(t, false)])}));
await model.dispose();
