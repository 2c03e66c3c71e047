"""Writes crates/data/tests/fixtures/chat_templates.json: chat templates rendered by transformers.

Run with the torch reference venv (transformers 5.23.0, jinja2, gguf 0.19.0):
    /work/main/.venv-torch/bin/python scripts/reference/gen_chat_templates.py
Needs assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch.sh SmolLM2-135M-Instruct).

Rendering goes through transformers' own `render_jinja_template` (what `tokenizer.apply_chat_template(...,
tokenize=False)` calls, with the tokenizer's special tokens passed as keyword arguments). Templates:
- smollm2: `tokenizer.chat_template` of the SmolLM2-135M-Instruct GGUF file, read with the `gguf` package.
- qwen2_5: the ChatML template of Qwen2.5-Instruct (default system prompt, tool branches).
- llama3: the template of Meta-Llama-3-8B-Instruct (`| trim`, BOS from the template).
- mistral: the Mistral-7B-Instruct-style template (system folded into the first user turn, `raise_exception`).
- gemma: Gemma's template (`raise_exception` on a system message, assistant renamed `model`).
- pycompat: a template written for this fixture that uses the Python string methods real templates call
  (`.strip()`, `.startswith()`, `.endswith()`, `.split()`, `.upper()`, `.replace()`), `namespace`, `{% break %}`/
  `{% continue %}`, `loop.last`, `tojson`, `default` and `is defined`.
- tojson: transformers' `tojson` filter with `indent`, `separators`, `sort_keys` and `ensure_ascii`.
Each case is (template, conversation, add_generation_prompt) → the rendered text, or the exception message when
the template raises.
Also writes crates/models/tests/fixtures/gguf/smollm2_sft.json: token ids from transformers' tokenizer of the
SmolLM2 GGUF file (AutoTokenizer.from_pretrained(..., gguf_file=...)) for SFT: per conversation
`apply_chat_template(messages, tokenize=True)`, and per prompt/completion pair TRL's non-chat form
`tokenizer(prompt + completion).input_ids + [eos_token_id]` and its chat form (the same ids as the two-message
conversation) with the number of prompt tokens `apply_chat_template([user], add_generation_prompt=True)` gives.
The `strftime` list holds Python's `datetime.strftime` of fixed UTC instants, for `strftime_now`'s formatting.
"""

import json
from datetime import datetime, timezone
from pathlib import Path

import gguf
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "data" / "tests" / "fixtures" / "chat_templates.json"
SFT_OUT = ROOT / "crates" / "models" / "tests" / "fixtures" / "gguf" / "smollm2_sft.json"
SMOL = ROOT / "assets" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_str(reader, key):
    field = reader.fields[key]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


QWEN2_5 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n"
    "{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n{%- endfor %}\n"
)

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

# Block tags on their own lines exercise trim_blocks + lstrip_blocks.
PYCOMPAT = """{% set ns = namespace(n=0, sys='') %}
{% for m in messages %}
    {% if m.role == 'system' %}
        {% set ns.sys = m.content.strip() %}
        {% continue %}
    {% endif %}
    {% set ns.n = ns.n + 1 %}
    {% if m.content.startswith('STOP') %}
        {% break %}
    {% endif %}
<{{ m.role.upper() }} n={{ ns.n }}{% if ns.sys %} sys={{ ns.sys | tojson }}{% endif %}>
    {{ m.content.replace('\\n', ' / ') }}|{{ m.content.split() | length }} words{% if m.content.endswith('?') %} (question){% endif %}

{% if loop.last %}[last {{ m.get('name', 'anon') }}]{% endif %}
{% endfor %}
{% if add_generation_prompt %}<ASSISTANT>{{ eos_token | default('none') }}{% endif %}
{% if tools is defined and tools %}tools!{% endif %}"""

CONVERSATIONS = {
    "single_turn": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    "system_user_assistant": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "7"},
    ],
    "multi_turn": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello. How can I help?"},
        {"role": "user", "content": "Summarise:\n  line one\n  line two  "},
        {"role": "assistant", "content": "  Two lines.  "},
        {"role": "user", "content": "Thanks?"},
    ],
    "unicode": [
        {"role": "system", "content": "Réponds en français 🇫🇷."},
        {"role": "user", "content": "Übersetze: 猫は可愛い — «ok»\ttab"},
        {"role": "assistant", "content": "Le chat est mignon. ✓"},
    ],
    "empty_content": [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
    ],
    "user_only": [
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    "stop_word": [
        {"role": "user", "content": "first question?"},
        {"role": "assistant", "content": "first answer", "name": "bot"},
        {"role": "user", "content": "STOP here"},
        {"role": "assistant", "content": "never shown"},
    ],
}

