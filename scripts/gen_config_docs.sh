#!/usr/bin/env bash
# Regenerates the config reference in README.md (between the config-reference markers) from the
# schema itself (`strata config docs`), so the README cannot drift from the code. The CLI test
# fails when a key is missing from the README.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
strata=${STRATA:-$root/build/strata}
docs=$(mktemp); trap 'rm -f "$docs"' EXIT
"$strata" config docs > "$docs"
python3 - "$root/README.md" "$docs" <<'PY'
import sys
readme, docs = sys.argv[1], open(sys.argv[2]).read()
text = open(readme).read()
begin, end = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"
i, j = text.index(begin) + len(begin), text.index(end)
open(readme, "w").write(text[:i] + "\n" + docs + "\n" + text[j:])
PY
echo "README.md: config reference regenerated"
