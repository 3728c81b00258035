"""Rewrite the config reference table at the end of README.md from the schema (`make docs`)."""

from pathlib import Path

from domaintune.core.config import config_reference

HEADER = "| key | default | description |\n|---|---|---|\n"

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text(encoding="utf-8")
start = text.index(HEADER) + len(HEADER)
end = start
lines = text[start:].splitlines(keepends=True)
for line in lines:
    if not line.startswith("| `"):
        break
    end += len(line)
readme.write_text(text[:start] + "\n".join(config_reference()) + "\n" + text[end:], encoding="utf-8")
