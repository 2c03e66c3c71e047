"""Writes the SmolLM2 tokenizer fixture and the SFT truncation reference for crates/models/tests/sft_truncation.rs.

Run with the data reference venv (scripts/reference/setup.sh data; transformers 5.23.0, tokenizers 0.23.3,
gguf 0.19.0, jinja2):
    .venv-data/bin/python scripts/reference/gen_sft_truncation.py
Needs assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch.sh SmolLM2-135M-Instruct) and
assets/data/sft/ (scripts/fetch-datasets.sh && scripts/make-sft-tasks.sh).

1. crates/models/tests/fixtures/smollm2_tokenizer/: SmolLM2-135M-Instruct's tokenizer (tokenizer.json,
   tokenizer_config.json with its chat template) as transformers builds it from the GGUF file: the metadata is read
   with the `gguf` package (transformers' own GGUF reader imports torch, which is not needed for metadata), and
   transformers' `convert_gguf_tokenizer` builds the tokenizer exactly as `AutoTokenizer.from_pretrained(...,
   gguf_file=...)` does. Checked against the ids of crates/models/tests/fixtures/gguf/smollm2.json (produced through
   transformers' full GGUF path). Committed, so the Rust tests need no download.
2. crates/models/tests/fixtures/smollm2_sft_truncation.json: for long prompt/completion, alpaca and chat records
   (real e-mails and tweets from assets/data/sft plus a few written here), the token ids and labels of the SFT
   example after truncation, and the ids of the generation prompt fitted to a budget. Tokenisation and chat
   rendering are transformers' (`apply_chat_template` with `tokenize=False`, then `tokenizer(text,
   add_special_tokens=False)` with offsets for the completion mask, as TRL's completion-only loss); the cutting
   rule is the one documented on `finetune_data::sft::TruncationMode`, written out below from its description:
   - keep_start / keep_end: the first / last max_seq_length tokens (TRL's `truncation_mode`);
   - keep_completion: the user content (prompt; alpaca under a template: instruction + "\\n\\n" + input; chat: the
     last non-assistant, non-system message before the last assistant turn) is cut at token starts (its own
     tokenisation's offsets): keeping k of its n tokens keeps the first ceil(k/2) and the last floor(k/2); the
     largest k whose whole example fits is found by bisection (k = n is too long; k = 0 fits or the example falls
     back to keep_start on the k = 0 rendering).
"""

import json
from pathlib import Path

import gguf
import tokenizers
import transformers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.integrations.gguf.gguf_tokenizer_mapping import (
    _SPECIAL_TOKENS,
    GGUF_TOKENIZER_MAPPING,
    convert_gguf_tokenizer,
)

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "assets" / "SmolLM2-135M-Instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
FIX = ROOT / "crates" / "models" / "tests" / "fixtures"
TOK_DIR = FIX / "smollm2_tokenizer"
OUT = FIX / "smollm2_sft_truncation.json"
SFT = ROOT / "assets" / "data" / "sft"
IGNORE = -100


