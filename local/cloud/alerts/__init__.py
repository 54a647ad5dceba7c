"""Alert data of the local Microsoft cloud: per-tenant streams served as Graph alerts_v2 and as Defender alerts.

`AlertStore` is what the cloud server (local/cloud/server.py) calls; everything takes the cloud clock's
`now`, so tests that advance the clock reveal more of each stream.

Streams (`configure_tenant` options, all optional): `seed` (default: the tenant id), `alertsPerHour`
(default 0: no stream), `updatesPerAlert` (mean, default 1.5), `lagSeconds` (visibility lag, default 180),
`start` (ISO; the stream begins there, so history before `now` exists at once; default `now`), `count`
(a backlog of that many alerts spread between `start` and `now`; a rate continues after it),
`largeFraction` (default 0.005; most such alerts carry 1-2 MB of evidence), `unusualFraction` (default 0.1;
emoji, RTL, combining marks, zero-width characters, `<script>`, quotes, `&` in titles/descriptions),
`futureEnumFraction` (default 0.05; serviceSource/detectionSource members newer than Graph's
`unknownFutureValue`), `deviceGroups` (names), `deviceCount`, `defenderOrder` (see Order below). Same
options and seed give the same alerts (ids included) in any tenant. A tenant that was never configured
has no stream and the default lag.

Versions: each alert is created, then updated on a schedule (new -> inProgress with assignedTo, severity
may rise, resolved with classification/determination, later comments). A version becomes visible
`lagSeconds` after its lastUpdate time; until then the previous one is served. `add_alert` creates an
alert at `now` (or at the given createdDateTime/lastUpdateDateTime); `update_alert` appends a version at
`now` unless lastUpdateDateTime is given, and cancels the stream's pending updates of that alert. Explicit
alerts and updates obey the tenant's lag like the stream's, unless they give `visibleAt` (ISO, cloud
time): that version alone becomes visible then (a late alert among prompt ones). Unknown field names or bad values raise
ValueError; an unknown alert id raises KeyError.

Order of the Graph list: createdDateTime descending (newest first, Graph's documented order:
https://learn.microsoft.com/en-us/graph/api/security-list-alerts_v2), then id ascending, total and stable.
Defender documents no order for `GET /api/alerts` (https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts),
so its order is the tenant's `defenderOrder` option: `oldestFirst` (the default: the exact reverse of the
Graph order, as in Microsoft's example response), `newestFirst` (the Graph order) or `shuffled` (a fresh
permutation for every call, so `$skip` across calls means nothing). `set_defender_order` changes it at
run time (control API: `PATCH /control/tenants/{t}` with `defenderOrder`); reconfiguring a tenant's
stream keeps it unless the new options name one.
Query semantics are in `paging` (options, limits, nextLink) and `odata`/`schemas` ($filter).

Ground truth (`ground_truth`): every alert visible at `now`, in list order, as
`{"id", "createdDateTime", "lastUpdateDateTime", "severity", "status", "graphHash", "defenderHash"}`
(Graph enum spelling); the hashes are the sha256 hex digest of
`json.dumps(rendered, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()` where `rendered`
is the alert object as served by Graph with `Prefer: include-unknown-enum-members`, and as served by
Defender with `$expand=evidence` (see `canonical_hash`). Hashing renders every alert (cached per version);
`ground_truth(..., with_hashes=False)` leaves the hashes out for cheap bulk checks of large tenants.
"""

from .store import AlertStore, canonical_hash

__all__ = ["AlertStore", "canonical_hash"]