# transformers' tojson (json.dumps, ensure_ascii=False by default) with each of its options.
TOJSON = (
    "{{ messages | tojson }}\n{{ messages[0] | tojson(indent=2) }}\n{{ messages | tojson(ensure_ascii=true) }}\n"
    "{{ {'b': 1.5, 'a': [1, -2e20, 0.0001, 1.5e-5, 3.0, none, true, false, 'x\"y\\\\z'], 'c': {}} "
    "| tojson(sort_keys=true) }}\n{{ messages | tojson(separators=(',', ':')) }}\n{{ [] | tojson(indent='\t') }}"
    "{{ {'k': [1, {'n': []}]} | tojson(indent='\t') }}"
)

TOKENS = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
    "qwen2_5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>"},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "pycompat": {"bos_token": "<s>", "eos_token": "</s>"},
    "tojson": {"bos_token": None, "eos_token": None},
}


def main():
    reader = gguf.GGUFReader(str(SMOL))
    templates = {
        "smollm2": gguf_str(reader, "tokenizer.chat_template"),
        "qwen2_5": QWEN2_5,
        "llama3": LLAMA3,
        "mistral": MISTRAL,
        "gemma": GEMMA,
        "pycompat": PYCOMPAT,
        "tojson": TOJSON,
    }
    cases = []
    for name, template in templates.items():
        for conv_name, conv in CONVERSATIONS.items():
            for agp in (False, True):
                kwargs = {k: v for k, v in TOKENS[name].items() if v is not None}
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": agp, **TOKENS[name]}
                try:
                    rendered, _ = render_jinja_template(
                        conversations=[conv], chat_template=template, add_generation_prompt=agp, **kwargs
                    )
                    case["rendered"] = rendered[0]
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                    case["error_class"] = type(e).__name__
                cases.append(case)
    # strftime_now formats the current time; its formatting is checked on fixed instants (UTC).
    strftime = []
    for t in (0, 951782400, 1721692800 + 13 * 3600 + 5 * 60 + 9, 1735689599, 4102444800 + 86399):
        for fmt in ("%d %b %Y", "%Y-%m-%d %H:%M:%S", "%A %B %-d %I%p %j %y %a %%"):
            strftime.append({"unix": t, "format": fmt, "text": datetime.fromtimestamp(t, tz=timezone.utc).strftime(fmt)})
    out = {
        "generator": "scripts/reference/gen_chat_templates.py",
        "transformers": transformers.__version__,
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
        "templates": templates,
        "conversations": CONVERSATIONS,
        "cases": cases,
        "strftime": strftime,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(OUT)
    n_err = sum("error" in c for c in cases)
    write_sft_ids()
    print(f"{OUT}: {len(cases)} cases ({n_err} raise)")


PAIRS = [
    ("What is 2+2?", "4"),
    ("Translate to French: cat", " chat"),
    ("Résumé du film:\n", "Très bien 👍\n"),
]


def ids_of(x):
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True)
    return list(x["input_ids"]) if hasattr(x, "keys") else list(x)


def write_sft_ids():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(SMOL.parent), gguf_file=SMOL.name)
    convs = {}
    for name, conv in CONVERSATIONS.items():
        msgs = [{"role": m["role"], "content": m["content"]} for m in conv]
        convs[name] = ids_of(tok.apply_chat_template(msgs, tokenize=True))
    pairs = []
    for prompt, completion in PAIRS:
        user = [{"role": "user", "content": prompt}]
        full = user + [{"role": "assistant", "content": completion}]
        pairs.append({
            "prompt": prompt,
            "completion": completion,
            "plain_ids": list(tok(prompt + completion)["input_ids"]) + [tok.eos_token_id],
            "plain_prompt_len": len(tok(prompt)["input_ids"]),
            "chat_ids": ids_of(tok.apply_chat_template(full, tokenize=True)),
            "chat_prompt_len": len(ids_of(tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True))),
        })
    out = {
        "generator": "scripts/reference/gen_chat_templates.py",
        "transformers": transformers.__version__,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "conversations": CONVERSATIONS,
        "conversation_ids": convs,
        "pairs": pairs,
    }
    tmp = SFT_OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(SFT_OUT)
    print(f"{SFT_OUT}: {len(convs)} conversations, {len(pairs)} pairs")


if __name__ == "__main__":
    main()