def build_tokenizer():
    """transformers' get_gguf_tokenizer + convert_gguf_tokenizer, with the metadata read by the gguf package."""
    reader = gguf.GGUFReader(str(SMOL))
    meta = {k: f.contents() for k, f in reader.fields.items()}
    grouped = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tok_dict, tok_config = grouped["tokenizer"], grouped["tokenizer_config"]
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        tok_config[name] = tok_dict["tokens"][token_id] if token_id is not None else None
    backend, _ = convert_gguf_tokenizer(meta["general.architecture"], tok_dict)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **tok_config)
    TOK_DIR.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(TOK_DIR))
    # Only the files the Rust loader reads are kept.
    for p in TOK_DIR.iterdir():
        if p.name not in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            p.unlink()
    # Written without indentation: a third of the size, the same tokenizer.
    tj = TOK_DIR / "tokenizer.json"
    tj.write_text(json.dumps(json.loads(tj.read_text(encoding="utf-8")), ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    loaded = AutoTokenizer.from_pretrained(str(TOK_DIR))
    ref = json.loads((FIX / "gguf" / "smollm2.json").read_text(encoding="utf-8"))
    for text, ids in zip(ref["texts"], ref["ids"]):
        got = loaded(text)["input_ids"]
        assert got == ids, (text, got, ids)
    return loaded


class Sft:
    def __init__(self, tok):
        self.tok = tok

    def render(self, msgs, agp):
        if not msgs and not agp:
            return ""
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp)

    def plain_prompt(self, rec):
        if "prompt" in rec:
            return rec["prompt"], rec["completion"]
        raise ValueError("only prompt/completion records are used without a template here")

    def user_and_reply(self, rec):
        if "prompt" in rec:
            return rec["prompt"], rec["completion"]
        if rec.get("input"):
            return f"{rec['instruction']}\n\n{rec['input']}", rec["output"]
        return rec["instruction"], rec["output"]

    def pieces(self, rec, chat_template):
        """(prompt text, full text, bos, eos) of a record: the completion is full[len(prompt):]."""
        if "messages" in rec:
            msgs = rec["messages"]
            assert msgs[-1]["role"] == "assistant" and sum(m["role"] == "assistant" for m in msgs) == 1
            return self.render(msgs[:-1], True), self.render(msgs, False), None, None
        if chat_template:
            user, reply = self.user_and_reply(rec)
            prompt = self.render([{"role": "user", "content": user}], True)
            full = self.render([{"role": "user", "content": user}, {"role": "assistant", "content": reply}], False)
            assert full.startswith(prompt)
            return prompt, full, None, None
        prompt, completion = self.plain_prompt(rec)
        bos = self.tok.bos_token_id if getattr(self.tok, "add_bos_token", False) else None
        return prompt, prompt + completion, bos, self.tok.eos_token_id

    def encode(self, rec, chat_template):
        prompt, full, bos, eos = self.pieces(rec, chat_template)
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, labels = [], []
        if bos is not None:
            ids.append(bos)
            labels.append(IGNORE)
        for tid, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]):
            ids.append(tid)
            labels.append(tid if start >= len(prompt) else IGNORE)
        if eos is not None:
            ids.append(eos)
            labels.append(eos)
        return ids, labels

    def prompt_ids(self, rec, chat_template):
        if "messages" in rec:
            return self.tok(self.render(rec["messages"][:-1], True), add_special_tokens=False)["input_ids"]
        if chat_template:
            user, _ = self.user_and_reply(rec)
            text = self.render([{"role": "user", "content": user}], True)
        else:
            text, _ = self.plain_prompt(rec)
        return self.tok(text, add_special_tokens=False)["input_ids"]

    # keep_completion
    def target(self, rec, chat_template):
        """(record with the user content in one field, getter, setter)."""
        if "messages" in rec:
            msgs = rec["messages"]
            last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
            i = max(i for i in range(last) if msgs[i]["role"] not in ("assistant", "system"))

            def put(text, i=i):
                m = [dict(x) for x in msgs]
                m[i]["content"] = text
                return {"messages": m}

            return msgs[i]["content"], put
        if "prompt" in rec or chat_template:
            user, reply = self.user_and_reply(rec)
            return user, lambda text: {"prompt": text, "completion": reply}
        raise ValueError("plain alpaca is not in this fixture")

    def cut_points(self, user):
        offs = self.tok(user, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        pts = [s for s, _ in offs]
        if pts:
            pts[0] = 0
        for i in range(1, len(pts)):
            pts[i] = max(pts[i], pts[i - 1])
        pts.append(len(user))
        return pts

    @staticmethod
    def middle(user, pts, k):
        n = len(pts) - 1
        head, tail = (k + 1) // 2, k // 2
        return user[: pts[head]] + user[pts[n - tail] :]

    @staticmethod
    def bisect(n, limit, encode, length):
        best = encode(0)
        if length(best) > limit:
            return False, best
        lo, hi = 0, n
        while hi - lo > 1:
            mid = lo + (hi - lo) // 2
            e = encode(mid)
            if length(e) <= limit:
                lo, best = mid, e
            else:
                hi = mid
        return True, best

    def fit(self, rec, chat_template, max_len, mode):
        ids, labels = self.encode(rec, chat_template)
        if len(ids) <= max_len:
            return ids, labels, "whole"
        if mode == "keep_start":
            return ids[:max_len], labels[:max_len], "completion_cut"
        if mode == "keep_end":
            removed = len(ids) - max_len
            prompt_len = next(i for i, l in enumerate(labels) if l != IGNORE)
            fit = "prompt_cut" if removed <= prompt_len else "completion_cut"
            return ids[removed:], labels[removed:], fit
        user, put = self.target(rec, chat_template)
        pts = self.cut_points(user)
        found, (ids, labels) = self.bisect(
            len(pts) - 1, max_len, lambda k: self.encode(put(self.middle(user, pts, k)), chat_template), lambda e: len(e[0])
        )
        if found:
            return ids, labels, "prompt_cut"
        return ids[:max_len], labels[:max_len], "completion_cut"

    def fit_prompt(self, rec, chat_template, budget):
        ids = self.prompt_ids(rec, chat_template)
        if len(ids) <= budget:
            return ids
        user, put = self.target(rec, chat_template)
        pts = self.cut_points(user)
        found, ids = self.bisect(
            len(pts) - 1, budget, lambda k: self.prompt_ids(put(self.middle(user, pts, k)), chat_template), len
        )
        return ids if found else ids[len(ids) - budget :]


def records():
    def longest(task, n):
        rows = [json.loads(l) for l in (SFT / f"{task}.test.jsonl").read_text(encoding="utf-8").splitlines() if l]
        rows.sort(key=lambda r: (-len(r["prompt"]), r["prompt"]))
        return rows[:n]

    out = [(f"email_{i}", r) for i, r in enumerate(longest("email_subject", 3))]
    out += [(f"tweet_{i}", r) for i, r in enumerate(longest("tweet_entities", 1))]
    out.append((
        "alpaca_with_input",
        {
            "instruction": "Summarise the review in one sentence.",
            "input": "Naïve but charming: the café scenes are 日本語-subtitled and the 🙂 ending works. " * 12,
            "output": "A charming, if naive, film with a good ending.",
        },
    ))
    out.append((
        "chat_with_system",
        {
            "messages": [
                {"role": "system", "content": "You write e-mail subject lines."},
                {"role": "user", "content": "Write the subject of this e-mail.\n\n" + "Meeting moved to 3pm, room B. " * 30},
                {"role": "assistant", "content": "Meeting moved to 3pm"},
            ]
        },
    ))
    out.append((
        "long_completion",
        {"prompt": "Repeat the word ten times: ok", "completion": " ".join(["ok"] * 200)},
    ))
    return out


def main():
    tok = build_tokenizer()
    sft = Sft(tok)
    cases, prompts = [], []
    for name, rec in records():
        for chat in (True, False):
            if not chat and "prompt" not in rec:
                continue
            for max_len in (64, 160):
                for mode in ("keep_completion", "keep_start", "keep_end"):
                    ids, labels, fit = sft.fit(rec, chat, max_len, mode)
                    assert len(ids) <= max_len
                    cases.append({
                        "name": name,
                        "record": rec,
                        "use_chat_template": chat,
                        "max_seq_length": max_len,
                        "truncation_mode": mode,
                        "input_ids": ids,
                        "labels": labels,
                        "fit": fit,
                    })
            for budget in (24, 48):
                prompts.append({
                    "name": name,
                    "record": rec,
                    "use_chat_template": chat,
                    "budget": budget,
                    "prompt_ids": sft.fit_prompt(rec, chat, budget),
                })
    out = {
        "generator": "scripts/reference/gen_sft_truncation.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "cases": cases,
        "prompts": prompts,
    }
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(OUT)
    fits = {}
    for c in cases:
        fits[(c["truncation_mode"], c["fit"])] = fits.get((c["truncation_mode"], c["fit"]), 0) + 1
    print(f"{OUT}: {len(cases)} cases, {len(prompts)} prompts; {fits}")


if __name__ == "__main__":
    main()
