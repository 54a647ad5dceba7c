"""The flows talk only through the domain layer in shared/: no flow imports another, and no flow spells a
table key, a partition or a tenant status by hand (the modules that own them are listed below).

Both tests read the source (ast), so they cover every module of the three flows, imported or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import alerts, rules, tenants
from shared.tenants import TenantStatus

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ("grant_access", "fetch_alerts", "notify_mssp")

# Row key prefixes of the shared tables: a flow builds and parses such keys with their owner's helpers.
KEY_PREFIXES = (alerts.ALERT_PREFIX, alerts.OBLIGATION_PREFIX, alerts.FEED_PREFIX, tenants.HISTORY_PREFIX)
# Partitions of the shared tables, spelled by their owners only.
PARTITIONS = {tenants.TENANT_PARTITION, rules.RULE_PARTITION}
STATUSES = {status.value for status in TenantStatus}
_KEY_METHODS = {"get_entity", "delete_entity"}


def _modules(flow: str) -> list[Path]:
    return sorted((ROOT / flow).rglob("*.py"))


def _all_flow_modules() -> list[Path]:
    return [path for flow in FLOWS for path in _modules(flow)]


def _imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


@pytest.mark.parametrize("flow", FLOWS)
def test_a_flow_imports_shared_and_its_own_modules_never_another_flow(flow):
    others = [other for other in FLOWS if other != flow]
    found = []
    for path in _modules(flow):
        for line, module in _imported(ast.parse(path.read_text(), str(path))):
            if module.split(".")[0] in others:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not found, "flows talk through shared/ only:\n" + "\n".join(found)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants (documentation may show a key's layout)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _strings(node: ast.AST) -> list[str]:
    """The string constants a literal holds: itself, or the elements of a set, tuple or list. (A dict's keys
    are not counted: a mapping from another vocabulary to statuses, like access-check outcomes to
    TenantStatus, is keyed by that vocabulary.)"""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return [s for element in node.elts for s in _strings(element)]
    return []


def _mentions_status(node: ast.AST) -> bool:
    return "status" in ast.unparse(node).lower()


def hand_written_keys(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, what) for every table key, partition or tenant status a module writes as a literal:

    - a string starting with a shared table's key prefix (`alert|`, `obligation|`, `feed|`, `history|`),
      also as the start of an f-string or in a regular expression (`feed\\|`);
    - a shared partition name (`tenant`, `rule`) given as a key: the partition argument of
      get_entity/delete_entity, or the `PartitionKey`/`pk` value of a dict;
    - a tenant status compared with, assigned to or stored under something named status.
    """
    tree = ast.parse(source, filename)
    docstrings = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.replace("\\|", "|")
            if any(text.startswith(prefix) for prefix in KEY_PREFIXES):
                found.append((node.lineno, f"key prefix {node.value!r}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _KEY_METHODS:
            partition = node.args[0] if node.args else None
            if isinstance(partition, ast.Constant) and partition.value in PARTITIONS:
                found.append((node.lineno, f"partition {partition.value!r} in {node.func.attr}"))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if not (isinstance(key, ast.Constant) and isinstance(value, ast.Constant)):
                    continue
                if key.value in ("PartitionKey", "pk") and value.value in PARTITIONS:
                    found.append((node.lineno, f"partition {value.value!r} as {key.value}"))
                if key.value == "status" and value.value in STATUSES:
                    found.append((node.lineno, f"tenant status {value.value!r}"))
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_mentions_status(o) for o in operands):
                found += [(node.lineno, f"tenant status {s!r} compared") for o in operands for s in _strings(o)
                          if s in STATUSES]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(_mentions_status(t) for t in targets):
                found += [(node.lineno, f"tenant status {s!r} assigned") for s in _strings(node.value)
                          if s in STATUSES]
        elif isinstance(node, ast.keyword) and node.arg and "status" in node.arg.lower():
            found += [(node.value.lineno, f"tenant status {s!r} as {node.arg}=") for s in _strings(node.value)
                      if s in STATUSES]
    return found


def test_no_flow_writes_a_table_key_partition_or_tenant_status_by_hand():
    found = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in _all_flow_modules()
             for line, what in hand_written_keys(path.read_text(), str(path))]
    assert not found, "use the owner's constants and helpers (shared/alerts.py, shared/tenants.py, " \
                      "shared/rules.py):\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    'row = table.get_entity("tenant", tenant_id)',
    'rows = table.query_entities("PartitionKey eq @pk", parameters={"pk": "tenant"})',
    'entity = {"PartitionKey": "rule", "RowKey": rule_id}',
    'key = "obligation|" + escaped',
    'key = f"alert|{escaped}"',
    'FEED = re.compile(r"feed\\|[0-9]{20}")',
    'if row.get("status") != "active": pass',
    'quiet = status in {"disabled", "offboarded"}',
    '_QUIET_STATUSES = ("disabled",)',
    'registry.set(status="offboarded")',
    'query(parameters={"status": "active"})',
])
def test_the_literal_rule_catches_each_hand_written_form(source):
    assert hand_written_keys(source)


@pytest.mark.parametrize("source", [
    '"""Rows: PartitionKey `tenant`, RowKey `alert|<id>`."""',
    'tenant = params.get("tenant", "")',
    'plan = {"tenant": tenant_id, "obligations": []}',
    'outcome = AccessCheck("active", "readable")',
    'if "disabled" in body: pass',
    '_STATUS_BY_OUTCOME = {"active": TenantStatus.ACTIVE}',
])
def test_the_literal_rule_leaves_other_uses_of_the_same_words_alone(source):
    assert not hand_written_keys(source)


CONDITIONAL_NAMES = {"MatchConditions", "IfNotModified", "ResourceModifiedError"}


def conditional_writes(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, name) for every ETag condition a module spells itself: MatchConditions, IfNotModified or
    ResourceModifiedError. shared/tables.py holds the one conditional-update helper (update_row, with
    write_if_unchanged, delete_if_unchanged and update_if_unchanged for transactions), so a new
    read-modify-write loop of its own, with its own attempts and conflict handling, shows up here."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Name) and node.id in CONDITIONAL_NAMES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and node.attr in CONDITIONAL_NAMES:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name in CONDITIONAL_NAMES]
    return found


def test_every_etag_condition_goes_through_the_one_helper_in_shared_tables():
    modules = [*_all_flow_modules(), *sorted((ROOT / "shared").rglob("*.py"))]
    found = [f"{path.relative_to(ROOT)}:{line}: {name}" for path in modules if path != ROOT / "shared" / "tables.py"
             for line, name in conditional_writes(path.read_text(), str(path))]
    assert not found, "read-modify-writes use shared.tables.update_row (conditional writes: write_if_unchanged, " \
                      "delete_if_unchanged, update_if_unchanged):\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "from azure.core import MatchConditions",
    "table.update_entity(row, etag=etag, match_condition=MatchConditions.IfNotModified)",
    "from azure.core.exceptions import ResourceModifiedError",
    "ops = [('update', row, {'match_condition': azure.core.MatchConditions.IfNotModified})]",
])
def test_the_conditional_write_rule_catches_each_form(source):
    assert conditional_writes(source)
