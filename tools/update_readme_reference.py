"""Rewrite the config reference at the end of README.md from the schema (`make docs`).

Everything after the table header is generated: the reference is README's last section, so no
hand-written copy can linger below it (tests/core/test_config.py checks the whole tail).
"""

from pathlib import Path

from domaintune.core.config import config_reference

HEADER = "| key | default | description |\n|---|---|---|\n"

readme = Path(__file__).resolve().parents[1] / "README.md"
text = readme.read_text(encoding="utf-8")
start = text.index(HEADER) + len(HEADER)
readme.write_text(text[:start] + "\n".join(config_reference()) + "\n", encoding="utf-8")
