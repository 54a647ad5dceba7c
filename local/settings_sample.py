"""Write local.settings.sample.json from the settings registry (shared.settings.SETTINGS).

`python -m local.settings_sample` regenerates it; tests/test_settings.py fails when the two drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.settings import SETTINGS

# Settings the Functions host itself needs locally (Core Tools reads them from local.settings.json).
HOST_VALUES = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "MALLOC_ARENA_MAX": "2",
}
HOST_NOTES = {
    "AzureWebJobsStorage": "Functions host storage (timers, Durable task hub): Azurite locally; in Azure "
    "identity-based AzureWebJobsStorage__* settings instead.",
    "FUNCTIONS_WORKER_RUNTIME": "Core Tools needs it locally; on Flex Consumption the runtime is set on the site.",
    "MALLOC_ARENA_MAX": "glibc's limit on malloc arenas, read when the worker process starts; 2 keeps ingestion's "
    "peak memory a third lower (its threads come and go). Bicep sets it too.",
}
LOCAL_VALUES = {"TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true"}


def sample() -> dict:
    values = dict(HOST_VALUES)
    notes = dict(HOST_NOTES)
    for setting in SETTINGS:
        values[setting.name] = LOCAL_VALUES.get(setting.name, setting.default or "")
        suffix = " (read by the Functions host)" if setting.consumer == "host" else ""
        notes[setting.name] = setting.description + suffix
    return {"IsEncrypted": False, "Values": values, "Notes": notes}


def render() -> str:
    return json.dumps(sample(), indent=2) + "\n"


README_START = "<!-- settings-table:start (python -m local.settings_sample) -->"
README_END = "<!-- settings-table:end -->"


def readme_table() -> str:
    rows = ["| Setting | Default | Read by | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        reader = "Functions host" if s.consumer == "host" else "app code"
        rows.append(f"| `{s.name}` | {default} | {reader} | {s.description.replace('|', '/')} |")
    return "\n".join([README_START, *rows, README_END])


def with_readme_table(readme: str) -> str:
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END)
    return readme[:start] + readme_table() + readme[end:]


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    (root / "local.settings.sample.json").write_text(render())
    readme = root / "README.md"
    readme.write_text(with_readme_table(readme.read_text()))
    print(f"wrote {root / 'local.settings.sample.json'} and the settings table in {readme}")
