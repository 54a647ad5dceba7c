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
}
HOST_NOTES = {
    "AzureWebJobsStorage": "Functions host storage (timers, Durable task hub): Azurite locally; in Azure "
    "identity-based AzureWebJobsStorage__* settings instead.",
    "FUNCTIONS_WORKER_RUNTIME": "Core Tools needs it locally; on Flex Consumption the runtime is set on the site.",
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


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "local.settings.sample.json"
    path.write_text(render())
    print(f"wrote {path}")
