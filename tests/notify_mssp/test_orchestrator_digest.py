"""Digest merging (pure, deterministic orchestrator code): one digest per (rule, recipient) across tenants,
ordered and capped the same way whatever order the tenants' plans arrive in."""

from __future__ import annotations

from notify_mssp.orchestrator import merge_digests


def _item(tenant: str, alert: str, rank: int, to: str = "soc@mssp.example", rule: str = "r1") -> dict:
    return {"rule": rule, "to": to, "tenant": tenant, "alert": alert, "obl": f"obligation|{alert}|new",
            "rank": rank, "at": "2026-11-27T08:00:00.0000000Z"}


def test_digests_merge_tenants_per_rule_and_recipient_with_the_design_digest_id():
    plans = [{"digest": [_item("t1", "a1", 1), _item("t1", "a2", 0, to="other@mssp.example")]},
             {"digest": [_item("t2", "b1", 0)]}]

    digests = merge_digests("notify-20261127T0805", plans, max_items=50)

    assert [(d["id"], d["items"], d["total"]) for d, _ in digests] == [
        ("notify-20261127T0805|r1|other@mssp.example", [["t1", "a2"]], 1),
        ("notify-20261127T0805|r1|soc@mssp.example", [["t2", "b1"], ["t1", "a1"]], 2),
    ]


def test_the_same_plans_in_another_order_give_the_same_digests():
    plans = [{"digest": [_item("t1", f"a{i}", i % 4) for i in range(6)]}, {"digest": [_item("t2", "b", 0)]}]

    assert merge_digests("run", plans, 50) == merge_digests("run", list(reversed(plans)), 50)


def test_a_digest_lists_at_most_the_cap_counts_the_rest_and_covers_every_obligation():
    plans = [{"digest": [_item("t1", f"a{i:02d}", 2) for i in range(12)]}]

    [(digest, obligations)] = merge_digests("run", plans, max_items=5)

    assert (len(digest["items"]), digest["total"], len(obligations)) == (5, 12, 12)


def test_an_alert_listed_by_two_obligations_appears_once():
    plans = [{"digest": [_item("t1", "a1", 0), {**_item("t1", "a1", 0), "obl": "obligation|a1|severity-High"}]}]

    [(digest, obligations)] = merge_digests("run", plans, 50)

    assert (digest["items"], digest["total"], len(obligations)) == ([["t1", "a1"]], 1, 2)
