"""Digest merging (pure, deterministic orchestrator code): one digest per (rule, recipient) across tenants,
ordered the same way whatever order the tenants' plans arrive in, naming every obligation it covers."""

from __future__ import annotations

from notify_mssp.delivery import obligation_fingerprint
from notify_mssp.orchestrator import merge_digests


def _item(tenant: str, alert: str, rank: int, to: str = "soc@mssp.example", rule: str = "r1") -> dict:
    return {"rule": rule, "recipient": to, "tenant": tenant, "alertId": alert,
            "obligationKey": f"obligation|{alert}|new", "severityRank": rank,
            "createdAt": "2026-11-27T08:00:00.0000000Z", "reason": "new", "previousSeverity": "", "riseSeenAt": ""}


def _listed(digest: dict) -> list[list[str]]:
    return [[e["tenant"], e["alertId"]] for e in digest["entries"]]


def test_digests_merge_tenants_per_rule_and_recipient_with_the_design_digest_id():
    plans = [{"digest": [_item("t1", "a1", 1), _item("t1", "a2", 0, to="other@mssp.example")]},
             {"digest": [_item("t2", "b1", 0)]}]

    digests, left_over = merge_digests("notify-20261127T0805", plans, max_items=50)

    assert [(d["id"], _listed(d), d["maxItems"]) for d, _ in digests] == [
        ("notify-20261127T0805|r1|other@mssp.example", [["t1", "a2"]], 50),
        ("notify-20261127T0805|r1|soc@mssp.example", [["t2", "b1"], ["t1", "a1"]], 50),
    ]
    assert left_over == set()


def test_the_same_plans_in_another_order_give_the_same_digests():
    plans = [{"digest": [_item("t1", f"a{i}", i % 4) for i in range(6)]}, {"digest": [_item("t2", "b", 0)]}]

    assert merge_digests("run", plans, 50) == merge_digests("run", list(reversed(plans)), 50)


def test_a_digest_covers_every_obligation_it_counts_by_fingerprint():
    plans = [{"digest": [_item("t1", f"a{i:02d}", 2) for i in range(12)]}]

    [(digest, obligations)], _ = merge_digests("run", plans, max_items=5)

    assert (len(digest["entries"]), len(obligations)) == (12, 12)
    assert [fp for e in digest["entries"] for fp in e["obligations"]] == \
        [obligation_fingerprint("t1", f"obligation|a{i:02d}|new") for i in range(12)]


def test_an_alert_listed_by_two_obligations_is_one_entry_covering_both():
    raised = {**_item("t1", "a1", 0), "obligationKey": "obligation|a1|severity-High"}
    plans = [{"digest": [_item("t1", "a1", 0), raised]}]

    [(digest, obligations)], _ = merge_digests("run", plans, 50)

    assert (_listed(digest), len(digest["entries"][0]["obligations"]), len(obligations)) == ([["t1", "a1"]], 2, 2)


def test_obligations_over_the_coverage_limit_are_left_for_the_next_run(monkeypatch):
    import notify_mssp.orchestrator as orchestrator

    monkeypatch.setattr(orchestrator, "MAX_DIGEST_COVERED", 3)
    plans = [{"digest": [_item("t1", f"a{i}", 0) for i in range(5)]}]

    [(digest, obligations)], left_over = merge_digests("run", plans, 50)

    assert len(obligations) == 3 and len(digest["entries"]) == 3
    assert left_over == {("t1", "obligation|a3|new"), ("t1", "obligation|a4|new")}


def test_items_an_orchestration_of_the_previous_release_recorded_merge_the_same():
    legacy = {"rule": "r1", "to": "soc@mssp.example", "tenant": "t1", "alert": "a1", "obl": "obligation|a1|new",
              "rank": 0, "at": "2026-11-27T08:00:00.0000000Z"}

    named = _item("t1", "a1", 0)
    assert merge_digests("run", [{"digest": [legacy]}], 50) == merge_digests("run", [{"digest": [named]}], 50)
